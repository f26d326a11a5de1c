//! The Gateway API status model: conditions for our GatewayClasses, Gateways
//! (with per-listener `attachedRoutes`) and HTTPRoute parents, computed from
//! the same attachment rules the compiler uses, so status and behaviour
//! cannot disagree. Served at the admin `/status`; writing it back to the
//! Kubernetes API is the job of the elected status writer.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use serde::Serialize;

use super::compile::{
    effective_hostnames, namespace_allowed, parent_selects, BackendResolver, NamespaceLabels,
};
use super::route_status::RouteOutcome;
pub use super::{
    backend_tls::{PolicyAncestorStatus, PolicyStatus},
    route_status::RouteStatuses,
};
use crate::{
    config::{Config, Filter, Gateway, HttpRoute, ListenerProtocol, ObjectRef},
    snapshot::Unresolved,
};

/// Status of everything this agent is responsible for.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub gateway_classes: Vec<ClassStatus>,
    pub gateways: Vec<GatewayStatus>,
    /// ListenerSets whose parent Gateway is ours.
    pub listener_sets: Vec<ListenerSetStatus>,
    /// Sorted by namespace/name; compact and shared with the previous
    /// status where routes did not change (see [`RouteStatuses`]).
    #[serde(rename = "httpRoutes")]
    pub http_routes: RouteStatuses,
    /// BackendTLSPolicies with their ancestors.
    pub policies: Vec<PolicyStatus>,
}

/// One `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `"True"` or `"False"`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

pub(super) fn cond(
    kind: &'static str,
    ok: bool,
    reason: &'static str,
    message: impl Into<String>,
) -> Condition {
    Condition {
        kind,
        status: if ok { "True" } else { "False" },
        reason,
        message: message.into(),
        observed_generation: None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassStatus {
    pub name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub namespace: String,
    pub name: String,
    /// Addresses the Gateway is reachable on (its `spec.addresses`, which the
    /// agent binds or steers); empty for a Gateway on every local address.
    pub addresses: Vec<GatewayStatusAddress>,
    pub conditions: Vec<Condition>,
    /// The Gateway's own listeners (a ListenerSet's are in its status).
    pub listeners: Vec<ListenerStatus>,
    /// ListenerSets attached: admitted with at least one accepted listener.
    /// `None` for a Gateway that admits none (`allowedListeners` unset), so
    /// nothing is written where a Gateway API older than v1.5 has no field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_listener_sets: Option<u32>,
}

/// Status of a ListenerSet: `Accepted` and `Programmed`, and its listeners
/// by their names in the set.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSetStatus {
    pub namespace: String,
    pub name: String,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayStatusAddress {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<RouteKind>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteKind {
    pub group: &'static str,
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentRefStatus,
    pub controller_name: &'static str,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRefStatus {
    pub group: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Why a listener of a Gateway (namespace/name, listener name) is not served.
#[derive(Debug, Clone)]
pub enum ListenerProblem {
    /// No `certificateRefs` entry resolves (`InvalidCertificateRef`,
    /// `RefNotPermitted`).
    Certificate(Unresolved),
    /// Another listener uses the port with another protocol.
    ProtocolConflict,
    /// Another listener uses the port, protocol and hostname.
    HostnameConflict,
    /// No CA of the port's client-certificate validation resolves
    /// (`InvalidCACertificateRef`, `InvalidCACertificateKind`, `RefNotPermitted`).
    ClientValidation(Unresolved),
}

pub type ListenerProblems = HashMap<(ObjectRef, String), ListenerProblem>;

/// The served-protocol listeners of a Gateway that are not distinct: every
/// listener sharing its port with a listener of another protocol
/// (`ProtocolConflict`), or with one of the same protocol and hostname
/// (`HostnameConflict`). All of them are conflicted, none is picked as the
/// winner. Listeners of protocols Sluice does not serve conflict with nothing.
pub(super) fn listener_conflicts(gateway: &Gateway) -> HashMap<&str, ListenerProblem> {
    let mut out = HashMap::new();
    for (i, l) in gateway.listeners.iter().enumerate() {
        let others = gateway
            .listeners
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, o)| o);
        if let Some(p) = conflict_with(l, others) {
            out.insert(l.name.as_str(), p);
        }
    }
    out
}

/// How listener `l` conflicts with `others` (the same rule for a Gateway's
/// own listeners and for a ListenerSet's joining them): a served listener
/// on the port of one of another protocol (`ProtocolConflict`, which wins),
/// or of the same protocol and hostname (`HostnameConflict`).
pub(super) fn conflict_with<'a>(
    l: &crate::config::Listener,
    others: impl IntoIterator<Item = &'a crate::config::Listener>,
) -> Option<ListenerProblem> {
    if !l.protocol.is_served() {
        return None;
    }
    let mut problem = None;
    for o in others
        .into_iter()
        .filter(|o| o.protocol.is_served() && o.port == l.port)
    {
        if o.protocol != l.protocol {
            return Some(ListenerProblem::ProtocolConflict);
        }
        if o.hostname == l.hostname {
            problem = Some(ListenerProblem::HostnameConflict);
        }
    }
    problem
}

/// Why a route does not attach to a Gateway through a parentRef.
fn attach_failure(
    route: &HttpRoute,
    gateway: &Gateway,
    parent: &crate::config::ParentRef,
    namespaces: &NamespaceLabels<'_>,
    conflicts: &super::kind_conflict::KindConflicts,
) -> Option<(&'static str, String)> {
    let selected: Vec<_> = gateway
        .listeners
        .iter()
        .filter(|l| parent_selects(parent, gateway, l))
        .collect();
    if selected.is_empty() {
        return Some((
            "NoMatchingParent",
            "no listener matches the parentRef's sectionName/port".into(),
        ));
    }
    let allowed: Vec<_> = selected
        .into_iter()
        .filter(|l| namespace_allowed(l, gateway, route, namespaces))
        .collect();
    if allowed.is_empty() {
        return Some((
            "NotAllowedByListeners",
            format!(
                "no listener allows {}s from namespace {}",
                route.kind.as_str(),
                route.id.namespace
            ),
        ));
    }
    let intersecting: Vec<_> = allowed
        .into_iter()
        .filter(|l| !effective_hostnames(l.hostname.as_ref(), &route.hostnames).is_empty())
        .collect();
    if intersecting.is_empty() {
        return Some((
            "NoMatchingListenerHostname",
            "no listener hostname intersects the route's hostnames".into(),
        ));
    }
    // The spec names no reason for the GRPCRoute/HTTPRoute conflict; the
    // listener does not take the route, as with NotAllowedByListeners.
    let mut yielded = intersecting
        .iter()
        .map(|l| conflicts.loses_to(route, gateway, &l.name));
    if let Some(Some((kind, winner))) = yielded.next().filter(|_| {
        intersecting
            .iter()
            .all(|l| conflicts.loses_to(route, gateway, &l.name).is_some())
    }) {
        return Some((
            "NotAllowedByListeners",
            format!(
                "the {} {winner} has a hostname in common on this listener; a GRPCRoute and an \
                 HTTPRoute cannot share a hostname (the older route is accepted)",
                kind.as_str()
            ),
        ));
    }
    None
}

/// Computes the status. `ours`: Gateways of our classes; `served`: those
/// that got a shard; `attached`: per Gateway of `ours` and listener, the
/// routes attached to it; `http_routes`: the routes' status (sorted).
/// `sets`: what resolving did with each ListenerSet (their status is
/// computed with their Gateway's, whose listeners they became).
#[allow(clippy::too_many_arguments)] // One caller (the compile), distinct inputs.
pub(super) fn compute(
    config: &Config,
    controller: &'static str,
    ours: &[&Gateway],
    served: &HashSet<&ObjectRef>,
    problems: &ListenerProblems,
    attached: &[Vec<u32>],
    http_routes: RouteStatuses,
    sets: &[super::listener_sets::SetOutcome],
) -> Status {
    let mut status = Status::default();
    for class in config
        .gateway_classes
        .iter()
        .filter(|c| c.controller_name == controller)
    {
        let accepted = match &class.parameters_ref {
            None => cond("Accepted", true, "Accepted", "handled by this agent"),
            Some(p) => cond(
                "Accepted",
                false,
                "InvalidParameters",
                format!("parametersRef {p} cannot be resolved: Sluice has no parameters kinds"),
            ),
        };
        status.gateway_classes.push(ClassStatus {
            name: class.name.clone(),
            conditions: vec![accepted],
        });
    }
    for (gi, gateway) in ours.iter().enumerate() {
        let is_served = served.contains(&gateway.id);
        let mut listeners = Vec::new();
        // Statuses of ListenerSets' listeners, by set, named as in the set.
        let mut of_sets: HashMap<&ObjectRef, Vec<ListenerStatus>> = HashMap::new();
        for (li, l) in gateway.listeners.iter().enumerate() {
            // Attached: selected by a parentRef, allowed, hostnames intersect —
            // exactly the routes whose Accepted condition is True for it
            // (counted per route by the route compile).
            let attached = attached[gi][li];
            // Both route kinds Sluice serves, in the order allowedRoutes
            // admits them (every kind when it names none).
            let route_kinds: Vec<RouteKind> = l
                .allowed_kinds
                .iter()
                .map(|kind| RouteKind {
                    group: super::refgrant::GATEWAY_GROUP,
                    kind: kind.as_str(),
                })
                .collect();
            let (supported_kinds, mut conditions): (Vec<RouteKind>, Vec<Condition>) = match &l
                .protocol
            {
                ListenerProtocol::Http
                | ListenerProtocol::Https
                | ListenerProtocol::TlsPassthrough
                | ListenerProtocol::TlsTerminate
                | ListenerProtocol::Tcp
                | ListenerProtocol::Udp => (
                    route_kinds,
                    vec![
                        // A conflict names itself in Accepted too, as the
                        // v1.6 conformance suite expects (and in Conflicted).
                        match problems.get(&(gateway.id.clone(), l.name.clone())) {
                            Some(
                                p @ (ListenerProblem::ProtocolConflict
                                | ListenerProblem::HostnameConflict),
                            ) => cond(
                                "Accepted",
                                false,
                                if matches!(p, ListenerProblem::ProtocolConflict) {
                                    "ProtocolConflict"
                                } else {
                                    "HostnameConflict"
                                },
                                format!(
                                    "port {} is shared with a listener it conflicts with",
                                    l.port
                                ),
                            ),
                            Some(ListenerProblem::ClientValidation(u)) => {
                                cond("Accepted", false, "NoValidCACertificate", u.message.clone())
                            }
                            _ => cond("Accepted", true, "Accepted", ""),
                        },
                        match problems.get(&(gateway.id.clone(), l.name.clone())) {
                            Some(
                                ListenerProblem::Certificate(u)
                                | ListenerProblem::ClientValidation(u),
                            ) => cond("ResolvedRefs", false, u.reason, u.message.clone()),
                            _ => cond("ResolvedRefs", true, "ResolvedRefs", ""),
                        },
                        match problems.get(&(gateway.id.clone(), l.name.clone())) {
                            Some(ListenerProblem::Certificate(_)) => {
                                cond("Programmed", false, "Invalid", "no usable certificate")
                            }
                            Some(ListenerProblem::ClientValidation(_)) => cond(
                                "Programmed",
                                false,
                                "Invalid",
                                "no usable CA for client-certificate validation",
                            ),
                            Some(
                                ListenerProblem::ProtocolConflict
                                | ListenerProblem::HostnameConflict,
                            ) => cond(
                                "Programmed",
                                false,
                                "Invalid",
                                "conflicted listeners are not served",
                            ),
                            None if is_served => cond("Programmed", true, "Programmed", ""),
                            None => {
                                cond("Programmed", false, "Invalid", "the Gateway is not served")
                            }
                        },
                    ],
                ),
                ListenerProtocol::Other(p) => (
                    Vec::new(),
                    vec![
                        cond(
                            "Accepted",
                            false,
                            "UnsupportedProtocol",
                            format!("protocol {p} is not supported"),
                        ),
                        cond("ResolvedRefs", true, "ResolvedRefs", ""),
                        cond(
                            "Programmed",
                            false,
                            "Invalid",
                            format!("protocol {p} is not supported"),
                        ),
                    ],
                ),
            };
            if !l.invalid_route_kinds.is_empty() {
                // Replaces the ResolvedRefs=True set above.
                conditions.retain(|c| c.kind != "ResolvedRefs");
                conditions.push(cond(
                    "ResolvedRefs",
                    false,
                    "InvalidRouteKinds",
                    format!(
                        "unsupported route kinds: {}",
                        l.invalid_route_kinds.join(", ")
                    ),
                ));
            }
            conditions.push(match problems.get(&(gateway.id.clone(), l.name.clone())) {
                Some(ListenerProblem::ProtocolConflict) => cond(
                    "Conflicted",
                    true,
                    "ProtocolConflict",
                    format!("port {} is used with another protocol", l.port),
                ),
                Some(ListenerProblem::HostnameConflict) => cond(
                    "Conflicted",
                    true,
                    "HostnameConflict",
                    format!(
                        "another {:?} listener on port {} has the same hostname",
                        l.protocol, l.port
                    ),
                ),
                _ => cond("Conflicted", false, "NoConflicts", ""),
            });
            let listener_status = ListenerStatus {
                name: l.section().to_owned(),
                supported_kinds,
                attached_routes: attached,
                conditions,
            };
            match &l.origin {
                Some(o) => {
                    let generation = sets
                        .iter()
                        .find(|s| s.set == o.set)
                        .and_then(|s| s.generation);
                    let mut st = listener_status;
                    set_generation(&mut st.conditions, generation);
                    of_sets.entry(&o.set).or_default().push(st);
                }
                None => {
                    let mut st = listener_status;
                    set_generation(&mut st.conditions, gateway.generation);
                    listeners.push(st);
                }
            }
        }
        let mut attached_listener_sets = 0;
        let parent_refused = invalid_parameters(config, gateway).is_some();
        for set in sets.iter().filter(|s| s.parent == gateway.id) {
            let st =
                super::listener_sets::set_status(set, of_sets.remove(&set.set), parent_refused);
            if st.conditions[0].status == "True" {
                attached_listener_sets += 1;
            }
            status.listener_sets.push(st);
        }
        let any_programmed = gateway.listeners.iter().any(|l| {
            l.origin.is_none()
                && l.protocol.is_served()
                && !problems.contains_key(&(gateway.id.clone(), l.name.clone()))
        });
        let addresses = gateway_addresses(gateway, node_addresses);
        let mut conditions = vec![
            gateway_accepted(config, gateway, &listeners),
            match (is_served, any_programmed) {
                _ if invalid_parameters(config, gateway).is_some() => cond(
                    "Programmed",
                    false,
                    "Invalid",
                    "the Gateway is not accepted",
                ),
                (true, true) if addresses.is_empty() && gateway.assign_address => cond(
                    "Programmed",
                    false,
                    "AddressNotAssigned",
                    "the node has no address to assign",
                ),
                (true, true) => cond("Programmed", true, "Programmed", ""),
                (false, _) => cond(
                    "Programmed",
                    false,
                    "NoResources",
                    "no shard left for this Gateway",
                ),
                (true, false) => cond("Programmed", false, "Invalid", "no listener is served"),
            },
        ];
        set_generation(&mut conditions, gateway.generation);
        status.gateways.push(GatewayStatus {
            namespace: gateway.id.namespace.clone(),
            name: gateway.id.name.clone(),
            addresses: addresses
                .iter()
                .map(|a| GatewayStatusAddress {
                    kind: "IPAddress",
                    value: a.to_string(),
                })
                .collect(),
            conditions,
            listeners,
            attached_listener_sets: (gateway.allowed_listeners
                != crate::config::AllowedListeners::None)
                .then_some(attached_listener_sets),
        });
    }

    status.http_routes = http_routes;
    status
}

/// What the status checks find for one route towards its parents of ours;
/// `None` when it has none.
pub(super) fn route_outcome(
    route: &Arc<HttpRoute>,
    ours: &[&Gateway],
    namespaces: &NamespaceLabels<'_>,
    resolver: &BackendResolver<'_>,
    conflicts: &super::kind_conflict::KindConflicts,
) -> Option<RouteOutcome> {
    let mut mask = 0u32;
    let mut refused = Vec::new();
    // Validation allows at most 32 parentRefs (the CRD's limit).
    for (i, p) in route.parents.iter().enumerate().take(32) {
        let Some(gateway) = ours.iter().find(|g| g.id == p.gateway) else {
            // Not ours (or missing): its controller reports, not us.
            continue;
        };
        mask |= 1 << i;
        if let Some((reason, message)) = attach_failure(route, gateway, p, namespaces, conflicts) {
            refused.push((i as u8, reason, message.into_boxed_str()));
        }
    }
    (mask != 0).then(|| RouteOutcome::Checked {
        route: route.clone(),
        ours: mask,
        refused: refused.into(),
        unresolved: unresolved_ref(route, resolver).map(Box::new),
    })
}

/// Why the parameters of a Gateway (its own `infrastructure.parametersRef`
/// or its class's `parametersRef`) cannot be resolved: Sluice defines no
/// parameters kinds, so any reference is refused.
pub(super) fn invalid_parameters(config: &Config, gateway: &Gateway) -> Option<String> {
    if let Some(p) = &gateway.parameters_ref {
        return Some(format!(
            "infrastructure.parametersRef {p} cannot be resolved: Sluice has no parameters kinds"
        ));
    }
    let class = config
        .gateway_classes
        .iter()
        .find(|c| c.name == gateway.class_name)?;
    let p = class.parameters_ref.as_ref()?;
    Some(format!(
        "the parametersRef {p} of GatewayClass {} cannot be resolved: Sluice has no parameters kinds",
        class.name
    ))
}

/// The Gateway's `Accepted` condition: `InvalidParameters` for parameters
/// Sluice cannot resolve; else accepted when at least one listener is, with
/// reason `ListenersNotValid` (True or False) as soon as one listener is not.
fn gateway_accepted(config: &Config, gateway: &Gateway, listeners: &[ListenerStatus]) -> Condition {
    if let Some(why) = invalid_parameters(config, gateway) {
        return cond("Accepted", false, "InvalidParameters", why);
    }
    let invalid: Vec<&str> = listeners
        .iter()
        .filter(|l| {
            l.conditions
                .iter()
                .any(|c| c.kind == "Accepted" && c.status == "False")
        })
        .map(|l| l.name.as_str())
        .collect();
    match (invalid.len(), listeners.len()) {
        (0, _) => cond("Accepted", true, "Accepted", ""),
        (n, total) if n == total => cond(
            "Accepted",
            false,
            "ListenersNotValid",
            "no listener is valid",
        ),
        _ => cond(
            "Accepted",
            true,
            "ListenersNotValid",
            format!("listeners not accepted: {}", invalid.join(", ")),
        ),
    }
}

/// The addresses reported for a Gateway: its own, or, when it asks for an
/// address without a value (GatewayAddressEmpty), the node's: such a Gateway
/// is served on every local address.
fn gateway_addresses(gateway: &Gateway, node: impl FnOnce() -> Vec<IpAddr>) -> Vec<IpAddr> {
    if gateway.assign_address && gateway.addresses.is_empty() {
        node()
    } else {
        gateway.addresses.clone()
    }
}

/// The addresses of this node's interfaces that are up, loopback last (so a
/// node with other addresses reports those first), at most 16 (the status
/// API's limit). IPv6 link-local addresses are left out: they need a zone.
pub fn node_addresses() -> Vec<IpAddr> {
    let mut out: Vec<(bool, IpAddr)> = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is an element of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family says its type.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sa.sin6_addr.s6_addr)
                }
                _ => continue,
            }
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !link_local && !out.iter().any(|(_, x)| *x == ip) {
            out.push((ip.is_loopback(), ip));
        }
    }
    // SAFETY: freeing the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(head) };
    out.sort_by_key(|(loopback, ip)| (*loopback, ip.is_ipv6()));
    out.into_iter().map(|(_, ip)| ip).take(16).collect()
}

/// For `ResolvedRefs` of a route: the first backendRef or mirror reference
/// that does not resolve names the reason.
fn unresolved_ref(route: &HttpRoute, resolver: &BackendResolver<'_>) -> Option<Unresolved> {
    for rule in &route.rules {
        for b in &rule.backends {
            if let Err(u) = resolver.check(route, b.unsupported_kind.as_deref(), &b.service, b.port)
            {
                return Some(u);
            }
        }
        for f in &rule.filters {
            if let Filter::Mirror(m) = f {
                if let Err(u) = resolver.check(route, None, &m.service, m.port) {
                    return Some(u);
                }
            }
        }
    }
    None
}

pub(super) fn set_generation(conditions: &mut [Condition], generation: Option<i64>) {
    for c in conditions {
        c.observed_generation = generation;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        config::parse_documents,
        control::{compile, Compiled, ShardIds},
    };

    const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra, generation: 3}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: foo.example.com}
  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: missing-cert}]}}
  - {name: sctp, port: 9000, protocol: SCTP}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: infra}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: other}
spec: {ports: [{port: 8080}]}
"#;

    fn status(routes: &str) -> Status {
        let text = format!("{BASE}---\n{routes}");
        let cfg = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        compile(&cfg, &mut ShardIds::default(), 1).status
    }

    fn route(name: &str, ns: &str, parent: &str, hostnames: &str, backend: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: {ns}, generation: 7}}\n\
             spec:\n  parentRefs: [{parent}]\n  hostnames: [{hostnames}]\n  \
             rules: [{{backendRefs: [{backend}]}}]\n---\n"
        )
    }

    fn condition<'a>(conds: &'a [Condition], kind: &str) -> &'a Condition {
        conds
            .iter()
            .find(|c| c.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} in {conds:?}"))
    }

    fn route_cond(s: &Status, name: &str, kind: &str) -> (&'static str, &'static str) {
        let r = s.http_routes.iter().find(|r| r.name == name).unwrap();
        let c = condition(&r.parents[0].conditions, kind);
        (c.status, c.reason)
    }

    #[test]
    fn attached_routes_count_only_accepted_routes() {
        let s = status(&format!(
            "{}{}{}",
            route("a", "infra", "{name: gw}", "", "{name: svc, port: 8080}"),
            route(
                "b",
                "infra",
                "{name: gw, sectionName: http}",
                "foo.example.com",
                "{name: svc, port: 8080}"
            ),
            route(
                "c",
                "infra",
                "{name: gw, sectionName: http}",
                "bar.example.com",
                "{name: svc, port: 8080}"
            ),
        ));
        let gw = &s.gateways[0];
        let l = |n: &str| gw.listeners.iter().find(|l| l.name == n).unwrap();
        assert_eq!(l("http").attached_routes, 2);
        assert_eq!(
            l("https").attached_routes,
            1,
            "HTTPS counts although not programmed"
        );
        assert_eq!(
            condition(&l("https").conditions, "Programmed").status,
            "False"
        );
        assert_eq!(
            condition(&l("sctp").conditions, "Accepted").reason,
            "UnsupportedProtocol"
        );
        assert!(l("sctp").supported_kinds.is_empty());
        assert_eq!(condition(&gw.conditions, "Programmed").status, "True");
        assert_eq!(
            condition(&gw.conditions, "Accepted").observed_generation,
            Some(3)
        );
        assert_eq!(route_cond(&s, "a", "Accepted"), ("True", "Accepted"));
        assert_eq!(
            route_cond(&s, "c", "Accepted"),
            ("False", "NoMatchingListenerHostname")
        );
        assert_eq!(
            s.http_routes.iter().next().unwrap().parents[0].conditions[0].observed_generation,
            Some(7)
        );
        assert_eq!(s.gateway_classes[0].conditions[0].status, "True");
    }

    #[test]
    fn invalid_route_kinds() {
        let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: only-invalid, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: InvalidRoute}]}}
  - {name: both, port: 81, protocol: HTTP, allowedRoutes: {kinds: [{kind: InvalidRoute}, {kind: HTTPRoute}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
"#;
        let cfg = parse_documents([(Path::new("t.yaml"), text)]).unwrap();
        let s = compile(&cfg, &mut ShardIds::default(), 1).status;
        let l = &s.gateways[0].listeners;
        assert!(l[0].supported_kinds.is_empty());
        assert_eq!(l[0].attached_routes, 0);
        assert_eq!(
            condition(&l[0].conditions, "ResolvedRefs").reason,
            "InvalidRouteKinds"
        );
        assert_eq!(l[1].supported_kinds.len(), 1);
        assert_eq!(l[1].attached_routes, 1);
        assert_eq!(condition(&l[1].conditions, "ResolvedRefs").status, "False");
    }

    fn gateway_status(gateway_yaml: &str) -> (Status, Compiled) {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
             metadata: {{name: sluice}}\nspec: {{controllerName: sluice.dev/gateway-controller}}\n\
             ---\n{gateway_yaml}"
        );
        let cfg = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        let c = compile(&cfg, &mut ShardIds::default(), 1);
        (c.status.clone(), c)
    }

    fn listener<'a>(s: &'a Status, name: &str) -> &'a ListenerStatus {
        s.gateways[0]
            .listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap()
    }

    #[test]
    fn some_invalid_listeners_keep_the_gateway_accepted_with_listeners_not_valid() {
        let s = status("");
        let c = condition(&s.gateways[0].conditions, "Accepted");
        assert_eq!((c.status, c.reason), ("True", "ListenersNotValid"));
        assert!(c.message.contains("sctp"), "{}", c.message);
        let (s, _) = gateway_status(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: sluice\n  \
             listeners: [{name: a, port: 80, protocol: HTTP}]\n",
        );
        let c = condition(&s.gateways[0].conditions, "Accepted");
        assert_eq!((c.status, c.reason), ("True", "Accepted"));
        let (s, _) = gateway_status(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: sluice\n  \
             listeners: [{name: a, port: 80, protocol: INVALID}]\n",
        );
        let c = condition(&s.gateways[0].conditions, "Accepted");
        assert_eq!((c.status, c.reason), ("False", "ListenersNotValid"));
    }

    #[test]
    fn every_conflicting_listener_is_conflicted_and_none_is_served() {
        let (s, compiled) = gateway_status(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: plain, port: 80, protocol: HTTP}
  - {name: secure, port: 80, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}
  - {name: same-a, port: 81, protocol: HTTP, hostname: a.example.com}
  - {name: same-b, port: 81, protocol: HTTP, hostname: a.example.com}
  - {name: other-host, port: 81, protocol: HTTP, hostname: b.example.com}
  - {name: alone, port: 82, protocol: HTTP}
"#,
        );
        for (name, reason) in [
            ("plain", "ProtocolConflict"),
            ("secure", "ProtocolConflict"),
            ("same-a", "HostnameConflict"),
            ("same-b", "HostnameConflict"),
        ] {
            let l = listener(&s, name);
            let c = condition(&l.conditions, "Conflicted");
            assert_eq!((c.status, c.reason), ("True", reason), "{name}");
            assert_eq!(condition(&l.conditions, "Accepted").status, "False");
            assert_eq!(condition(&l.conditions, "Programmed").status, "False");
        }
        for name in ["other-host", "alone"] {
            let c = condition(&listener(&s, name).conditions, "Conflicted");
            assert_eq!((c.status, c.reason), ("False", "NoConflicts"), "{name}");
        }
        let served: Vec<&str> = compiled.snapshot.shards[0]
            .listeners
            .iter()
            .map(|l| &*l.name)
            .collect();
        assert_eq!(served, ["other-host", "alone"]);
        let c = condition(&s.gateways[0].conditions, "Accepted");
        assert_eq!((c.status, c.reason), ("True", "ListenersNotValid"));
    }

    #[test]
    fn tls_and_tcp_listeners_take_their_kinds_and_conflict_with_other_protocols() {
        let (s, compiled) = gateway_status(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: pass-a, port: 8443, protocol: TLS, hostname: a.example.com, tls: {mode: Passthrough}}
  - {name: pass-b, port: 8443, protocol: TLS, hostname: b.example.com, tls: {mode: Passthrough}}
  - {name: tcp, port: 5432, protocol: TCP}
  - {name: tls-http, port: 9443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: TLSRoute}]}}
  - {name: terminate, port: 7443, protocol: TLS, tls: {mode: Terminate, certificateRefs: [{name: missing}]}}
  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}
  - {name: tls-on-443, port: 443, protocol: TLS, tls: {mode: Passthrough}}
  - {name: udp, port: 5353, protocol: UDP, hostname: ignored.example.com}
"#,
        );
        let kinds = |name: &str| -> Vec<&str> {
            listener(&s, name)
                .supported_kinds
                .iter()
                .map(|k| k.kind)
                .collect()
        };
        assert_eq!(kinds("pass-a"), ["TLSRoute"]);
        assert_eq!(kinds("tcp"), ["TCPRoute"]);
        // An HTTPRoute cannot go on a TLS listener: named, it is invalid.
        assert_eq!(kinds("tls-http"), ["TLSRoute"]);
        let c = condition(&listener(&s, "tls-http").conditions, "ResolvedRefs");
        assert_eq!((c.status, c.reason), ("False", "InvalidRouteKinds"));
        assert_eq!(kinds("udp"), ["UDPRoute"]);
        for name in ["pass-a", "pass-b", "tcp", "udp"] {
            let l = listener(&s, name);
            assert_eq!(
                condition(&l.conditions, "Accepted").status,
                "True",
                "{name}"
            );
            assert_eq!(
                condition(&l.conditions, "Programmed").status,
                "True",
                "{name}"
            );
        }
        // Terminate takes TLSRoutes; without its certificate it is not served.
        assert_eq!(kinds("terminate"), ["TLSRoute"]);
        let c = condition(&listener(&s, "terminate").conditions, "ResolvedRefs");
        assert_eq!((c.status, c.reason), ("False", "InvalidCertificateRef"));
        for name in ["https", "tls-on-443"] {
            let c = condition(&listener(&s, name).conditions, "Conflicted");
            assert_eq!((c.status, c.reason), ("True", "ProtocolConflict"), "{name}");
        }
        let shard = &compiled.snapshot.shards[0];
        assert_eq!(
            shard.l4_mode(8443),
            Some(crate::snapshot::L4Mode::TlsPassthrough)
        );
        assert_eq!(shard.l4_mode(5432), Some(crate::snapshot::L4Mode::Tcp));
        assert_eq!(shard.l4_mode(443), None);
        // The UDP listener is bound apart: not a TCP port, not an accept
        // loop's L4 mode, found as a UDP listener.
        assert_eq!(shard.ports(), [5432, 8443, 9443]);
        assert_eq!(shard.udp_ports(), [5353]);
        assert_eq!(shard.l4_mode(5353), None);
        assert_eq!(&*shard.udp_listener(5353).unwrap().name, "udp");
        assert!(shard.udp_listener(5432).is_none());
        assert!(
            compiled.kernel.listeners.keys().all(|k| k.port != 5353),
            "UDP ports are not steered"
        );
    }

    #[test]
    fn unresolvable_parameters_ref_is_not_accepted_nor_served() {
        let (s, compiled) = gateway_status(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: sluice\n  \
             listeners: [{name: a, port: 80, protocol: HTTP}]\n  \
             infrastructure: {parametersRef: {group: invalid.io, kind: Params, name: p}}\n",
        );
        let g = &s.gateways[0];
        let c = condition(&g.conditions, "Accepted");
        assert_eq!((c.status, c.reason), ("False", "InvalidParameters"));
        assert_eq!(condition(&g.conditions, "Programmed").status, "False");
        assert!(compiled.snapshot.shards.is_empty());

        // The class's parametersRef: the class and its Gateways are refused.
        let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
             metadata: {name: sluice}\nspec:\n  controllerName: sluice.dev/gateway-controller\n  \
             parametersRef: {group: example.com, kind: Config, name: c, namespace: ns}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: sluice\n  \
             listeners: [{name: a, port: 80, protocol: HTTP}]\n";
        let cfg = parse_documents([(Path::new("t.yaml"), text)]).unwrap();
        let compiled = compile(&cfg, &mut ShardIds::default(), 1);
        let s = &compiled.status;
        let c = &s.gateway_classes[0].conditions[0];
        assert_eq!((c.status, c.reason), ("False", "InvalidParameters"));
        assert!(
            c.message.contains("example.com/Config/ns/c"),
            "{}",
            c.message
        );
        let c = condition(&s.gateways[0].conditions, "Accepted");
        assert_eq!((c.status, c.reason), ("False", "InvalidParameters"));
        assert!(compiled.snapshot.shards.is_empty());
    }

    #[test]
    fn an_address_without_value_gets_the_node_addresses() {
        let (s, _) = gateway_status(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: sluice\n  \
             addresses: [{type: IPAddress}]\n  \
             listeners: [{name: a, port: 80, protocol: HTTP}]\n",
        );
        let g = &s.gateways[0];
        // Whatever this machine's addresses are, Programmed agrees with them.
        let programmed = condition(&g.conditions, "Programmed");
        if g.addresses.is_empty() {
            assert_eq!(programmed.reason, "AddressNotAssigned");
        } else {
            assert_eq!(programmed.status, "True");
        }
        let node = node_addresses();
        assert!(node.len() <= 16);
        assert!(node
            .iter()
            .all(|ip| !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)));
        let first_loopback = node.iter().position(IpAddr::is_loopback);
        assert!(
            first_loopback.is_none_or(|i| node[i..].iter().all(IpAddr::is_loopback)),
            "loopback addresses come last: {node:?}"
        );
        // Deterministically: assigned only when asked for and none is given.
        let cfg = parse_documents([(
            Path::new("t.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: sluice\n  \
             addresses: [{type: IPAddress}]\n  \
             listeners: [{name: a, port: 80, protocol: HTTP}]\n",
        )])
        .unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(gateway_addresses(&cfg.gateways[0], || vec![ip]), vec![ip]);
        let mut explicit = cfg.gateways[0].clone();
        explicit.assign_address = false;
        assert!(gateway_addresses(&explicit, || vec![ip]).is_empty());
    }

    #[test]
    fn route_acceptance_reasons() {
        let s = status(&format!(
            "{}{}",
            route(
                "wrong-section",
                "infra",
                "{name: gw, sectionName: nope}",
                "",
                "{name: svc, port: 8080}"
            ),
            route(
                "foreign",
                "other",
                "{name: gw, namespace: infra}",
                "",
                "{name: svc, port: 8080}"
            ),
        ));
        assert_eq!(
            route_cond(&s, "wrong-section", "Accepted"),
            ("False", "NoMatchingParent")
        );
        assert_eq!(
            route_cond(&s, "foreign", "Accepted"),
            ("False", "NotAllowedByListeners")
        );
    }

    #[test]
    fn resolved_refs_reasons() {
        let s = status(&format!(
            "{}{}{}{}",
            route("ok", "infra", "{name: gw}", "", "{name: svc, port: 8080}"),
            route(
                "kind",
                "infra",
                "{name: gw}",
                "",
                "{name: svc, kind: Mystery, port: 8080}"
            ),
            route(
                "grant",
                "infra",
                "{name: gw}",
                "",
                "{name: svc, namespace: other, port: 8080}"
            ),
            route(
                "missing",
                "infra",
                "{name: gw}",
                "",
                "{name: nope, port: 8080}"
            ),
        ));
        assert_eq!(
            route_cond(&s, "ok", "ResolvedRefs"),
            ("True", "ResolvedRefs")
        );
        assert_eq!(
            route_cond(&s, "kind", "ResolvedRefs"),
            ("False", "InvalidKind")
        );
        assert_eq!(
            route_cond(&s, "grant", "ResolvedRefs"),
            ("False", "RefNotPermitted")
        );
        assert_eq!(
            route_cond(&s, "missing", "ResolvedRefs"),
            ("False", "BackendNotFound")
        );
        // An unresolved reference does not stop the route from being accepted.
        assert_eq!(route_cond(&s, "kind", "Accepted"), ("True", "Accepted"));
    }
}
