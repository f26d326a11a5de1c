//! Validated domain types. Everything here has been checked once, where it
//! entered (see [`super::validate`]); consumers never re-validate.
use std::{collections::BTreeMap, fmt, net::IpAddr, sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, Method};

pub use crate::{
    matchers::{PathMatch, Pattern, StringMatch},
    policy::cors::{Cors, OriginPattern},
};
use ipnet::IpNet;

/// Namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The whole validated configuration, as read from one source.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub gateway_classes: Vec<GatewayClass>,
    pub gateways: Vec<Gateway>,
    /// ListenerSets: listeners other namespaces add to a Gateway that allows
    /// them (resolved into the Gateway by the control plane).
    pub listener_sets: Vec<ListenerSet>,
    /// Shared: the directory source caches converted documents and merges
    /// them into a new `Config` on every change; cloning 5,000 routes was
    /// most of that cost.
    pub routes: Vec<Arc<HttpRoute>>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub namespaces: Vec<Namespace>,
    pub reference_grants: Vec<ReferenceGrant>,
    /// Namespace identity of sources, from the agent config (not the directory).
    pub identity: super::NamespaceIdentity,
    pub secrets: Vec<Secret>,
    /// CA bundles (`ca.crt`) for BackendTLSPolicy and client-certificate validation.
    pub config_maps: Vec<ConfigMap>,
    pub backend_tls_policies: Vec<BackendTlsPolicy>,
    /// SluicePolicies (API policy attached to Gateways and HTTPRoutes).
    pub policies: Vec<super::SluicePolicy>,
    /// Which Consul services back `ConsulService` backendRefs.
    pub consul_services: Vec<ConsulService>,
}

/// `group: sluice.dev, kind: ConsulService` backends: the healthy instances
/// of a Consul service, resolved by [`crate::sources::discovery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulService {
    pub id: ObjectRef,
    /// The Consul service name.
    pub service: String,
    /// Instances must carry all of these tags.
    pub tags: Vec<String>,
    /// Consul datacenter; `None`: the agent's own.
    pub datacenter: Option<String>,
}

/// The kind of Consul-backed backendRefs (group `sluice.dev`).
pub const CONSUL_SERVICE_KIND: &str = "ConsulService";

/// Name prefix of the Service a ConsulService backendRef resolves through
/// (`consul:NAME` in the route's namespace). A `:` cannot occur in a
/// Kubernetes name, so such a Service never collides with a real one; the
/// discovery adds it, with an EndpointSlice per healthy instance.
pub const CONSUL_BACKEND_PREFIX: &str = "consul:";

/// A Secret (only `kubernetes.io/tls` ones are used: listener certificates).
#[derive(Clone, PartialEq)]
pub struct Secret {
    pub id: ObjectRef,
    /// `type`, e.g. `kubernetes.io/tls` (`Opaque` when unset).
    pub kind: String,
    /// Decoded `data` merged with `stringData` (which wins, as in Kubernetes).
    pub data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for Secret {
    /// Never prints the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The Secret type of TLS certificates.
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";

impl Config {
    /// Appends copies of everything in `other`, sharing its routes.
    pub fn extend_from(&mut self, other: &Config) {
        // Destructured so that a new kind of object cannot be forgotten here.
        let Config {
            gateway_classes,
            gateways,
            listener_sets,
            routes,
            services,
            endpoint_slices,
            namespaces,
            reference_grants,
            identity: _,
            secrets,
            config_maps,
            backend_tls_policies,
            policies,
            consul_services,
        } = other;
        self.gateway_classes.extend_from_slice(gateway_classes);
        self.gateways.extend_from_slice(gateways);
        self.listener_sets.extend_from_slice(listener_sets);
        self.routes.extend_from_slice(routes);
        self.services.extend_from_slice(services);
        self.endpoint_slices.extend_from_slice(endpoint_slices);
        self.namespaces.extend_from_slice(namespaces);
        self.reference_grants.extend_from_slice(reference_grants);
        self.secrets.extend_from_slice(secrets);
        self.config_maps.extend_from_slice(config_maps);
        self.backend_tls_policies
            .extend_from_slice(backend_tls_policies);
        self.policies.extend_from_slice(policies);
        self.consul_services.extend_from_slice(consul_services);
    }

    /// Appends everything in `other` (objects converted one by one).
    pub fn merge(&mut self, other: Config) {
        let Config {
            gateway_classes,
            gateways,
            listener_sets,
            routes,
            services,
            endpoint_slices,
            namespaces,
            reference_grants,
            identity: _,
            secrets,
            config_maps,
            backend_tls_policies,
            policies,
            consul_services,
        } = other;
        self.gateway_classes.extend(gateway_classes);
        self.gateways.extend(gateways);
        self.listener_sets.extend(listener_sets);
        self.routes.extend(routes);
        self.services.extend(services);
        self.endpoint_slices.extend(endpoint_slices);
        self.namespaces.extend(namespaces);
        self.reference_grants.extend(reference_grants);
        self.secrets.extend(secrets);
        self.config_maps.extend(config_maps);
        self.backend_tls_policies.extend(backend_tls_policies);
        self.policies.extend(policies);
        self.consul_services.extend(consul_services);
    }

    /// Whether the document holds exactly one HTTPRoute and nothing else.
    pub fn is_one_route(&self) -> bool {
        let Config {
            gateway_classes,
            gateways,
            listener_sets,
            routes,
            services,
            endpoint_slices,
            namespaces,
            reference_grants,
            identity,
            secrets,
            config_maps,
            backend_tls_policies,
            policies,
            consul_services,
        } = self;
        routes.len() == 1
            && gateway_classes.is_empty()
            && gateways.is_empty()
            && listener_sets.is_empty()
            && services.is_empty()
            && endpoint_slices.is_empty()
            && namespaces.is_empty()
            && reference_grants.is_empty()
            && *identity == Default::default()
            && secrets.is_empty()
            && config_maps.is_empty()
            && backend_tls_policies.is_empty()
            && policies.is_empty()
            && consul_services.is_empty()
    }
}

/// A Namespace; only its labels matter (for `allowedRoutes` selectors).
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A ReferenceGrant: lets objects of the `from` kinds/namespaces refer to the
/// `to` objects in the grant's own namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceGrant {
    pub id: ObjectRef,
    pub from: Vec<GrantFrom>,
    pub to: Vec<GrantTo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantTo {
    pub group: String,
    pub kind: String,
    /// `None`: every object of the kind in the grant's namespace.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayClass {
    pub name: String,
    pub controller_name: String,
    /// `spec.parametersRef` as `group/kind/[namespace/]name`. Sluice defines
    /// no parameters kind, so such a class is not accepted (`InvalidParameters`)
    /// and its Gateways are not served.
    pub parameters_ref: Option<String>,
}

/// A Gateway: one shard of the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub id: ObjectRef,
    /// `metadata.generation`, echoed as `observedGeneration` in status.
    pub generation: Option<i64>,
    pub class_name: String,
    /// Addresses the Gateway is reachable on. Empty: every local address.
    pub addresses: Vec<IpAddr>,
    /// `spec.addresses` asks for an IPAddress without a value
    /// (GatewayAddressEmpty): served on every local address, the Gateway is
    /// given the node's addresses in status.
    pub assign_address: bool,
    /// `spec.infrastructure.parametersRef` as `group/kind/name`. Sluice
    /// defines no parameters kind, so such a Gateway is not accepted
    /// (`InvalidParameters`).
    pub parameters_ref: Option<String>,
    pub listeners: Vec<Listener>,
    /// Source CIDRs from the `sluice.dev/source-ranges` annotation; empty: all sources.
    pub source_allow: Vec<IpNet>,
    /// Source CIDRs from the `sluice.dev/source-deny` annotation.
    pub source_deny: Vec<IpNet>,
    /// Per-source budget of new TCP connections, from `sluice.dev/syn-rate`
    /// (per second) and `sluice.dev/syn-burst`; enforced by `xdp_ingress`.
    pub syn_budget: Option<SynBudget>,
    /// Namespaces whose clients may connect, from `sluice.dev/admitted-namespaces`;
    /// `None`: every source. Enforced by sk_lookup (remote sources) and the
    /// cgroup connect hooks (local processes).
    pub admitted_namespaces: Option<Vec<String>>,
    /// `spec.tls.backend.clientCertificateRef`: presented to TLS backends.
    pub backend_client_certificate: Option<CertificateRef>,
    /// `spec.tls.frontend`: client-certificate validation per port.
    pub frontend_validation: FrontendValidation,
    /// Extra destination ports served by a listener, from `sluice.dev/port-ranges`
    /// (eBPF datapath only).
    pub port_ranges: Vec<PortRange>,
    /// `spec.allowedListeners.namespaces`: which ListenerSets may attach.
    pub allowed_listeners: AllowedListeners,
}

/// `allowedListeners.namespaces.from` of a Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedListeners {
    /// No ListenerSet attaches (the Gateway API default).
    #[default]
    None,
    /// ListenerSets in the Gateway's namespace.
    Same,
    All,
    /// ListenerSets in namespaces whose labels match.
    Selector(LabelSelector),
}

/// A ListenerSet: listeners added to the Gateway `parent` from the
/// ListenerSet's namespace. Its listeners are validated like a Gateway's;
/// whether they are served (allowed, not conflicted) is decided by the
/// control plane against the parent Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSet {
    pub id: ObjectRef,
    /// `metadata.generation`, echoed as `observedGeneration` in status.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp` (Unix seconds, nanoseconds): the older
    /// ListenerSet wins a listener conflict. `None` sorts after every timestamp.
    pub created: Option<(i64, u32)>,
    /// The Gateway (`spec.parentRef`).
    pub parent: ObjectRef,
    /// Listeners with their ListenerSet names; their certificateRefs
    /// default to the ListenerSet's namespace.
    pub listeners: Vec<Listener>,
}

/// Where a listener of a Gateway came from when a ListenerSet added it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerOrigin {
    /// The ListenerSet.
    pub set: ObjectRef,
    /// The listener's name in the ListenerSet (what a route's `sectionName`
    /// names); the Gateway knows it as [`ListenerOrigin::gateway_name`].
    pub section: String,
}

impl ListenerOrigin {
    /// The name of the listener within its Gateway: `namespace/set/section`.
    /// A `/` cannot occur in a listener name, so it never collides with the
    /// Gateway's own listeners nor with another set's.
    pub fn gateway_name(&self) -> String {
        format!("{}/{}/{}", self.set.namespace, self.set.name, self.section)
    }
}

/// Destination ports `first..=last` served as if they were the port of
/// `listener` (its routes, hostnames and TLS): one shard socket for a whole
/// range, the way a NodePort range is served without NodePort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange {
    pub listener: String,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// New connections per second and burst allowed per source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynBudget {
    pub rate: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerProtocol {
    Http,
    Https,
    /// `TLS` with `tls.mode: Passthrough`: connections are routed by the SNI
    /// of their ClientHello (TLSRoute) and relayed unchanged.
    TlsPassthrough,
    /// `TLS` with `tls.mode: Terminate` (the default mode): the gateway
    /// terminates TLS with the listener's certificates, routes by SNI
    /// (TLSRoute) and relays the decrypted bytes to the backend.
    TlsTerminate,
    /// `TCP`: connections are relayed to the backends of a TCPRoute.
    Tcp,
    /// `UDP`: datagrams are relayed, per client address, to the backends of
    /// a UDPRoute.
    Udp,
    /// A protocol this agent does not serve (SCTP, ...): the listener is
    /// reported as not accepted and carries no traffic.
    Other(String),
}

impl ListenerProtocol {
    /// Route kinds a listener of this protocol can take, in the order
    /// `supportedKinds` reports them when `allowedRoutes.kinds` is unset.
    pub fn route_kinds(&self) -> &'static [RouteKind] {
        match self {
            ListenerProtocol::Http | ListenerProtocol::Https => &[RouteKind::Http, RouteKind::Grpc],
            ListenerProtocol::TlsPassthrough | ListenerProtocol::TlsTerminate => &[RouteKind::Tls],
            ListenerProtocol::Tcp => &[RouteKind::Tcp],
            ListenerProtocol::Udp => &[RouteKind::Udp],
            ListenerProtocol::Other(_) => &[],
        }
    }

    /// Whether the agent serves listeners of this protocol.
    pub fn is_served(&self) -> bool {
        !matches!(self, ListenerProtocol::Other(_))
    }

    /// Whether connections are relayed at layer 4 (no HTTP is spoken).
    pub fn is_l4(&self) -> bool {
        matches!(
            self,
            ListenerProtocol::TlsPassthrough
                | ListenerProtocol::TlsTerminate
                | ListenerProtocol::Tcp
                | ListenerProtocol::Udp
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub hostname: Option<Hostname>,
    /// Which namespaces' routes may attach (`allowedRoutes.namespaces.from`).
    pub allowed_routes: AllowedRoutes,
    /// Route kinds `allowedRoutes.kinds` admits among those the protocol
    /// takes ([`ListenerProtocol::route_kinds`]; all of them when unset).
    pub allowed_kinds: Vec<RouteKind>,
    /// `allowedRoutes.kinds` entries this agent does not serve on this
    /// listener's protocol (`group/kind`); reported as ResolvedRefs=False,
    /// InvalidRouteKinds.
    pub invalid_route_kinds: Vec<String>,
    /// `tls` of an HTTPS listener (always set for HTTPS; mode Terminate).
    pub tls: Option<ListenerTls>,
    /// Set when a ListenerSet added this listener to its Gateway.
    pub origin: Option<ListenerOrigin>,
}

impl Listener {
    /// The name a route's `sectionName` selects this listener by (its name
    /// in the ListenerSet for a ListenerSet's listener).
    pub fn section(&self) -> &str {
        self.origin.as_ref().map_or(&self.name, |o| &o.section)
    }

    /// The namespace the listener belongs to: its ListenerSet's, or the
    /// Gateway's (`allowedRoutes` `Same`, ReferenceGrant `from`).
    pub fn namespace<'a>(&'a self, gateway: &'a Gateway) -> &'a str {
        self.origin
            .as_ref()
            .map_or(&gateway.id.namespace, |o| &o.set.namespace)
    }

    /// Whether routes of `kind` may attach (protocol and `allowedRoutes.kinds`).
    pub fn allows(&self, kind: RouteKind) -> bool {
        self.allowed_kinds.contains(&kind)
    }
}

/// `GatewayTLSConfig` with mode Terminate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerTls {
    /// In order; the first that resolves is served.
    pub certificate_refs: Vec<CertificateRef>,
}

/// One `certificateRefs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRef {
    /// `""` for the core group.
    pub group: String,
    pub kind: String,
    pub object: ObjectRef,
}

/// `allowedRoutes.namespaces.from` of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedRoutes {
    /// Only routes in the Gateway's namespace (the Gateway API default).
    #[default]
    Same,
    All,
    /// Routes in namespaces whose labels match.
    Selector(LabelSelector),
}

/// A Kubernetes label selector; every requirement must hold (an empty
/// selector selects everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: LabelOperator,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    LabelOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    // NotIn also holds when the label is absent (Kubernetes semantics).
                    LabelOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// A DNS name as Gateway API uses it: exact (`api.example.com`) or a leading
/// wildcard label (`*.example.com`). Stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hostname {
    Exact(String),
    /// The suffix including the leading dot: `.example.com`.
    Wildcard(String),
}

impl Hostname {
    /// Whether a request host (lower-case, without port) is covered by this name.
    /// A wildcard covers one or more labels in front of its suffix, never the suffix itself.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Hostname::Exact(h) => h == host,
            Hostname::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// Number of characters that count for precedence (the suffix for wildcards).
    pub fn specificity(&self) -> (bool, usize) {
        match self {
            Hostname::Exact(h) => (true, h.len()),
            Hostname::Wildcard(s) => (false, s.len()),
        }
    }

    /// The intersection of a listener hostname and a route hostname, per the
    /// Gateway API: the more specific of the two when one covers the other.
    pub fn intersect(listener: &Hostname, route: &Hostname) -> Option<Hostname> {
        use Hostname::*;
        match (listener, route) {
            (Exact(a), Exact(b)) => (a == b).then(|| listener.clone()),
            (Wildcard(_), Exact(b)) => listener.matches(b).then(|| route.clone()),
            (Exact(a), Wildcard(_)) => route.matches(a).then(|| listener.clone()),
            (Wildcard(a), Wildcard(b)) => {
                if a.ends_with(b.as_str()) {
                    Some(listener.clone())
                } else if b.ends_with(a.as_str()) {
                    Some(route.clone())
                } else {
                    None
                }
            }
        }
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hostname::Exact(h) => f.write_str(h),
            Hostname::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// Which Gateway API kind a route was written as. A GRPCRoute is converted
/// into the same route model as an HTTPRoute (a method match is a path match
/// on `/service/method`); so are TLSRoutes and TCPRoutes (their one rule has
/// the match-everything match and only backends: the route table then does
/// the hostname precedence for SNI). The kind stays for what differs:
/// listener `allowedRoutes.kinds`, ReferenceGrant `from`, status, upstream
/// protocol (HTTP/2 for gRPC, bytes relayed for TLS and TCP) and how
/// gateway-made errors are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RouteKind {
    #[default]
    Http,
    Grpc,
    /// TLSRoute: routed by SNI on a TLS Passthrough listener.
    Tls,
    /// TCPRoute: every connection of a TCP listener.
    Tcp,
    /// UDPRoute: every datagram session of a UDP listener.
    Udp,
}

impl RouteKind {
    /// The Kubernetes kind name (`HTTPRoute`, `GRPCRoute`, `TLSRoute`, `TCPRoute`, `UDPRoute`).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
            RouteKind::Tcp => "TCPRoute",
            RouteKind::Udp => "UDPRoute",
        }
    }

    /// Every kind, for parsing `allowedRoutes.kinds`.
    pub const ALL: [RouteKind; 5] = [
        RouteKind::Http,
        RouteKind::Grpc,
        RouteKind::Tls,
        RouteKind::Tcp,
        RouteKind::Udp,
    ];

    /// Whether the route's connections are relayed at layer 4.
    pub fn is_l4(self) -> bool {
        matches!(self, RouteKind::Tls | RouteKind::Tcp | RouteKind::Udp)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    /// Shared with the route table entries compiled from the route.
    pub id: Arc<ObjectRef>,
    /// HTTPRoute or GRPCRoute.
    pub kind: RouteKind,
    /// `metadata.generation`, echoed as `observedGeneration` in status.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp` as (Unix seconds, nanoseconds); older
    /// routes win precedence ties. `None` sorts after every timestamp.
    pub created: Option<(i64, u32)>,
    // Boxed slices, not `Vec`s: fixed once converted, and 8 bytes smaller
    // each.
    pub parents: Box<[ParentRef]>,
    pub hostnames: Box<[Hostname]>,
    pub rules: Box<[RouteRule]>,
    /// HTTPRoute delegation (parentRefs of kind HTTPRoute, or the chain a
    /// flattened route was delegated through); `None` for most routes.
    pub delegation: Option<Arc<super::Delegation>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// The Gateway; for a ListenerSet parentRef, the ListenerSet's parent
    /// Gateway once the control plane has resolved it (until then, and when
    /// the ListenerSet is not attached, [`ParentRef::UNRESOLVED`]).
    pub gateway: ObjectRef,
    /// Set for a parentRef of kind ListenerSet: only that set's listeners
    /// are selected. A parentRef to a Gateway selects only the Gateway's own.
    /// Boxed: rare, and inline it would make every parentRef 40 bytes larger.
    pub listener_set: Option<Box<ObjectRef>>,
    pub section_name: Option<String>,
    pub port: Option<u16>,
}

impl ParentRef {
    /// The `gateway` of a ListenerSet parentRef whose set is not attached:
    /// no Gateway has an empty name, so it selects nothing.
    pub const UNRESOLVED: ObjectRef = ObjectRef {
        namespace: String::new(),
        name: String::new(),
    };
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteRule {
    /// `name`: what a policy's `sectionName` selects.
    pub name: Option<String>,
    /// Matches; never empty (an omitted list means "PathPrefix /"). Shared
    /// with the route table entries compiled from them.
    pub matches: Box<[Arc<RouteMatch>]>,
    /// Rule-level filters, in the order given.
    pub filters: Filters,
    pub backends: Box<[BackendRef]>,
    pub timeouts: Timeouts,
    /// Shared with the rule actions compiled from it (and boxed: most rules
    /// have none, and the rule is 40 bytes smaller).
    pub retry: Option<Arc<Retry>>,
}

/// `HTTPRouteRule.retry` (experimental channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Response codes that are retried; connection failures and backend
    /// request timeouts are retried as well.
    pub codes: Vec<u16>,
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Minimum wait between attempts.
    pub backoff: Duration,
}

impl Retry {
    /// Used when `attempts` is not given.
    pub const DEFAULT_ATTEMPTS: u32 = 1;
    /// Used when `backoff` is not given.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
}

/// `HTTPRouteRule.timeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// Whole request, from request received to response complete (504 when exceeded).
    pub request: Option<Duration>,
    /// One request to a backend (504 when exceeded).
    pub backend_request: Option<Duration>,
}

/// One `HTTPRouteMatch`: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    /// At most one per (case-insensitive) name. (Boxed slices here: fixed
    /// once converted, and 8 bytes smaller each.)
    pub headers: Box<[HeaderMatch]>,
    /// At most one per (case-sensitive) name.
    pub query_params: Box<[QueryMatch]>,
    /// Set for a GRPCRoute match: its precedence is by the length of the
    /// service, then of the method, not by the path it was converted to.
    pub grpc: Option<GrpcMethodRank>,
}

/// Lengths of a GRPCRoute method match (the pattern's for a regular
/// expression; 0 when absent), which rank it among gRPC matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrpcMethodRank {
    pub service: u16,
    pub method: u16,
}

impl RouteMatch {
    /// `PathPrefix /`, what a rule without matches matches: one shared
    /// value, as most rules in a cluster have no matches.
    pub fn any_path() -> Arc<RouteMatch> {
        static ANY: std::sync::LazyLock<Arc<RouteMatch>> =
            std::sync::LazyLock::new(|| Arc::new(RouteMatch::path(PathMatch::Prefix("/".into()))));
        ANY.clone()
    }

    /// A match on a path alone.
    pub fn path(path: PathMatch) -> Self {
        Self {
            path,
            method: None,
            headers: Box::default(),
            query_params: Box::default(),
            grpc: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: StringMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMatch {
    pub name: String,
    pub value: StringMatch,
}

/// Filters in configured order, shared by the config and the rule actions
/// and backends compiled from it: a compile clones a reference count, not
/// the filters. Empty (most rules, nearly every backendRef) allocates
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(Option<Arc<[Filter]>>);

impl std::ops::Deref for Filters {
    type Target = [Filter];

    fn deref(&self) -> &[Filter] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl From<Vec<Filter>> for Filters {
    fn from(filters: Vec<Filter>) -> Self {
        Self((!filters.is_empty()).then(|| filters.into()))
    }
}

impl FromIterator<Filter> for Filters {
    fn from_iter<I: IntoIterator<Item = Filter>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl<'a> IntoIterator for &'a Filters {
    type Item = &'a Filter;
    type IntoIter = std::slice::Iter<'a, Filter>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// An HTTPRoute filter (rule level or backendRef level). The larger, rarer
/// variants are boxed so that every filter is not as large as the largest
/// (144 bytes instead of 72 for the common header modifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Redirect(Box<Redirect>),
    Rewrite(Rewrite),
    /// Rule level only; several may be given.
    Mirror(Mirror),
    /// Rule level only.
    Cors(Box<Cors>),
    /// Rule level only: the external authorization service decides.
    ExternalAuth(Box<super::policy::ExtAuthSection>),
}

/// `HTTPRequestMirrorFilter`: a copy of each sampled request goes to a
/// Service; its response is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub service: ObjectRef,
    pub port: u16,
    /// Share of requests mirrored: `numerator / denominator` (from `percent`
    /// or `fraction`; 100% when neither is set).
    pub numerator: u32,
    pub denominator: u32,
}

/// `HTTPHeaderFilter`: applied as remove, then set, then add.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// `HTTPRequestRedirectFilter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`; `None` keeps the request's scheme.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    pub status: u16,
}

/// `HTTPURLRewriteFilter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

/// `HTTPPathModifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the matched `PathPrefix` (only valid with one PathPrefix match).
    ReplacePrefixMatch(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    pub service: ObjectRef,
    pub port: u16,
    pub weight: u32,
    /// Filters applied only when this backend is picked (after the rule's).
    pub filters: Filters,
    /// `group/kind` when the reference is not to a core Service: kept so the
    /// route reports ResolvedRefs=False (InvalidKind) and the share of traffic
    /// for this backend gets a 500, as the Gateway API asks. (A `Box<str>`:
    /// rare, and 8 bytes smaller than a `String` in every backendRef.)
    pub unsupported_kind: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub id: ObjectRef,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    /// Numeric target port; a named target port is resolved through the
    /// EndpointSlice port of the same service-port name.
    pub target_port: Option<u16>,
    pub app_protocol: Option<String>,
    /// `protocol: UDP` (else TCP): a UDPRoute takes the UDP port of a number
    /// a Service has as both (DNS's `dns` and `dns-tcp`), other routes the
    /// TCP one.
    pub udp: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSlice {
    pub id: ObjectRef,
    /// Service this slice belongs to (`kubernetes.io/service-name` label).
    pub service: ObjectRef,
    /// Ready endpoint addresses.
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: u16,
}

/// A ConfigMap; only `data` is kept (CA bundles under `ca.crt`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigMap {
    pub id: ObjectRef,
    pub data: BTreeMap<String, String>,
}

/// A BackendTLSPolicy: connections to the targeted Service (ports) use TLS,
/// verified against the given CAs and names.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendTlsPolicy {
    pub id: ObjectRef,
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`; the oldest policy wins a conflict.
    pub created: Option<(i64, u32)>,
    pub targets: Vec<PolicyTarget>,
    /// `validation.caCertificateRefs` (in the policy's namespace).
    pub ca_refs: Vec<LocalRef>,
    /// `validation.wellKnownCACertificates` (only `System` is known).
    pub well_known: Option<String>,
    /// `validation.hostname`: SNI, and the name the certificate must carry
    /// when no `subjectAltNames` are given.
    pub hostname: String,
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// One `targetRefs` entry of a policy (in the policy's namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTarget {
    pub group: String,
    pub kind: String,
    pub name: String,
    /// A Service port name; `None`: every port.
    pub section_name: Option<String>,
}

/// A reference to an object in the referrer's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// A name the backend certificate may carry instead of `hostname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    /// A DNS name (lower-case, may start with `*.`).
    Hostname(String),
    Uri(String),
}

/// `Gateway.spec.tls.frontend`: which ports ask clients for a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontendValidation {
    /// `default`: every HTTPS port without a `perPort` entry.
    pub default: Option<ClientValidation>,
    /// `perPort` entries by port (`None`: that port does not validate).
    pub per_port: BTreeMap<u16, Option<ClientValidation>>,
}

impl FrontendValidation {
    /// The validation of an HTTPS port, if any.
    pub fn for_port(&self, port: u16) -> Option<&ClientValidation> {
        match self.per_port.get(&port) {
            Some(v) => v.as_ref(),
            None => self.default.as_ref(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.per_port.is_empty()
    }
}

/// `FrontendTLSValidation`: client certificates must chain to these CAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientValidation {
    pub ca_refs: Vec<CertificateRef>,
    /// `AllowInsecureFallback`: a client without a (valid) certificate is
    /// still served; `AllowValidOnly` (default): the handshake fails.
    pub insecure_fallback: bool,
}
