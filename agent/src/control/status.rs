//! The Gateway API status model: conditions for our GatewayClasses, Gateways
//! (with per-listener `attachedRoutes`) and HTTPRoute parents, computed from
//! the same attachment rules the compiler uses, so status and behaviour
//! cannot disagree. Served at the admin `/status`; writing it back to the
//! Kubernetes API is the job of the elected status writer.
use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::compile::{
    effective_hostnames, namespace_allowed, parent_selects, BackendResolver, NamespaceLabels,
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
    #[serde(rename = "httpRoutes")]
    pub http_routes: Vec<RouteStatus>,
    /// BackendTLSPolicies with their ancestors.
    pub policies: Vec<super::backend_tls::PolicyStatus>,
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

fn cond(
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

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassStatus {
    pub name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub namespace: String,
    pub name: String,
    /// Addresses the Gateway is reachable on (its `spec.addresses`, which the
    /// agent binds or steers); empty for a Gateway on every local address.
    pub addresses: Vec<GatewayStatusAddress>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayStatusAddress {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    pub namespace: String,
    pub name: String,
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentRefStatus,
    pub controller_name: &'static str,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Serialize)]
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
    /// An earlier listener uses the port with another protocol.
    ProtocolConflict,
    /// No CA of the port's client-certificate validation resolves
    /// (`InvalidCACertificateRef`, `InvalidCACertificateKind`, `RefNotPermitted`).
    ClientValidation(Unresolved),
}

pub type ListenerProblems = HashMap<(ObjectRef, String), ListenerProblem>;

/// Why a route does not attach to a Gateway through a parentRef.
fn attach_failure(
    route: &HttpRoute,
    gateway: &Gateway,
    parent: &crate::config::ParentRef,
    namespaces: &NamespaceLabels<'_>,
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
                "no listener allows routes from namespace {}",
                route.id.namespace
            ),
        ));
    }
    if allowed
        .iter()
        .all(|l| effective_hostnames(l.hostname.as_ref(), &route.hostnames).is_empty())
    {
        return Some((
            "NoMatchingListenerHostname",
            "no listener hostname intersects the route's hostnames".into(),
        ));
    }
    None
}

/// Computes the status. `ours`: Gateways of our classes; `served`: those
/// that got a shard.
pub(super) fn compute(
    config: &Config,
    controller: &'static str,
    ours: &[&Gateway],
    served: &HashSet<&ObjectRef>,
    resolver: &BackendResolver<'_>,
    namespaces: &NamespaceLabels<'_>,
    problems: &ListenerProblems,
) -> Status {
    let mut status = Status::default();
    for class in config
        .gateway_classes
        .iter()
        .filter(|c| c.controller_name == controller)
    {
        status.gateway_classes.push(ClassStatus {
            name: class.name.clone(),
            conditions: vec![cond("Accepted", true, "Accepted", "handled by this agent")],
        });
    }
    let mut routes: Vec<&HttpRoute> = config.routes.iter().collect();
    routes.sort_by(|a, b| a.id.cmp(&b.id));

    for gateway in ours {
        let is_served = served.contains(&gateway.id);
        let mut listeners = Vec::new();
        for l in &gateway.listeners {
            // Attached: selected by a parentRef, allowed, hostnames intersect —
            // exactly the routes whose Accepted condition is True for it.
            let attached = routes
                .iter()
                .filter(|r| {
                    r.parents.iter().any(|p| parent_selects(p, gateway, l))
                        && namespace_allowed(l, gateway, r, namespaces)
                        && !effective_hostnames(l.hostname.as_ref(), &r.hostnames).is_empty()
                })
                .count() as u32;
            let http_route = RouteKind {
                group: super::refgrant::GATEWAY_GROUP,
                kind: "HTTPRoute",
            };
            let (supported_kinds, mut conditions): (Vec<RouteKind>, Vec<Condition>) = match &l
                .protocol
            {
                ListenerProtocol::Http | ListenerProtocol::Https => (
                    vec![http_route],
                    vec![
                        match problems.get(&(gateway.id.clone(), l.name.clone())) {
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
                            Some(ListenerProblem::ProtocolConflict) => cond(
                                "Programmed",
                                false,
                                "Invalid",
                                "another listener uses the port with another protocol",
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
            let supported_kinds = if l.allows_http_routes {
                supported_kinds
            } else {
                Vec::new()
            };
            conditions.push(match problems.get(&(gateway.id.clone(), l.name.clone())) {
                Some(ListenerProblem::ProtocolConflict) => cond(
                    "Conflicted",
                    true,
                    "ProtocolConflict",
                    format!("port {} is used with another protocol", l.port),
                ),
                _ => cond("Conflicted", false, "NoConflicts", ""),
            });
            set_generation(&mut conditions, gateway.generation);
            listeners.push(ListenerStatus {
                name: l.name.clone(),
                supported_kinds,
                attached_routes: attached,
                conditions,
            });
        }
        let any_valid = gateway
            .listeners
            .iter()
            .any(|l| !matches!(l.protocol, ListenerProtocol::Other(_)));
        let any_programmed = gateway.listeners.iter().any(|l| {
            matches!(l.protocol, ListenerProtocol::Http | ListenerProtocol::Https)
                && !problems.contains_key(&(gateway.id.clone(), l.name.clone()))
        });
        let mut conditions = vec![
            if any_valid {
                cond("Accepted", true, "Accepted", "")
            } else {
                cond(
                    "Accepted",
                    false,
                    "ListenersNotValid",
                    "no listener is valid",
                )
            },
            match (is_served, any_programmed) {
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
            addresses: gateway
                .addresses
                .iter()
                .map(|a| GatewayStatusAddress {
                    kind: "IPAddress",
                    value: a.to_string(),
                })
                .collect(),
            conditions,
            listeners,
        });
    }

    for route in routes {
        let mut parents = Vec::new();
        for p in &route.parents {
            let Some(gateway) = ours.iter().find(|g| g.id == p.gateway) else {
                // Not ours (or missing): its controller reports, not us.
                continue;
            };
            let accepted = match attach_failure(route, gateway, p, namespaces) {
                None => cond("Accepted", true, "Accepted", ""),
                Some((reason, message)) => cond("Accepted", false, reason, message),
            };
            let mut conditions = vec![accepted, resolved_refs(route, resolver)];
            set_generation(&mut conditions, route.generation);
            parents.push(RouteParentStatus {
                parent_ref: ParentRefStatus {
                    group: super::refgrant::GATEWAY_GROUP,
                    kind: "Gateway",
                    namespace: p.gateway.namespace.clone(),
                    name: p.gateway.name.clone(),
                    section_name: p.section_name.clone(),
                    port: p.port,
                },
                controller_name: controller,
                conditions,
            });
        }
        if !parents.is_empty() {
            status.http_routes.push(RouteStatus {
                namespace: route.id.namespace.clone(),
                name: route.id.name.clone(),
                parents,
            });
        }
    }
    status
}

/// `ResolvedRefs` of a route: the first backendRef or mirror reference
/// that does not resolve names the reason.
fn resolved_refs(route: &HttpRoute, resolver: &BackendResolver<'_>) -> Condition {
    for rule in &route.rules {
        for b in &rule.backends {
            if let Err(u) =
                resolver.check(&route.id, b.unsupported_kind.as_deref(), &b.service, b.port)
            {
                return cond("ResolvedRefs", false, u.reason, u.message);
            }
        }
        for f in &rule.filters {
            if let Filter::Mirror(m) = f {
                if let Err(u) = resolver.check(&route.id, None, &m.service, m.port) {
                    return cond("ResolvedRefs", false, u.reason, u.message);
                }
            }
        }
    }
    cond("ResolvedRefs", true, "ResolvedRefs", "")
}

fn set_generation(conditions: &mut [Condition], generation: Option<i64>) {
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
        control::{compile, ShardIds},
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
  - {name: tcp, port: 9000, protocol: TCP}
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
            condition(&l("tcp").conditions, "Accepted").reason,
            "UnsupportedProtocol"
        );
        assert!(l("tcp").supported_kinds.is_empty());
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
            s.http_routes[0].parents[0].conditions[0].observed_generation,
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
