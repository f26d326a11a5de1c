//! Wiring: config → compile → datapath (eBPF or userspace) → shard servers →
//! admin. [`build`] returns an [`App`] with the real bound addresses, so tests
//! run exactly what `main` runs.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex},
};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;

use crate::{
    admin::{AdminServer, AdminState, ConfigNotes},
    config::{self, ObjectRef},
    control::{compile, ShardIds},
    gateway::{Proxy, ShardServer, ShardSocket},
    kernel::{self, maps::DatapathMaps, KernelDatapath, KernelError, KernelOptions},
    metrics::{KernelCounters, Metrics, ModeLabels},
    snapshot::Snapshot,
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
    pub interfaces: Vec<String>,
    /// aya-log level of the eBPF programs (1 error … 5 trace).
    pub ebpf_log_level: u8,
    /// Per-shard limit of concurrent downstream connections.
    pub max_connections_per_shard: usize,
}

impl Settings {
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            datapath: DatapathMode::Auto,
            admin_addr: "127.0.0.1:9901".parse().expect("literal"),
            interfaces: Vec::new(),
            ebpf_log_level: 3,
            max_connections_per_shard: 16_384,
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
    #[error("admin endpoint: cannot listen on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Where a served Gateway receives connections.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub id: u32,
    /// Addresses of the shard's own sockets. With eBPF these are loopback
    /// steering sockets on ephemeral ports, not the Gateway's addresses.
    pub socket_addrs: Vec<SocketAddr>,
}

/// A running agent.
pub struct App {
    pub admin_addr: SocketAddr,
    pub datapath: ActiveDatapath,
    pub shards: BTreeMap<ObjectRef, ShardInfo>,
    servers: Vec<ShardServer>,
    admin: AdminServer,
    admin_state: Arc<AdminState>,
    // Dropped last: detaches the programs after the servers stopped.
    kernel: Option<Arc<Mutex<KernelDatapath>>>,
}

pub async fn build(settings: Settings) -> Result<App, AppError> {
    let cfg = config::load_dir(&settings.config_dir)?;
    let mut ids = ShardIds::default();
    let compiled = compile(&cfg, &mut ids, 1);
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }

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
    tracing::info!(datapath = datapath.label(), "datapath selected");

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    metrics
        .datapath_mode
        .get_or_create(&ModeLabels {
            mode: datapath.label(),
        })
        .set(1);
    metrics
        .config_generation
        .set(compiled.snapshot.generation as i64);
    metrics
        .config_reloads
        .get_or_create(&crate::metrics::ConfigLabels { result: "applied" })
        .inc();

    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let mut kernel_shared = None;
    if let Some(mut k) = kernel {
        let stats = kernel::reconcile(&mut k as &mut dyn DatapathMaps, &compiled.kernel)
            .map_err(|e| AppError::Reconcile(Box::new(e)))?;
        tracing::info!(?stats, "eBPF maps programmed");
        let shared = Arc::new(Mutex::new(k));
        registry.register_collector(Box::new(KernelCounters {
            kernel: shared.clone(),
            snapshot: snapshot.clone(),
        }));
        kernel_shared = Some(shared);
    }

    let proxy = Arc::new(Proxy::new(snapshot.clone(), metrics.clone()));
    let mut servers = Vec::new();
    let mut shards = BTreeMap::new();
    for shard in &compiled.snapshot.shards {
        let sockets = match &kernel_shared {
            Some(k) => steering_sockets(
                shard.id,
                &shard.gateway,
                &mut k.lock().expect("kernel lock"),
            )?,
            None => bound_sockets(shard)?,
        };
        let socket_addrs = sockets.iter().map(|s| s.local).collect();
        tracing::info!(gateway = %shard.gateway, shard = shard.id, sockets = ?socket_addrs, ports = ?shard.ports(), "shard listening");
        servers.push(
            ShardServer::spawn(
                shard.id,
                sockets,
                proxy.clone(),
                settings.max_connections_per_shard,
            )
            .map_err(|source| AppError::Listen {
                gateway: shard.gateway.clone(),
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                source,
            })?,
        );
        shards.insert(
            shard.gateway.clone(),
            ShardInfo {
                id: shard.id,
                socket_addrs,
            },
        );
    }
    snapshot.store(Arc::new(compiled.snapshot));

    let admin_state = Arc::new(AdminState {
        registry,
        ready: false.into(),
        snapshot: snapshot.clone(),
        datapath: datapath.label().to_owned(),
        config_notes: Mutex::new(ConfigNotes {
            warnings: compiled.warnings,
            last_rejection: None,
        }),
    });
    let admin = AdminServer::bind(settings.admin_addr, admin_state.clone())
        .await
        .map_err(|source| AppError::Admin {
            addr: settings.admin_addr,
            source,
        })?;
    admin_state.ready.store(true, Ordering::Release);
    tracing::info!(admin = %admin.addr, "sluice ready");
    Ok(App {
        admin_addr: admin.addr,
        datapath,
        shards,
        servers,
        admin,
        admin_state,
        kernel: kernel_shared,
    })
}

fn load_kernel(settings: &Settings) -> Result<KernelDatapath, KernelError> {
    KernelDatapath::load(&KernelOptions {
        interfaces: settings.interfaces.clone(),
        log_level: settings.ebpf_log_level,
    })
}

/// eBPF mode: loopback sockets on ephemeral ports, registered in the SockMap.
fn steering_sockets(
    shard: u32,
    gateway: &ObjectRef,
    kernel: &mut KernelDatapath,
) -> Result<Vec<ShardSocket>, AppError> {
    let mut out = Vec::new();
    for ipv6 in [false, true] {
        let s = match ShardSocket::steering(ipv6) {
            Ok(s) => s,
            Err(e) if ipv6 => {
                tracing::warn!(%gateway, error = %e, "no IPv6 loopback; IPv6 not steered");
                continue;
            }
            Err(source) => {
                return Err(AppError::Listen {
                    gateway: gateway.clone(),
                    addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                    source,
                })
            }
        };
        kernel
            .set_shard_socket(shard, ipv6, &s.listener)
            .map_err(|e| AppError::Reconcile(Box::new(e)))?;
        out.push(s);
    }
    Ok(out)
}

/// Userspace mode: bind each (address, port) of the Gateway.
fn bound_sockets(shard: &crate::snapshot::Shard) -> Result<Vec<ShardSocket>, AppError> {
    let addrs: Vec<IpAddr> = if shard.addresses.is_empty() {
        vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]
    } else {
        shard.addresses.clone()
    };
    let mut out = Vec::new();
    for port in shard.ports() {
        for ip in &addrs {
            let addr = SocketAddr::new(*ip, port);
            match ShardSocket::bind(addr) {
                Ok(s) => out.push(s),
                // A host without IPv6 still serves IPv4 on the wildcard.
                Err(e) if ip.is_ipv6() && shard.addresses.is_empty() => {
                    tracing::warn!(gateway = %shard.gateway, %addr, error = %e, "IPv6 wildcard not bound");
                }
                Err(source) => {
                    return Err(AppError::Listen {
                        gateway: shard.gateway.clone(),
                        addr,
                        source,
                    })
                }
            }
        }
    }
    Ok(out)
}

impl App {
    /// Whether the admin endpoint reports ready.
    pub fn is_ready(&self) -> bool {
        self.admin_state.ready.load(Ordering::Acquire)
    }

    /// Stops accepting, drains connections, stops admin, detaches eBPF.
    pub async fn shutdown(self) {
        self.admin_state.ready.store(false, Ordering::Release);
        for s in self.servers {
            s.shutdown().await;
        }
        self.admin.shutdown().await;
        drop(self.kernel);
        tracing::info!("sluice stopped");
    }
}
