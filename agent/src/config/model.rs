//! Validated domain types. Everything here has been checked once, where it
//! entered (see [`super::validate`]); consumers never re-validate.
use std::{fmt, net::IpAddr};

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
    pub routes: Vec<HttpRoute>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
}

#[derive(Debug, Clone)]
pub struct GatewayClass {
    pub name: String,
    pub controller_name: String,
}

/// A Gateway: one shard of the agent.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub id: ObjectRef,
    pub class_name: String,
    /// Addresses the Gateway is reachable on. Empty: every local address.
    pub addresses: Vec<IpAddr>,
    pub listeners: Vec<Listener>,
    /// Source CIDRs from the `sluice.dev/source-ranges` annotation; empty: all sources.
    pub source_allow: Vec<IpNet>,
    /// Source CIDRs from the `sluice.dev/source-deny` annotation.
    pub source_deny: Vec<IpNet>,
    /// Per-source budget of new TCP connections, from `sluice.dev/syn-rate`
    /// (per second) and `sluice.dev/syn-burst`; enforced by `xdp_ingress`.
    pub syn_budget: Option<SynBudget>,
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
    /// A protocol this agent does not serve (TCP, TLS, UDP, ...): the listener
    /// is reported as not accepted and carries no traffic.
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub hostname: Option<Hostname>,
    /// Which namespaces' routes may attach (`allowedRoutes.namespaces.from`).
    pub allowed_routes: AllowedRoutes,
}

/// `allowedRoutes.namespaces.from` of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllowedRoutes {
    /// Only routes in the Gateway's namespace (the Gateway API default).
    #[default]
    Same,
    All,
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

#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub id: ObjectRef,
    pub parents: Vec<ParentRef>,
    pub hostnames: Vec<Hostname>,
    pub rules: Vec<RouteRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    pub gateway: ObjectRef,
    pub section_name: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct RouteRule {
    /// Matches; never empty (an omitted list means "PathPrefix /").
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<BackendRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub path: PathMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Element-wise prefix, stored without a trailing slash (except `/` itself).
    Prefix(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                p == "/"
                    || (path.starts_with(p.as_str())
                        && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    pub service: ObjectRef,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: ObjectRef,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    /// Numeric target port; a named target port is resolved through the
    /// EndpointSlice port of the same service-port name.
    pub target_port: Option<u16>,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EndpointSlice {
    pub id: ObjectRef,
    /// Service this slice belongs to (`kubernetes.io/service-name` label).
    pub service: ObjectRef,
    /// Ready endpoint addresses.
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: u16,
}
