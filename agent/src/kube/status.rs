//! Writing Gateway API status back with server-side apply. What to write is
//! the shared status model ([`crate::control::status`], the same as admin
//! `/status`) plus what only this source knows ([`objects`]: objects left out
//! as invalid, `observedGeneration` of every object); this module turns it
//! into apply patches, keeps `lastTransitionTime` stable and skips writes
//! that would change nothing.
use std::{future::Future, pin::Pin};

use ::kube::{
    api::{Api, DynamicObject, Patch, PatchParams},
    Client,
};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::{
    convert::Converted,
    watch::{Kind, Stores},
};
use crate::{
    config::ObjectRef,
    control::{
        status::{
            ClassStatus, Condition, GatewayStatus, ListenerSetStatus, ListenerStatus,
            ParentRefStatus, PolicyAncestorStatus, PolicyStatus, RouteParentStatus, RouteStatus,
            Status,
        },
        CONTROLLER_NAME,
    },
};

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "sluice.dev/gateway-controller";

/// The status of one object, as this agent wants it.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectStatus {
    GatewayClass(ClassStatus),
    Gateway(GatewayStatus),
    /// A ListenerSet whose parent Gateway is ours.
    ListenerSet(ListenerSetStatus),
    /// An HTTPRoute, GRPCRoute, TLSRoute or TCPRoute (`RouteStatus::kind`); only the parents
    /// this agent serves.
    HttpRoute(RouteStatus),
    /// Only the ancestor Gateways of our classes.
    BackendTlsPolicy(PolicyStatus),
    /// Every ancestor entry of ours: SluicePolicy is Sluice's own kind, so an
    /// empty list removes entries that no longer apply.
    SluicePolicy(PolicyStatus),
    /// An Ingress of our classes ([`super::ingress`]).
    Ingress(IngressStatus),
}

/// `status.loadBalancer.ingress` of an Ingress: the entry point's addresses
/// when served, none when refused as invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressStatus {
    pub namespace: String,
    pub name: String,
    /// IP addresses.
    pub addresses: Vec<String>,
}

impl ObjectStatus {
    /// The object this is the status of.
    pub fn target(&self) -> (Kind, ObjectRef) {
        match self {
            ObjectStatus::GatewayClass(c) => (Kind::GatewayClass, ObjectRef::new("", &c.name)),
            ObjectStatus::Gateway(g) => (Kind::Gateway, ObjectRef::new(&g.namespace, &g.name)),
            ObjectStatus::ListenerSet(s) => {
                (Kind::ListenerSet, ObjectRef::new(&s.namespace, &s.name))
            }
            ObjectStatus::HttpRoute(r) => (
                Kind::of_route_kind(r.kind),
                ObjectRef::new(&r.namespace, &r.name),
            ),
            ObjectStatus::BackendTlsPolicy(p) => (
                Kind::BackendTlsPolicy,
                ObjectRef::new(&p.namespace, &p.name),
            ),
            ObjectStatus::SluicePolicy(p) => {
                (Kind::SluicePolicy, ObjectRef::new(&p.namespace, &p.name))
            }
            ObjectStatus::Ingress(i) => (Kind::Ingress, ObjectRef::new(&i.namespace, &i.name)),
        }
    }
}

fn condition(kind: &'static str, reason: &'static str, message: String) -> Condition {
    Condition {
        kind,
        status: "False",
        reason,
        message,
        observed_generation: None,
    }
}

/// The objects to write: `status` (the model's, for the valid objects), plus
/// the Gateways and routes left out as invalid, which the model never saw:
/// a Gateway gets Accepted=False (Invalid), a route Accepted=False
/// (UnsupportedValue) towards each of its parents that `status` has. Every
/// SluicePolicy gets an entry (invalid ones are in the model, failing
/// closed): a target HTTPRoute that does not exist at all is reported
/// `TargetNotFound` with the route itself as the ancestor (no Gateway can
/// stand in for it), and a policy with no ancestor left gets an empty list
/// of ours. Every condition carries the object's `metadata.generation`.
pub fn objects(status: &Status, converted: &Converted) -> Vec<ObjectStatus> {
    let mut out: Vec<ObjectStatus> = status
        .gateway_classes
        .iter()
        .cloned()
        .map(ObjectStatus::GatewayClass)
        .chain(status.gateways.iter().cloned().map(ObjectStatus::Gateway))
        .chain(
            status
                .listener_sets
                .iter()
                .cloned()
                .map(ObjectStatus::ListenerSet),
        )
        .chain(status.http_routes.iter().map(ObjectStatus::HttpRoute))
        .chain(
            status
                .policies
                .iter()
                .filter(|p| p.kind == "BackendTLSPolicy")
                .cloned()
                .map(ObjectStatus::BackendTlsPolicy),
        )
        .chain(sluice_policies(status, converted))
        .collect();
    let messages = |kind: Kind, id: &ObjectRef| {
        converted
            .errors
            .iter()
            .filter(|((k, i), _)| *k == kind && i == id)
            .flat_map(|(_, e)| e.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join("; ")
    };
    for ((kind, id), _) in &converted.errors {
        if *kind == Kind::Gateway {
            out.push(ObjectStatus::Gateway(GatewayStatus {
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                addresses: vec![],
                conditions: vec![
                    condition("Accepted", "Invalid", messages(Kind::Gateway, id)),
                    condition("Programmed", "Invalid", "not accepted".into()),
                ],
                listeners: vec![],
                attached_listener_sets: None,
            }));
        }
    }
    // An invalid ListenerSet of a Gateway of ours: Accepted=False (Invalid).
    for (id, parent) in &converted.invalid_listener_sets {
        if status
            .gateways
            .iter()
            .any(|g| g.namespace == parent.namespace && g.name == parent.name)
        {
            out.push(ObjectStatus::ListenerSet(ListenerSetStatus {
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                conditions: vec![
                    condition("Accepted", "Invalid", messages(Kind::ListenerSet, id)),
                    condition("Programmed", "Invalid", "not accepted".into()),
                ],
                listeners: vec![],
            }));
        }
    }
    for ((kind, id), gateways) in &converted.invalid_route_parents {
        let message = messages(*kind, id);
        let parents: Vec<_> = gateways
            .iter()
            .filter(|gw| {
                status
                    .gateways
                    .iter()
                    .any(|s| s.namespace == gw.namespace && s.name == gw.name)
            })
            .map(|gw| RouteParentStatus {
                parent_ref: ParentRefStatus {
                    group: super::watch::GATEWAY_GROUP,
                    kind: "Gateway",
                    namespace: gw.namespace.clone(),
                    name: gw.name.clone(),
                    section_name: None,
                    port: None,
                },
                controller_name: CONTROLLER_NAME,
                conditions: vec![condition("Accepted", "UnsupportedValue", message.clone())],
            })
            .collect();
        if !parents.is_empty() {
            out.push(ObjectStatus::HttpRoute(RouteStatus {
                kind: kind.route_kind().unwrap_or("HTTPRoute"),
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                parents,
            }));
        }
    }
    // An invalid policy: Accepted=False (Invalid) towards each Gateway of
    // ours whose routes use a Service it targets.
    for (id, services) in &converted.invalid_policy_targets {
        let message = messages(Kind::BackendTlsPolicy, id);
        let ancestors: Vec<_> = status
            .gateways
            .iter()
            .filter(|gw| {
                converted.config.routes.iter().any(|r| {
                    r.parents
                        .iter()
                        .any(|p| p.gateway.namespace == gw.namespace && p.gateway.name == gw.name)
                        && r.rules
                            .iter()
                            .flat_map(|rule| &rule.backends)
                            .any(|b| services.contains(&b.service))
                })
            })
            .map(|gw| PolicyAncestorStatus {
                ancestor_ref: ParentRefStatus {
                    group: super::watch::GATEWAY_GROUP,
                    kind: "Gateway",
                    namespace: gw.namespace.clone(),
                    name: gw.name.clone(),
                    section_name: None,
                    port: None,
                },
                controller_name: CONTROLLER_NAME,
                conditions: vec![condition("Accepted", "Invalid", message.clone())],
            })
            .collect();
        if !ancestors.is_empty() {
            out.push(ObjectStatus::BackendTlsPolicy(PolicyStatus {
                kind: "BackendTLSPolicy",
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                ancestors,
            }));
        }
    }
    // Objects made from Ingresses have no API object to write to; the
    // Ingresses get the entry point's addresses instead.
    out.retain(|o| !super::ingress::is_synthetic(&o.target().1));
    let entry = super::ingress::entry_gateway();
    let entry_addresses: Vec<String> = status
        .gateways
        .iter()
        .find(|g| g.namespace == entry.namespace && g.name == entry.name)
        .map(|g| {
            g.addresses
                .iter()
                .filter(|a| a.kind == "IPAddress")
                .map(|a| a.value.clone())
                .collect()
        })
        .unwrap_or_default();
    for (id, served) in &converted.ingresses {
        out.push(ObjectStatus::Ingress(IngressStatus {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            addresses: if *served {
                entry_addresses.clone()
            } else {
                Vec::new()
            },
        }));
    }
    for o in &mut out {
        let (kind, id) = o.target();
        let Some(generation) = converted.generations.get(&(kind, id)).copied() else {
            continue;
        };
        let conditions: Vec<&mut Vec<Condition>> = match o {
            ObjectStatus::GatewayClass(c) => vec![&mut c.conditions],
            ObjectStatus::Gateway(g) => std::iter::once(&mut g.conditions)
                .chain(g.listeners.iter_mut().map(|l| &mut l.conditions))
                .collect(),
            ObjectStatus::ListenerSet(s) => std::iter::once(&mut s.conditions)
                .chain(s.listeners.iter_mut().map(|l| &mut l.conditions))
                .collect(),
            ObjectStatus::HttpRoute(r) => r.parents.iter_mut().map(|p| &mut p.conditions).collect(),
            ObjectStatus::BackendTlsPolicy(p) | ObjectStatus::SluicePolicy(p) => {
                p.ancestors.iter_mut().map(|a| &mut a.conditions).collect()
            }
            ObjectStatus::Ingress(_) => Vec::new(),
        };
        for c in conditions.into_iter().flatten() {
            c.observed_generation.get_or_insert(generation);
        }
    }
    out
}

/// The status of every SluicePolicy of the configuration: the model's
/// ancestors, plus `TargetNotFound` for each target HTTPRoute that does not
/// exist (neither served nor left out as invalid).
fn sluice_policies(status: &Status, converted: &Converted) -> Vec<ObjectStatus> {
    let route_exists = |id: &ObjectRef| {
        converted.config.routes.iter().any(|r| *r.id == *id)
            || converted
                .errors
                .iter()
                .any(|((k, i), _)| *k == Kind::HttpRoute && i == id)
    };
    converted
        .config
        .policies
        .iter()
        .map(|p| {
            let mut out = status
                .policies
                .iter()
                .find(|s| {
                    s.kind == "SluicePolicy" && s.namespace == p.id.namespace && s.name == p.id.name
                })
                .cloned()
                .unwrap_or_else(|| PolicyStatus {
                    kind: "SluicePolicy",
                    namespace: p.id.namespace.clone(),
                    name: p.id.name.clone(),
                    ancestors: vec![],
                });
            for t in &p.targets {
                let id = ObjectRef::new(&p.id.namespace, &t.name);
                if t.group != super::watch::GATEWAY_GROUP
                    || t.kind != "HTTPRoute"
                    || route_exists(&id)
                {
                    continue;
                }
                let ancestor_ref = ParentRefStatus {
                    group: super::watch::GATEWAY_GROUP,
                    kind: "HTTPRoute",
                    namespace: id.namespace.clone(),
                    name: id.name.clone(),
                    section_name: t.section_name.clone(),
                    port: None,
                };
                if out.ancestors.len() < MAX_POLICY_ANCESTORS {
                    out.ancestors.push(PolicyAncestorStatus {
                        ancestor_ref,
                        controller_name: CONTROLLER_NAME,
                        conditions: vec![condition(
                            "Accepted",
                            "TargetNotFound",
                            format!("HTTPRoute {id} not found"),
                        )],
                    });
                }
            }
            ObjectStatus::SluicePolicy(out)
        })
        .collect()
}

/// Errors of the status writer.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("writing status of {kind:?} {object}: {source}")]
    Api {
        kind: Kind,
        object: String,
        source: Box<::kube::Error>,
    },
}

/// Boxed future of [`StatusWriter::write`] (the trait stays object safe).
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, StatusError>> + Send + 'a>>;

/// Where status goes. `Ok(true)`: written; `Ok(false)`: already as wanted.
pub trait StatusWriter: Send + Sync {
    fn write<'a>(&'a self, status: &'a ObjectStatus) -> WriteFuture<'a>;
}

/// Writes status to the API server with server-side apply.
pub struct ApiStatusWriter {
    client: Client,
    /// The objects as last seen, to keep transition times and skip no-ops.
    stores: Stores,
}

impl ApiStatusWriter {
    pub fn new(client: Client, stores: Stores) -> Self {
        Self { client, stores }
    }

    async fn apply(&self, status: &ObjectStatus) -> Result<bool, StatusError> {
        let (kind, id) = status.target();
        // By key: a scan of the store per write was quadratic in the routes.
        let key = ::kube::runtime::reflector::ObjectRef::new_with(&id.name, kind.resource());
        let key = if id.namespace.is_empty() {
            key
        } else {
            key.within(&id.namespace)
        };
        let current = self.stores.get(&kind).and_then(|s| s.get(&key));
        let Some(current) = current else {
            // Gone (or not listed yet): nothing to write to.
            return Ok(false);
        };
        let current_status = current.data.get("status").cloned().unwrap_or(Value::Null);
        if let ObjectStatus::SluicePolicy(p) = status {
            // Nothing to report and nothing of ours to remove: no write (a
            // namespace full of unattached policies costs no API calls).
            let ours = current_status
                .get("ancestors")
                .and_then(|a| a.as_array())
                .is_some_and(|a| {
                    a.iter().any(|a| {
                        a.get("controllerName").and_then(|c| c.as_str()) == Some(CONTROLLER_NAME)
                    })
                });
            if p.ancestors.is_empty() && !ours {
                return Ok(false);
            }
        }
        let now = Timestamp::now().to_string();
        let desired = render(status, &current_status, &now);
        if strip_times(&desired) == strip_times(&project(&current_status, &desired)) {
            return Ok(false);
        }
        let ar = kind.resource();
        let api: Api<DynamicObject> = if id.namespace.is_empty() {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), &id.namespace, &ar)
        };
        let mut metadata = json!({"name": id.name});
        if !id.namespace.is_empty() {
            metadata["namespace"] = id.namespace.clone().into();
        }
        let patch = json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "metadata": metadata,
            "status": desired,
        });
        api.patch_status(
            &id.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| StatusError::Api {
            kind,
            object: id.to_string(),
            source: Box::new(e),
        })?;
        Ok(true)
    }
}

impl StatusWriter for ApiStatusWriter {
    fn write<'a>(&'a self, status: &'a ObjectStatus) -> WriteFuture<'a> {
        Box::pin(self.apply(status))
    }
}

/// The status document for `status`, reusing `lastTransitionTime` of
/// conditions whose status did not change.
fn render(status: &ObjectStatus, current: &Value, now: &str) -> Value {
    match status {
        ObjectStatus::GatewayClass(c) => {
            json!({"conditions": conditions_json(&c.conditions, current.get("conditions"), now)})
        }
        ObjectStatus::Gateway(g) => {
            let mut out = json!({
                "conditions": conditions_json(&g.conditions, current.get("conditions"), now),
                "listeners": listeners_json(&g.listeners, current, now),
            });
            if !g.addresses.is_empty() {
                out["addresses"] = json!(g.addresses);
            }
            if let Some(n) = g.attached_listener_sets {
                out["attachedListenerSets"] = n.into();
            }
            out
        }
        ObjectStatus::ListenerSet(s) => json!({
            "conditions": conditions_json(&s.conditions, current.get("conditions"), now),
            "listeners": listeners_json(&s.listeners, current, now),
        }),
        ObjectStatus::HttpRoute(r) => {
            let old_parents = current.get("parents").and_then(|p| p.as_array());
            // `parents` is an atomic list: applying it replaces every entry,
            // so other controllers' entries are carried over unchanged.
            let mut out: Vec<Value> = old_parents
                .into_iter()
                .flatten()
                .filter(|p| {
                    p.get("controllerName").and_then(|c| c.as_str()) != Some(CONTROLLER_NAME)
                })
                .cloned()
                .collect();
            for p in &r.parents {
                let parent_ref = json!(p.parent_ref);
                let old = old_parents.into_iter().flatten().find(|o| {
                    o.get("controllerName").and_then(|c| c.as_str()) == Some(CONTROLLER_NAME)
                        && o.get("parentRef") == Some(&parent_ref)
                });
                out.push(json!({
                    "parentRef": parent_ref,
                    "controllerName": p.controller_name,
                    "conditions": conditions_json(&p.conditions, old.and_then(|o| o.get("conditions")), now),
                }));
            }
            json!({"parents": out})
        }
        ObjectStatus::BackendTlsPolicy(p) | ObjectStatus::SluicePolicy(p) => {
            let old_ancestors = current.get("ancestors").and_then(|a| a.as_array());
            // `ancestors` is atomic like route `parents`: other controllers'
            // entries are carried over; ours come first when the list is
            // over the CRD's limit.
            let mut out: Vec<Value> = Vec::new();
            for a in &p.ancestors {
                let ancestor_ref = json!(a.ancestor_ref);
                let old = old_ancestors.into_iter().flatten().find(|o| {
                    o.get("controllerName").and_then(|c| c.as_str()) == Some(CONTROLLER_NAME)
                        && o.get("ancestorRef") == Some(&ancestor_ref)
                });
                out.push(json!({
                    "ancestorRef": ancestor_ref,
                    "controllerName": a.controller_name,
                    "conditions": conditions_json(&a.conditions, old.and_then(|o| o.get("conditions")), now),
                }));
            }
            out.extend(
                old_ancestors
                    .into_iter()
                    .flatten()
                    .filter(|a| {
                        a.get("controllerName").and_then(|c| c.as_str()) != Some(CONTROLLER_NAME)
                    })
                    .cloned(),
            );
            out.truncate(MAX_POLICY_ANCESTORS);
            json!({"ancestors": out})
        }
        ObjectStatus::Ingress(i) => {
            let ingress: Vec<Value> = i.addresses.iter().map(|a| json!({"ip": a})).collect();
            json!({"loadBalancer": {"ingress": ingress}})
        }
    }
}

/// `status.listeners` of a Gateway or a ListenerSet.
fn listeners_json(listeners: &[ListenerStatus], current: &Value, now: &str) -> Vec<Value> {
    listeners
        .iter()
        .map(|l| {
            let old = current
                .get("listeners")
                .and_then(|ls| ls.as_array())
                .and_then(|ls| {
                    ls.iter()
                        .find(|x| x.get("name").and_then(|n| n.as_str()) == Some(&l.name))
                });
            json!({
                "name": l.name,
                "attachedRoutes": l.attached_routes,
                "supportedKinds": l.supported_kinds,
                "conditions": conditions_json(&l.conditions, old.and_then(|o| o.get("conditions")), now),
            })
        })
        .collect()
}

/// `status.ancestors` holds at most this many entries (CRD `maxItems`).
const MAX_POLICY_ANCESTORS: usize = 16;

fn conditions_json(conditions: &[Condition], old: Option<&Value>, now: &str) -> Vec<Value> {
    conditions
        .iter()
        .map(|c| {
            let since = old
                .and_then(|o| o.as_array())
                .and_then(|o| {
                    o.iter().find(|x| {
                        x.get("type").and_then(|t| t.as_str()) == Some(c.kind)
                            && x.get("status").and_then(|s| s.as_str()) == Some(c.status)
                    })
                })
                .and_then(|x| x.get("lastTransitionTime").and_then(|t| t.as_str()))
                .unwrap_or(now);
            let mut v = json!(c);
            v["lastTransitionTime"] = since.into();
            v
        })
        .collect()
}

/// The part of `current` that `desired` sets, for the no-op check.
fn project(current: &Value, desired: &Value) -> Value {
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => Value::Object(
            d.keys()
                .filter_map(|k| c.get(k).map(|v| (k.clone(), project(v, &d[k]))))
                .collect(),
        ),
        _ => current.clone(),
    }
}

fn strip_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), strip_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_times).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(kind: &'static str, ok: bool) -> Condition {
        Condition {
            kind,
            status: if ok { "True" } else { "False" },
            reason: if ok { "Accepted" } else { "Invalid" },
            message: "ok".into(),
            observed_generation: Some(2),
        }
    }

    fn gw(accepted: bool) -> ObjectStatus {
        ObjectStatus::Gateway(GatewayStatus {
            namespace: "a".into(),
            name: "gw".into(),
            addresses: vec![crate::control::status::GatewayStatusAddress {
                kind: "IPAddress",
                value: "127.0.0.1".into(),
            }],
            conditions: vec![cond("Accepted", accepted)],
            listeners: vec![ListenerStatus {
                name: "http".into(),
                supported_kinds: vec![],
                attached_routes: 3,
                conditions: vec![],
            }],
            attached_listener_sets: Some(2),
        })
    }

    #[test]
    fn listener_set_status_has_conditions_and_listeners() {
        let set = ObjectStatus::ListenerSet(ListenerSetStatus {
            namespace: "team".into(),
            name: "ls".into(),
            conditions: vec![cond("Accepted", true)],
            listeners: vec![ListenerStatus {
                name: "web".into(),
                supported_kinds: vec![],
                attached_routes: 1,
                conditions: vec![cond("Programmed", true)],
            }],
        });
        assert_eq!(
            set.target(),
            (Kind::ListenerSet, ObjectRef::new("team", "ls"))
        );
        let out = render(&set, &Value::Null, "T1");
        assert_eq!(out["conditions"][0]["type"], "Accepted");
        assert_eq!(out["listeners"][0]["name"], "web");
        assert_eq!(out["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(
            out["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "T1"
        );
        let again = render(&set, &out, "T2");
        assert_eq!(
            again["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "T1"
        );
    }

    #[test]
    fn transition_time_kept_while_status_holds_and_no_op_detected() {
        let first = render(&gw(true), &Value::Null, "T1");
        assert_eq!(first["conditions"][0]["lastTransitionTime"], "T1");
        assert_eq!(first["conditions"][0]["observedGeneration"], 2);
        assert_eq!(first["listeners"][0]["attachedRoutes"], 3);
        assert_eq!(first["addresses"][0]["type"], "IPAddress");
        assert_eq!(first["attachedListenerSets"], 2);
        let again = render(&gw(true), &first, "T2");
        assert_eq!(again["conditions"][0]["lastTransitionTime"], "T1");
        assert_eq!(strip_times(&again), strip_times(&project(&first, &again)));
        let flipped = render(&gw(false), &first, "T3");
        assert_eq!(flipped["conditions"][0]["lastTransitionTime"], "T3");
        assert_ne!(
            strip_times(&flipped),
            strip_times(&project(&first, &flipped))
        );
    }

    #[test]
    fn route_parents_of_other_controllers_are_kept() {
        let current = json!({"parents": [{"controllerName": "other.io/x", "parentRef": {"name": "o"}, "conditions": []}]});
        let status = ObjectStatus::HttpRoute(RouteStatus {
            kind: "HTTPRoute",
            namespace: "a".into(),
            name: "r".into(),
            parents: vec![RouteParentStatus {
                parent_ref: ParentRefStatus {
                    group: super::super::watch::GATEWAY_GROUP,
                    kind: "Gateway",
                    namespace: "a".into(),
                    name: "gw".into(),
                    section_name: None,
                    port: None,
                },
                controller_name: CONTROLLER_NAME,
                conditions: vec![cond("Accepted", true)],
            }],
        });
        let out = render(&status, &current, "T");
        assert_eq!(out["parents"].as_array().unwrap().len(), 2);
        assert_eq!(out["parents"][1]["controllerName"], CONTROLLER_NAME);
        assert_eq!(out["parents"][1]["parentRef"]["namespace"], "a");
        assert!(out["parents"][1]["parentRef"].get("sectionName").is_none());
    }
    #[test]
    fn policy_ancestors_keep_other_controllers_and_transition_times() {
        let ancestor = |accepted: bool| {
            ObjectStatus::BackendTlsPolicy(PolicyStatus {
                kind: "BackendTLSPolicy",
                namespace: "a".into(),
                name: "p".into(),
                ancestors: vec![PolicyAncestorStatus {
                    ancestor_ref: ParentRefStatus {
                        group: super::super::watch::GATEWAY_GROUP,
                        kind: "Gateway",
                        namespace: "a".into(),
                        name: "gw".into(),
                        section_name: None,
                        port: None,
                    },
                    controller_name: CONTROLLER_NAME,
                    conditions: vec![cond("Accepted", accepted)],
                }],
            })
        };
        let other =
            json!({"controllerName": "other.io/x", "ancestorRef": {"name": "o"}, "conditions": []});
        let first = render(
            &ancestor(true),
            &json!({"ancestors": [other.clone()]}),
            "T1",
        );
        let list = first["ancestors"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["controllerName"], CONTROLLER_NAME);
        assert_eq!(list[0]["ancestorRef"]["kind"], "Gateway");
        assert_eq!(list[0]["conditions"][0]["lastTransitionTime"], "T1");
        assert_eq!(list[1], other);
        let again = render(&ancestor(true), &first, "T2");
        assert_eq!(
            again["ancestors"][0]["conditions"][0]["lastTransitionTime"],
            "T1"
        );
        assert_eq!(strip_times(&again), strip_times(&project(&first, &again)));
        let flipped = render(&ancestor(false), &first, "T3");
        assert_eq!(
            flipped["ancestors"][0]["conditions"][0]["lastTransitionTime"],
            "T3"
        );
    }
}

#[cfg(test)]
mod objects_tests {
    use super::*;
    use crate::{
        config::DocumentError,
        control::{compile, ShardIds},
    };

    const CONFIG: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: a, generation: 4}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ok, namespace: a, generation: 3}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
"#;

    fn error(object: &str) -> DocumentError {
        let mut location = crate::config::Location::api_object();
        location.object = Some(object.into());
        DocumentError {
            location,
            field: "spec".into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn model_status_plus_invalid_objects_with_generations() {
        let config =
            crate::config::parse_documents([(std::path::Path::new("t.yaml"), CONFIG)]).unwrap();
        let status = compile(&config, &mut ShardIds::default(), 1).status;
        let mut converted = Converted {
            config,
            ..Converted::default()
        };
        converted
            .generations
            .insert((Kind::GatewayClass, ObjectRef::new("", "sluice")), 5);
        converted.errors.push((
            (Kind::HttpRoute, ObjectRef::new("a", "bad")),
            vec![error("HTTPRoute a/bad")],
        ));
        converted.invalid_route_parents.push((
            (Kind::HttpRoute, ObjectRef::new("a", "bad")),
            vec![ObjectRef::new("a", "gw"), ObjectRef::new("a", "not-ours")],
        ));
        converted.errors.push((
            (Kind::Gateway, ObjectRef::new("a", "broken")),
            vec![error("Gateway a/broken")],
        ));
        converted.errors.push((
            (Kind::BackendTlsPolicy, ObjectRef::new("a", "bad-tls")),
            vec![error("BackendTLSPolicy a/bad-tls")],
        ));
        converted.invalid_policy_targets.push((
            ObjectRef::new("a", "bad-tls"),
            vec![ObjectRef::new("a", "s")],
        ));
        converted.errors.push((
            (Kind::BackendTlsPolicy, ObjectRef::new("a", "unused")),
            vec![error("BackendTLSPolicy a/unused")],
        ));
        converted.invalid_policy_targets.push((
            ObjectRef::new("a", "unused"),
            vec![ObjectRef::new("a", "nobody-routes-here")],
        ));
        converted
            .generations
            .insert((Kind::BackendTlsPolicy, ObjectRef::new("a", "bad-tls")), 7);
        for (set, parent) in [("bad-set", "gw"), ("other-set", "not-ours")] {
            converted.errors.push((
                (Kind::ListenerSet, ObjectRef::new("t", set)),
                vec![error(&format!("ListenerSet t/{set}"))],
            ));
            converted
                .invalid_listener_sets
                .push((ObjectRef::new("t", set), ObjectRef::new("a", parent)));
        }
        converted
            .generations
            .insert((Kind::ListenerSet, ObjectRef::new("t", "bad-set")), 2);
        let out = objects(&status, &converted);
        let sets: Vec<&ListenerSetStatus> = out
            .iter()
            .filter_map(|o| match o {
                ObjectStatus::ListenerSet(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(
            sets.len(),
            1,
            "only the set whose Gateway is ours: {sets:?}"
        );
        let c = &sets[0].conditions[0];
        assert_eq!(
            (sets[0].name.as_str(), c.kind, c.status, c.reason),
            ("bad-set", "Accepted", "False", "Invalid")
        );
        assert!(c.message.contains("ListenerSet t/bad-set"), "{}", c.message);
        assert_eq!(c.observed_generation, Some(2));
        let policies: Vec<&PolicyStatus> = out
            .iter()
            .filter_map(|o| match o {
                ObjectStatus::BackendTlsPolicy(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(
            policies.len(),
            1,
            "only the policy whose Service a route of ours uses"
        );
        assert_eq!(policies[0].name, "bad-tls");
        let ancestor = &policies[0].ancestors[0];
        assert_eq!(ancestor.ancestor_ref.name, "gw");
        let accepted = &ancestor.conditions[0];
        assert_eq!(
            (accepted.kind, accepted.status, accepted.reason),
            ("Accepted", "False", "Invalid")
        );
        assert!(accepted.message.contains("BackendTLSPolicy a/bad-tls"));
        assert_eq!(accepted.observed_generation, Some(7));
        let class = out
            .iter()
            .find_map(|o| match o {
                ObjectStatus::GatewayClass(c) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(class.conditions[0].observed_generation, Some(5));
        let gateway = |name: &str| {
            out.iter()
                .find_map(|o| match o {
                    ObjectStatus::Gateway(g) if g.name == name => Some(g),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(gateway("gw").conditions[0].observed_generation, Some(4));
        assert_eq!(gateway("gw").listeners[0].attached_routes, 1);
        let broken = &gateway("broken").conditions[0];
        assert_eq!((broken.status, broken.reason), ("False", "Invalid"));
        assert!(
            broken.message.contains("Gateway a/broken"),
            "{}",
            broken.message
        );
        let route = |name: &str| {
            out.iter()
                .find_map(|o| match o {
                    ObjectStatus::HttpRoute(r) if r.name == name => Some(r),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(route("ok").parents[0].conditions[0].status, "True");
        assert_eq!(
            route("ok").parents[0].conditions[0].observed_generation,
            Some(3)
        );
        // Only towards the parent this agent reports on.
        let bad = route("bad");
        assert_eq!(bad.parents.len(), 1);
        assert_eq!(bad.parents[0].conditions[0].reason, "UnsupportedValue");
        assert!(bad.parents[0].conditions[0]
            .message
            .contains("HTTPRoute a/bad"));
    }

    const POLICIES: &str = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: on-route, namespace: a, generation: 2}
spec:
  targetRefs: [{kind: HTTPRoute, name: ok}, {kind: HTTPRoute, name: missing, sectionName: x}]
  ipAllow: [10.0.0.0/8]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: elsewhere, namespace: a, generation: 1}
spec:
  targetRefs: [{kind: Gateway, name: not-ours}]
  ipAllow: [10.0.0.0/8]
"#;

    #[test]
    fn every_sluice_policy_gets_status_with_missing_routes_and_invalid_ones() {
        let mut config = crate::config::parse_documents([(
            std::path::Path::new("t.yaml"),
            format!("{CONFIG}{POLICIES}").as_str(),
        )])
        .unwrap();
        // As the Kubernetes source keeps a policy that did not validate.
        config.policies.push(crate::config::SluicePolicy {
            id: ObjectRef::new("a", "broken"),
            generation: Some(6),
            created: None,
            targets: vec![crate::config::PolicyTarget {
                group: super::super::watch::GATEWAY_GROUP.into(),
                kind: "HTTPRoute".into(),
                name: "ok".into(),
                section_name: None,
            }],
            defaults: Default::default(),
            overrides: Default::default(),
            invalid: Some("SluicePolicy a/broken: field spec.ipAllow[0]: not a CIDR".into()),
        });
        let status = compile(&config, &mut ShardIds::default(), 1).status;
        let mut converted = Converted {
            config,
            ..Converted::default()
        };
        for (name, generation) in [("on-route", 2), ("elsewhere", 1), ("broken", 6)] {
            converted
                .generations
                .insert((Kind::SluicePolicy, ObjectRef::new("a", name)), generation);
        }
        let out = objects(&status, &converted);
        let policy = |name: &str| {
            out.iter()
                .find_map(|o| match o {
                    ObjectStatus::SluicePolicy(p) if p.name == name => Some(p),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no status for {name}"))
        };
        let summary = |p: &PolicyStatus| -> Vec<(String, String, &'static str, Option<i64>)> {
            p.ancestors
                .iter()
                .map(|a| {
                    let c = &a.conditions[0];
                    assert_eq!(c.kind, "Accepted");
                    (
                        a.ancestor_ref.kind.to_owned(),
                        a.ancestor_ref.name.clone(),
                        c.reason,
                        c.observed_generation,
                    )
                })
                .collect()
        };
        assert_eq!(
            summary(policy("on-route")),
            [
                ("Gateway".into(), "gw".into(), "Accepted", Some(2)),
                (
                    "HTTPRoute".into(),
                    "missing".into(),
                    "TargetNotFound",
                    Some(2)
                ),
            ]
        );
        let missing = &policy("on-route").ancestors[1];
        assert_eq!(missing.ancestor_ref.section_name.as_deref(), Some("x"));
        assert_eq!(
            missing.conditions[0].message,
            "HTTPRoute a/missing not found"
        );
        // Nothing of ours applies: an empty list (removes stale entries).
        assert!(policy("elsewhere").ancestors.is_empty());
        let broken = summary(policy("broken"));
        assert_eq!(
            broken,
            [("Gateway".into(), "gw".into(), "Invalid", Some(6))]
        );
        assert!(policy("broken").ancestors[0].conditions[0]
            .message
            .contains("spec.ipAllow[0]"));
    }

    #[test]
    fn sluice_policy_ancestors_of_ours_are_replaced_and_others_kept() {
        let current = json!({"ancestors": [
            {"controllerName": CONTROLLER_NAME, "ancestorRef": {"name": "stale"}, "conditions": []},
            {"controllerName": "other.io/x", "ancestorRef": {"name": "o"}, "conditions": []},
        ]});
        let status = ObjectStatus::SluicePolicy(PolicyStatus {
            kind: "SluicePolicy",
            namespace: "a".into(),
            name: "p".into(),
            ancestors: vec![],
        });
        let out = render(&status, &current, "T");
        assert_eq!(out["ancestors"].as_array().unwrap().len(), 1);
        assert_eq!(out["ancestors"][0]["controllerName"], "other.io/x");
    }
}
