//! Watches of the Kubernetes objects Sluice reads: one reflector (watch +
//! in-memory store) per kind, each retrying with backoff on its own. The
//! stores are what [`super::convert`] reads; every change pokes one channel so
//! the source can debounce and convert once.
//!
//! Besides the config kinds: this node's Pods (`spec.nodeName` field
//! selector, for namespace identity, see [`super::pods`]), this agent's own
//! Node (its labels select Gateways, see [`super::node_select`]), and only
//! the Secrets and ConfigMaps that the configuration references
//! ([`super::held`]): TLS Secrets of Gateways, Opaque Secrets of
//! SluicePolicies, CA and JWKS ConfigMaps. Objects are
//! trimmed before they are stored: nobody reads `managedFields`, and of a Pod
//! or a Node only a few fields.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use ::kube::{
    api::{Api, ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        reflector::{store::Writer, Store},
        utils::Backoff,
        watcher::{self, Event},
        WatchStreamExt,
    },
    Client,
};
use futures::StreamExt;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    held::{HeldKind, HeldStore},
    KubeSettings,
};
use crate::admin::SourceHealth;

/// Group of the Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A kind Sluice watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    GatewayClass,
    Gateway,
    /// `gateway.networking.k8s.io/v1` ListenerSet (optional: Gateway API v1.5+).
    ListenerSet,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    /// `gateway.networking.k8s.io/v1` UDPRoute (optional: experimental channel).
    UdpRoute,
    ReferenceGrant,
    BackendTlsPolicy,
    /// `sluice.dev/v1alpha1` SluicePolicy.
    SluicePolicy,
    Service,
    EndpointSlice,
    Namespace,
    /// Only referenced `kubernetes.io/tls` and `Opaque` Secrets ([`super::held`]).
    Secret,
    /// Only referenced ConfigMaps (CA bundles, JWKS; [`super::held`]).
    ConfigMap,
    /// Pods on this node.
    Pod,
    /// This agent's own Node.
    Node,
    /// `networking.k8s.io/v1` IngressClass ([`super::ingress`]).
    IngressClass,
    /// `networking.k8s.io/v1` Ingress ([`super::ingress`]).
    Ingress,
}

impl Kind {
    /// The kinds converted into the configuration, each with a reflector.
    pub const ALL: [Kind; 16] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::ListenerSet,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
        Kind::UdpRoute,
        Kind::ReferenceGrant,
        Kind::BackendTlsPolicy,
        Kind::SluicePolicy,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::IngressClass,
        Kind::Ingress,
    ];

    /// Group, version, kind and plural as served by the API server.
    pub fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Kind::GatewayClass => (GATEWAY_GROUP, "v1", "GatewayClass", "gatewayclasses"),
            Kind::Gateway => (GATEWAY_GROUP, "v1", "Gateway", "gateways"),
            Kind::ListenerSet => (GATEWAY_GROUP, "v1", "ListenerSet", "listenersets"),
            Kind::HttpRoute => (GATEWAY_GROUP, "v1", "HTTPRoute", "httproutes"),
            Kind::GrpcRoute => (GATEWAY_GROUP, "v1", "GRPCRoute", "grpcroutes"),
            Kind::TlsRoute => (GATEWAY_GROUP, "v1", "TLSRoute", "tlsroutes"),
            Kind::TcpRoute => (GATEWAY_GROUP, "v1", "TCPRoute", "tcproutes"),
            Kind::UdpRoute => (GATEWAY_GROUP, "v1", "UDPRoute", "udproutes"),
            Kind::ReferenceGrant => (GATEWAY_GROUP, "v1", "ReferenceGrant", "referencegrants"),
            Kind::BackendTlsPolicy => (
                GATEWAY_GROUP,
                "v1",
                "BackendTLSPolicy",
                "backendtlspolicies",
            ),
            Kind::SluicePolicy => (
                crate::config::policy::SLUICE_GROUP,
                "v1alpha1",
                "SluicePolicy",
                "sluicepolicies",
            ),
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::EndpointSlice => ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
            Kind::Namespace => ("", "v1", "Namespace", "namespaces"),
            Kind::Secret => ("", "v1", "Secret", "secrets"),
            Kind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
            Kind::Pod => ("", "v1", "Pod", "pods"),
            Kind::Node => ("", "v1", "Node", "nodes"),
            Kind::IngressClass => ("networking.k8s.io", "v1", "IngressClass", "ingressclasses"),
            Kind::Ingress => ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    /// Kinds whose absence (CRD not installed, e.g. a Gateway API older
    /// than v1.1 without GRPCRoute v1, than v1.5 without TLSRoute/TCPRoute v1,
    /// a cluster without the experimental channel's UDPRoute v1,
    /// than v1.4 without BackendTLSPolicy v1 or a cluster without the
    /// SluicePolicy CRD, or RBAC not updated yet for them) must not keep the
    /// agent from serving everything else.
    pub fn optional(self) -> bool {
        matches!(
            self,
            Kind::GrpcRoute
                | Kind::ListenerSet
                | Kind::TlsRoute
                | Kind::TcpRoute
                | Kind::UdpRoute
                | Kind::BackendTlsPolicy
                | Kind::SluicePolicy
                | Kind::ConfigMap
                // RBAC of agents deployed before Ingress support has none.
                | Kind::IngressClass
                | Kind::Ingress
        )
    }

    /// Whether objects of this kind are routes (their status has parents).
    pub fn is_route(self) -> bool {
        self.route_kind().is_some()
    }

    /// The Gateway API kind name of a route kind.
    pub fn route_kind(self) -> Option<&'static str> {
        match self {
            Kind::HttpRoute => Some("HTTPRoute"),
            Kind::GrpcRoute => Some("GRPCRoute"),
            Kind::TlsRoute => Some("TLSRoute"),
            Kind::TcpRoute => Some("TCPRoute"),
            Kind::UdpRoute => Some("UDPRoute"),
            _ => None,
        }
    }

    /// The watched kind of routes of kind name `kind` (`HTTPRoute`, ...).
    pub fn of_route_kind(kind: &str) -> Kind {
        match kind {
            "GRPCRoute" => Kind::GrpcRoute,
            "TLSRoute" => Kind::TlsRoute,
            "TCPRoute" => Kind::TcpRoute,
            "UDPRoute" => Kind::UdpRoute,
            _ => Kind::HttpRoute,
        }
    }

    fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::GatewayClass | Kind::Namespace | Kind::Node | Kind::IngressClass
        )
    }
}

/// The reflector stores, by kind. Cheap to clone (shared readers).
pub type Stores = BTreeMap<Kind, Store<DynamicObject>>;

/// The running watches.
pub struct Watches {
    /// The config kinds ([`Kind::ALL`]) plus [`Kind::Pod`] and [`Kind::Node`].
    pub stores: Stores,
    /// Referenced TLS Secrets (Gateways).
    pub secrets: HeldStore,
    /// Referenced Opaque Secrets (SluicePolicies: API keys, htpasswd, JWKS).
    pub policy_secrets: HeldStore,
    /// Referenced ConfigMaps (CA bundles, JWKS).
    pub config_maps: HeldStore,
    tasks: Vec<JoinHandle<()>>,
}

impl Watches {
    /// Starts one reflector per kind. `changed` gets a token after every
    /// change of any store (it may be full: one pending token is enough).
    pub fn start(
        client: &Client,
        settings: &KubeSettings,
        changed: mpsc::Sender<()>,
        health: std::sync::Arc<SourceHealth>,
    ) -> Self {
        let mut stores = BTreeMap::new();
        let mut tasks = Vec::new();
        let api_for = |kind: Kind| -> Api<DynamicObject> {
            let ar = kind.resource();
            match (&settings.watch_namespace, kind.namespaced()) {
                (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
                _ => Api::all_with(client.clone(), &ar),
            }
        };
        for kind in Kind::ALL.into_iter().chain([Kind::Pod, Kind::Node]) {
            let mut config = watcher::Config::default();
            if let (Some(ns), Kind::Namespace) = (&settings.watch_namespace, kind) {
                // Namespaced mode: only the watched Namespace's labels matter.
                config = config.fields(&format!("metadata.name={ns}"));
            }
            if let (Some(selector), Kind::Gateway | Kind::IngressClass) =
                (&settings.gateway_selector, kind)
            {
                // The Gateways this agent (fleet) serves, and the IngressClasses
                // whose Ingresses it serves; others are not ours.
                config = config.labels(selector);
            }
            let trim: fn(&mut DynamicObject) = match kind {
                Kind::Pod => {
                    // Only this node's pods; RBAC cannot narrow it, the selector does.
                    config = config.fields(&format!("spec.nodeName={}", settings.node_name));
                    super::pods::trim
                }
                Kind::Node => {
                    config = config.fields(&format!("metadata.name={}", settings.node_name));
                    super::node_select::trim
                }
                _ => trim_managed_fields,
            };
            let mut writer = Writer::new(kind.resource());
            stores.insert(kind, writer.as_reader());
            let stream = watcher::watcher(api_for(kind), config)
                .backoff(WatchBackoff::default())
                .modify(trim);
            let changed = changed.clone();
            let health = health.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                // An optional kind that cannot be listed (see `Kind::optional`).
                let mut unavailable = false;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(ev) => {
                            writer.apply_watcher_event(&ev);
                            if matches!(ev, Event::Apply(_) | Event::Delete(_) | Event::InitDone) {
                                unavailable = false;
                                let _ = changed.try_send(());
                            }
                        }
                        Err(e) if kind.optional() && unavailable_kind(&e) => {
                            // Serve without it (an empty store, listed) and
                            // keep trying: the CRD or the permission may come.
                            if !unavailable {
                                unavailable = true;
                                tracing::warn!(kind = ?kind, error = %e, "Kubernetes kind not available (CRD not installed or no RBAC permission); serving without it and retrying");
                                writer.apply_watcher_event(&Event::Init);
                                writer.apply_watcher_event(&Event::InitDone);
                                let _ = changed.try_send(());
                            }
                            // Every attempt starts with `Init`, which resets
                            // the backoff: look again at a calm pace.
                            tokio::time::sleep(UNAVAILABLE_RETRY).await;
                        }
                        Err(e) => {
                            // The store keeps the last listed objects; the
                            // watcher retries with backoff.
                            tracing::warn!(kind = ?kind, error = %e, "Kubernetes watch failed; retrying");
                            health.failed();
                        }
                    }
                }
            }));
        }
        let mut held = |what| {
            let (store, task) = HeldStore::start(
                client.clone(),
                what,
                settings.watch_namespace.clone(),
                changed.clone(),
                health.clone(),
            );
            tasks.push(task);
            store
        };
        let secrets = held(HeldKind::SECRETS);
        let policy_secrets = held(HeldKind::OPAQUE_SECRETS);
        let config_maps = held(HeldKind::CONFIG_MAPS);
        Self {
            stores,
            secrets,
            policy_secrets,
            config_maps,
            tasks,
        }
    }

    /// Waits until every store has been listed once.
    pub async fn synced(&self) {
        for store in self.stores.values() {
            // Only fails when the writer is gone, i.e. on shutdown.
            let _ = store.wait_until_ready().await;
        }
        self.secrets.synced().await;
        self.policy_secrets.synced().await;
        self.config_maps.synced().await;
    }

    /// Every held Secret (TLS and Opaque).
    pub fn held_secrets(&self) -> Vec<DynamicObject> {
        let mut all = self.secrets.held();
        all.extend(self.policy_secrets.held());
        all
    }

    /// `namespace/name` of every held Secret, sorted.
    pub fn held_secret_names(&self) -> Vec<String> {
        let mut all = self.secrets.held_names();
        all.extend(self.policy_secrets.held_names());
        all.sort();
        all
    }

    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a watch error says the kind cannot be listed at all: not served
/// (404) or not permitted (403).
pub(super) fn unavailable_kind(e: &watcher::Error) -> bool {
    let status = match e {
        watcher::Error::InitialListFailed(::kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(::kube::Error::Api(s))
        | watcher::Error::WatchFailed(::kube::Error::Api(s)) => s,
        watcher::Error::WatchError(s) => s,
        _ => return false,
    };
    // By code: a missing resource answers with a plain-text body, whose
    // reconstructed status has no reason (`is_not_found` wants one).
    matches!(status.code, 403 | 404) || status.is_not_found() || status.is_forbidden()
}

/// Nothing reads `managedFields`; with thousands of objects they are a
/// good part of the memory.
fn trim_managed_fields(obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
}

/// Exponential backoff for re-watching, 250 ms doubling up to 5 s: an agent
/// serving traffic must converge soon after the API server is back, and a
/// few requests per kind every 5 s is no load for an API server.
///
/// The watcher calls `reset` on every event, and it emits `Init` before each
/// list attempt, failed ones included: taken literally that would retry a
/// down API server every 250 ms forever. So a reset only counts once no
/// attempt has failed for longer than the longest wait.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    last_failure: Option<Instant>,
}

/// How often an optional kind that is not available is looked for again.
pub(super) const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_FIRST,
            last_failure: None,
        }
    }
}

impl WatchBackoff {
    fn failed_at(&mut self, now: Instant) -> Duration {
        self.last_failure = Some(now);
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset_at(&mut self, now: Instant) {
        let calm = self
            .last_failure
            .is_none_or(|t| now.saturating_duration_since(t) > 2 * BACKOFF_MAX);
        if calm {
            self.next = BACKOFF_FIRST;
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.failed_at(Instant::now()))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.reset_at(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_once_calm() {
        let t0 = Instant::now();
        let mut b = WatchBackoff::default();
        let mut at = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let wait = b.failed_at(at);
            waits.push(wait.as_millis());
            at += wait;
            // The watcher's `Init` before the next attempt resets: ignored
            // while attempts keep failing.
            b.reset_at(at);
        }
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);

        // Healthy for longer than twice the cap: back to the first wait.
        b.reset_at(at + 2 * BACKOFF_MAX + Duration::from_millis(1));
        assert_eq!(b.failed_at(at + 11 * BACKOFF_MAX), BACKOFF_FIRST);
        assert_eq!(WatchBackoff::default().next(), Some(BACKOFF_FIRST));
    }
}
