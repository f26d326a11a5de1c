//! Wiring: config → compile → datapath (eBPF or userspace) → shard servers →
//! admin. [`build`] returns an [`App`] with the real bound addresses, so tests
//! run exactly what `main` runs.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex},
};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;

use crate::{
    admin::{AdminServer, AdminState, ConfigSource, Scope, SourceHealth},
    config::{self, ObjectRef},
    gateway::Proxy,
    kernel::{KernelDatapath, KernelError, KernelOptions, SockmapPref},
    kube::{KubeSource, StalenessCollector},
    metrics::{KernelCounters, Metrics, ModeLabels, ProcessCollector, ShardCollector},
    policy::ratelimit::RateLimitService,
    reload::{ReloadError, Runtime},
    snapshot::Snapshot,
    sources::{
        consul::ConsulClient,
        discovery::Discovery,
        driver::{Extras, SourceDriver, Store},
        vault::{VaultClient, VaultSecrets, VaultUrl},
        Secret, SourceError, SourceUrl, StoreSettings, TlsFiles,
    },
};

/// How listeners receive traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathMode {
    /// eBPF if it loads, userspace otherwise (said loudly).
    Auto,
    /// eBPF or fail.
    Ebpf,
    /// The agent binds listener addresses itself; no eBPF.
    Userspace,
}

/// The datapath actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveDatapath {
    Ebpf,
    Userspace,
}

impl ActiveDatapath {
    pub fn label(self) -> &'static str {
        match self {
            ActiveDatapath::Ebpf => "ebpf",
            ActiveDatapath::Userspace => "userspace",
        }
    }
}

/// Settings of one agent.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_dir: PathBuf,
    pub datapath: DatapathMode,
    pub admin_addr: SocketAddr,
    /// An extra listener serving only `/metrics`, `/healthz` and `/readyz`
    /// (for Prometheus and probes on the node's address, while the full
    /// admin endpoint stays on loopback).
    pub metrics_addr: Option<SocketAddr>,
    pub interfaces: Vec<String>,
    /// aya-log level of the eBPF programs (1 error … 5 trace).
    pub ebpf_log_level: u8,
    /// Per-shard limit of concurrent downstream connections.
    pub max_connections_per_shard: usize,
    /// Watch `config_dir` and apply changes while running.
    pub watch_config: bool,
    /// bpf filesystem for the pinned eBPF state that lets a restarted agent
    /// take over without dropping connections; `None` pins nothing.
    pub bpffs: Option<PathBuf>,
    /// XDP attach mode preference.
    pub xdp_mode: crate::kernel::XdpModePref,
    /// cgroup for the connect4/connect6 hooks (default: the cgroup v2 root).
    pub cgroup: Option<PathBuf>,
    /// Namespace identity of sources (agent config `namespaces:`).
    pub identity: crate::config::NamespaceIdentity,
    /// eBPF map capacities (`--map-size NAME=N`).
    pub map_sizes: std::collections::BTreeMap<String, u32>,
    /// Peers whose `X-Forwarded-*` headers are kept and appended to; from
    /// everyone else they are replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Read the configuration from the Kubernetes API instead of `config_dir`.
    pub kubernetes: Option<crate::kube::KubeSettings>,
    /// Attach the sockmap fast path between node-local sockets (opt-in).
    pub sockmap: bool,
    /// Rate limits: bucket store size, the cluster store (Redis).
    pub rate_limits: crate::policy::ratelimit::ServiceOptions,
    /// Where the configuration comes from; `None`: `config_dir`.
    pub config_source: Option<SourceUrl>,
    /// Credentials and TLS for Consul and etcd.
    pub stores: StoreSettings,
    /// Consul for `ConsulService` backends; `None`: the config source if it
    /// is Consul.
    pub consul_discovery: Option<SourceUrl>,
    /// Secrets from a Vault-API KV v2 store.
    pub secret_source: Option<VaultUrl>,
    pub secret_token: Secret,
    pub secret_tls: TlsFiles,
    /// How often held Secrets' versions are checked.
    pub secret_poll: std::time::Duration,
    /// Keep the pinned eBPF datapath when stopping without a successor, for
    /// the next agent (`systemctl restart`).
    pub keep_datapath_on_exit: bool,
    /// Client-side timeouts and limits of the gateway listeners.
    pub edge: crate::gateway::EdgeSettings,
    /// Access log destination and format.
    pub access_log: crate::access_log::Settings,
    /// Generate (or keep a trusted proxy's) X-Request-Id on every request.
    pub request_ids: bool,
    /// Trace context propagation and OTLP span export.
    pub tracing: crate::telemetry::Settings,
}

impl Settings {
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            datapath: DatapathMode::Auto,
            admin_addr: "127.0.0.1:9901".parse().expect("literal"),
            metrics_addr: None,
            interfaces: Vec::new(),
            ebpf_log_level: 3,
            max_connections_per_shard: 16_384,
            watch_config: true,
            bpffs: Some(PathBuf::from("/sys/fs/bpf")),
            xdp_mode: crate::kernel::XdpModePref::Auto,
            cgroup: None,
            identity: Default::default(),
            map_sizes: Default::default(),
            trusted_proxies: Vec::new(),
            kubernetes: None,
            sockmap: false,
            rate_limits: Default::default(),
            config_source: None,
            stores: StoreSettings::default(),
            consul_discovery: None,
            secret_source: None,
            secret_token: Secret::None,
            secret_tls: TlsFiles::default(),
            secret_poll: std::time::Duration::from_secs(10),
            keep_datapath_on_exit: false,
            edge: crate::gateway::EdgeSettings::default(),
            access_log: Default::default(),
            request_ids: true,
            tracing: Default::default(),
        }
    }
}

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("configuration rejected: {0}")]
    Config(#[from] config::ConfigError),
    // Boxed: KernelError is large and AppError travels through every `?` here.
    #[error("eBPF datapath unavailable (--datapath=ebpf): {0}")]
    Kernel(#[source] Box<KernelError>),
    #[error("programming eBPF maps: {0}")]
    Reconcile(#[source] Box<KernelError>),
    #[error("Gateway {gateway}: cannot listen on {addr}: {source}")]
    Listen {
        gateway: ObjectRef,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
    #[error("Kubernetes config source: {0}")]
    Kubernetes(#[from] crate::kube::KubeError),
    #[error("config, discovery or secret store: {0}")]
    Source(#[from] SourceError),
    #[error("access log: {0}")]
    AccessLog(#[from] crate::access_log::AccessLogError),
    #[error("tracing: {0}")]
    Tracing(#[from] crate::telemetry::TelemetryError),
    #[error("admin endpoint: cannot listen on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub use crate::reload::ShardInfo;

/// A running agent.
pub struct App {
    pub admin_addr: SocketAddr,
    /// The probes-and-metrics listener, when there is one.
    pub metrics_addr: Option<SocketAddr>,
    pub datapath: ActiveDatapath,
    /// Shards as of start-up; see [`App::shards_now`] after reloads.
    pub shards: BTreeMap<ObjectRef, ShardInfo>,
    runtime: Arc<Runtime>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Periodic eBPF map drift check (eBPF datapath only).
    drift: Option<tokio::task::JoinHandle<()>>,
    kube: Option<KubeSource>,
    /// Store sources, and the directory when discovery or secrets are used.
    sources: Option<SourceDriver>,
    admin: AdminServer,
    metrics_server: Option<AdminServer>,
    admin_state: Arc<AdminState>,
    /// Flushed when the agent stops, after connections drained.
    access_log: crate::access_log::AccessLog,
    tracer: crate::telemetry::Tracer,
}

pub async fn build(settings: Settings) -> Result<App, AppError> {
    let kernel = match settings.datapath {
        DatapathMode::Userspace => None,
        DatapathMode::Ebpf => {
            Some(load_kernel(&settings).map_err(|e| AppError::Kernel(Box::new(e)))?)
        }
        DatapathMode::Auto => match load_kernel(&settings) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "eBPF datapath unavailable; falling back to the userspace datapath \
                     (listeners bound by the agent, no XDP filtering or sk_lookup steering)"
                );
                None
            }
        },
    };
    let datapath = if kernel.is_some() {
        ActiveDatapath::Ebpf
    } else {
        ActiveDatapath::Userspace
    };
    let sockmap = kernel.as_ref().is_some_and(KernelDatapath::sockmap_enabled);
    tracing::info!(datapath = datapath.label(), sockmap, "datapath selected");
    if settings.sockmap && !sockmap {
        tracing::warn!(
            "--sockmap requested but the fast path is off: it needs the eBPF datapath \
             and a kernel that accepts sock_ops + sk_msg programs"
        );
    }

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    metrics
        .datapath_mode
        .get_or_create(&ModeLabels {
            mode: datapath.label(),
        })
        .set(1);
    metrics.sockmap_enabled.set(i64::from(sockmap));

    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let kernel = kernel.map(|k| Arc::new(Mutex::new(k)));
    let rate_limits = start_rate_limits(&settings, &metrics, &snapshot, kernel.as_ref()).await;
    let access_log = crate::access_log::AccessLog::start(&settings.access_log)?;
    access_log.register(&mut registry);
    if access_log.enabled() {
        reopen_on_sighup(access_log.clone());
    }
    let tracer = crate::telemetry::Tracer::start(&settings.tracing)?;
    tracer.register(&mut registry);
    let proxy = Arc::new(
        Proxy::new(snapshot.clone(), metrics.clone())
            .with_trusted_proxies(settings.trusted_proxies.clone())
            .with_edge(settings.edge.clone().resolved())
            .with_access_log(access_log.clone(), settings.request_ids)
            .with_tracer(tracer.clone())
            .with_connection_gate(penalty_gate(&rate_limits, &snapshot)),
    );
    let mut runtime = Runtime::new(
        settings.config_dir.clone(),
        snapshot.clone(),
        kernel,
        metrics,
        proxy,
        settings.max_connections_per_shard,
    );
    runtime.identity = settings.identity.clone();
    if runtime
        .policy_state
        .set_rate_limits(rate_limits.clone())
        .is_err()
    {
        return Err(AppError::Internal(
            "rate-limit service set twice".to_owned(),
        ));
    }
    let runtime = Arc::new(runtime);
    if let Some(shared) = &runtime.kernel {
        registry.register_collector(Box::new(KernelCounters {
            kernel: shared.clone(),
            snapshot: snapshot.clone(),
            desired: runtime.kernel_applied(),
        }));
    }
    registry.register_collector(Box::new(
        crate::policy::response_cache::metrics::CacheCollector(Arc::downgrade(
            &runtime.policy_state,
        )),
    ));
    registry.register_collector(Box::new(ShardCollector {
        runtime: Arc::downgrade(&runtime),
    }));
    registry.register_collector(Box::new(ProcessCollector));
    let source_health = Arc::new(SourceHealth::default());
    // Registered for every source, so dashboards and alerts need not know
    // which one an agent uses: a local directory is never stale.
    registry.register_collector(Box::new(StalenessCollector(source_health.clone())));
    if let Some(k) = &settings.kubernetes {
        registry.register_collector(Box::new(
            crate::kube::ingress::metrics::IgnoredAnnotationsCollector(
                k.ignored_annotations.clone(),
            ),
        ));
    }
    let mut watcher = None;
    let source_url = settings
        .config_source
        .clone()
        .unwrap_or_else(|| SourceUrl::File(settings.config_dir.clone()));
    let extras = match extras(&settings, &source_url) {
        Ok(x) => x,
        Err(e) => {
            runtime.shutdown().await;
            return Err(e.into());
        }
    };
    let store = if settings.kubernetes.is_some() {
        None
    } else {
        match Store::connect(&source_url, &settings.stores) {
            Ok(s) => s,
            Err(e) => {
                runtime.shutdown().await;
                return Err(e.into());
            }
        }
    };
    let mut sources = None;
    if settings.kubernetes.is_none() && store.is_none() {
        source_health.set_url(source_url.describe());
        // The first load must succeed; later ones may be rejected and keep this one.
        let first = if extras.is_empty() {
            runtime.load_and_apply().await.map(drop)
        } else {
            crate::sources::driver::start_dir(
                &settings.config_dir,
                runtime.clone(),
                source_health.clone(),
                extras.clone(),
                settings.watch_config,
            )
            .await
            .map(|driver| sources = Some(driver))
        };
        if let Err(e) = first {
            runtime.shutdown().await;
            return Err(match e {
                ReloadError::Config(e) => AppError::Config(e),
                ReloadError::Listen {
                    gateway,
                    addr,
                    source,
                } => AppError::Listen {
                    gateway,
                    addr,
                    source,
                },
                ReloadError::Kernel(e) => AppError::Reconcile(e),
                e @ (ReloadError::Compile
                | ReloadError::AddressHeld { .. }
                | ReloadError::Cancelled(_)) => AppError::Internal(e.to_string()),
            });
        }
        let shards = runtime.shard_infos().await;
        for (gateway, info) in &shards {
            tracing::info!(%gateway, shard = info.id, sockets = ?info.socket_addrs, "shard listening");
        }
        watcher = if settings.watch_config && sources.is_none() {
            match runtime.watch() {
                Ok(task) => Some(task),
                Err(e) => {
                    runtime.shutdown().await;
                    return Err(AppError::Config(e));
                }
            }
        } else {
            None
        };
    }

    let admin_state = Arc::new(AdminState {
        registry,
        ready: false.into(),
        snapshot: snapshot.clone(),
        datapath: datapath.label().to_owned(),
        config_notes: runtime.notes.clone(),
        status: runtime.status.clone(),
        source_health,
        config_source: match &settings.kubernetes {
            Some(k) => ConfigSource::Kubernetes {
                watch_namespace: k.watch_namespace.clone(),
                node_name: k.node_name.clone(),
                gateway_selector: k.gateway_selector.clone(),
            },
            None if store.is_some() => ConfigSource::Store {
                url: source_url.describe(),
            },
            None => ConfigSource::Directory {
                path: settings.config_dir.clone(),
                watched: settings.watch_config,
            },
        },
        runtime: Arc::downgrade(&runtime),
        rate_limits: rate_limits.clone(),
        started: std::time::SystemTime::now(),
        request_drift_check: runtime.kernel.is_some().then(|| {
            // Weak: the admin state must not keep the kernel datapath alive
            // (its drop detaches the programs).
            let rt = Arc::downgrade(&runtime);
            Box::new(move || {
                if let Some(rt) = rt.upgrade() {
                    rt.request_drift_check();
                }
            }) as Box<dyn Fn() + Send + Sync>
        }),
    });
    let admin = AdminServer::bind(settings.admin_addr, admin_state.clone(), Scope::Full)
        .await
        .map_err(|source| AppError::Admin {
            addr: settings.admin_addr,
            source,
        })?;
    let metrics_server = match settings.metrics_addr {
        Some(addr) => match AdminServer::bind(addr, admin_state.clone(), Scope::Probes).await {
            Ok(server) => Some(server),
            Err(source) => {
                runtime.shutdown().await;
                admin.shutdown().await;
                return Err(AppError::Admin { addr, source });
            }
        },
        None => None,
    };
    let kube = match settings.kubernetes.clone() {
        // Ready once the first sync is applied (the source says so).
        Some(k) => match KubeSource::start(k, runtime.clone(), admin_state.clone()).await {
            Ok(source) => Some(source),
            Err(e) => {
                runtime.shutdown().await;
                admin.shutdown().await;
                if let Some(m) = metrics_server {
                    m.shutdown().await;
                }
                return Err(e.into());
            }
        },
        None => {
            match store {
                // Ready once the first configuration from the store is applied.
                Some(store) => {
                    tracing::info!(source = %source_url.describe(), admin = %admin.addr, "waiting for the first configuration from the store");
                    sources = Some(crate::sources::driver::start_store(
                        store,
                        &source_url,
                        runtime.clone(),
                        admin_state.clone(),
                        extras,
                    ));
                }
                None => {
                    admin_state.ready.store(true, Ordering::Release);
                    tracing::info!(admin = %admin.addr, "sluice ready");
                }
            }
            None
        }
    };
    let shards = runtime.shard_infos().await;
    let drift = runtime
        .kernel
        .is_some()
        .then(|| crate::drift::spawn_checker(&runtime, crate::drift::CHECK_PERIOD));
    Ok(App {
        admin_addr: admin.addr,
        metrics_addr: metrics_server.as_ref().map(|m| m.addr),
        metrics_server,
        datapath,
        shards,
        runtime,
        watcher,
        drift,
        kube,
        sources,
        admin,
        admin_state,
        access_log,
        tracer,
    })
}

/// The agent's rate-limit service: buckets, the cluster store (waited for
/// briefly, so the first requests see it), the penalty box (programmed into
/// the kernel's `PENALTY` map with eBPF).
async fn start_rate_limits(
    settings: &Settings,
    metrics: &Metrics,
    snapshot: &Arc<ArcSwap<Snapshot>>,
    kernel: Option<&Arc<Mutex<KernelDatapath>>>,
) -> Arc<RateLimitService> {
    let mut opts = settings.rate_limits.clone();
    if let Some(k) = kernel {
        // The box holds what the kernel map can.
        if let Some(n) = k.lock().expect("kernel lock").map_limits().get("PENALTY") {
            opts.penalty_capacity = *n as usize;
        }
    }
    let service = Arc::new(RateLimitService::new(
        opts,
        metrics.policy.ratelimit.clone(),
    ));
    let snap = snapshot.clone();
    service
        .penalties
        .set_resolver(Arc::new(move |gateway: &str| {
            snap.load()
                .shards
                .iter()
                .find(|s| *s.name == *gateway)
                .map(|s| s.id)
        }));
    if let Some(k) = kernel {
        service
            .penalties
            .attach_kernel(Box::new(crate::kernel::KernelPenalties(k.clone())));
    }
    service.start();
    if service.cluster.is_configured() {
        if service
            .wait_for_store(std::time::Duration::from_secs(2))
            .await
        {
            tracing::info!(store = ?service.cluster.health().address, "rate-limit cluster store reachable");
        } else {
            tracing::warn!(
                note = service.readiness_note().unwrap_or_default(),
                "starting without the rate-limit cluster store"
            );
        }
    }
    service
}

/// The accept check of the penalty box (what XDP does at the NIC in eBPF
/// mode; both run with eBPF, so connections queued before a penalty are
/// refused too).
fn penalty_gate(
    service: &Arc<RateLimitService>,
    snapshot: &Arc<ArcSwap<Snapshot>>,
) -> crate::gateway::ConnectionGate {
    let penalties = service.penalties.clone();
    let snap = snapshot.clone();
    Arc::new(move |shard, peer| {
        if penalties.admits(shard, peer) {
            return true;
        }
        if let Some(s) = snap.load().shard(shard) {
            penalties.refused(&s.name);
        }
        false
    })
}

/// Consul discovery and Vault-API secrets, when configured.
fn extras(settings: &Settings, source: &SourceUrl) -> Result<Extras, SourceError> {
    let changed = Arc::new(tokio::sync::Notify::new());
    let consul = match (&settings.consul_discovery, source) {
        (Some(SourceUrl::Consul(addr)), _) | (None, SourceUrl::Consul(addr)) => Some(addr),
        _ => None,
    };
    let discovery = match consul {
        Some(addr) => {
            let token = Secret::from_file_or_env(
                settings.stores.consul_token_file.as_ref(),
                &["CONSUL_HTTP_TOKEN"],
            );
            Some(Discovery::new(
                ConsulClient::new(addr, &settings.stores.tls, token)?,
                changed.clone(),
            ))
        }
        None => None,
    };
    let secrets = match &settings.secret_source {
        Some(url) => Some(VaultSecrets::start(
            VaultClient::new(
                url.clone(),
                &settings.secret_tls,
                settings.secret_token.clone(),
            )?,
            settings.secret_poll,
            changed.clone(),
        )),
        None => None,
    };
    if settings.kubernetes.is_some() && (discovery.is_some() || secrets.is_some()) {
        tracing::warn!("ConsulService discovery and --secret-source serve the directory and store sources, not --kubernetes");
    }
    Ok(Extras {
        discovery,
        secrets,
        changed,
    })
}

fn load_kernel(settings: &Settings) -> Result<KernelDatapath, KernelError> {
    KernelDatapath::load(&KernelOptions {
        bpffs: settings.bpffs.clone(),
        xdp_mode: settings.xdp_mode,
        cgroup: settings.cgroup.clone(),
        map_sizes: settings.map_sizes.clone(),
        interfaces: settings.interfaces.clone(),
        log_level: settings.ebpf_log_level,
        keep_on_exit: settings.keep_datapath_on_exit,
        sockmap: match (settings.sockmap, settings.datapath) {
            (false, _) => SockmapPref::Off,
            (true, DatapathMode::Auto) => SockmapPref::IfAvailable,
            (true, _) => SockmapPref::Required,
        },
    })
}

impl App {
    /// Whether the admin endpoint reports ready.
    pub fn is_ready(&self) -> bool {
        self.admin_state.ready.load(Ordering::Acquire)
    }

    /// Where each served Gateway receives connections now (reloads may
    /// have added or removed shards since start-up).
    pub async fn shards_now(&self) -> BTreeMap<ObjectRef, ShardInfo> {
        self.runtime.shard_infos().await
    }

    /// Stops watching the config, stops accepting, drains connections, stops
    /// admin, detaches eBPF.
    pub async fn shutdown(self) {
        self.admin_state.ready.store(false, Ordering::Release);
        self.runtime.cancel_retries();
        if let Some(d) = self.drift {
            d.abort();
        }
        if let Some(k) = self.kube {
            k.shutdown().await;
        }
        if let Some(s) = self.sources {
            s.shutdown().await;
        }
        if let Some(w) = self.watcher {
            w.abort();
            let _ = w.await;
        }
        self.runtime.shutdown().await;
        // The drained connections' last lines and spans; bounded, as a
        // stalled destination or collector would never take them.
        let limit = std::time::Duration::from_secs(2);
        if !self.access_log.flush(limit).await {
            tracing::warn!("the access log's last lines were not written in time");
        }
        if !self.tracer.flush(limit).await {
            tracing::warn!("the last spans were not exported in time");
        }
        self.admin.shutdown().await;
        if let Some(m) = self.metrics_server {
            m.shutdown().await;
        }
        // The kernel datapath is dropped (programs detached) with the last
        // Arc: the runtime and the metrics collector.
        drop(self.runtime);
        tracing::info!("sluice stopped");
    }
}

/// SIGHUP reopens the access log file (after log rotation moved it).
fn reopen_on_sighup(log: crate::access_log::AccessLog) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    log.reopen();
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: the access log cannot be reopened")
        }
    }
}
