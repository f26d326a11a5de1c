//! `GET /api/overview`: everything the status page shows, in one JSON
//! document — the served snapshot (shards, listeners, routes, backends,
//! attached policies), config source and reloads, the datapath, eBPF map
//! occupancy and the request, decision and packet counters.
//!
//! It is built on request from what the agent already keeps (the snapshot,
//! the config notes, the status model) plus one encoding of the metrics
//! registry — the same work as a Prometheus scrape — so polling it costs the
//! data path nothing but the brief locks a scrape takes. Counters are
//! cumulative; the page turns successive polls into rates.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::atomic::Ordering,
    time::UNIX_EPOCH,
};

use serde::Serialize;

use super::{exposition::Sample, AdminState, ConfigSource};
use crate::{
    control::status::Condition,
    metrics::ProcessStats,
    policy::RoutePolicy,
    reload::ShardConnections,
    snapshot::{Backend, BackendTarget, RouteEntry, Shard},
};

/// The whole page's data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub agent: AgentView,
    pub datapath: DatapathView,
    pub config: ConfigView,
    pub shards: Vec<ShardView>,
    pub upstreams: Vec<UpstreamView>,
    pub policies: Vec<PolicyView>,
    /// `None` with the userspace datapath.
    pub ebpf: Option<EbpfView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub version: &'static str,
    pub hostname: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: f64,
    /// Unix seconds when this document was made (the page's clock may differ).
    pub now: f64,
    pub ready: bool,
    pub process: Option<ProcessStats>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapathView {
    /// `ebpf` or `userspace`.
    pub mode: String,
    /// Interfaces with `xdp_ingress`, with the attach mode.
    pub xdp: Vec<XdpView>,
    pub sockmap: bool,
    /// cgroup of the connect4/connect6 hooks.
    pub connect_hooks_cgroup: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct XdpView {
    pub interface: String,
    pub mode: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    pub source: ConfigSource,
    pub generation: u64,
    /// Seconds the source has been unreachable (Kubernetes); 0 while fine.
    pub stale_seconds: f64,
    pub last_applied_at: Option<f64>,
    pub last_rejected_at: Option<f64>,
    /// The error of the last rejected change (may be older than the last
    /// applied one: compare the times).
    pub last_rejection: Option<String>,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    pub warnings: Vec<String>,
    pub object_errors: Vec<String>,
}

/// Requests counted by `sluice_http_requests_total`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requests {
    pub total: u64,
    /// `2xx`, `4xx`, ...
    pub by_class: BTreeMap<String, u64>,
    /// `upstream` (the backend answered) or why the gateway answered itself.
    pub by_reason: BTreeMap<String, u64>,
}

impl Requests {
    fn add(&mut self, s: &Sample) {
        let n = s.value as u64;
        self.total += n;
        *self
            .by_class
            .entry(s.label("status_class").unwrap_or("").to_owned())
            .or_default() += n;
        *self
            .by_reason
            .entry(s.label("reason").unwrap_or("").to_owned())
            .or_default() += n;
    }
}

/// `sluice_http_request_duration_seconds` of one shard: cumulative bucket
/// counts, from which the page takes percentiles over each poll interval.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// `(upper bound in seconds, cumulative count)`, ascending, without
    /// the +Inf bucket (that is `count`; JSON has no infinity).
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardView {
    pub id: u32,
    pub gateway: String,
    /// Empty: every local address.
    pub addresses: Vec<IpAddr>,
    /// The shard's own sockets (eBPF: loopback steering sockets).
    pub sockets: Vec<SocketAddr>,
    pub source_allow: Vec<String>,
    pub source_deny: Vec<String>,
    /// Open connections and limit (the shard's bulkhead).
    pub connections: Option<ShardConnections>,
    /// Gateway API conditions of the Gateway.
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerView>,
    pub routes: Vec<RouteView>,
    /// Policies governing requests that match no route (Gateway and listener level).
    pub policies: Vec<AttachedPolicy>,
    /// Every request of the shard.
    pub requests: Requests,
    /// Requests that matched no route (or no listener).
    pub unmatched: Requests,
    pub latency: Latency,
    /// eBPF verdicts for this shard's traffic, by reason.
    pub packets: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct ListenerView {
    pub name: String,
    pub port: u16,
    /// `HTTP` or `HTTPS`.
    pub protocol: &'static str,
    pub hostname: Option<String>,
    /// Distinct routes attached.
    pub routes: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteView {
    /// `namespace/name`.
    pub name: String,
    pub listeners: Vec<String>,
    /// Effective hostnames; empty: any the listener accepts.
    pub hostnames: Vec<String>,
    pub rules: usize,
    pub policies: Vec<AttachedPolicy>,
    pub backends: Vec<BackendRefView>,
    pub requests: Requests,
    /// The route's conditions for this Gateway.
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct BackendRefView {
    /// `namespace/name:port`, the key of [`UpstreamView`].
    pub upstream: String,
    pub weight: u32,
    /// A RequestMirror target rather than a backendRef.
    pub mirror: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AttachedPolicy {
    pub kind: &'static str,
    /// `namespace/name`.
    pub name: String,
    pub sections: BTreeSet<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamView {
    /// `namespace/name:port`.
    pub name: String,
    /// `http1`, `h2c`, `tcp` for backends of TLSRoutes and TCPRoutes
    /// (bytes relayed as they come), or `udp` for those of UDPRoutes.
    pub protocol: &'static str,
    pub tls: bool,
    pub endpoints: Vec<EndpointView>,
    /// Every endpoint is unhealthy or ejected, so all are used (panic mode).
    pub panic: bool,
    /// Why the reference does not resolve (requests get a 500).
    pub unresolved: Option<String>,
    /// Routes that send to it.
    pub used_by: BTreeSet<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub address: SocketAddr,
    /// What the agent knows of the endpoint's health: `ready` (listed as
    /// ready by its EndpointSlice or the static config, and in the
    /// rotation), `ejected` (outlierDetection) or `unhealthy` (healthCheck).
    pub state: &'static str,
    /// With resilience sections: requests in flight to it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
    /// Recent ejections (the multiplier of the ejection time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejections: Option<u32>,
    /// Seconds left of its ejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub kind: &'static str,
    /// `namespace/name`.
    pub name: String,
    pub ancestors: Vec<AncestorView>,
    /// Decisions by `section`, then `allow` / `deny:<reason>`.
    pub decisions: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AncestorView {
    /// `namespace/name` of the Gateway (with `/section` when given).
    pub gateway: String,
    pub accepted: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EbpfView {
    pub maps: Vec<MapView>,
    /// Verdicts of packets and connections that belong to no shard.
    pub unassigned_packets: BTreeMap<String, u64>,
    /// Entries the drift check found different and repaired, by map.
    pub drift: BTreeMap<String, u64>,
    /// Failed map operations of the reconciler, by map.
    pub reconcile_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct MapView {
    pub name: &'static str,
    /// Entries the agent programmed; `None` for maps the kernel programs
    /// fill themselves (SYN budgets, socket pairs).
    pub entries: Option<usize>,
    /// `max_entries`.
    pub limit: Option<u32>,
}

/// Builds the overview from the admin state and the encoded registry.
pub fn build(state: &AdminState, samples: &[Sample]) -> Overview {
    let snapshot = state.snapshot.load();
    let notes = state
        .config_notes
        .lock()
        .map(|n| n.clone())
        .unwrap_or_default();
    let status = state.status.lock().map(|s| s.clone()).unwrap_or_default();
    let runtime = state.runtime.upgrade();
    let connections = runtime
        .as_ref()
        .map(|r| r.shard_connections())
        .unwrap_or_default();
    let kernel = runtime.as_ref().and_then(|r| r.kernel.clone());

    let named = |name: &'static str| samples.iter().filter(move |s| s.name == name);
    let by_label = |name: &'static str, label: &'static str| {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for s in named(name) {
            *out.entry(s.label(label).unwrap_or("").to_owned())
                .or_default() += s.value as u64;
        }
        out
    };

    // Requests and packets by shard name (the `shard` label).
    let mut shard_requests: BTreeMap<&str, Requests> = BTreeMap::new();
    let mut route_requests: BTreeMap<(String, String), Requests> = BTreeMap::new();
    for s in named("sluice_http_requests_total") {
        let shard = s.label("shard").unwrap_or("");
        let route = s.label("route").unwrap_or("");
        shard_requests.entry(shard).or_default().add(s);
        route_requests
            .entry((shard.to_owned(), route.to_owned()))
            .or_default()
            .add(s);
    }
    let mut packets: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for s in named("sluice_xdp_packets_total") {
        *packets
            .entry(s.label("shard").unwrap_or(""))
            .or_default()
            .entry(s.label("reason").unwrap_or("").to_owned())
            .or_default() += s.value as u64;
    }

    let mut upstreams: BTreeMap<String, UpstreamView> = BTreeMap::new();
    let mut shards = Vec::new();
    for shard in &snapshot.shards {
        let name = shard.gateway.to_string();
        let conditions = status
            .gateways
            .iter()
            .find(|g| g.namespace == shard.gateway.namespace && g.name == shard.gateway.name)
            .map(|g| g.conditions.clone())
            .unwrap_or_default();
        let mut routes = route_views(shard, &mut upstreams);
        for r in &mut routes {
            r.requests = route_requests
                .remove(&(shard.name.to_string(), r.name.clone()))
                .unwrap_or_default();
            // By key: a scan of every route's status per route was
            // quadratic in the routes.
            r.conditions = r
                .name
                .split_once('/')
                .and_then(|(namespace, name)| status.http_routes.get(namespace, name))
                .into_iter()
                .flat_map(|s| s.parents)
                .filter(|p| {
                    // A delegated route's parents are the routes above it.
                    p.parent_ref.kind == "HTTPRoute"
                        || (p.parent_ref.namespace == shard.gateway.namespace
                            && p.parent_ref.name == shard.gateway.name)
                })
                .flat_map(|p| p.conditions)
                .collect();
        }
        let mut gateway_policies = BTreeSet::new();
        for l in &shard.listeners {
            gateway_policies.extend(attached(&l.policy));
        }
        shards.push(ShardView {
            id: shard.id,
            addresses: shard.addresses.clone(),
            sockets: notes.sockets.get(&name).cloned().unwrap_or_default(),
            source_allow: shard.source_allow.iter().map(ToString::to_string).collect(),
            source_deny: shard.source_deny.iter().map(ToString::to_string).collect(),
            connections: connections.get(&shard.id).copied(),
            conditions,
            listeners: shard
                .listeners
                .iter()
                .map(|l| ListenerView {
                    name: l.name.to_string(),
                    port: l.port,
                    protocol: if shard.tls.contains_key(&l.port) {
                        "HTTPS"
                    } else {
                        "HTTP"
                    },
                    hostname: l.hostname.as_ref().map(ToString::to_string),
                    routes: l.routes.routes().len(),
                })
                .collect(),
            routes,
            policies: gateway_policies.into_iter().collect(),
            requests: shard_requests
                .remove(shard.name.as_ref())
                .unwrap_or_default(),
            unmatched: route_requests
                .remove(&(shard.name.to_string(), "none".to_owned()))
                .unwrap_or_default(),
            latency: latency(samples, &shard.name),
            packets: packets.remove(shard.name.as_ref()).unwrap_or_default(),
            gateway: name,
        });
    }

    // Decisions by policy, then section, then outcome.
    let mut decisions: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>> = BTreeMap::new();
    for s in named("sluice_policy_decisions_total") {
        let policy = format!(
            "{}/{}",
            s.label("namespace").unwrap_or(""),
            s.label("policy").unwrap_or("")
        );
        let outcome = match (s.label("decision"), s.label("reason")) {
            (Some("allow"), Some("ok")) => "allow".to_owned(),
            (Some(d), Some(r)) => format!("{d}:{r}"),
            _ => continue,
        };
        *decisions
            .entry(policy)
            .or_default()
            .entry(s.label("section").unwrap_or("").to_owned())
            .or_default()
            .entry(outcome)
            .or_default() += s.value as u64;
    }
    let policies = status
        .policies
        .iter()
        .map(|p| {
            let name = format!("{}/{}", p.namespace, p.name);
            PolicyView {
                kind: p.kind,
                ancestors: p
                    .ancestors
                    .iter()
                    .map(|a| {
                        let accepted = a.conditions.iter().find(|c| c.kind == "Accepted");
                        let r = &a.ancestor_ref;
                        AncestorView {
                            gateway: match &r.section_name {
                                Some(s) => format!("{}/{}/{s}", r.namespace, r.name),
                                None => format!("{}/{}", r.namespace, r.name),
                            },
                            accepted: accepted.is_some_and(|c| c.status == "True"),
                            reason: accepted.map_or("", |c| c.reason),
                            message: accepted.map(|c| c.message.clone()).unwrap_or_default(),
                        }
                    })
                    .collect(),
                decisions: decisions.remove(&name).unwrap_or_default(),
                name,
            }
        })
        .collect();

    let reloads = by_label("sluice_config_reloads_total", "result");
    let (datapath, ebpf) = match &kernel {
        Some(k) => {
            // Read before taking the kernel lock: never hold both.
            let entries = runtime
                .as_ref()
                .map(|r| {
                    r.kernel_applied()
                        .lock()
                        .expect("kernel state")
                        .entries_by_map()
                })
                .unwrap_or_default();
            let k = k.lock().expect("kernel lock");
            let limits = k.map_limits();
            let maps = crate::kernel::SIZABLE_MAPS
                .iter()
                .map(|&name| MapView {
                    name,
                    entries: entries.iter().find(|(m, _)| *m == name).map(|(_, n)| *n),
                    limit: limits.get(name).copied(),
                })
                .collect();
            (
                DatapathView {
                    mode: state.datapath.clone(),
                    xdp: k
                        .xdp_interfaces()
                        .iter()
                        .map(|(i, m)| XdpView {
                            interface: i.clone(),
                            mode: m.label(),
                        })
                        .collect(),
                    sockmap: k.sockmap_enabled(),
                    connect_hooks_cgroup: k.connect_hooks_cgroup().map(|p| p.display().to_string()),
                },
                Some(EbpfView {
                    maps,
                    unassigned_packets: packets.remove("none").unwrap_or_default(),
                    drift: by_label("sluice_bpf_map_drift_total", "map"),
                    reconcile_errors: by_label("sluice_bpf_reconcile_errors_total", "map"),
                }),
            )
        }
        None => (
            DatapathView {
                mode: state.datapath.clone(),
                xdp: Vec::new(),
                sockmap: false,
                connect_hooks_cgroup: None,
            },
            None,
        ),
    };

    Overview {
        agent: AgentView {
            version: env!("CARGO_PKG_VERSION"),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            started_at: state
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            now: crate::reload::unix_now(),
            ready: state.ready.load(Ordering::Acquire),
            process: ProcessStats::read(),
        },
        datapath,
        config: ConfigView {
            source: state.config_source.clone(),
            generation: snapshot.generation,
            stale_seconds: state.source_health.stale_for().as_secs_f64(),
            last_applied_at: notes.last_applied_at,
            last_rejected_at: notes.last_rejected_at,
            last_rejection: notes.last_rejection,
            reloads_applied: reloads.get("applied").copied().unwrap_or(0),
            reloads_rejected: reloads.get("rejected").copied().unwrap_or(0),
            warnings: notes.warnings,
            object_errors: notes.object_errors,
        },
        shards,
        upstreams: upstreams.into_values().collect(),
        policies,
        ebpf,
    }
}

/// The routes of a shard, merged over its listeners, registering the
/// backends they use in `upstreams`.
fn route_views(shard: &Shard, upstreams: &mut BTreeMap<String, UpstreamView>) -> Vec<RouteView> {
    #[derive(Default)]
    struct Acc {
        listeners: BTreeSet<String>,
        hostnames: BTreeSet<String>,
        rules: BTreeSet<usize>,
        policies: BTreeSet<AttachedPolicy>,
        backends: BTreeSet<BackendRefView>,
    }
    let mut routes: BTreeMap<String, Acc> = BTreeMap::new();
    for listener in &shard.listeners {
        // TLS, TCP and UDP listeners relay bytes to their backends.
        let relay = listener.l4;
        for (host, entry) in listener.routes.entries() {
            let name = entry.route_name.to_string();
            let acc = routes.entry(name.clone()).or_default();
            acc.listeners.insert(listener.name.to_string());
            acc.hostnames.extend(host.map(|h| h.to_string()));
            acc.rules.insert(entry.rule as usize);
            acc.policies.extend(attached(&entry.action.policy));
            for (backend, mirror) in backends_of(entry) {
                let key = upstream(backend, &name, upstreams, relay);
                acc.backends.insert(BackendRefView {
                    upstream: key,
                    weight: if mirror { 0 } else { backend.weight },
                    mirror,
                });
            }
        }
    }
    routes
        .into_iter()
        .map(|(name, a)| RouteView {
            name,
            listeners: a.listeners.into_iter().collect(),
            hostnames: a.hostnames.into_iter().collect(),
            rules: a.rules.len(),
            policies: a.policies.into_iter().collect(),
            backends: a.backends.into_iter().collect(),
            requests: Requests::default(),
            conditions: Vec::new(),
        })
        .collect()
}

/// The backends of a rule and its mirrors (`true`).
fn backends_of(entry: &RouteEntry) -> impl Iterator<Item = (&Backend, bool)> {
    let action = &entry.action;
    action
        .backends
        .backends
        .iter()
        .map(|b| (b, false))
        .chain(action.mirrors.iter().map(|m| (&m.backend, true)))
}

/// Registers `backend` (used by `route`; `relay`: the mode of the L4
/// listener it is relayed through) and returns its key.
fn upstream(
    backend: &Backend,
    route: &str,
    upstreams: &mut BTreeMap<String, UpstreamView>,
    relay: Option<crate::snapshot::L4Mode>,
) -> String {
    let key = format!("{}:{}", backend.service, backend.port);
    let view = upstreams.entry(key.clone()).or_insert_with(|| {
        let (endpoints, unresolved) = match &backend.target {
            BackendTarget::Endpoints(e) => (
                e.iter()
                    .map(|a| EndpointView {
                        address: *a,
                        state: "ready",
                        in_flight: None,
                        ejections: None,
                        ejected_for_seconds: None,
                    })
                    .collect(),
                None,
            ),
            BackendTarget::Invalid(u) => (Vec::new(), Some(u.to_string())),
        };
        UpstreamView {
            name: key.clone(),
            protocol: match backend.protocol {
                _ if relay == Some(crate::snapshot::L4Mode::Udp) => "udp",
                _ if relay.is_some() => "tcp",
                crate::snapshot::AppProtocol::Http1 => "http1",
                crate::snapshot::AppProtocol::H2c => "h2c",
            },
            // A relayed TLS connection is the client's own, end to end.
            tls: relay.is_none() && backend.tls.is_some(),
            endpoints,
            panic: false,
            unresolved,
            used_by: BTreeSet::new(),
        }
    });
    view.used_by.insert(route.to_owned());
    if let Some(r) = &backend.resilience {
        resilience(view, &r.state);
    }
    key
}

/// What the backend's resilience state says of its endpoints. Several
/// routes may govern one backend with different policies: an endpoint is
/// shown out when any of them holds it out.
fn resilience(view: &mut UpstreamView, state: &crate::policy::upstream::BackendState) {
    let now = state.now_ms();
    view.panic |= state.in_panic();
    for e in &mut view.endpoints {
        let Some(s) = state.endpoint(e.address) else {
            continue;
        };
        let left = s.ejection_left(now);
        if left > 0 {
            e.state = "ejected";
            e.ejected_for_seconds = Some(left as f64 / 1000.0);
        } else if !s.is_healthy() && e.state == "ready" {
            e.state = "unhealthy";
        }
        e.in_flight = Some(e.in_flight.unwrap_or(0).max(s.in_flight()));
        e.ejections = Some(e.ejections.unwrap_or(0).max(s.ejections()));
    }
}

/// The policies (and their sections) in effect for a route or listener.
fn attached(policy: &RoutePolicy) -> BTreeSet<AttachedPolicy> {
    let mut by_policy: BTreeMap<(&'static str, String), BTreeSet<&'static str>> = BTreeMap::new();
    for section in policy.sections() {
        let p = &section.policy;
        by_policy
            .entry((p.kind, format!("{}/{}", p.namespace, p.name)))
            .or_default()
            .insert(section.section);
    }
    by_policy
        .into_iter()
        .map(|((kind, name), sections)| AttachedPolicy {
            kind,
            name,
            sections,
        })
        .collect()
}

/// The request duration histogram of one shard.
fn latency(samples: &[Sample], shard: &str) -> Latency {
    let mut out = Latency::default();
    let of_shard = |s: &&Sample| s.label("shard") == Some(shard);
    for s in samples.iter().filter(of_shard) {
        match s.name.as_str() {
            "sluice_http_request_duration_seconds_bucket" => {
                let Some(le) = s.label("le").and_then(|v| v.parse::<f64>().ok()) else {
                    continue;
                };
                if le.is_finite() {
                    out.buckets.push((le, s.value as u64));
                }
            }
            "sluice_http_request_duration_seconds_count" => out.count = s.value as u64,
            "sluice_http_request_duration_seconds_sum" => out.sum = s.value,
            _ => {}
        }
    }
    out.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}
