//! The immutable state the data path reads. Built by [`crate::control`] from
//! validated config, published whole through an `ArcSwap`; a request keeps the
//! `Arc<Snapshot>` it started with, so a swap never changes a request midway.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use ipnet::IpNet;

use crate::config::{Filters, Hostname, ObjectRef, Retry, RouteMatch, Timeouts};

pub mod matching;
pub mod table;
pub mod tls;
pub mod upstream_tls;

pub use matching::RequestView;
pub use table::{Bucket, RouteTable};

/// Shard id as used in the eBPF maps (`1..MAX_SHARDS`).
pub type ShardId = u32;

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every published snapshot.
    pub generation: u64,
    /// Sorted by id.
    pub shards: Vec<Shard>,
    /// Source address → Kubernetes namespace (pod identity), for policies.
    pub identity: NamespaceLookup,
}

/// Which namespace a source address belongs to: pod addresses (host
/// routes) by hash, wider CIDRs by longest prefix.
#[derive(Debug, Default)]
pub struct NamespaceLookup {
    hosts: HashMap<IpAddr, Arc<str>>,
    /// Longest prefix first.
    nets: Vec<(IpNet, Arc<str>)>,
}

impl NamespaceLookup {
    pub fn new(cidrs: &[(IpNet, String)]) -> Self {
        let mut names: HashMap<&str, Arc<str>> = HashMap::new();
        let mut out = NamespaceLookup::default();
        for (net, ns) in cidrs {
            let name = names
                .entry(ns)
                .or_insert_with(|| Arc::from(ns.as_str()))
                .clone();
            if net.prefix_len() == net.max_prefix_len() {
                out.hosts.entry(net.addr()).or_insert(name);
            } else {
                out.nets.push((net.trunc(), name));
            }
        }
        out.nets
            .sort_by_key(|n| std::cmp::Reverse(n.0.prefix_len()));
        out
    }

    pub fn namespace_of(&self, ip: IpAddr) -> Option<Arc<str>> {
        let ip = ip.to_canonical();
        if let Some(ns) = self.hosts.get(&ip) {
            return Some(ns.clone());
        }
        self.nets
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, ns)| ns.clone())
    }
}

impl Snapshot {
    pub fn shard(&self, id: ShardId) -> Option<&Shard> {
        self.shards
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| &self.shards[i])
    }
}

/// One Gateway served by this agent.
#[derive(Debug)]
pub struct Shard {
    pub id: ShardId,
    pub gateway: ObjectRef,
    /// `namespace/name` of the Gateway, formatted once for metric labels.
    pub name: Arc<str>,
    /// Addresses the Gateway answers on; empty means every local address.
    pub addresses: Vec<IpAddr>,
    pub source_allow: Vec<IpNet>,
    pub source_deny: Vec<IpNet>,
    pub syn_budget: Option<crate::config::SynBudget>,
    /// HTTP and HTTPS listeners that are programmed.
    pub listeners: Vec<ListenerRoutes>,
    /// Ports whose connections are TLS: the server config (certificates by SNI).
    pub tls: BTreeMap<u16, Arc<rustls::ServerConfig>>,
    /// Destination port ranges served as a listener port (`sluice.dev/port-ranges`).
    pub port_ranges: Vec<PortAlias>,
    /// The Gateway's own connection settings (a SluicePolicy `connection`
    /// section on the whole Gateway); `None`: the agent's defaults.
    pub connection: Option<Arc<crate::policy::connection::ConnectionPolicy>>,
}

/// Ports `first..=last` served as if they were `port` (a listener's port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortAlias {
    pub first: u16,
    pub last: u16,
    pub port: u16,
}

impl Shard {
    /// Distinct TCP ports of the programmed listeners (every protocol but
    /// UDP): what is bound, or steered by sk_lookup, for connections.
    pub fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self
            .listeners
            .iter()
            .filter(|l| l.l4 != Some(L4Mode::Udp))
            .map(|l| l.port)
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// Distinct ports of the programmed UDP listeners: bound directly as
    /// UDP sockets in both datapaths (sk_lookup steering is TCP-only).
    pub fn udp_ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self
            .listeners
            .iter()
            .filter(|l| l.l4 == Some(L4Mode::Udp))
            .map(|l| l.port)
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// The UDP listener on `port` (exact port: port ranges are TCP-only).
    pub fn udp_listener(&self, port: u16) -> Option<&ListenerRoutes> {
        self.listeners
            .iter()
            .find(|l| l.port == port && l.l4 == Some(L4Mode::Udp))
    }

    /// The listener port that serves connections to destination `port`: the
    /// port itself when a listener has it (exact ports win), else the port of
    /// the listener whose port range holds it.
    pub fn listener_port(&self, port: u16) -> u16 {
        if self.listeners.iter().any(|l| l.port == port) {
            return port;
        }
        self.port_ranges
            .iter()
            .find(|r| (r.first..=r.last).contains(&port))
            .map_or(port, |r| r.port)
    }

    /// The listener that owns a request to `port` for `host` (lower-case, no
    /// port): the most specific listener hostname that covers the host wins, so
    /// routes of a catch-all listener never see a more specific listener's
    /// traffic (listener isolation).
    pub fn listener_for(&self, port: u16, host: &str) -> Option<&ListenerRoutes> {
        let port = self.listener_port(port);
        self.listeners
            .iter()
            .filter(|l| l.port == port)
            .filter(|l| l.hostname.as_ref().is_none_or(|h| h.matches(host)))
            .max_by_key(|l| tls::listener_specificity(l.hostname.as_ref()))
    }
}

#[derive(Debug)]
pub struct ListenerRoutes {
    /// The listener's name (shared with each access log entry).
    pub name: Arc<str>,
    pub port: u16,
    pub hostname: Option<Hostname>,
    pub routes: RouteTable,
    /// Set for TLS Passthrough and TCP listeners: connections are relayed
    /// at layer 4 to the backends of the route `routes` finds (by SNI for
    /// TLS, the one route of the listener for TCP); no HTTP is spoken.
    pub l4: Option<L4Mode>,
    /// The certificate of an HTTPS listener.
    pub tls: Option<Arc<rustls::sign::CertifiedKey>>,
    /// Policy of requests that match no route (Gateway and listener level).
    pub policy: Arc<crate::policy::RoutePolicy>,
}

/// How an L4 listener picks the route of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Mode {
    /// By the server name of the ClientHello, read without terminating TLS.
    TlsPassthrough,
    /// TLS terminated here with the listener's certificates, routed by the
    /// handshake's server name; the decrypted bytes are relayed.
    TlsTerminate,
    /// Every connection takes the listener's route.
    Tcp,
    /// Datagrams on a UDP socket; each client address's session takes the
    /// listener's route. Never an accept loop's: UDP ports are bound apart.
    Udp,
}

impl L4Mode {
    /// The listener protocol it serves, as `/config` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            L4Mode::TlsPassthrough => "TLS Passthrough",
            L4Mode::TlsTerminate => "TLS Terminate",
            L4Mode::Tcp => "TCP",
            L4Mode::Udp => "UDP",
        }
    }
}

impl Shard {
    /// The L4 mode of connections to destination `port`, when its listeners
    /// relay instead of speaking HTTP. Listeners of other protocols do not
    /// share a port with an L4 one (they conflict and are left out).
    pub fn l4_mode(&self, port: u16) -> Option<L4Mode> {
        let port = self.listener_port(port);
        self.listeners
            .iter()
            .find(|l| l.port == port && l.l4 != Some(L4Mode::Udp))
            .and_then(|l| l.l4)
    }
}

/// One match of one rule of one route.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    pub route: Arc<ObjectRef>,
    /// `namespace/name` of the route, formatted once for metric labels.
    pub route_name: Arc<str>,
    /// The route's creation time as a precedence key ([`created_key`]):
    /// among otherwise equal matches the older route wins, then the lower
    /// namespace/name. A key rather than a position in a global order, so
    /// that adding a route does not renumber every other route's entries.
    pub created: (i64, u32),
    pub rule: u32,
    /// Index of the match within the rule.
    pub match_index: u32,
    /// Shared with the config and with every hostname and listener the
    /// match is served under.
    pub matcher: Arc<RouteMatch>,
    /// What the rule does; shared by every match of the rule.
    pub action: Arc<RuleAction>,
}

/// The precedence key of a creation time: routes without one count as newer
/// than any (no real timestamp has `u32::MAX` nanoseconds).
pub fn created_key(created: Option<(i64, u32)>) -> (i64, u32) {
    created.unwrap_or((i64::MAX, u32::MAX))
}

/// Filters, backends and timeouts of one rule.
#[derive(Debug, Default)]
pub struct RuleAction {
    /// Rule-level filters in configured order (the config's, shared).
    pub filters: Filters,
    pub backends: BackendGroup,
    pub timeouts: Timeouts,
    /// The config's, shared.
    pub retry: Option<Arc<Retry>>,
    /// Resolved targets of the rule's RequestMirror filters.
    pub mirrors: Box<[MirrorTarget]>,
    /// The effective API policy of the rule through this listener.
    pub policy: Arc<crate::policy::RoutePolicy>,
    /// Request counters of the rule, resolved once (the rule belongs to one
    /// shard and one route).
    pub metrics: crate::metrics::RuleMetrics,
}

/// Where a RequestMirror filter sends copies, and how many.
#[derive(Debug)]
pub struct MirrorTarget {
    pub backend: Backend,
    pub numerator: u32,
    pub denominator: u32,
    seen: AtomicU64,
}

impl MirrorTarget {
    pub fn new(backend: Backend, numerator: u32, denominator: u32) -> Self {
        Self {
            backend,
            numerator,
            denominator: denominator.max(1),
            seen: AtomicU64::new(0),
        }
    }

    /// Whether this request is mirrored: exactly `numerator` of every
    /// `denominator` consecutive requests, spread evenly.
    pub fn sample(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) % u64::from(self.denominator);
        let num = u64::from(self.numerator);
        let den = u64::from(self.denominator);
        (n + 1) * num / den > n * num / den
    }
}

/// The weighted backends of a rule.
#[derive(Debug, Default)]
pub struct BackendGroup {
    /// A boxed slice, not a `Vec`: fixed once built, and 8 bytes smaller
    /// in every rule action.
    pub backends: Box<[Backend]>,
    total_weight: u64,
    /// Coprime with `total_weight`, so `n * stride % total` visits every slot
    /// once per cycle while interleaving backends instead of running in blocks.
    stride: u64,
    next: AtomicU64,
}

impl BackendGroup {
    pub fn new(backends: Vec<Backend>) -> Self {
        let total_weight: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        let gcd = |mut a: u64, mut b: u64| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let mut stride = (total_weight * 618 / 1000).max(1);
        while total_weight > 1 && gcd(stride, total_weight) != 1 {
            stride += 1;
        }
        Self {
            backends: backends.into_boxed_slice(),
            total_weight,
            stride,
            next: AtomicU64::new(0),
        }
    }

    /// Picks a backend in proportion to the weights (deterministic interleave:
    /// over `total_weight` picks, each backend is chosen exactly `weight` times).
    /// `None` when the rule has no backends or every weight is zero.
    pub fn pick(&self) -> Option<&Backend> {
        if self.total_weight == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.total_weight;
        let slot = n * self.stride % self.total_weight;
        let mut acc = 0;
        for b in &self.backends {
            acc += u64::from(b.weight);
            if slot < acc {
                return Some(b);
            }
        }
        None
    }
}

/// A resolved backendRef.
#[derive(Debug)]
pub struct Backend {
    /// Shared by every backend of the Service in a compile.
    pub service: Arc<ObjectRef>,
    pub port: u16,
    pub weight: u32,
    pub target: BackendTarget,
    /// backendRef-level filters, applied after the rule's (the config's,
    /// shared).
    pub filters: Filters,
    /// How requests reach it (from the Service port's `appProtocol`).
    pub protocol: AppProtocol,
    /// Set when connections use TLS (a BackendTLSPolicy targets the port).
    pub tls: Option<Arc<upstream_tls::UpstreamTls>>,
    /// The governing policy's resilience sections (load balancing, circuit
    /// breaker, outlier detection) compiled for this backend; `None` keeps
    /// the plain round robin of [`Backend::endpoint`].
    pub resilience: Option<Arc<crate::policy::upstream::BackendPolicy>>,
    next: AtomicU64,
}

/// The upstream protocol of a backend, from the Service port's `appProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppProtocol {
    /// HTTP/1.1 (no `appProtocol`, `http`, `kubernetes.io/ws`, or one this
    /// agent does not know and treats as plain HTTP).
    #[default]
    Http1,
    /// `kubernetes.io/h2c`: HTTP/2 with prior knowledge.
    H2c,
}

#[derive(Debug)]
pub enum BackendTarget {
    /// Ready endpoints (may be empty: 503). Shared by every backend of the
    /// same Service port in a compile.
    Endpoints(Arc<[SocketAddr]>),
    /// The reference does not resolve; requests get a 500. Boxed: rare, and
    /// inline it would make every backend 24 bytes larger.
    Invalid(Box<Unresolved>),
}

/// Why a backend reference does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The Gateway API `ResolvedRefs` reason: `RefNotPermitted`,
    /// `InvalidKind` or `BackendNotFound`.
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl Backend {
    pub fn new(
        service: impl Into<Arc<ObjectRef>>,
        port: u16,
        weight: u32,
        target: BackendTarget,
    ) -> Self {
        Self {
            service: service.into(),
            port,
            weight,
            target,
            filters: Filters::default(),
            protocol: AppProtocol::Http1,
            tls: None,
            resilience: None,
            next: AtomicU64::new(0),
        }
    }

    /// Round-robin over the ready endpoints.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match &self.target {
            BackendTarget::Endpoints(e) if !e.is_empty() => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % e.len();
                Some(e[i])
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};

    use super::*;
    use crate::config::PathMatch;

    fn entry(order: usize, path: PathMatch, tag: &str) -> RouteEntry {
        RouteEntry {
            route: Arc::new(ObjectRef::new("ns", tag)),
            route_name: Arc::from(tag),
            created: (order as i64, 0),
            rule: 0,
            match_index: 0,
            matcher: Arc::new(RouteMatch::path(path)),
            action: Arc::new(RuleAction::default()),
        }
    }

    fn find<'t>(t: &'t RouteTable, host: &str, path: &str) -> Option<&'t RouteEntry> {
        let headers = HeaderMap::new();
        t.find(host, &RequestView::new(&Method::GET, path, None, &headers))
    }

    #[test]
    fn exact_beats_prefix_and_longer_prefix_wins() {
        let t = RouteTable::build(vec![
            (None, entry(0, PathMatch::Prefix("/".into()), "root")),
            (None, entry(1, PathMatch::Prefix("/v1".into()), "v1")),
            (None, entry(2, PathMatch::Exact("/v1/x".into()), "exact")),
        ]);
        assert_eq!(find(&t, "h", "/v1/x").unwrap().route.name, "exact");
        assert_eq!(find(&t, "h", "/v1/y").unwrap().route.name, "v1");
        assert_eq!(find(&t, "h", "/v2").unwrap().route.name, "root");
    }

    #[test]
    fn more_specific_hostname_wins_over_path() {
        let t = RouteTable::build(vec![
            (
                Some(Hostname::Wildcard(".example.com".into())),
                entry(0, PathMatch::Exact("/x".into()), "wild"),
            ),
            (
                Some(Hostname::Exact("a.example.com".into())),
                entry(1, PathMatch::Prefix("/".into()), "exact-host"),
            ),
        ]);
        assert_eq!(
            find(&t, "a.example.com", "/x").unwrap().route.name,
            "exact-host"
        );
        assert_eq!(find(&t, "b.example.com", "/x").unwrap().route.name, "wild");
        assert!(find(&t, "example.com", "/x").is_none());
    }

    #[test]
    fn mirror_sampling_is_exact_per_cycle() {
        let b = || {
            Backend::new(
                ObjectRef::new("ns", "m"),
                80,
                1,
                BackendTarget::Endpoints(Arc::from([])),
            )
        };
        for (num, den, want) in [(20, 100, 40), (25, 50, 100), (0, 100, 0), (1, 1, 200)] {
            let m = MirrorTarget::new(b(), num, den);
            let hits = (0..200).filter(|_| m.sample()).count();
            assert_eq!(hits, want, "{num}/{den}");
        }
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let b = |name: &str, w| {
            Backend::new(
                ObjectRef::new("ns", name),
                80,
                w,
                BackendTarget::Endpoints(Arc::from([])),
            )
        };
        let g = BackendGroup::new(vec![b("a", 1), b("b", 3), b("zero", 0)]);
        let mut counts = HashMap::new();
        for _ in 0..400 {
            *counts
                .entry(g.pick().unwrap().service.name.clone())
                .or_insert(0) += 1;
        }
        assert_eq!(counts["a"], 100);
        assert_eq!(counts["b"], 300);
        assert!(!counts.contains_key("zero"));
        assert!(BackendGroup::new(vec![b("z", 0)]).pick().is_none());
    }
}
