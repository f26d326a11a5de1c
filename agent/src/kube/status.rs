//! Writing Gateway API status back with server-side apply. What to write is
//! decided elsewhere (today [`super::provisional_status`], later the shared
//! status model in `control/`); this module only turns per-object conditions
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
    convert::object_ref,
    watch::{Kind, Stores, GATEWAY_GROUP},
};
use crate::{config::ObjectRef, control::CONTROLLER_NAME};

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "sluice.dev/gateway-controller";

/// One condition as the Gateway API defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
    pub observed_generation: i64,
}

impl Condition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
        observed_generation: i64,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
            observed_generation,
        }
    }
}

/// Status of one Gateway listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    pub attached_routes: usize,
    pub conditions: Vec<Condition>,
}

/// Status of a route towards one parent Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParentStatus {
    pub gateway: ObjectRef,
    pub section_name: Option<String>,
    pub port: Option<u16>,
    pub conditions: Vec<Condition>,
}

/// The status of one object, as this agent wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStatus {
    GatewayClass {
        name: String,
        conditions: Vec<Condition>,
    },
    Gateway {
        id: ObjectRef,
        conditions: Vec<Condition>,
        listeners: Vec<ListenerStatus>,
        /// IP addresses the Gateway is served on.
        addresses: Vec<String>,
    },
    HttpRoute {
        id: ObjectRef,
        /// Only the parents this agent serves.
        parents: Vec<RouteParentStatus>,
    },
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
        let (kind, id) = match status {
            ObjectStatus::GatewayClass { name, .. } => {
                (Kind::GatewayClass, ObjectRef::new("", name.clone()))
            }
            ObjectStatus::Gateway { id, .. } => (Kind::Gateway, id.clone()),
            ObjectStatus::HttpRoute { id, .. } => (Kind::HttpRoute, id.clone()),
        };
        let current = self
            .stores
            .get(&kind)
            .and_then(|s| s.find(|o| object_ref(o) == id));
        let Some(current) = current else {
            // Gone (or not listed yet): nothing to write to.
            return Ok(false);
        };
        let current_status = current.data.get("status").cloned().unwrap_or(Value::Null);
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
        ObjectStatus::GatewayClass { conditions, .. } => {
            json!({"conditions": conditions_json(conditions, current.get("conditions"), now)})
        }
        ObjectStatus::Gateway {
            conditions,
            listeners,
            addresses,
            ..
        } => {
            let listeners: Vec<Value> = listeners
                .iter()
                .map(|l| {
                    let old = current
                        .get("listeners")
                        .and_then(|ls| ls.as_array())
                        .and_then(|ls| ls.iter().find(|x| x.get("name").and_then(|n| n.as_str()) == Some(&l.name)));
                    json!({
                        "name": l.name,
                        "attachedRoutes": l.attached_routes,
                        "supportedKinds": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}],
                        "conditions": conditions_json(&l.conditions, old.and_then(|o| o.get("conditions")), now),
                    })
                })
                .collect();
            let mut out = json!({
                "conditions": conditions_json(conditions, current.get("conditions"), now),
                "listeners": listeners,
            });
            if !addresses.is_empty() {
                out["addresses"] = addresses
                    .iter()
                    .map(|a| json!({"type": "IPAddress", "value": a}))
                    .collect();
            }
            out
        }
        ObjectStatus::HttpRoute { parents, .. } => {
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
            for p in parents {
                let mut parent_ref = json!({
                    "group": GATEWAY_GROUP,
                    "kind": "Gateway",
                    "namespace": p.gateway.namespace,
                    "name": p.gateway.name,
                });
                if let Some(s) = &p.section_name {
                    parent_ref["sectionName"] = s.clone().into();
                }
                if let Some(port) = p.port {
                    parent_ref["port"] = port.into();
                }
                let old = old_parents.into_iter().flatten().find(|o| {
                    o.get("controllerName").and_then(|c| c.as_str()) == Some(CONTROLLER_NAME)
                        && o.get("parentRef") == Some(&parent_ref)
                });
                out.push(json!({
                    "parentRef": parent_ref,
                    "controllerName": CONTROLLER_NAME,
                    "conditions": conditions_json(&p.conditions, old.and_then(|o| o.get("conditions")), now),
                }));
            }
            json!({"parents": out})
        }
    }
}

fn conditions_json(conditions: &[Condition], old: Option<&Value>, now: &str) -> Vec<Value> {
    conditions
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = old
                .and_then(|o| o.as_array())
                .and_then(|o| {
                    o.iter().find(|x| {
                        x.get("type").and_then(|t| t.as_str()) == Some(c.type_)
                            && x.get("status").and_then(|s| s.as_str()) == Some(status)
                    })
                })
                .and_then(|x| x.get("lastTransitionTime").and_then(|t| t.as_str()))
                .unwrap_or(now);
            json!({
                "type": c.type_,
                "status": status,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": c.observed_generation,
                "lastTransitionTime": since,
            })
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

    fn gw(accepted: bool) -> ObjectStatus {
        ObjectStatus::Gateway {
            id: ObjectRef::new("a", "gw"),
            conditions: vec![Condition::new("Accepted", accepted, "Accepted", "ok", 2)],
            listeners: vec![ListenerStatus {
                name: "http".into(),
                attached_routes: 3,
                conditions: vec![],
            }],
            addresses: vec!["127.0.0.1".into()],
        }
    }

    #[test]
    fn transition_time_kept_while_status_holds_and_no_op_detected() {
        let first = render(&gw(true), &Value::Null, "T1");
        assert_eq!(first["conditions"][0]["lastTransitionTime"], "T1");
        assert_eq!(first["listeners"][0]["attachedRoutes"], 3);
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
        let status = ObjectStatus::HttpRoute {
            id: ObjectRef::new("a", "r"),
            parents: vec![RouteParentStatus {
                gateway: ObjectRef::new("a", "gw"),
                section_name: None,
                port: None,
                conditions: vec![Condition::new("Accepted", true, "Accepted", "", 1)],
            }],
        };
        let out = render(&status, &current, "T");
        assert_eq!(out["parents"].as_array().unwrap().len(), 2);
        assert_eq!(out["parents"][1]["controllerName"], CONTROLLER_NAME);
    }
}
