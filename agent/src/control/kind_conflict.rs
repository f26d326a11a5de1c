//! The GRPCRoute/HTTPRoute conflict rule: when routes of both kinds attach
//! to one listener with intersecting hostnames, exactly one of them is
//! accepted there — the older (creation time), then the first by
//! namespace/name — and the other reports `Accepted=False`. Their requests
//! would otherwise be split between two kinds of route whose matches mean
//! different things.
//!
//! Found over all routes, so only computed when the config has GRPCRoutes
//! (see [`super::routes`], which also turns any change of the result into a
//! full compile: a route that stops losing must be compiled again).
use std::collections::HashMap;

use super::attach::{effective_hostnames, namespace_allowed, parent_selects, NamespaceLabels};
use crate::{
    config::{Gateway, Hostname, HttpRoute, ObjectRef, RouteKind},
    snapshot::created_key,
};

/// A route on a listener: (kind, route, Gateway, listener name).
type Place = (RouteKind, ObjectRef, ObjectRef, String);

/// Routes refused on a listener for a route of the other kind, with the
/// route they yield to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KindConflicts {
    losers: HashMap<Place, (RouteKind, ObjectRef)>,
}

impl KindConflicts {
    pub(super) fn compute(
        routes: &[std::sync::Arc<HttpRoute>],
        ours: &[&Gateway],
        namespaces: &NamespaceLabels<'_>,
    ) -> Self {
        // Per (Gateway, listener): the routes attached with their hostnames.
        type Attached<'r> = Vec<(&'r HttpRoute, Vec<Option<Hostname>>)>;
        let mut per_listener: HashMap<(usize, usize), Attached<'_>> = HashMap::new();
        for route in routes {
            for (gi, gateway) in ours.iter().enumerate() {
                if !route.parents.iter().any(|p| p.gateway == gateway.id) {
                    continue;
                }
                for (li, listener) in gateway.listeners.iter().enumerate() {
                    let selected = route
                        .parents
                        .iter()
                        .any(|p| parent_selects(p, gateway, listener));
                    if !selected || !namespace_allowed(listener, gateway, route, namespaces) {
                        continue;
                    }
                    let hosts = effective_hostnames(listener.hostname.as_ref(), &route.hostnames);
                    if !hosts.is_empty() {
                        per_listener
                            .entry((gi, li))
                            .or_default()
                            .push((route, hosts));
                    }
                }
            }
        }
        let mut losers = HashMap::new();
        for ((gi, li), mut attached) in per_listener {
            let kinds = |k| attached.iter().any(|(r, _)| r.kind == k);
            if !kinds(RouteKind::Grpc) || !kinds(RouteKind::Http) {
                continue;
            }
            // Oldest first: each route is accepted unless it meets an
            // accepted route of the other kind.
            attached.sort_by(|(a, _), (b, _)| {
                (created_key(a.created), &a.id).cmp(&(created_key(b.created), &b.id))
            });
            let mut accepted: Vec<&(&HttpRoute, Vec<Option<Hostname>>)> = Vec::new();
            for entry in &attached {
                let (route, hosts) = entry;
                let winner = accepted
                    .iter()
                    .find(|(other, other_hosts)| {
                        other.kind != route.kind && intersect(hosts, other_hosts)
                    })
                    .map(|(other, _)| (other.kind, (*other.id).clone()));
                match winner {
                    Some(w) => {
                        let gateway = ours[gi];
                        losers.insert(
                            (
                                route.kind,
                                (*route.id).clone(),
                                gateway.id.clone(),
                                gateway.listeners[li].name.clone(),
                            ),
                            w,
                        );
                    }
                    None => accepted.push(entry),
                }
            }
        }
        KindConflicts { losers }
    }

    /// The route `route` yields to on this listener, if any.
    pub(super) fn loses_to(
        &self,
        route: &HttpRoute,
        gateway: &Gateway,
        listener: &str,
    ) -> Option<&(RouteKind, ObjectRef)> {
        if self.losers.is_empty() {
            return None;
        }
        self.losers.get(&(
            route.kind,
            (*route.id).clone(),
            gateway.id.clone(),
            listener.to_owned(),
        ))
    }
}

/// Whether two lists of effective hostnames share a host (`None`: any).
fn intersect(a: &[Option<Hostname>], b: &[Option<Hostname>]) -> bool {
    a.iter().any(|x| {
        b.iter().any(|y| match (x, y) {
            (None, _) | (_, None) => true,
            (Some(x), Some(y)) => Hostname::intersect(x, y).is_some(),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use crate::{
        config::{parse_documents, Config, HttpRoute},
        control::{Compiled, Compiler, PolicyEnv, ShardIds},
        policy::{state::PolicyState, PolicyMetrics},
    };

    const BASE: &str = r#"
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
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: infra}
spec: {ports: [{port: 8080}]}
"#;

    fn route(kind: &str, name: &str, created: &str, host: &str) -> Arc<HttpRoute> {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\n\
             metadata: {{name: {name}, namespace: infra, creationTimestamp: \"{created}\"}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [\"{host}\"]\n  \
             rules: [{{backendRefs: [{{name: svc, port: 8080}}]}}]\n"
        );
        parse_documents([(Path::new("r.yaml"), text.as_str())])
            .unwrap()
            .routes[0]
            .clone()
    }

    fn accepted(c: &Compiled, name: &str) -> String {
        let r = c
            .status
            .http_routes
            .iter()
            .find(|r| r.name == name)
            .unwrap();
        let a = r.parents[0]
            .conditions
            .iter()
            .find(|c| c.kind == "Accepted")
            .unwrap();
        format!("{}/{}", a.status, a.reason)
    }

    #[test]
    fn the_older_route_keeps_a_shared_hostname_and_changes_recompile_in_full() {
        let base = parse_documents([(Path::new("b.yaml"), BASE)]).unwrap();
        let config = |routes: &[Arc<HttpRoute>]| Config {
            routes: routes.to_vec(),
            ..base.clone()
        };
        let state = PolicyState::default();
        let metrics = PolicyMetrics::default();
        let run = state.compile();
        let env = PolicyEnv {
            metrics: &metrics,
            state: &run,
        };
        let mut compiler = Compiler::default();
        let mut ids = ShardIds::default();
        let old_grpc = route("GRPCRoute", "g", "2024-01-01T00:00:00Z", "api.example.com");
        let http = route("HTTPRoute", "h", "2024-02-01T00:00:00Z", "*.example.com");
        let other = route("HTTPRoute", "o", "2024-03-01T00:00:00Z", "web.example.org");
        let c = compiler.compile(
            &config(&[old_grpc.clone(), http.clone(), other.clone()]),
            &mut ids,
            1,
            &env,
        );
        assert_eq!(accepted(&c, "g"), "True/Accepted");
        assert_eq!(accepted(&c, "h"), "False/NotAllowedByListeners");
        assert_eq!(accepted(&c, "o"), "True/Accepted");
        let message =
            &c.status.http_routes.get("infra", "h").unwrap().parents[0].conditions[0].message;
        assert!(message.contains("GRPCRoute infra/g"), "{message}");
        assert_eq!(c.status.gateways[0].listeners[0].attached_routes, 2);
        let table = &c.snapshot.shards[0].listeners[0].routes;
        let routes: Vec<String> = table.routes().iter().map(|r| r.name.clone()).collect();
        assert_eq!(routes, ["g", "o"]);

        // The GRPCRoute goes: the HTTPRoute, unchanged, is accepted again.
        let c = compiler.compile(&config(&[http.clone(), other.clone()]), &mut ids, 2, &env);
        assert!(!compiler.stats().incremental, "{:?}", compiler.stats());
        assert_eq!(accepted(&c, "h"), "True/Accepted");
        assert_eq!(c.status.gateways[0].listeners[0].attached_routes, 2);

        // A younger GRPCRoute on the same host loses; unrelated changes
        // stay incremental.
        let young = route("GRPCRoute", "y", "2024-04-01T00:00:00Z", "api.example.com");
        let c = compiler.compile(
            &config(&[http.clone(), other.clone(), young.clone()]),
            &mut ids,
            3,
            &env,
        );
        assert_eq!(accepted(&c, "y"), "False/NotAllowedByListeners");
        assert_eq!(accepted(&c, "h"), "True/Accepted");
        let other2 = route("HTTPRoute", "o", "2024-03-01T00:00:00Z", "www.example.org");
        let c = compiler.compile(&config(&[http, other2, young]), &mut ids, 4, &env);
        assert!(compiler.stats().incremental, "{:?}", compiler.stats());
        assert_eq!(accepted(&c, "y"), "False/NotAllowedByListeners");
    }
}
