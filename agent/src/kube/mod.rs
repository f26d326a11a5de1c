//! The Kubernetes config source: watches the API server ([`watch`]),
//! converts objects through the same validation as the directory source
//! ([`convert`]), debounces, and feeds [`Runtime::apply_config`], together
//! with the namespace identity of this node's pods ([`pods`]), only the
//! Gateways this node serves ([`node_select`]) and only referenced Secrets
//! and ConfigMaps ([`held`]). SluicePolicies that do not validate fail
//! closed ([`convert`]). One agent of the fleet, elected with a Lease ([`lease`]),
//! writes status back ([`status`], from the shared status model).
//!
//! When the API server is unreachable the agent keeps serving the last state
//! it applied, the watches retry with backoff, and the outage shows as
//! `sluice_config_source_stale_seconds` and in `/readyz`'s body (still 200:
//! see [`crate::admin::SourceHealth`]).
pub mod convert;
pub mod held;
pub mod ingress;
pub mod lease;
pub mod node_select;
pub mod pods;
pub mod status;
pub mod watch;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use ::kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{gauge::ConstGauge, MetricType},
};
use tokio::{
    sync::{mpsc, watch as signal},
    task::JoinHandle,
};

use crate::{
    admin::{AdminState, SourceHealth},
    reload::Runtime,
};
use convert::Converter;
use lease::{Election, LeaseSettings};
use status::{ApiStatusWriter, StatusWriter};
use watch::Watches;

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Kubeconfig file; `None`: `KUBECONFIG`, `~/.kube/config` or in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (namespaced RBAC); `None`: cluster-wide.
    pub watch_namespace: Option<String>,
    /// This node: part of the lease identity, its Pods give namespace
    /// identity, its labels select Gateways (`sluice.dev/node-selector`).
    pub node_name: String,
    /// Where pod cgroups are looked for; `None`: the cgroup v2 mount.
    pub cgroup_root: Option<PathBuf>,
    /// Label selector of the Gateways this agent serves; `None`: all of our class.
    pub gateway_selector: Option<String>,
    /// Namespace of the status-writer Lease (the agent's own).
    pub lease_namespace: String,
    pub lease_name: String,
    /// Identity in the Lease; defaults to the node name.
    pub lease_identity: Option<String>,
    pub lease_duration: Duration,
    pub lease_renew_every: Duration,
    /// Quiet time after a change before converting: a `kubectl apply` of
    /// many objects becomes one apply.
    pub debounce: Duration,
    /// Where the Ingress entry point listens ([`ingress`]).
    pub ingress: ingress::IngressSettings,
    /// Ignored ingress-nginx annotations, for `sluice_ingress_ignored_annotations`.
    pub ignored_annotations: Arc<ingress::metrics::IgnoredAnnotations>,
}

impl KubeSettings {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            kubeconfig: None,
            watch_namespace: None,
            node_name: node_name.into(),
            cgroup_root: None,
            gateway_selector: None,
            lease_namespace: "sluice-system".into(),
            lease_name: "sluice-status-writer".into(),
            lease_identity: None,
            lease_duration: Duration::from_secs(15),
            lease_renew_every: Duration::from_secs(5),
            debounce: Duration::from_millis(20),
            ingress: ingress::IngressSettings::default(),
            ignored_annotations: Arc::default(),
        }
    }
}

/// Errors starting the Kubernetes source.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: ::kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Infer(#[from] ::kube::config::InferConfigError),
    #[error("creating the Kubernetes client: {0}")]
    Client(#[from] ::kube::Error),
}

async fn client(settings: &KubeSettings) -> Result<Client, KubeError> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let err = |source| KubeError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            ::kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => ::kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// The running Kubernetes source.
pub struct KubeSource {
    stop: signal::Sender<bool>,
    supervisor: JoinHandle<()>,
}

/// Why a session ended.
enum SessionEnd {
    Stop,
    /// The API server answers a freshly read configuration but not the one
    /// in use (new CA or credentials): start over with the new one.
    Reconnect,
}

impl KubeSource {
    /// Starts watching. Returns at once; `admin.ready` turns true after the
    /// first complete sync has been applied. Fails only when no client can
    /// be configured at all.
    pub async fn start(
        settings: KubeSettings,
        runtime: Arc<Runtime>,
        admin: Arc<AdminState>,
    ) -> Result<Self, KubeError> {
        let first = client(&settings).await?;
        let (stop, stop_rx) = signal::channel(false);
        let supervisor = tokio::spawn(async move {
            let mut next = Some(first);
            loop {
                let client = match next.take() {
                    Some(c) => c,
                    None => match client(&settings).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "Kubernetes client; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    },
                };
                match session(client, &settings, &runtime, &admin, stop_rx.clone()).await {
                    SessionEnd::Stop => return,
                    SessionEnd::Reconnect => {
                        tracing::warn!("API server credentials changed; reconnecting (the last applied state keeps serving)")
                    }
                }
            }
        });
        Ok(Self { stop, supervisor })
    }

    /// Stops watching and status writing, and releases the lease.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.supervisor.await;
    }
}

/// One connection's worth of watches, election and status writing.
async fn session(
    client: Client,
    settings: &KubeSettings,
    runtime: &Arc<Runtime>,
    admin: &Arc<AdminState>,
    mut stop: signal::Receiver<bool>,
) -> SessionEnd {
    let health = admin.source_health.clone();
    let (changed_tx, changed_rx) = mpsc::channel(1);
    let watches = Watches::start(&client, settings, changed_tx, health.clone());
    let election = Election::spawn(
        client.clone(),
        LeaseSettings {
            namespace: settings.lease_namespace.clone(),
            name: settings.lease_name.clone(),
            identity: settings
                .lease_identity
                .clone()
                .unwrap_or_else(|| settings.node_name.clone()),
            duration: settings.lease_duration,
            renew_every: settings.lease_renew_every,
        },
    );
    let (end_tx, end_rx) = signal::channel(false);
    let (applied_tx, applied_rx) = signal::channel(None);
    let writer = ApiStatusWriter::new(client.clone(), watches.stores.clone());
    let (reconnect_tx, mut reconnect_rx) = mpsc::channel(1);
    let tasks = vec![
        tokio::spawn(probe(
            client,
            settings.clone(),
            health,
            reconnect_tx,
            end_rx.clone(),
        )),
        tokio::spawn(status_loop(
            Box::new(writer),
            // Namespaced mode has no RBAC to write cluster-scoped status.
            settings.watch_namespace.is_none(),
            applied_rx,
            election.is_leader.clone(),
            end_rx.clone(),
        )),
        tokio::spawn(sync_loop(
            watches,
            Converter::new(settings.ingress.clone()),
            settings.ignored_annotations.clone(),
            settings
                .cgroup_root
                .clone()
                .or_else(crate::config::identity::cgroup2_root),
            settings.debounce,
            changed_rx,
            runtime.clone(),
            admin.clone(),
            applied_tx,
            end_rx,
        )),
    ];
    let end = tokio::select! {
        _ = stop.changed() => SessionEnd::Stop,
        _ = reconnect_rx.recv() => SessionEnd::Reconnect,
    };
    let _ = end_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    election.shutdown().await;
    end
}

/// What status is computed from: the model's status of the applied
/// configuration and the conversion it came from.
pub struct StatusInput {
    pub status: crate::control::status::Status,
    pub converted: convert::Converted,
}

/// What was applied last, for status.
type Applied = Option<Arc<StatusInput>>;

/// While a pod's cgroup has not appeared, look again this often.
const POD_RETRY: Duration = Duration::from_secs(5);

#[allow(clippy::too_many_arguments)]
async fn sync_loop(
    watches: Watches,
    mut converter: Converter,
    ignored_annotations: Arc<ingress::metrics::IgnoredAnnotations>,
    cgroup_root: Option<PathBuf>,
    debounce: Duration,
    mut changed: mpsc::Receiver<()>,
    runtime: Arc<Runtime>,
    admin: Arc<AdminState>,
    applied: signal::Sender<Applied>,
    mut stop: signal::Receiver<bool>,
) {
    tokio::select! {
        _ = watches.synced() => {}
        _ = stop.changed() => return,
    }
    tracing::info!("Kubernetes objects listed; applying");
    // Whether the last apply failed: retry even if the objects did not change
    // (a port may have been freed meanwhile).
    let mut retry = false;
    let mut applied_identity = None;
    loop {
        let started = Instant::now();
        let convert = |converter: &mut Converter| {
            converter.convert(
                &watches.stores,
                &watches.held_secrets(),
                &watches.config_maps.held(),
            )
        };
        let mut converted = convert(&mut converter);
        // Newly referenced Secrets and ConfigMaps are fetched before
        // applying, so a new HTTPS listener starts with its certificate, a
        // new BackendTLSPolicy with its CA and a new SluicePolicy with its
        // keys (a policy whose Secret is missing fails closed meanwhile).
        let gateways = || converted.config.gateways.iter().chain(&converted.elsewhere);
        let mut secrets = held::referenced_secrets(gateways());
        secrets.extend(held::referenced_listener_set_secrets(
            &converted.config,
            gateways(),
        ));
        let policy_secrets = held::referenced_policy_secrets(&converted.config.policies);
        let config_maps = held::referenced_config_maps(
            gateways(),
            &converted.config.backend_tls_policies,
            &converted.config.policies,
        );
        let (more_secrets, more_policy_secrets, more_maps) = tokio::join!(
            watches.secrets.want(secrets),
            watches.policy_secrets.want(policy_secrets),
            watches.config_maps.want(config_maps)
        );
        if more_secrets || more_policy_secrets || more_maps {
            converted = convert::Converted {
                changed: true,
                ..convert(&mut converter)
            };
        }
        let pods = watches
            .stores
            .get(&watch::Kind::Pod)
            .map(|s| pods::collect(&s.state(), cgroup_root.as_deref()))
            .unwrap_or_default();
        let identity_changed = applied_identity.as_ref() != Some(&pods.identity);
        let mut applied_now = false;
        if converted.changed || retry || identity_changed {
            let errors: Vec<String> = converted
                .errors
                .iter()
                .flat_map(|(_, e)| e.iter().map(|e| e.to_string()))
                .collect();
            for e in &errors {
                tracing::warn!("object left out: {e}");
            }
            for w in &converted.ingress_warnings {
                tracing::warn!("{w}");
            }
            ignored_annotations.set(converted.ignored_annotations.clone());
            let mut config = converted.config.clone();
            config.identity = pods.identity.clone();
            match runtime.apply_config(config).await {
                Ok(_) => {
                    retry = false;
                    applied_now = true;
                    applied_identity = Some(pods.identity.clone());
                    {
                        let mut notes = runtime.notes.lock().expect("notes lock");
                        notes.object_errors = errors;
                        notes.ingress_warnings = converted.ingress_warnings.clone();
                        notes.held_secrets = watches.held_secret_names();
                        notes.held_config_maps = watches.config_maps.held_names();
                        notes.gateways_elsewhere = converted
                            .elsewhere
                            .iter()
                            .map(|g| g.id.to_string())
                            .collect();
                        notes.unresolved_pods = pods.unresolved.clone();
                    }
                    if !admin.ready.swap(true, Ordering::AcqRel) {
                        tracing::info!("first Kubernetes sync applied; ready");
                    }
                    tracing::info!(
                        generation = runtime.generation(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Kubernetes configuration applied"
                    );
                }
                Err(e) => {
                    retry = true;
                    runtime.reject(&e);
                }
            }
        }
        // Status follows what was applied; echoes of our own status writes
        // change nothing that conversion reads and cause no recomputation.
        if applied_now || converted.changed || applied.borrow().is_none() {
            let status = runtime.status.lock().expect("status lock").clone();
            applied.send_replace(Some(Arc::new(StatusInput { status, converted })));
        }
        // Wait for a change, then for `debounce` of quiet.
        tokio::select! {
            c = changed.recv() => if c.is_none() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)), if retry => {}
            _ = tokio::time::sleep(POD_RETRY), if !pods.unresolved.is_empty() => {}
            _ = stop.changed() => return,
        }
        // Not longer than DEBOUNCE_MAX in all: the echoes of a status round
        // over thousands of objects arrive every few milliseconds for
        // seconds, and a change made meanwhile must not wait for them to end
        // (it did: 4 s for the first change after 1,000 new routes).
        tokio::select! {
            settled = crate::config::settle(&mut changed, debounce, DEBOUNCE_MAX) => {
                if !settled {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The longest a change waits for the quiet period (`KubeSettings::debounce`)
/// while more changes keep coming.
const DEBOUNCE_MAX: Duration = Duration::from_millis(100);

/// The status of everything of our classes, for the leader. Gateways this
/// node does not serve (`sluice.dev/node-selector`) are not in the applied
/// model; their status is computed from the whole configuration, as if
/// served: status describes the Gateway, not this node, and the nodes that
/// match the selector serve it. Compiled only when there are such Gateways,
/// by a compiler of the status writer's own (so only what changed since its
/// last round is compiled again).
fn fleet_status(input: &StatusInput, fleet: &mut FleetCompiler) -> crate::control::status::Status {
    if input.converted.elsewhere.is_empty() {
        return input.status.clone();
    }
    let mut all = input.converted.config.clone();
    all.gateways
        .extend(input.converted.elsewhere.iter().cloned());
    let run = fleet.state.compile();
    let env = crate::control::PolicyEnv {
        metrics: &fleet.metrics,
        state: &run,
    };
    let status = fleet
        .compiler
        .compile(&all, &mut crate::control::ShardIds::default(), 0, &env)
        .status;
    fleet.state.commit(run.id());
    status
}

/// What [`fleet_status`] compiles with: kept across status rounds.
#[derive(Default)]
struct FleetCompiler {
    compiler: crate::control::Compiler,
    state: crate::policy::state::PolicyState,
    metrics: crate::policy::PolicyMetrics,
}

/// At most one round of status writes per this long: changes that come
/// faster are coalesced into the next round, so that writing status never
/// competes with applying configuration.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// After a change, how long to wait for more before a round: a burst of
/// changes (and the apply they cause) finishes first.
const STATUS_SETTLE: Duration = Duration::from_millis(50);

/// Writes status whenever the applied state or leadership changes, while
/// leader: rounds at most every [`STATUS_INTERVAL`], each writing only the
/// objects whose wanted status differs from what this term already wrote.
/// Failed writes are retried after a pause.
async fn status_loop(
    writer: Box<dyn StatusWriter>,
    write_class_status: bool,
    mut applied: signal::Receiver<Applied>,
    mut leader: signal::Receiver<bool>,
    mut stop: signal::Receiver<bool>,
) {
    // Per object, the status written (or found as wanted) in this term.
    let mut written: HashMap<(watch::Kind, crate::config::ObjectRef), status::ObjectStatus> =
        HashMap::new();
    let fleet = Arc::new(std::sync::Mutex::new(FleetCompiler::default()));
    loop {
        let current = applied.borrow_and_update().clone();
        let leading = *leader.borrow_and_update();
        if !leading {
            // A new term writes everything once more (the writer skips what
            // the API server already has).
            written.clear();
        }
        let round = tokio::time::Instant::now();
        let failed = match (leading, current) {
            (true, Some(input)) => {
                let compute = input.clone();
                let fleet = fleet.clone();
                let objects = tokio::task::spawn_blocking(move || {
                    let mut fleet = fleet.lock().expect("fleet compiler lock");
                    status::objects(&fleet_status(&compute, &mut fleet), &compute.converted)
                })
                .await
                .unwrap_or_default();
                let mut failed = false;
                let mut wanted = HashSet::new();
                for s in objects {
                    if !write_class_status && matches!(s, status::ObjectStatus::GatewayClass(_)) {
                        continue;
                    }
                    let key = s.target();
                    wanted.insert(key.clone());
                    if written.get(&key) == Some(&s) {
                        continue;
                    }
                    match writer.write(&s).await {
                        Ok(done) => {
                            if done {
                                tracing::debug!(?s, "status written");
                            }
                            written.insert(key, s);
                        }
                        Err(e) => {
                            failed = true;
                            tracing::warn!(error = %e, "status not written; will retry");
                        }
                    }
                }
                written.retain(|k, _| wanted.contains(k));
                failed
            }
            _ => false,
        };
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(2)), if failed => {}
            _ = stop.changed() => return,
        }
        // Coalesce: let a burst finish, and keep rounds apart.
        let until = (tokio::time::Instant::now() + STATUS_SETTLE).max(round + STATUS_INTERVAL);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Checks the API server every second: the watches only notice an outage
/// when they reconnect, and only an answer tells that it is over. After a few
/// seconds of failures it also tries a freshly read configuration, and asks
/// for a reconnect when that one works (the server came back with a new CA
/// or new credentials).
async fn probe(
    client: Client,
    settings: KubeSettings,
    health: Arc<SourceHealth>,
    reconnect: mpsc::Sender<()>,
    mut stop: signal::Receiver<bool>,
) {
    let answers = |c: Client| async move {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), c.apiserver_version()).await,
            Ok(Ok(_))
        )
    };
    let mut failing_since: Option<Instant> = None;
    loop {
        if answers(client.clone()).await {
            health.ok();
            failing_since = None;
        } else {
            health.failed();
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(3) {
                if let Ok(fresh) = self::client(&settings).await {
                    if answers(fresh).await {
                        let _ = reconnect.try_send(());
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `sluice_config_source_stale_seconds`, computed at scrape time.
#[derive(Debug)]
pub struct StalenessCollector(pub Arc<SourceHealth>);

impl Collector for StalenessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric = encoder.encode_descriptor(
            "sluice_config_source_stale_seconds",
            "Seconds since the config source (Kubernetes API) became unreachable; 0 while reachable \
             (always 0 for a local directory). The last good configuration keeps serving meanwhile.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.0.stale_for().as_secs_f64()).encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::control::status::{
        Condition, ParentRefStatus, RouteParentStatus, RouteStatus, Status,
    };
    use status::{ObjectStatus, WriteFuture};

    /// Records what it is asked to write.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(String, String)>>>);

    impl StatusWriter for Recorder {
        fn write<'a>(&'a self, s: &'a ObjectStatus) -> WriteFuture<'a> {
            let (_, id) = s.target();
            let message = match s {
                ObjectStatus::HttpRoute(r) => r.parents[0].conditions[0].message.clone(),
                _ => String::new(),
            };
            self.0.lock().unwrap().push((id.name, message));
            Box::pin(async { Ok(true) })
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<(String, String)> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    fn route(name: &str, message: &str) -> RouteStatus {
        RouteStatus {
            kind: "HTTPRoute",
            namespace: "ns".into(),
            name: name.into(),
            parents: vec![RouteParentStatus {
                parent_ref: ParentRefStatus {
                    group: "gateway.networking.k8s.io",
                    kind: "Gateway",
                    namespace: "ns".into(),
                    name: "gw".into(),
                    section_name: None,
                    port: None,
                },
                controller_name: crate::control::CONTROLLER_NAME,
                conditions: vec![Condition {
                    kind: "Accepted",
                    status: "True",
                    reason: "Accepted",
                    message: message.into(),
                    observed_generation: None,
                }],
            }],
        }
    }

    fn applied(routes: &[(&str, &str)]) -> Applied {
        let status = Status {
            http_routes: routes
                .iter()
                .map(|(n, m)| route(n, m))
                .collect::<Vec<_>>()
                .into(),
            ..Status::default()
        };
        Some(Arc::new(StatusInput {
            status,
            converted: convert::Converted::default(),
        }))
    }

    /// Lets the loop run: paused time moves on only when every task waits.
    async fn settle() {
        tokio::time::sleep(STATUS_INTERVAL * 2).await;
    }

    #[tokio::test(start_paused = true)]
    async fn status_writes_are_coalesced_and_only_changed_objects_written() {
        let recorder = Recorder::default();
        let (applied_tx, applied_rx) = signal::channel(applied(&[("a", ""), ("b", ""), ("c", "")]));
        let (leader_tx, leader_rx) = signal::channel(true);
        let (stop_tx, stop_rx) = signal::channel(false);
        let task = tokio::spawn(status_loop(
            Box::new(recorder.clone()),
            true,
            applied_rx,
            leader_rx,
            stop_rx,
        ));
        settle().await;
        let mut first = recorder.take();
        first.sort();
        assert_eq!(first.len(), 3, "every object once: {first:?}");

        // One route changes: only it is written.
        applied_tx.send_replace(applied(&[("a", ""), ("b", "changed"), ("c", "")]));
        settle().await;
        assert_eq!(recorder.take(), [("b".to_owned(), "changed".to_owned())]);

        // A burst of changes: one round, with the last state.
        for i in 0..5 {
            applied_tx.send_replace(applied(&[
                ("a", &format!("v{i}")),
                ("b", "changed"),
                ("c", ""),
            ]));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        settle().await;
        assert_eq!(recorder.take(), [("a".to_owned(), "v4".to_owned())]);

        // Rounds stay STATUS_INTERVAL apart however often the state changes.
        let start = tokio::time::Instant::now();
        let mut rounds = Vec::new();
        for i in 0..20 {
            applied_tx.send_replace(applied(&[
                ("a", &format!("w{i}")),
                ("b", "changed"),
                ("c", ""),
            ]));
            tokio::time::sleep(Duration::from_millis(25)).await;
            if !recorder.take().is_empty() {
                rounds.push(start.elapsed());
            }
        }
        assert!(rounds.len() >= 2, "{rounds:?}");
        for w in rounds.windows(2) {
            assert!(w[1] - w[0] >= STATUS_INTERVAL, "{rounds:?}");
        }

        // Leadership lost and regained: everything is written once more.
        leader_tx.send_replace(false);
        settle().await;
        assert!(recorder.take().is_empty(), "no writes while not leading");
        leader_tx.send_replace(true);
        settle().await;
        assert_eq!(recorder.take().len(), 3);

        stop_tx.send_replace(true);
        task.await.unwrap();
    }
}
