//! Applying a configuration to the running agent, at start-up and on every
//! change of the config directory. A change is applied whole or not at all:
//! the new snapshot is compiled off the data path, listener sockets for new
//! (address, port)s are bound, the eBPF maps are converged, and only then is
//! the snapshot swapped in. Anything failing on the way leaves the previous
//! snapshot serving, and the rejection is logged, counted and shown on
//! `/config`.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::{
    admin::ConfigNotes,
    config::{self, ConfigError, DirWatcher, ObjectRef},
    control::{status::Status, Compiled, Compiler, PolicyEnv, ShardIds},
    gateway::{Proxy, ShardServer, ShardSocket, UdpServer},
    kernel::{
        self,
        maps::DatapathMaps,
        retry::{retry, Interrupt, RetryError, RetryPolicy},
        KernelDatapath, KernelDesired, KernelError, ReconcileReport,
    },
    metrics::{ConfigLabels, MapLabels, Metrics},
    policy::state::PolicyState,
    snapshot::{Shard, ShardId, Snapshot},
};

/// How long the directory must be quiet before a reload. Short: the watcher
/// reports a file when its writer closes it, so a reload never sees a
/// half-written file; a save or a `cp` of a few files settles within a
/// millisecond or two; a reload that falls between the files of a larger
/// copy costs little (only changed documents are parsed, only changed routes
/// compiled) and the next one follows. It bounds how soon a change is in effect.
pub const DEBOUNCE: Duration = Duration::from_millis(5);

/// Longest a reload waits for the first fetch of new remote JWKS.
const POLICY_WARM_UP: Duration = Duration::from_secs(3);
/// How long the status keeps following remote JWKS that did not load.
const JWKS_STATUS_FOLLOW: Duration = Duration::from_secs(600);

/// (policy, loaded, detail) of every remote JWKS in the policy state.
fn remote_jwks(state: &PolicyState) -> Vec<(crate::policy::PolicyId, bool, String)> {
    state
        .all::<crate::policy::jwks::RemoteKeySet>()
        .into_iter()
        .map(|(key, set)| (key.policy, set.is_loaded(), set.unavailable_reason()))
        .collect()
}

/// Why a configuration was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("Gateway {gateway}: cannot listen on {addr}: {source}")]
    Listen {
        gateway: ObjectRef,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "Gateway {gateway}: {addr} is still served by Gateway {holder}; moving a listener \
         address between Gateways takes two changes (remove it from {holder} first)"
    )]
    AddressHeld {
        gateway: ObjectRef,
        /// `namespace/name` (a string keeps the error small).
        holder: String,
        addr: SocketAddr,
    },
    #[error("programming eBPF maps: {0}")]
    Kernel(#[source] Box<KernelError>),
    #[error("compiling the configuration panicked or was cancelled")]
    Compile,
    #[error("applying the configuration was cancelled: {0}")]
    Cancelled(&'static str),
}

/// Connection use of one shard's bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ShardConnections {
    /// Downstream connections accepted and not yet closed.
    pub open: usize,
    /// The shard's connection limit (`max_connections_per_shard`).
    pub limit: usize,
}

/// Seconds since the Unix epoch, for timestamps shown to operators.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Where a served Gateway receives connections.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub id: u32,
    /// Addresses of the shard's own sockets. With eBPF these are loopback
    /// steering sockets on ephemeral ports, not the Gateway's addresses.
    pub socket_addrs: Vec<SocketAddr>,
}

/// The running sockets of one shard.
struct RunningShard {
    gateway: ObjectRef,
    /// Shared by every socket of the shard: the bulkhead's connection limit.
    limit: Arc<Semaphore>,
    /// Userspace: keyed by the bound (address, port). eBPF: by the steering
    /// socket's own address.
    servers: BTreeMap<SocketAddr, ShardServer>,
    /// UDP listener sockets by bound (address, port), in both datapaths
    /// (sk_lookup steering is TCP-only).
    udp: BTreeMap<SocketAddr, UdpServer>,
}

impl RunningShard {
    fn new(gateway: &ObjectRef, max_connections: usize) -> Self {
        Self {
            gateway: gateway.clone(),
            limit: Arc::new(Semaphore::new(max_connections)),
            servers: BTreeMap::new(),
            udp: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// Everything a configuration change touches.
pub struct Runtime {
    pub config_dir: PathBuf,
    /// The directory source and its per-file cache (file source only).
    source: Mutex<config::DirSource>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub kernel: Option<Arc<Mutex<KernelDatapath>>>,
    pub metrics: Metrics,
    pub proxy: Arc<Proxy>,
    pub notes: Arc<Mutex<ConfigNotes>>,
    /// Gateway API status of the applied configuration.
    pub status: Arc<Mutex<Status>>,
    max_connections: usize,
    /// Namespace identity from the agent config, merged into every load.
    pub identity: config::NamespaceIdentity,
    ids: Mutex<ShardIds>,
    /// Remembers the last compile, so a change recompiles only what it touches.
    compiler: Mutex<Compiler>,
    generation: AtomicU64,
    /// The kernel state of the snapshot being served, to return to when a
    /// later reconcile fails halfway. Shared with the metrics collector,
    /// which reports map occupancy from it.
    kernel_applied: Arc<Mutex<KernelDesired>>,
    shards: tokio::sync::Mutex<BTreeMap<ShardId, RunningShard>>,
    /// Each running shard's connection limit and number of accept loops,
    /// readable without waiting for a reload in progress (the admin page and
    /// metrics read it).
    connection_limits: Mutex<BTreeMap<ShardId, (Arc<Semaphore>, usize)>>,
    /// Retries of failed map updates, and what cancels them.
    pub retry_policy: RetryPolicy,
    interrupt: Interrupt,
    /// Asks the drift checker for a check now.
    drift_requested: tokio::sync::Notify,
    /// Policy state that outlives reloads (JWKS, verified-token caches),
    /// keyed by the policies' identities, outside the snapshot.
    pub policy_state: Arc<PolicyState>,
}

impl Runtime {
    pub fn new(
        config_dir: PathBuf,
        snapshot: Arc<ArcSwap<Snapshot>>,
        kernel: Option<Arc<Mutex<KernelDatapath>>>,
        metrics: Metrics,
        proxy: Arc<Proxy>,
        max_connections: usize,
    ) -> Self {
        Self {
            source: Mutex::new(config::DirSource::new(&config_dir)),
            config_dir,
            snapshot,
            kernel,
            metrics,
            proxy,
            notes: Arc::default(),
            status: Arc::default(),
            max_connections,
            identity: Default::default(),
            ids: Mutex::default(),
            compiler: Mutex::default(),
            generation: AtomicU64::new(0),
            kernel_applied: Arc::default(),
            shards: tokio::sync::Mutex::default(),
            connection_limits: Mutex::default(),
            retry_policy: RetryPolicy::default(),
            interrupt: Interrupt::default(),
            drift_requested: tokio::sync::Notify::new(),
            policy_state: Arc::new(match tokio::runtime::Handle::try_current() {
                Ok(rt) => PolicyState::with_runtime(rt),
                Err(_) => PolicyState::default(),
            }),
        }
    }

    /// Loads the config directory and applies it. On error nothing changed.
    pub async fn load_and_apply(self: &Arc<Self>) -> Result<Vec<String>, ReloadError> {
        let this = self.clone();
        // Parsing and compiling are CPU work: keep them off the async workers
        // that serve requests.
        let (compiled, ids) = tokio::task::spawn_blocking(move || -> Result<_, ReloadError> {
            let (mut cfg, stats) = this.source.lock().expect("source lock").load_with_stats()?;
            tracing::debug!(
                files = stats.files,
                read = stats.read,
                parsed = stats.parsed,
                "configuration directory read"
            );
            cfg.identity = this.identity.clone();
            Ok(this.compile(&cfg))
        })
        .await
        .map_err(|_| ReloadError::Compile)??;
        let result = self.apply(compiled, ids).await;
        release_free_heap();
        let warnings = result?;
        self.notes.lock().expect("notes lock").identity = (&self.identity).into();
        Ok(warnings)
    }

    /// Applies a configuration that another source (Kubernetes) has already
    /// converted and validated; its `identity` (this node's pods) is added to
    /// the agent config's. On error nothing changed.
    pub async fn apply_config(
        self: &Arc<Self>,
        mut cfg: config::Config,
    ) -> Result<Vec<String>, ReloadError> {
        let mut identity = self.identity.clone();
        identity.cidrs.append(&mut cfg.identity.cidrs);
        identity.cgroups.append(&mut cfg.identity.cgroups);
        let notes = (&identity).into();
        cfg.identity = identity;
        let this = self.clone();
        let (compiled, ids) = tokio::task::spawn_blocking(move || this.compile(&cfg))
            .await
            .map_err(|_| ReloadError::Compile)?;
        let result = self.apply(compiled, ids).await;
        release_free_heap();
        let warnings = result?;
        self.notes.lock().expect("notes lock").identity = notes;
        Ok(warnings)
    }

    fn compile(&self, cfg: &config::Config) -> (Compiled, ShardIds) {
        let mut ids = self.ids.lock().expect("ids lock").clone();
        let generation = self.generation.load(Ordering::Acquire) + 1;
        let run = self.policy_state.compile();
        let env = PolicyEnv {
            metrics: &self.metrics.policy,
            state: &run,
        };
        let mut compiler = self.compiler.lock().expect("compiler lock");
        let compiled = compiler.compile(cfg, &mut ids, generation, &env);
        let stats = compiler.stats();
        tracing::debug!(
            incremental = stats.incremental,
            full_reason = stats.full_reason.unwrap_or(""),
            routes = stats.routes,
            compiled = stats.compiled,
            removed = stats.removed,
            "configuration compiled"
        );
        (compiled, ids)
    }

    /// Generation of the snapshot being served (0 before the first apply).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    async fn apply(
        &self,
        mut compiled: Compiled,
        ids: ShardIds,
    ) -> Result<Vec<String>, ReloadError> {
        if self.kernel.is_none() {
            for shard in compiled
                .snapshot
                .shards
                .iter()
                .filter(|s| !s.port_ranges.is_empty())
            {
                compiled.warnings.push(format!(
                    "Gateway {}: {} is served by the eBPF datapath only; its port ranges \
                     are not bound in userspace mode",
                    shard.gateway,
                    config::PORT_RANGES_ANNOTATION
                ));
            }
        }
        // A change still retrying map updates gives way to this one.
        let ticket = self.interrupt.supersede();
        let mut running = self.shards.lock().await;
        let prepared = self.prepare_sockets(&compiled.snapshot, &running)?;
        if let Some(k) = &self.kernel {
            match self.program_maps(k, &compiled.kernel, ticket).await {
                Ok(report) => tracing::info!(stats = ?report.stats, "eBPF maps programmed"),
                Err(e) => {
                    // Back to what the served snapshot expects; new sockets are dropped.
                    let previous = self
                        .kernel_applied
                        .lock()
                        .expect("kernel state lock")
                        .clone();
                    let mut k = k.lock().expect("kernel lock");
                    if let Err(e2) =
                        kernel::reconcile(&mut k.maps as &mut dyn DatapathMaps, &previous)
                    {
                        self.count_map_error(&e2);
                        tracing::error!(error = %e2, "restoring the previous eBPF map state failed; the drift check will repair it");
                    }
                    for (id, ipv6) in prepared.kernel_slots_of_new_shards() {
                        let _ = k.clear_shard_socket(id, ipv6);
                    }
                    return Err(e);
                }
            }
        }

        // Remote JWKS of new policies get their first fetch before the
        // snapshot that needs them is served (bounded: an IdP that is down
        // leaves those routes answering 503 until it answers).
        for pending in crate::policy::warm_up(&self.policy_state, POLICY_WARM_UP).await {
            tracing::warn!("{pending}; its routes answer 503 until it loads");
        }
        let generation = compiled.snapshot.generation;
        let new_ids: BTreeSet<ShardId> = compiled.snapshot.shards.iter().map(|s| s.id).collect();
        let wanted: BTreeMap<ShardId, BTreeSet<SocketAddr>> = compiled
            .snapshot
            .shards
            .iter()
            .map(|s| (s.id, wanted_binds(s).into_iter().collect()))
            .collect();
        let wanted_udp: BTreeMap<ShardId, BTreeSet<SocketAddr>> = compiled
            .snapshot
            .shards
            .iter()
            .map(|s| (s.id, wanted_udp_binds(s).into_iter().collect()))
            .collect();
        let previous = self.snapshot.swap(Arc::new(compiled.snapshot));
        // Freeing a large route table takes tens of milliseconds; the new
        // snapshot is in effect already, so that is done off the reload path
        // (and only once the last in-flight request lets go of it).
        tokio::task::spawn_blocking(move || drop(previous));

        let mut stopping = Vec::new();
        let mut stopping_udp = Vec::new();
        // Sockets are listening already (connections queue in the backlog);
        // accept loops start after the swap so the first request sees its shard.
        for (id, gateway, sockets) in prepared.shards {
            if running.get(&id).is_some_and(|r| r.gateway != gateway) {
                // The id now stands for another Gateway: the old one's sockets go.
                if let Some(old) = running.remove(&id) {
                    stopping.extend(old.servers.into_values());
                    stopping_udp.extend(old.udp.into_values());
                }
            }
            let entry = running
                .entry(id)
                .or_insert_with(|| RunningShard::new(&gateway, self.max_connections));
            for (key, socket) in sockets {
                let local = socket.local;
                match ShardServer::spawn_with_limit(
                    id,
                    vec![socket],
                    self.proxy.clone(),
                    entry.limit.clone(),
                ) {
                    Ok(server) => {
                        tracing::info!(%gateway, shard = id, socket = %local, "listening");
                        entry.servers.insert(key, server);
                    }
                    Err(e) => {
                        tracing::error!(%gateway, shard = id, socket = %local, error = %e, "accept loop not started")
                    }
                }
            }
        }

        for (id, gateway, sockets) in prepared.udp {
            if running.get(&id).is_some_and(|r| r.gateway != gateway) {
                if let Some(old) = running.remove(&id) {
                    stopping.extend(old.servers.into_values());
                    stopping_udp.extend(old.udp.into_values());
                }
            }
            let entry = running
                .entry(id)
                .or_insert_with(|| RunningShard::new(&gateway, self.max_connections));
            for (key, socket) in sockets {
                match UdpServer::spawn(id, socket, self.proxy.clone()) {
                    Ok(server) => {
                        tracing::info!(%gateway, shard = id, socket = %server.local_addr(), "listening (UDP)");
                        entry.udp.insert(key, server);
                    }
                    Err(e) => {
                        tracing::error!(%gateway, shard = id, socket = %key, error = %e, "UDP relay not started")
                    }
                }
            }
        }

        // Stop what the new snapshot no longer has: whole shards, and in
        // userspace mode (address, port)s a shard dropped.
        running.retain(|id, shard| {
            if !new_ids.contains(id) {
                tracing::info!(gateway = %shard.gateway, shard = id, "Gateway removed; closing its listeners");
                if let Some(k) = &self.kernel {
                    let mut k = k.lock().expect("kernel lock");
                    for ipv6 in [false, true] {
                        if let Err(e) = k.clear_shard_socket(*id, ipv6) {
                            tracing::warn!(shard = id, error = %e, "clearing steering socket");
                        }
                    }
                }
                stopping.extend(std::mem::take(&mut shard.servers).into_values());
                stopping_udp.extend(std::mem::take(&mut shard.udp).into_values());
                return false;
            }
            // UDP sockets are bound directly in both datapaths.
            let keep = &wanted_udp[id];
            let gone: Vec<SocketAddr> = shard.udp.keys().filter(|a| !keep.contains(a)).copied().collect();
            for addr in gone {
                tracing::info!(gateway = %shard.gateway, %addr, "UDP listener removed; closing socket");
                stopping_udp.extend(shard.udp.remove(&addr));
            }
            if self.kernel.is_none() {
                let keep = &wanted[id];
                let gone: Vec<SocketAddr> = shard.servers.keys().filter(|a| !keep.contains(a)).copied().collect();
                for addr in gone {
                    tracing::info!(gateway = %shard.gateway, %addr, "listener removed; closing socket");
                    stopping.extend(shard.servers.remove(&addr));
                }
            }
            true
        });
        *self.connection_limits.lock().expect("limits lock") = running
            .iter()
            .map(|(id, s)| {
                let loops = s.servers.values().map(|srv| srv.local_addrs().len()).sum();
                (*id, (s.limit.clone(), loops))
            })
            .collect();
        let sockets = running
            .values()
            .map(|s| {
                let addrs = s
                    .servers
                    .values()
                    .flat_map(|srv| srv.local_addrs().to_vec())
                    .collect();
                (s.gateway.to_string(), addrs)
            })
            .collect();
        drop(running);
        for server in stopping {
            // Draining takes up to the drain timeout; the reload does not wait.
            tokio::spawn(server.shutdown());
        }
        for server in stopping_udp {
            tokio::spawn(server.shutdown());
        }

        *self.ids.lock().expect("ids lock") = ids;
        // State the new snapshot does not use is dropped (requests still on
        // the old snapshot hold what they use).
        self.policy_state.commit(compiled.policy_compile);
        // Remote JWKS that never loaded show in the policies' status, and
        // the status follows them until they load.
        let remote = remote_jwks(&self.policy_state);
        crate::control::policy::jwks_conditions(&mut compiled.status.policies, &remote);
        if remote.iter().any(|(_, loaded, _)| !loaded) {
            let (status, state) = (self.status.clone(), self.policy_state.clone());
            tokio::spawn(async move {
                let until = tokio::time::Instant::now() + JWKS_STATUS_FOLLOW;
                while tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let remote = remote_jwks(&state);
                    let mut s = status.lock().expect("status lock");
                    crate::control::policy::jwks_conditions(&mut s.policies, &remote);
                    if remote.iter().all(|(_, loaded, _)| *loaded) {
                        break;
                    }
                }
            });
        }
        *self.kernel_applied.lock().expect("kernel state lock") = compiled.kernel;
        self.generation.store(generation, Ordering::Release);
        self.metrics.config_generation.set(generation as i64);
        self.metrics
            .config_reloads
            .get_or_create(&ConfigLabels { result: "applied" })
            .inc();
        let now = unix_now();
        self.metrics.config_last_reload_successful.set(1);
        self.metrics.config_last_success_timestamp.set(now);
        {
            let mut notes = self.notes.lock().expect("notes lock");
            notes.warnings = compiled.warnings.clone();
            notes.sockets = sockets;
            notes.last_applied_at = Some(now);
        }
        *self.status.lock().expect("status lock") = compiled.status;
        for w in &compiled.warnings {
            tracing::warn!("{w}");
        }
        Ok(compiled.warnings)
    }

    /// Converges the maps to `desired`, retrying failed updates with backoff
    /// until they succeed, fail for good, or a newer change or shutdown
    /// cancels them.
    async fn program_maps(
        &self,
        k: &Mutex<KernelDatapath>,
        desired: &KernelDesired,
        ticket: u64,
    ) -> Result<ReconcileReport, ReloadError> {
        retry(
            self.retry_policy,
            &self.interrupt,
            ticket,
            || {
                let mut k = k.lock().expect("kernel lock");
                kernel::reconcile(&mut k.maps as &mut dyn DatapathMaps, desired)
            },
            |e, delay| {
                self.count_map_error(e);
                match delay {
                    Some(d) => tracing::warn!(
                        map = e.map_name().unwrap_or("-"),
                        error = %e,
                        retry_in_ms = d.as_millis() as u64,
                        "eBPF map update failed; retrying"
                    ),
                    None => tracing::error!(
                        map = e.map_name().unwrap_or("-"),
                        error = %e,
                        "eBPF map update failed; giving up"
                    ),
                }
            },
        )
        .await
        .map_err(|e| match e {
            RetryError::Failed(e) => ReloadError::Kernel(Box::new(e)),
            RetryError::Cancelled(why) => ReloadError::Cancelled(why),
        })
    }

    fn count_map_error(&self, e: &KernelError) {
        self.metrics
            .bpf_reconcile_errors
            .get_or_create(&MapLabels {
                map: e.map_name().unwrap_or("none"),
            })
            .inc();
    }

    /// Compares the maps with the state of the served configuration and
    /// repairs what differs (an entry changed or removed by another program,
    /// or a restore that failed): each difference is logged with map and key
    /// and counted in `sluice_bpf_map_drift_total`.
    pub async fn check_drift(&self) -> Result<ReconcileReport, ReloadError> {
        let Some(k) = &self.kernel else {
            return Ok(ReconcileReport::default());
        };
        // No change is being applied meanwhile: its maps would look like drift.
        let _running = self.shards.lock().await;
        if self.generation() == 0 {
            // Nothing applied yet: pinned entries are a predecessor's, kept
            // until the first configuration replaces them.
            return Ok(ReconcileReport::default());
        }
        let desired = self
            .kernel_applied
            .lock()
            .expect("kernel state lock")
            .clone();
        let mut k = k.lock().expect("kernel lock");
        if !k.owned_by_us() {
            // A successor agent took the pinned maps over: its state is the
            // right one now, and "repairing" it back would undo the hand-over.
            return Ok(ReconcileReport::default());
        }
        crate::drift::repair(&mut k.maps, &desired, &self.metrics)
            .map_err(|e| ReloadError::Kernel(Box::new(e)))
    }

    /// Asks the drift checker to check now instead of at its next period.
    pub fn request_drift_check(&self) {
        self.drift_requested.notify_one();
    }

    /// Resolves when a drift check is requested.
    pub(crate) async fn drift_check_requested(&self) {
        self.drift_requested.notified().await
    }

    /// Ends every retry wait: the agent is stopping.
    pub fn cancel_retries(&self) {
        self.interrupt.stop();
    }

    /// Records a rejected change: logged, counted, shown on `/config`.
    pub fn reject(&self, error: &ReloadError) {
        tracing::error!(error = %error, "configuration change rejected; the previous configuration keeps serving");
        self.metrics
            .config_reloads
            .get_or_create(&ConfigLabels { result: "rejected" })
            .inc();
        self.metrics.config_last_reload_successful.set(0);
        let mut notes = self.notes.lock().expect("notes lock");
        notes.last_rejection = Some(error.to_string());
        notes.last_rejected_at = Some(unix_now());
    }

    /// The kernel state of the served snapshot, shared (read-only use) with
    /// the metrics collector that reports map occupancy.
    pub fn kernel_applied(&self) -> Arc<Mutex<KernelDesired>> {
        self.kernel_applied.clone()
    }

    /// Open downstream connections and the connection limit of each running
    /// shard (its bulkhead). Every accepted connection holds one permit of
    /// the shard's semaphore until it closes, and each accept loop takes its
    /// permit before accepting; those are not connections and are counted
    /// out. Exact below the limit; at the limit a loop may be waiting for a
    /// permit instead of holding one, so `open` can read up to one per
    /// socket low there.
    pub fn shard_connections(&self) -> BTreeMap<ShardId, ShardConnections> {
        self.connection_limits
            .lock()
            .expect("limits lock")
            .iter()
            .map(|(id, (sem, loops))| {
                let limit = self.max_connections;
                let held = limit.saturating_sub(sem.available_permits());
                let open = held.saturating_sub(*loops);
                (*id, ShardConnections { open, limit })
            })
            .collect()
    }

    /// Where each served Gateway receives connections now.
    pub async fn shard_infos(&self) -> BTreeMap<ObjectRef, ShardInfo> {
        let running = self.shards.lock().await;
        running
            .iter()
            .map(|(id, s)| {
                let socket_addrs = s
                    .servers
                    .values()
                    .flat_map(|srv| srv.local_addrs().to_vec())
                    .collect();
                (
                    s.gateway.clone(),
                    ShardInfo {
                        id: *id,
                        socket_addrs,
                    },
                )
            })
            .collect()
    }

    /// Stops every accept loop and drains connections.
    ///
    /// When a successor agent has taken over the pinned eBPF datapath, the
    /// connections sk_lookup queued on our sockets before the switch are served
    /// first, so a restart refuses nothing.
    pub async fn shutdown(&self) {
        let handover = self
            .kernel
            .as_ref()
            .is_some_and(|k| !k.lock().expect("kernel lock").owned_by_us());
        if handover {
            tracing::info!(
                "a successor agent owns the datapath; serving queued connections before stopping"
            );
        }
        let mut running = self.shards.lock().await;
        self.connection_limits.lock().expect("limits lock").clear();
        // Kept for the next agent: new SYNs wait for the next agent's
        // sockets (dropped by XDP, retransmitted by clients), then what is
        // queued on ours is served.
        let keep = !handover
            && self.kernel.as_ref().is_some_and(|k| {
                let mut k = k.lock().expect("kernel lock");
                if !k.keep_on_exit() {
                    return false;
                }
                // XDP drops new SYNs first (clients retransmit them to the
                // next agent); then our sockets leave the steering map.
                if let Err(e) = k.park_listeners() {
                    tracing::warn!(error = %e, "parking the gateway listeners for the next agent");
                }
                for id in running.keys() {
                    for ipv6 in [false, true] {
                        let _ = k.clear_shard_socket(*id, ipv6);
                    }
                }
                true
            });
        let handover = handover || keep;
        for (_, shard) in std::mem::take(&mut *running) {
            for (_, server) in shard.udp {
                server.shutdown().await;
            }
            for (_, server) in shard.servers {
                if handover {
                    server.shutdown_after_backlog().await;
                } else {
                    server.shutdown().await;
                }
            }
        }
    }

    /// Binds what the snapshot needs and the running shards do not have yet.
    fn prepare_sockets(
        &self,
        snapshot: &Snapshot,
        running: &BTreeMap<ShardId, RunningShard>,
    ) -> Result<Prepared, ReloadError> {
        let mut prepared = Prepared::default();
        for shard in &snapshot.shards {
            let existing = running
                .get(&shard.id)
                .filter(|r| r.gateway == shard.gateway);
            let mut sockets = Vec::new();
            match &self.kernel {
                None => {
                    for addr in wanted_binds(shard) {
                        if existing.is_some_and(|r| r.servers.contains_key(&addr)) {
                            continue;
                        }
                        match ShardSocket::bind(addr) {
                            Ok(s) => sockets.push((addr, s)),
                            // A host without IPv6 still serves IPv4 on the wildcard.
                            Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
                                tracing::warn!(gateway = %shard.gateway, %addr, error = %e, "IPv6 wildcard not bound");
                            }
                            // Dropping `prepared` closes what this change bound so far.
                            Err(source) => {
                                // Another served Gateway still holds the address: it
                                // is released only after this change is in effect.
                                if let Some(holder) = running.values().find(|r| {
                                    r.gateway != shard.gateway && r.servers.contains_key(&addr)
                                }) {
                                    return Err(ReloadError::AddressHeld {
                                        gateway: shard.gateway.clone(),
                                        holder: holder.gateway.to_string(),
                                        addr,
                                    });
                                }
                                return Err(ReloadError::Listen {
                                    gateway: shard.gateway.clone(),
                                    addr,
                                    source,
                                });
                            }
                        }
                    }
                }
                Some(k) if existing.is_none() => {
                    let mut k = k.lock().expect("kernel lock");
                    for ipv6 in [false, true] {
                        let s = match ShardSocket::steering(ipv6) {
                            Ok(s) => s,
                            Err(e) if ipv6 => {
                                tracing::warn!(gateway = %shard.gateway, error = %e, "no IPv6 loopback; IPv6 not steered");
                                continue;
                            }
                            Err(source) => {
                                for (id, v6) in prepared.kernel_slots_of_new_shards() {
                                    let _ = k.clear_shard_socket(id, v6);
                                }
                                return Err(ReloadError::Listen {
                                    gateway: shard.gateway.clone(),
                                    addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                                    source,
                                });
                            }
                        };
                        if let Err(e) = k.set_shard_socket(shard.id, ipv6, &s.listener) {
                            for (id, v6) in prepared.kernel_slots_of_new_shards() {
                                let _ = k.clear_shard_socket(id, v6);
                            }
                            return Err(ReloadError::Kernel(Box::new(e)));
                        }
                        prepared.kernel_slots.push((shard.id, ipv6));
                        sockets.push((s.local, s));
                    }
                }
                Some(_) => {}
            }
            if !sockets.is_empty() {
                prepared
                    .shards
                    .push((shard.id, shard.gateway.clone(), sockets));
            }
            let mut udp = Vec::new();
            for addr in wanted_udp_binds(shard) {
                if existing.is_some_and(|r| r.udp.contains_key(&addr)) {
                    continue;
                }
                match crate::gateway::udp::bind(addr) {
                    Ok(s) => udp.push((addr, s)),
                    Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
                        tracing::warn!(gateway = %shard.gateway, %addr, error = %e, "IPv6 wildcard not bound (UDP)");
                    }
                    Err(source) => {
                        if let Some(holder) = running
                            .values()
                            .find(|r| r.gateway != shard.gateway && r.udp.contains_key(&addr))
                        {
                            return Err(ReloadError::AddressHeld {
                                gateway: shard.gateway.clone(),
                                holder: holder.gateway.to_string(),
                                addr,
                            });
                        }
                        return Err(ReloadError::Listen {
                            gateway: shard.gateway.clone(),
                            addr,
                            source,
                        });
                    }
                }
            }
            if !udp.is_empty() {
                prepared.udp.push((shard.id, shard.gateway.clone(), udp));
            }
        }
        Ok(prepared)
    }

    /// Watches the config directory and applies each change until the
    /// returned task is aborted.
    pub fn watch(self: &Arc<Self>) -> Result<tokio::task::JoinHandle<()>, ConfigError> {
        let mut watcher = DirWatcher::new(&self.config_dir)?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let mut open = watcher.changed(DEBOUNCE).await;
            while open {
                // A change that arrives while one is applied supersedes it
                // (ending its retries, if it is retrying) and is applied next.
                let mut pending = false;
                let apply = this.load_and_apply();
                tokio::pin!(apply);
                let result = loop {
                    tokio::select! {
                        r = &mut apply => break r,
                        more = watcher.notified(), if open && !pending => {
                            open = more;
                            if more {
                                pending = true;
                                this.interrupt.supersede();
                            }
                        }
                    }
                };
                match result {
                    Ok(_) => tracing::info!(
                        generation = this.generation.load(Ordering::Acquire),
                        "configuration reloaded"
                    ),
                    Err(ReloadError::Cancelled(why)) => {
                        tracing::info!("configuration change not applied: {why}")
                    }
                    Err(e) => this.reject(&e),
                }
                open = open
                    && if pending {
                        watcher.settle(DEBOUNCE).await
                    } else {
                        watcher.changed(DEBOUNCE).await
                    };
            }
        }))
    }
}

/// Gives the heap pages freed by a reload back to the kernel. Parsing and
/// compiling a large config allocates far more than the snapshot keeps:
/// without this the agent's RSS stays at the peak of the last reload. Runs
/// off the async workers (it walks the heap) and after the swap, so it never
/// delays a change taking effect.
///
/// Both allocators need it. glibc (C libraries, and the whole heap in tests
/// and benches) keeps freed memory in its arenas until `malloc_trim`. The
/// agent binary's mimalloc ([`crate::alloc`]) purges freed pages a second
/// after they are freed, but only when some thread next allocates or frees
/// enough to look: an idle agent kept a reload's garbage (7 MB anonymous at
/// 5,000 routes, a quarter of its heap) until traffic came.
///
/// Coalesced: a trim walks the whole heap (tens of milliseconds at 50,000
/// routes), so changes in quick succession get one trim, [`TRIM_AFTER`]
/// after the first of them, instead of one each competing for the CPU.
fn release_free_heap() {
    static PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(TRIM_AFTER).await;
        PENDING.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(|| {
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only returns free pages to the kernel; it is
            // thread-safe and has no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
            crate::alloc::release_free_pages();
        })
        .await;
    });
}

/// How long after a change its heap is trimmed ([`release_free_heap`]).
const TRIM_AFTER: Duration = Duration::from_millis(500);

/// A new socket and the key it is kept under in [`RunningShard::servers`].
type KeyedSocket = (SocketAddr, ShardSocket);

/// A new UDP listener socket and the address it is kept under in
/// [`RunningShard::udp`].
type KeyedUdpSocket = (SocketAddr, std::net::UdpSocket);

/// Sockets bound for one change, not yet serving.
#[derive(Default)]
struct Prepared {
    shards: Vec<(ShardId, ObjectRef, Vec<KeyedSocket>)>,
    /// UDP sockets bound for this change, by shard.
    udp: Vec<(ShardId, ObjectRef, Vec<KeyedUdpSocket>)>,
    /// SockMap slots set for shards new in this change.
    kernel_slots: Vec<(ShardId, bool)>,
}

impl Prepared {
    fn kernel_slots_of_new_shards(&self) -> Vec<(ShardId, bool)> {
        self.kernel_slots.clone()
    }
}

/// Userspace mode: each (address, port) the shard's TCP listeners need.
fn wanted_binds(shard: &Shard) -> Vec<SocketAddr> {
    binds(shard, shard.ports())
}

/// Both datapaths: each (address, port) the shard's UDP listeners need.
fn wanted_udp_binds(shard: &Shard) -> Vec<SocketAddr> {
    binds(shard, shard.udp_ports())
}

/// Each of the shard's addresses (both wildcards when it has none) with
/// each of `ports`.
fn binds(shard: &Shard, ports: Vec<u16>) -> Vec<SocketAddr> {
    let addrs: Vec<IpAddr> = if shard.addresses.is_empty() {
        vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]
    } else {
        shard.addresses.clone()
    };
    ports
        .into_iter()
        .flat_map(|port| addrs.iter().map(move |ip| SocketAddr::new(*ip, port)))
        .collect()
}
