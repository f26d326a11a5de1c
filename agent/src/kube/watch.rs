//! Watches of the Kubernetes objects Sluice reads: one reflector (watch +
//! in-memory store) per kind, each retrying with backoff on its own. The
//! stores are what [`super::convert`] reads; every change pokes one channel so
//! the source can debounce and convert once.
use std::{collections::BTreeMap, time::Duration};

use ::kube::{
    api::{Api, ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        reflector::{self, store::Writer, Store},
        utils::Backoff,
        watcher::{self, Event},
        WatchStreamExt,
    },
    Client,
};
use futures::StreamExt;
use tokio::{sync::mpsc, task::JoinHandle};

use super::KubeSettings;
use crate::admin::SourceHealth;

/// Group of the Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A kind Sluice watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    GatewayClass,
    Gateway,
    HttpRoute,
    ReferenceGrant,
    Service,
    EndpointSlice,
    Namespace,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::ReferenceGrant,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
    ];

    /// Group, version, kind and plural as served by the API server.
    pub fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Kind::GatewayClass => (GATEWAY_GROUP, "v1", "GatewayClass", "gatewayclasses"),
            Kind::Gateway => (GATEWAY_GROUP, "v1", "Gateway", "gateways"),
            Kind::HttpRoute => (GATEWAY_GROUP, "v1", "HTTPRoute", "httproutes"),
            Kind::ReferenceGrant => (GATEWAY_GROUP, "v1", "ReferenceGrant", "referencegrants"),
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::EndpointSlice => ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
            Kind::Namespace => ("", "v1", "Namespace", "namespaces"),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    fn namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace)
    }
}

/// The reflector stores, by kind. Cheap to clone (shared readers).
pub type Stores = BTreeMap<Kind, Store<DynamicObject>>;

/// The running watches.
pub struct Watches {
    pub stores: Stores,
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
        for kind in Kind::ALL {
            let ar = kind.resource();
            let api: Api<DynamicObject> = match (&settings.watch_namespace, kind.namespaced()) {
                (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
                _ => Api::all_with(client.clone(), &ar),
            };
            let mut config = watcher::Config::default();
            if let (Some(ns), Kind::Namespace) = (&settings.watch_namespace, kind) {
                // Namespaced mode: only the watched Namespace's labels matter.
                config = config.fields(&format!("metadata.name={ns}"));
            }
            if let (Some(selector), Kind::Gateway) = (&settings.gateway_selector, kind) {
                // The Gateways this agent (fleet) serves; others are not ours.
                config = config.labels(selector);
            }
            let writer = Writer::new(ar);
            stores.insert(kind, writer.as_reader());
            let stream = reflector::reflector(
                writer,
                watcher::watcher(api, config).backoff(WatchBackoff::default()),
            );
            let changed = changed.clone();
            let health = health.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                            let _ = changed.try_send(());
                        }
                        Ok(Event::Init | Event::InitApply(_)) => {}
                        Err(e) => {
                            // The reflector keeps the last listed objects; the
                            // watcher retries with backoff.
                            tracing::warn!(kind = ?kind, error = %e, "Kubernetes watch failed; retrying");
                            health.failed();
                        }
                    }
                }
            }));
        }
        Self { stores, tasks }
    }

    /// Waits until every store has been listed once.
    pub async fn synced(&self) {
        for store in self.stores.values() {
            // Only fails when the writer is gone, i.e. on shutdown.
            let _ = store.wait_until_ready().await;
        }
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

/// Exponential backoff for re-watching, 250 ms doubling up to 5 s: an agent
/// serving traffic must converge soon after the API server is back, and a
/// few requests per kind every 5 s is no load for an API server.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_FIRST,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let first: Vec<_> = b.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(first, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(BACKOFF_FIRST));
    }
}
