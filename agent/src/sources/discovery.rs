//! Consul service discovery: `backendRef`s of `group: sluice.dev, kind:
//! ConsulService` resolve to the instances Consul's health API reports as
//! passing (`/v1/health/service/<name>?passing`, blocking), so an instance
//! whose check fails leaves the rotation as soon as Consul says so — unlike
//! catalog-only discovery, which keeps unhealthy instances.
//!
//! Before each apply, [`Discovery::augment`] adds to the configuration, for
//! every referenced ConsulService, a Service `consul:NAME` and one
//! EndpointSlice per healthy instance (`Service.Address`, else
//! `Node.Address`), so routing, status and the data path treat it like any
//! Service. A change in the healthy set wakes the source driver, which
//! applies the configuration again.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};

use super::consul::{Backoff, BlockingIndex, ConsulClient, IndexStep, Instance, MIN_INTERVAL};
use crate::config::{
    Config, ConsulService, EndpointPort, EndpointSlice, ObjectRef, Service, ServicePort,
    CONSUL_BACKEND_PREFIX,
};

/// How long a blocking health query waits on the server.
const HEALTH_WAIT: Duration = Duration::from_secs(60);
/// Longest an apply waits for the first answer about a newly referenced service.
const FIRST_ANSWER: Duration = Duration::from_secs(3);

/// One watched service (a name in a datacenter).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceKey {
    pub service: String,
    pub datacenter: Option<String>,
}

struct Watched {
    /// `None` until Consul has answered.
    instances: Option<Vec<Instance>>,
    task: JoinHandle<()>,
}

/// The running discovery.
pub struct Discovery {
    client: ConsulClient,
    watched: Mutex<BTreeMap<ServiceKey, Watched>>,
    /// Woken when a watched service's healthy set changes.
    changed: Arc<Notify>,
    /// Woken on every first answer (for [`Self::augment`]'s bounded wait).
    answered: Notify,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("consul", &self.client.base())
            .finish_non_exhaustive()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for w in self.watched.get_mut().expect("discovery lock").values() {
            w.task.abort();
        }
    }
}

impl Discovery {
    /// `changed` is notified whenever a watched service's healthy set changes.
    pub fn new(client: ConsulClient, changed: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            client,
            watched: Mutex::default(),
            changed,
            answered: Notify::new(),
        })
    }

    /// Stops every watch.
    pub fn stop(&self) {
        for (_, w) in std::mem::take(&mut *self.watched.lock().expect("discovery lock")) {
            w.task.abort();
        }
    }

    /// Watches exactly `keys`: starts what is new, stops what is no longer
    /// referenced.
    fn want(self: &Arc<Self>, keys: &BTreeSet<ServiceKey>) {
        let mut watched = self.watched.lock().expect("discovery lock");
        watched.retain(|k, w| {
            let keep = keys.contains(k);
            if !keep {
                w.task.abort();
            }
            keep
        });
        for k in keys {
            if !watched.contains_key(k) {
                let task = tokio::spawn(watch_service(Arc::downgrade(self), k.clone()));
                watched.insert(
                    k.clone(),
                    Watched {
                        instances: None,
                        task,
                    },
                );
            }
        }
    }

    fn instances(&self, key: &ServiceKey) -> Option<Vec<Instance>> {
        self.watched
            .lock()
            .expect("discovery lock")
            .get(key)
            .and_then(|w| w.instances.clone())
    }

    /// Records an answer; returns whether the healthy set changed.
    fn set(&self, key: &ServiceKey, instances: Vec<Instance>) -> bool {
        let mut watched = self.watched.lock().expect("discovery lock");
        let Some(w) = watched.get_mut(key) else {
            return false;
        };
        let first = w.instances.is_none();
        let changed = w.instances.as_ref() != Some(&instances);
        w.instances = Some(instances);
        drop(watched);
        if first {
            self.answered.notify_waiters();
        }
        changed
    }

    /// Adds a Service and EndpointSlices for every ConsulService that a
    /// route references, after waiting (bounded) for the first answer about
    /// services not watched before. Returns warnings (instances left out).
    pub async fn augment(self: &Arc<Self>, cfg: &mut Config) -> Vec<String> {
        let refs = consul_refs(cfg);
        let specs: BTreeMap<ObjectRef, ConsulService> = refs
            .keys()
            .map(|id| {
                let spec = cfg
                    .consul_services
                    .iter()
                    .find(|c| c.id == *id)
                    .cloned()
                    .unwrap_or_else(|| ConsulService {
                        id: id.clone(),
                        service: id.name.clone(),
                        tags: Vec::new(),
                        datacenter: None,
                    });
                (id.clone(), spec)
            })
            .collect();
        let keys: BTreeSet<ServiceKey> = specs.values().map(key_of).collect();
        self.want(&keys);
        let deadline = tokio::time::Instant::now() + FIRST_ANSWER;
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if keys.iter().all(|k| self.instances(k).is_some()) {
                break;
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                break;
            }
        }
        let mut warnings = Vec::new();
        for (id, spec) in &specs {
            let ports = &refs[id];
            let service_id =
                ObjectRef::new(&id.namespace, format!("{CONSUL_BACKEND_PREFIX}{}", id.name));
            cfg.services.push(Service {
                id: service_id.clone(),
                ports: ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(port_name(*p)),
                        port: *p,
                        target_port: None,
                        app_protocol: None,
                        udp: false,
                    })
                    .collect(),
            });
            let instances = match self.instances(&key_of(spec)) {
                Some(i) => i,
                None => {
                    warnings.push(format!(
                        "ConsulService {id}: no answer from Consul yet about service {:?}; no endpoints until it answers",
                        spec.service
                    ));
                    continue;
                }
            };
            for (i, inst) in instances
                .iter()
                .filter(|inst| spec.tags.iter().all(|t| inst.tags.contains(t)))
                .enumerate()
            {
                let Ok(addr) = inst.address.parse::<IpAddr>() else {
                    warnings.push(format!(
                        "ConsulService {id}: instance address {:?} is not an IP address; left out",
                        inst.address
                    ));
                    continue;
                };
                cfg.endpoint_slices.push(EndpointSlice {
                    id: ObjectRef::new(&id.namespace, format!("{}-{i}", service_id.name)),
                    service: service_id.clone(),
                    addresses: vec![addr],
                    ports: ports
                        .iter()
                        .map(|p| EndpointPort {
                            name: Some(port_name(*p)),
                            // Port 0 in the backendRef: the instance's own.
                            port: if *p == 0 { inst.port } else { *p },
                        })
                        .collect(),
                });
            }
        }
        warnings
    }
}

fn key_of(spec: &ConsulService) -> ServiceKey {
    ServiceKey {
        service: spec.service.clone(),
        datacenter: spec.datacenter.clone(),
    }
}

fn port_name(port: u16) -> String {
    format!("p{port}")
}

/// The ConsulServices routes reference, each with the ports asked for.
fn consul_refs(cfg: &Config) -> BTreeMap<ObjectRef, BTreeSet<u16>> {
    let mut out: BTreeMap<ObjectRef, BTreeSet<u16>> = BTreeMap::new();
    for route in &cfg.routes {
        for rule in &route.rules {
            for b in &rule.backends {
                if let Some(name) = b.service.name.strip_prefix(CONSUL_BACKEND_PREFIX) {
                    if b.unsupported_kind.is_none() {
                        out.entry(ObjectRef::new(&b.service.namespace, name))
                            .or_default()
                            .insert(b.port);
                    }
                }
            }
        }
    }
    out
}

/// Whether a configuration references any ConsulService.
pub fn references_consul(cfg: &Config) -> bool {
    !consul_refs(cfg).is_empty()
}

/// Follows one service's healthy instances with blocking queries until
/// aborted (or the discovery is gone).
async fn watch_service(discovery: std::sync::Weak<Discovery>, key: ServiceKey) {
    let mut index = BlockingIndex::default();
    let mut backoff = Backoff::default();
    loop {
        let Some(d) = discovery.upgrade() else { return };
        let client = d.client.clone();
        drop(d);
        let started = tokio::time::Instant::now();
        let result = client
            .healthy_instances(
                &key.service,
                key.datacenter.as_deref(),
                index.get(),
                HEALTH_WAIT,
            )
            .await;
        let Some(d) = discovery.upgrade() else { return };
        match result {
            Ok((instances, new_index)) => {
                backoff.reset();
                let step = index.observe(new_index);
                if step == IndexStep::Reset {
                    tracing::info!(service = %key.service, "Consul index went backwards; reading the service again");
                }
                if d.set(&key, instances) {
                    tracing::info!(service = %key.service, "Consul service's healthy instances changed");
                    d.changed.notify_one();
                }
            }
            Err(e) => {
                index.forget();
                let delay = backoff.delay();
                tracing::warn!(service = %key.service, error = %e, retry_in_ms = delay.as_millis() as u64, "Consul health query failed; keeping the last known instances");
                drop(d);
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        drop(d);
        // Rate limit: a service flapping many times a second is read a few times.
        let since = started.elapsed();
        if since < MIN_INTERVAL {
            tokio::time::sleep(MIN_INTERVAL - since).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn consul_backend_refs_are_found_with_their_ports() {
        let cfg = crate::config::parse_documents([(
            Path::new("t.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  \
             - backendRefs: [{group: sluice.dev, kind: ConsulService, name: web}, \
             {group: sluice.dev, kind: ConsulService, name: web, port: 9000}, {name: svc, port: 80}]\n",
        )])
        .unwrap();
        let refs = consul_refs(&cfg);
        assert_eq!(refs.len(), 1);
        assert_eq!(
            refs[&ObjectRef::new("shop", "web")]
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [0, 9000]
        );
        let err = crate::config::parse_documents([(
            Path::new("t.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  \
             - backendRefs: [{group: sluice.dev, kind: ConsulService, name: web, namespace: other}]\n",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("backendRefs[0].namespace"), "{err}");
    }
}
