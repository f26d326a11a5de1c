//! PROVISIONAL status computation, to be replaced by the shared Gateway API
//! status model being built in `control/`. It derives only what can be read
//! off the converted objects and the served snapshot:
//!
//! - GatewayClass of our controller: Accepted.
//! - Gateway: Accepted and Programmed when it has a shard; Accepted=False
//!   (Invalid) when it failed validation; per listener attachedRoutes from
//!   the listener's route table, Programmed when the listener is served.
//! - HTTPRoute: per parent Gateway that we serve, Accepted when the route is
//!   in one of that Gateway's listener tables (NotAllowedByListeners
//!   otherwise), ResolvedRefs True; Accepted=False (UnsupportedValue) when
//!   the route failed validation.
use std::collections::BTreeSet;

use super::{
    convert::{Converted, ObjectKey},
    status::{Condition, ListenerStatus, ObjectStatus, RouteParentStatus},
    watch::Kind,
};
use crate::{config::ObjectRef, snapshot::Snapshot};

/// The status of every object this agent is responsible for.
pub fn compute(converted: &Converted, snapshot: &Snapshot) -> Vec<ObjectStatus> {
    let generation = |kind: Kind, id: &ObjectRef| -> i64 {
        let key: ObjectKey = (kind, id.clone());
        converted.generations.get(&key).copied().unwrap_or(0)
    };
    let mut out = Vec::new();
    for c in &converted.config.gateway_classes {
        let g = generation(Kind::GatewayClass, &ObjectRef::new("", c.name.clone()));
        out.push(ObjectStatus::GatewayClass {
            name: c.name.clone(),
            conditions: vec![Condition::new(
                "Accepted",
                true,
                "Accepted",
                "Handled by Sluice",
                g,
            )],
        });
    }

    let mut served = BTreeSet::new();
    for gw in &converted.config.gateways {
        let g = generation(Kind::Gateway, &gw.id);
        let shard = snapshot.shards.iter().find(|s| s.gateway == gw.id);
        if shard.is_some() {
            served.insert(gw.id.clone());
        }
        let listeners = gw
            .listeners
            .iter()
            .map(|l| {
                let served = shard.and_then(|s| s.listeners.iter().find(|x| x.name == l.name));
                let conditions = match served {
                    Some(_) => vec![
                        Condition::new("Accepted", true, "Accepted", "", g),
                        Condition::new("ResolvedRefs", true, "ResolvedRefs", "", g),
                        Condition::new("Programmed", true, "Programmed", "", g),
                    ],
                    None => vec![
                        Condition::new(
                            "Accepted",
                            false,
                            "UnsupportedProtocol",
                            "listener protocol not served",
                            g,
                        ),
                        Condition::new("ResolvedRefs", true, "ResolvedRefs", "", g),
                        Condition::new("Programmed", false, "Invalid", "listener not served", g),
                    ],
                };
                ListenerStatus {
                    name: l.name.clone(),
                    attached_routes: served.map_or(0, |x| x.routes.routes().len()),
                    conditions,
                }
            })
            .collect();
        let programmed = match shard {
            Some(_) => Condition::new("Programmed", true, "Programmed", "Listening", g),
            None => Condition::new(
                "Programmed",
                false,
                "Invalid",
                "no shard for this Gateway (see /config warnings)",
                g,
            ),
        };
        out.push(ObjectStatus::Gateway {
            id: gw.id.clone(),
            conditions: vec![
                Condition::new("Accepted", true, "Accepted", "", g),
                programmed,
            ],
            listeners,
            addresses: gw.addresses.iter().map(|a| a.to_string()).collect(),
        });
    }
    for ((kind, id), errors) in &converted.errors {
        if *kind == Kind::Gateway {
            let g = generation(Kind::Gateway, id);
            let message = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            out.push(ObjectStatus::Gateway {
                id: id.clone(),
                conditions: vec![
                    Condition::new("Accepted", false, "Invalid", message, g),
                    Condition::new("Programmed", false, "Invalid", "not accepted", g),
                ],
                listeners: vec![],
                addresses: vec![],
            });
        }
    }

    for route in &converted.config.routes {
        let g = generation(Kind::HttpRoute, &route.id);
        let mut parents = Vec::new();
        for p in &route.parents {
            let Some(shard) = snapshot.shards.iter().find(|s| s.gateway == p.gateway) else {
                continue;
            };
            let attached = shard
                .listeners
                .iter()
                .filter(|l| p.section_name.as_ref().is_none_or(|s| *s == l.name))
                .filter(|l| p.port.is_none_or(|port| port == l.port))
                .any(|l| l.routes.routes().contains(&route.id));
            let accepted = if attached {
                Condition::new("Accepted", true, "Accepted", "", g)
            } else {
                Condition::new(
                    "Accepted",
                    false,
                    "NotAllowedByListeners",
                    "no listener of the Gateway accepts this route",
                    g,
                )
            };
            parents.push(RouteParentStatus {
                gateway: p.gateway.clone(),
                section_name: p.section_name.clone(),
                port: p.port,
                conditions: vec![
                    accepted,
                    Condition::new("ResolvedRefs", true, "ResolvedRefs", "", g),
                ],
            });
        }
        if !parents.is_empty() {
            out.push(ObjectStatus::HttpRoute {
                id: route.id.clone(),
                parents,
            });
        }
    }
    for (id, gateways) in &converted.invalid_route_parents {
        let g = generation(Kind::HttpRoute, id);
        let message = converted
            .errors
            .iter()
            .find(|((k, i), _)| *k == Kind::HttpRoute && i == id)
            .map(|(_, e)| {
                e.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let parents: Vec<_> = gateways
            .iter()
            .filter(|gw| served.contains(*gw))
            .map(|gw| RouteParentStatus {
                gateway: gw.clone(),
                section_name: None,
                port: None,
                conditions: vec![Condition::new(
                    "Accepted",
                    false,
                    "UnsupportedValue",
                    message.clone(),
                    g,
                )],
            })
            .collect();
        if !parents.is_empty() {
            out.push(ObjectStatus::HttpRoute {
                id: id.clone(),
                parents,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{compile, ShardIds};

    const CONFIG: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: a}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ok, namespace: a}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-section, namespace: a}
spec:
  parentRefs: [{name: gw, sectionName: nope}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
"#;

    #[test]
    fn attached_routes_and_route_acceptance_follow_the_snapshot() {
        let config =
            crate::config::parse_documents([(std::path::Path::new("t.yaml"), CONFIG)]).unwrap();
        let compiled = compile(&config, &mut ShardIds::default(), 1);
        let mut converted = Converted {
            config,
            ..Converted::default()
        };
        converted
            .generations
            .insert((Kind::HttpRoute, ObjectRef::new("a", "ok")), 3);
        let out = compute(&converted, &compiled.snapshot);
        let gw = out
            .iter()
            .find_map(|s| match s {
                ObjectStatus::Gateway {
                    listeners,
                    conditions,
                    ..
                } => Some((listeners, conditions)),
                _ => None,
            })
            .unwrap();
        assert_eq!(gw.0[0].attached_routes, 1);
        assert!(gw.1.iter().all(|c| c.status));
        let route = |name: &str| {
            out.iter()
                .find_map(|s| match s {
                    ObjectStatus::HttpRoute { id, parents } if id.name == name => {
                        Some(parents[0].conditions[0].clone())
                    }
                    _ => None,
                })
                .unwrap()
        };
        assert!(route("ok").status);
        assert_eq!(route("ok").observed_generation, 3);
        assert_eq!(route("wrong-section").reason, "NotAllowedByListeners");
        assert!(out
            .iter()
            .any(|s| matches!(s, ObjectStatus::GatewayClass { .. })));
    }
}
