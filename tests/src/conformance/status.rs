//! Status assertions of the case files (`status` blocks, schema and
//! matching rules in `tests/conformance/cases/README.md`), evaluated against
//! the agent's admin `GET /status`.
//!
//! [`assertions`] turns a `status` block into atomic [`Assertion`]s,
//! [`evaluate`] judges one against one `/status` snapshot and the objects the
//! runner fed the agent (for `metadata.generation`); the runner polls until
//! every assertion holds or its time is up.
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use super::manifests::{group_kind, object_key, CONTROLLER_NAME};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Upstream's annotation for Gateways that readiness checks ignore.
const SKIP_READINESS: &str = "gateway-api/skip-this-for-readiness";

// ---------------------------------------------------------------------------
// The agent's `/status` (agent/src/control/status.rs), read leniently: a
// field the agent does not report is empty.

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentStatus {
    pub gateway_classes: Vec<serde_json::Value>,
    pub gateways: Vec<GatewaySt>,
    pub http_routes: Vec<RouteSt>,
    /// Policies (BackendTLSPolicy) with their `status.ancestors`.
    pub policies: Vec<PolicySt>,
    /// ListenerSets whose parent Gateway is the agent's.
    pub listener_sets: Vec<ListenerSetSt>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListenerSetSt {
    pub namespace: String,
    pub name: String,
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerSt>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicySt {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub ancestors: Vec<AncestorSt>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AncestorSt {
    pub ancestor_ref: ParentRefSt,
    pub conditions: Vec<Cond>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySt {
    pub namespace: String,
    pub name: String,
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerSt>,
    /// `status.addresses`; the agent does not report it (yet).
    pub addresses: Vec<AddressSt>,
    /// `status.attachedListenerSets` (unset reads as 0, as upstream's).
    pub attached_listener_sets: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AddressSt {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListenerSt {
    pub name: String,
    pub supported_kinds: Vec<KindSt>,
    pub attached_routes: i64,
    pub conditions: Vec<Cond>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct KindSt {
    pub group: Option<String>,
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteSt {
    /// `HTTPRoute` or `GRPCRoute` (the agent lists both).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub parents: Vec<ParentSt>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParentSt {
    pub parent_ref: ParentRefSt,
    pub controller_name: String,
    pub conditions: Vec<Cond>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParentRefSt {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Cond {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------------------
// Expectations.

/// An expected condition: `reason` is compared only when given.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct CondExp {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

impl std::fmt::Display for CondExp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.kind, self.status)?;
        if let Some(r) = &self.reason {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ParentSel {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ParentExp {
    pub parent: ParentSel,
    #[serde(default)]
    pub controller: bool,
    #[serde(default)]
    pub require_namespace: bool,
    #[serde(default)]
    pub conditions: Vec<CondExp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct KindExp {
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerExp {
    pub name: String,
    #[serde(default)]
    pub supported_kinds: Option<Vec<KindExp>>,
    #[serde(default)]
    pub attached_routes: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<CondExp>,
}

/// What one atomic assertion checks.
#[derive(Debug, Clone)]
pub enum Check {
    NamespaceReady(String),
    RouteParent(Key, ParentExp),
    NoAcceptedParents(Key),
    RouteLatest(Key),
    GatewayAllListeners(Key, Vec<CondExp>),
    /// `status.addresses` has an entry with a type (`has_address`, and the
    /// address wait implied by `all_listeners`).
    GatewayAddress(Key),
    GatewayListenerConditions(Key, String, Vec<CondExp>),
    GatewayListeners(Key, Vec<ListenerExp>),
    GatewayConditions(Key, Vec<CondExp>),
    GatewayLatest(Key),
    GatewayZeroRoutes(Key),
    /// `attached_listener_sets`: `status.attachedListenerSets` (unset = 0).
    GatewayAttachedListenerSets(Key, i64),
    /// `listener_sets[].conditions`: the ListenerSet's conditions (at the
    /// latest generation).
    ListenerSetConditions(Key, Vec<CondExp>),
    /// `listener_sets[].listener_conditions`: one listener of the set.
    ListenerSetListenerConditions(Key, String, Vec<CondExp>),
    /// `listener_sets[].listeners`: the `listeners` rule on the set's.
    ListenerSetListeners(Key, Vec<ListenerExp>),
    /// `policies[]`: the policy's `status.ancestors`.
    Policy {
        kind: String,
        policy: Key,
        ancestor: Key,
        conditions: Vec<CondExp>,
    },
    /// `generation_changed`: the object's `metadata.generation` differs
    /// from before the step (`true`: a route of any kind, else the Gateway).
    /// Only evaluated against an API server ([`Objects::before_step`]).
    GenerationChanged {
        route: bool,
        key: Key,
    },
    /// Cannot be evaluated here; the reason.
    Unsupported(String),
}

#[derive(Debug, Clone)]
pub struct Assertion {
    pub label: String,
    pub check: Check,
}

/// Outcome of one evaluation against one `/status` snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eval {
    Pass,
    Fail(String),
    /// `no_accepted_parents`: the route has no parents (yet); passes when
    /// this holds over two polls at least 1 s apart.
    NoParents,
    Unsupported(String),
}

fn de<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T, String> {
    serde_yaml::from_value(v.clone()).map_err(|e| format!("invalid {what}: {e}"))
}

fn conds(v: Option<&Value>) -> Result<Vec<CondExp>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => de(v, "conditions"),
    }
}

fn list(v: &[CondExp]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The atomic assertions of a `status` block, in the documented order.
pub fn assertions(status: &Value) -> Vec<Assertion> {
    let mut out = Vec::new();
    let Some(m) = status.as_mapping() else {
        return out;
    };
    let bad = |out: &mut Vec<Assertion>, label: String, e: String| {
        out.push(Assertion {
            label,
            check: Check::Unsupported(e),
        })
    };
    for (k, v) in m {
        let key = k.as_str().unwrap_or("");
        let items: &[Value] = v.as_sequence().map(Vec::as_slice).unwrap_or(&[]);
        match key {
            "namespaces_ready" => {
                for ns in items {
                    let ns = ns.as_str().unwrap_or("").to_owned();
                    out.push(Assertion {
                        label: format!("namespace {ns} ready"),
                        check: Check::NamespaceReady(ns),
                    });
                }
            }
            "routes" => {
                for r in items {
                    let route: Key = match r.get("route").map(|v| de(v, "route")) {
                        Some(Ok(k)) => k,
                        other => {
                            bad(
                                &mut out,
                                "route ?".into(),
                                format!("{:?}", other.map(|e| e.err())),
                            );
                            continue;
                        }
                    };
                    for p in r
                        .get("parents")
                        .and_then(Value::as_sequence)
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                    {
                        match de::<ParentExp>(p, "route parent") {
                            Ok(p) => out.push(Assertion {
                                label: format!(
                                    "route {route} parent {}: {}",
                                    p.parent.name,
                                    list(&p.conditions)
                                ),
                                check: Check::RouteParent(route.clone(), p),
                            }),
                            Err(e) => bad(&mut out, format!("route {route} parent"), e),
                        }
                    }
                    if r.get("no_accepted_parents").and_then(Value::as_bool) == Some(true) {
                        out.push(Assertion {
                            label: format!("route {route} has no accepted parents"),
                            check: Check::NoAcceptedParents(route.clone()),
                        });
                    }
                    if r.get("latest_conditions").and_then(Value::as_bool) == Some(true) {
                        out.push(Assertion {
                            label: format!("route {route} conditions at the latest generation"),
                            check: Check::RouteLatest(route.clone()),
                        });
                    }
                    if r.get("generation_changed").and_then(Value::as_bool) == Some(true) {
                        out.push(generation_changed(true, &route));
                    }
                }
            }
            "gateways" => {
                for g in items {
                    let gw: Key = match g.get("gateway").map(|v| de(v, "gateway")) {
                        Some(Ok(k)) => k,
                        other => {
                            bad(
                                &mut out,
                                "gateway ?".into(),
                                format!("{:?}", other.map(|e| e.err())),
                            );
                            continue;
                        }
                    };
                    let Some(gm) = g.as_mapping() else { continue };
                    for (gk, gv) in gm {
                        let gk = gk.as_str().unwrap_or("");
                        let label = |what: String| format!("gateway {gw} {what}");
                        let a = match gk {
                            "gateway" => continue,
                            "all_listeners" => match conds(Some(gv)) {
                                Ok(c) => {
                                    out.push(Assertion {
                                        label: label(format!("all listeners: {}", list(&c))),
                                        check: Check::GatewayAllListeners(gw.clone(), c),
                                    });
                                    // Upstream GatewayAndHTTPRoutesMustBeAccepted also
                                    // waits for the Gateway's address.
                                    Assertion {
                                        label: label("has an address (all_listeners)".into()),
                                        check: Check::GatewayAddress(gw.clone()),
                                    }
                                }
                                Err(e) => Assertion {
                                    label: label("all listeners".into()),
                                    check: Check::Unsupported(e),
                                },
                            },
                            "listener_conditions" => {
                                let lm = gv.as_mapping().cloned().unwrap_or_default();
                                for (ln, lc) in &lm {
                                    let ln = ln.as_str().unwrap_or("").to_owned();
                                    match conds(Some(lc)) {
                                        Ok(c) => out.push(Assertion {
                                            label: label(format!("listener {ln}: {}", list(&c))),
                                            check: Check::GatewayListenerConditions(
                                                gw.clone(),
                                                ln,
                                                c,
                                            ),
                                        }),
                                        Err(e) => bad(&mut out, label(format!("listener {ln}")), e),
                                    }
                                }
                                continue;
                            }
                            "listeners" => match de::<Vec<ListenerExp>>(gv, "listeners") {
                                Ok(l) => Assertion {
                                    label: label(format!(
                                        "listeners [{}]",
                                        l.iter()
                                            .map(|l| l.name.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    )),
                                    check: Check::GatewayListeners(gw.clone(), l),
                                },
                                Err(e) => Assertion {
                                    label: label("listeners".into()),
                                    check: Check::Unsupported(e),
                                },
                            },
                            "conditions" => match conds(Some(gv)) {
                                Ok(c) => Assertion {
                                    label: label(format!("conditions: {}", list(&c))),
                                    check: Check::GatewayConditions(gw.clone(), c),
                                },
                                Err(e) => Assertion {
                                    label: label("conditions".into()),
                                    check: Check::Unsupported(e),
                                },
                            },
                            "latest_conditions" if gv.as_bool() == Some(true) => Assertion {
                                label: label("conditions at the latest generation".into()),
                                check: Check::GatewayLatest(gw.clone()),
                            },
                            "zero_routes" if gv.as_bool() == Some(true) => Assertion {
                                label: label("has zero attached routes".into()),
                                check: Check::GatewayZeroRoutes(gw.clone()),
                            },
                            "has_address" if gv.as_bool() == Some(true) => Assertion {
                                label: label("has an address".into()),
                                check: Check::GatewayAddress(gw.clone()),
                            },
                            "generation_changed" if gv.as_bool() == Some(true) => {
                                generation_changed(false, &gw)
                            }
                            "attached_listener_sets" if gv.as_i64().is_some() => Assertion {
                                label: label(format!(
                                    "has {} attached ListenerSets",
                                    gv.as_i64().unwrap_or(0)
                                )),
                                check: Check::GatewayAttachedListenerSets(
                                    gw.clone(),
                                    gv.as_i64().unwrap_or(0),
                                ),
                            },
                            other => Assertion {
                                label: label(other.to_owned()),
                                check: Check::Unsupported(format!(
                                    "`{other}` is not evaluated by the runner"
                                )),
                            },
                        };
                        out.push(a);
                    }
                }
            }
            "listener_sets" => {
                for ls in items {
                    listener_set_assertions(ls, &mut out);
                }
            }
            "policies" => {
                for p in items {
                    let kind = p
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let keys = (
                        p.get("policy").map(|v| de::<Key>(v, "policy")),
                        p.get("ancestor").map(|v| de::<Key>(v, "ancestor")),
                    );
                    let conditions = match p.get("conditions") {
                        None => Ok(Vec::new()),
                        Some(v) => de::<Vec<CondExp>>(v, "conditions"),
                    };
                    match (keys, conditions) {
                        ((Some(Ok(policy)), Some(Ok(ancestor))), Ok(conditions)) => {
                            out.push(Assertion {
                                label: format!("{kind} {policy} ancestor {}", ancestor.name),
                                check: Check::Policy {
                                    kind,
                                    policy,
                                    ancestor,
                                    conditions,
                                },
                            })
                        }
                        _ => bad(&mut out, format!("{kind} policy"), "invalid policy".into()),
                    }
                }
            }
            other => bad(
                &mut out,
                other.to_owned(),
                format!("`{other}` is not evaluated by the runner"),
            ),
        }
    }
    out
}

/// The assertions of one `listener_sets[]` entry: `listener_set` (the key),
/// `conditions`, `listener_conditions` and `listeners`, as for a Gateway.
fn listener_set_assertions(ls: &Value, out: &mut Vec<Assertion>) {
    let key: Key = match ls.get("listener_set").map(|v| de(v, "listener_set")) {
        Some(Ok(k)) => k,
        other => {
            out.push(Assertion {
                label: "ListenerSet ?".into(),
                check: Check::Unsupported(format!("{:?}", other.map(|e| e.err()))),
            });
            return;
        }
    };
    let label = |what: String| format!("ListenerSet {key} {what}");
    let Some(m) = ls.as_mapping() else { return };
    for (k, v) in m {
        let k = k.as_str().unwrap_or("");
        match k {
            "listener_set" => {}
            "conditions" => out.push(match conds(Some(v)) {
                Ok(c) => Assertion {
                    label: label(format!("conditions: {}", list(&c))),
                    check: Check::ListenerSetConditions(key.clone(), c),
                },
                Err(e) => Assertion {
                    label: label("conditions".into()),
                    check: Check::Unsupported(e),
                },
            }),
            "listener_conditions" => {
                for (ln, lc) in v.as_mapping().cloned().unwrap_or_default() {
                    let ln = ln.as_str().unwrap_or("").to_owned();
                    out.push(match conds(Some(&lc)) {
                        Ok(c) => Assertion {
                            label: label(format!("listener {ln}: {}", list(&c))),
                            check: Check::ListenerSetListenerConditions(key.clone(), ln, c),
                        },
                        Err(e) => Assertion {
                            label: label(format!("listener {ln}")),
                            check: Check::Unsupported(e),
                        },
                    });
                }
            }
            "listeners" => out.push(match de::<Vec<ListenerExp>>(v, "listeners") {
                Ok(l) => Assertion {
                    label: label(format!(
                        "listeners [{}]",
                        l.iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    check: Check::ListenerSetListeners(key.clone(), l),
                },
                Err(e) => Assertion {
                    label: label("listeners".into()),
                    check: Check::Unsupported(e),
                },
            }),
            other => out.push(Assertion {
                label: label(other.to_owned()),
                check: Check::Unsupported(format!("`{other}` is not evaluated by the runner")),
            }),
        }
    }
}

fn generation_changed(route: bool, key: &Key) -> Assertion {
    let what = if route { "route" } else { "gateway" };
    Assertion {
        label: format!("{what} {key} metadata.generation changed"),
        check: Check::GenerationChanged {
            route,
            key: key.clone(),
        },
    }
}

/// Why `generation_changed` is not evaluated without an API server.
pub const GENERATION_WITHOUT_CLUSTER: &str =
    "metadata.generation is maintained by the Kubernetes API server; without a cluster \
     the runner bumps it itself, so checking it would test the runner";

// ---------------------------------------------------------------------------
// Evaluation.

/// The objects the agent was fed (the runner's view of the API server), or
/// read back from a real API server.
pub struct Objects<'a> {
    pub docs: &'a [Value],
    /// The objects as a real API server had them before the current step;
    /// `None` without one (then `generation_changed` is unsupported).
    pub before_step: Option<&'a [Value]>,
}

fn find_in<'d>(docs: &'d [Value], kinds: &[&str], key: &Key) -> Option<&'d Value> {
    docs.iter().find(|d| {
        let (g, k) = group_kind(d);
        let (ns, n) = object_key(d);
        g == GATEWAY_GROUP && kinds.contains(&k.as_str()) && ns == key.namespace && n == key.name
    })
}

fn generation_of(d: &Value) -> Option<i64> {
    d.get("metadata")?.get("generation")?.as_i64()
}

/// `generation_changed` against the API server's objects before and now.
fn generation_changed_eval(objs: &Objects<'_>, route: bool, key: &Key) -> Eval {
    let Some(before) = objs.before_step else {
        return Eval::Unsupported(GENERATION_WITHOUT_CLUSTER.into());
    };
    let kinds: &[&str] = if route {
        &["HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"]
    } else {
        &["Gateway"]
    };
    let then = find_in(before, kinds, key).and_then(generation_of);
    let now = find_in(objs.docs, kinds, key).and_then(generation_of);
    match (then, now) {
        (Some(a), Some(b)) if a != b => Eval::Pass,
        (Some(a), Some(_)) => Eval::Fail(format!("{key}: metadata.generation is still {a}")),
        _ => Eval::Fail(format!(
            "{key}: no metadata.generation before or after the step"
        )),
    }
}

impl Objects<'_> {
    fn find(&self, kind: &str, key: &Key) -> Option<&Value> {
        find_in(self.docs, &[kind], key)
    }

    /// `metadata.generation` of a Gateway API object (the runner sets it).
    fn generation(&self, kind: &str, key: &Key) -> Option<i64> {
        self.find(kind, key)?
            .get("metadata")?
            .get("generation")?
            .as_i64()
    }
}

/// The conditions matching `exp` (same type and status, reason if given).
pub fn condition_matches(exp: &CondExp, actual: &[Cond]) -> bool {
    actual.iter().any(|c| {
        c.kind == exp.kind
            && c.status == exp.status
            && exp.reason.as_ref().is_none_or(|r| *r == c.reason)
    })
}

/// The `policies` rule: an ancestor named like `ancestor` (namespace unset
/// or equal) with the conditions, all at the policy's generation.
fn policy_matches(
    s: &AgentStatus,
    objs: &Objects<'_>,
    kind: &str,
    policy: &Key,
    ancestor: &Key,
    conditions: &[CondExp],
) -> Result<(), String> {
    let p = s
        .policies
        .iter()
        .find(|p| p.kind == kind && p.namespace == policy.namespace && p.name == policy.name)
        .ok_or_else(|| {
            format!("{kind} {policy}: no status (status.ancestors) in the agent's /status")
        })?;
    let a = p
        .ancestors
        .iter()
        .find(|a| {
            a.ancestor_ref.name == ancestor.name
                && a.ancestor_ref
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == ancestor.namespace)
        })
        .ok_or_else(|| format!("{kind} {policy}: no ancestor {ancestor}"))?;
    conditions_match(conditions, &a.conditions)
        .and_then(|()| at_generation(&a.conditions, objs.generation(kind, policy)))
        .map_err(|e| format!("{kind} {policy} ancestor {ancestor}: {e}"))
}

/// `Err` names the first expected condition that is missing.
pub fn conditions_match(exp: &[CondExp], actual: &[Cond]) -> Result<(), String> {
    for e in exp {
        if !condition_matches(e, actual) {
            return Err(format!("expected {e}, got [{}]", show(actual)));
        }
    }
    Ok(())
}

fn show(actual: &[Cond]) -> String {
    actual
        .iter()
        .map(|c| format!("{}={}/{}", c.kind, c.status, c.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every condition has `observedGeneration == generation`.
pub fn at_generation(actual: &[Cond], generation: Option<i64>) -> Result<(), String> {
    for c in actual {
        if c.observed_generation != generation {
            return Err(format!(
                "condition {} has observedGeneration {}, metadata.generation is {}",
                c.kind,
                opt(c.observed_generation),
                opt(generation)
            ));
        }
    }
    Ok(())
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "unset".into(), |v| v.to_string())
}

/// A supported kind matches when kinds are equal and groups are equal, a
/// missing group counting as `gateway.networking.k8s.io`.
pub fn kind_matches(exp: &KindExp, actual: &KindSt) -> bool {
    let g = |g: &Option<String>| {
        g.clone()
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| GATEWAY_GROUP.into())
    };
    exp.kind == actual.kind && g(&exp.group) == g(&actual.group)
}

fn gateway<'a>(s: &'a AgentStatus, key: &Key) -> Result<&'a GatewaySt, String> {
    s.gateways
        .iter()
        .find(|g| g.namespace == key.namespace && g.name == key.name)
        .ok_or_else(|| format!("Gateway {key} is not in the agent's /status"))
}

/// The route's kind as the agent reports it (`HTTPRoute` when unknown).
fn route_kind<'a>(s: &'a AgentStatus, key: &Key) -> &'a str {
    s.http_routes
        .iter()
        .find(|r| r.namespace == key.namespace && r.name == key.name)
        .map(|r| r.kind.as_str())
        .filter(|k| !k.is_empty())
        .unwrap_or("HTTPRoute")
}

fn route_parents<'a>(s: &'a AgentStatus, key: &Key) -> &'a [ParentSt] {
    s.http_routes
        .iter()
        .find(|r| r.namespace == key.namespace && r.name == key.name)
        .map(|r| r.parents.as_slice())
        .unwrap_or(&[])
}

fn listener_set<'a>(s: &'a AgentStatus, key: &Key) -> Result<&'a ListenerSetSt, String> {
    s.listener_sets
        .iter()
        .find(|l| l.namespace == key.namespace && l.name == key.name)
        .ok_or_else(|| format!("ListenerSet {key} is not in the agent's /status"))
}

fn listener_set_latest(l: &ListenerSetSt, objs: &Objects<'_>, key: &Key) -> Result<(), String> {
    at_generation(&l.conditions, objs.generation("ListenerSet", key))
        .map_err(|e| format!("ListenerSet {key}: {e}"))
}

fn gateway_latest(g: &GatewaySt, objs: &Objects<'_>, key: &Key) -> Result<(), String> {
    at_generation(&g.conditions, objs.generation("Gateway", key))
        .map_err(|e| format!("Gateway {key}: {e}"))
}

fn r2e(r: Result<(), String>) -> Eval {
    match r {
        Ok(()) => Eval::Pass,
        Err(e) => Eval::Fail(e),
    }
}

/// One parent entry against one expected parent.
fn parent_matches(exp: &ParentExp, p: &ParentSt) -> Result<(), String> {
    let r = &p.parent_ref;
    if r.name != exp.parent.name {
        return Err(format!("parentRef.name {}", r.name));
    }
    match &r.namespace {
        Some(ns) if *ns != exp.parent.namespace => {
            return Err(format!(
                "parentRef.namespace {ns}, expected {}",
                exp.parent.namespace
            ))
        }
        None if exp.require_namespace => {
            return Err("parentRef.namespace is unset but required".into())
        }
        _ => {}
    }
    for (what, want, got) in [
        ("group", &exp.parent.group, &r.group),
        ("kind", &exp.parent.kind, &r.kind),
    ] {
        if let Some(want) = want {
            if got.as_ref() != Some(want) {
                return Err(format!(
                    "parentRef.{what} is {}, expected {want}",
                    got.as_deref().unwrap_or("unset")
                ));
            }
        }
    }
    if exp.controller && p.controller_name != CONTROLLER_NAME {
        return Err(format!(
            "controllerName {:?}, expected {CONTROLLER_NAME}",
            p.controller_name
        ));
    }
    conditions_match(&exp.conditions, &p.conditions)
}

/// Judges one assertion against one `/status` snapshot.
pub fn evaluate(check: &Check, s: &AgentStatus, objs: &Objects<'_>) -> Eval {
    match check {
        Check::Unsupported(why) => Eval::Unsupported(why.clone()),
        Check::GenerationChanged { route, key } => generation_changed_eval(objs, *route, key),
        Check::NamespaceReady(ns) => {
            for d in objs.docs {
                let (g, k) = group_kind(d);
                let (dns, name) = object_key(d);
                if g != GATEWAY_GROUP || k != "Gateway" || dns != *ns {
                    continue;
                }
                let skip = d
                    .get("metadata")
                    .and_then(|m| m.get("annotations"))
                    .and_then(|a| a.get(SKIP_READINESS))
                    .and_then(Value::as_str)
                    == Some("true");
                if skip {
                    continue;
                }
                let key = Key {
                    namespace: dns,
                    name,
                };
                let check = gateway(s, &key).and_then(|g| {
                    gateway_latest(g, objs, &key)?;
                    conditions_match(
                        &[
                            CondExp {
                                kind: "Accepted".into(),
                                status: "True".into(),
                                reason: None,
                            },
                            CondExp {
                                kind: "Programmed".into(),
                                status: "True".into(),
                                reason: None,
                            },
                        ],
                        &g.conditions,
                    )
                    .map_err(|e| format!("Gateway {key} not ready: {e}"))
                });
                if let Err(e) = check {
                    return Eval::Fail(e);
                }
            }
            Eval::Pass
        }
        Check::RouteParent(route, exp) => {
            let parents = route_parents(s, route);
            let generation = objs.generation(route_kind(s, route), route);
            let mut first = None;
            let mut found = false;
            for p in parents {
                match parent_matches(exp, p) {
                    Ok(()) => {
                        found = true;
                        break;
                    }
                    Err(e) if p.parent_ref.name == exp.parent.name => {
                        first.get_or_insert(e);
                    }
                    Err(_) => {}
                }
            }
            if !found {
                return Eval::Fail(format!(
                    "{} {route}: {}",
                    route_kind(s, route),
                    first.unwrap_or_else(|| format!(
                        "no status.parents entry for {} (parents: [{}])",
                        exp.parent.name,
                        parents
                            .iter()
                            .map(|p| p.parent_ref.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                ));
            }
            for p in parents {
                if let Err(e) = at_generation(&p.conditions, generation) {
                    return Eval::Fail(format!("{} {route}: {e}", route_kind(s, route)));
                }
            }
            Eval::Pass
        }
        Check::NoAcceptedParents(route) => {
            let parents = route_parents(s, route);
            match parents {
                [] => Eval::NoParents,
                [p] => {
                    let exp = CondExp {
                        kind: "Accepted".into(),
                        status: "False".into(),
                        reason: None,
                    };
                    r2e(conditions_match(&[exp], &p.conditions)
                        .and_then(|()| {
                            at_generation(
                                &p.conditions,
                                objs.generation(route_kind(s, route), route),
                            )
                        })
                        .map_err(|e| format!("{} {route}: {e}", route_kind(s, route))))
                }
                more => Eval::Fail(format!(
                    "{} {route} has {} parent entries, expected none or one not accepted",
                    route_kind(s, route),
                    more.len()
                )),
            }
        }
        Check::RouteLatest(route) => {
            let generation = objs.generation(route_kind(s, route), route);
            r2e(route_parents(s, route)
                .iter()
                .try_for_each(|p| at_generation(&p.conditions, generation))
                .map_err(|e| format!("{} {route}: {e}", route_kind(s, route))))
        }
        Check::GatewayAllListeners(key, exp) => r2e(gateway(s, key).and_then(|g| {
            for l in &g.listeners {
                conditions_match(exp, &l.conditions)
                    .map_err(|e| format!("Gateway {key} listener {}: {e}", l.name))?;
            }
            Ok(())
        })),
        Check::GatewayAddress(key) => r2e(gateway(s, key).and_then(|g| {
            if g.addresses
                .iter()
                .any(|a| a.kind.as_deref().is_some_and(|t| !t.is_empty()))
            {
                Ok(())
            } else {
                Err(format!(
                    "Gateway {key}: status.addresses has no entry with a type ({} entries)",
                    g.addresses.len()
                ))
            }
        })),
        Check::GatewayListenerConditions(key, name, exp) => r2e(gateway(s, key).and_then(|g| {
            let l = g
                .listeners
                .iter()
                .find(|l| l.name == *name)
                .ok_or_else(|| format!("Gateway {key}: no listener {name} in status"))?;
            conditions_match(exp, &l.conditions)
                .map_err(|e| format!("Gateway {key} listener {name}: {e}"))
        })),
        Check::GatewayListeners(key, exp) => r2e(gateway(s, key).and_then(|g| {
            gateway_latest(g, objs, key)?;
            listeners_match(exp, &g.listeners).map_err(|e| format!("Gateway {key}: {e}"))
        })),
        Check::GatewayConditions(key, exp) => r2e(gateway(s, key).and_then(|g| {
            gateway_latest(g, objs, key)?;
            conditions_match(exp, &g.conditions).map_err(|e| format!("Gateway {key}: {e}"))
        })),
        Check::GatewayLatest(key) => {
            r2e(gateway(s, key).and_then(|g| gateway_latest(g, objs, key)))
        }
        Check::GatewayZeroRoutes(key) => r2e(gateway(s, key).and_then(|g| {
            gateway_latest(g, objs, key)?;
            match g.listeners.as_slice() {
                [] => Ok(()),
                [l] if l.attached_routes == 0 => Ok(()),
                ls => Err(format!(
                    "Gateway {key}: expected no listener or one with attachedRoutes 0, got [{}]",
                    ls.iter()
                        .map(|l| format!("{}: {}", l.name, l.attached_routes))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        })),
        Check::Policy {
            kind,
            policy,
            ancestor,
            conditions,
        } => r2e(policy_matches(s, objs, kind, policy, ancestor, conditions)),
        Check::GatewayAttachedListenerSets(key, n) => r2e(gateway(s, key).and_then(|g| {
            let got = g.attached_listener_sets.unwrap_or(0);
            if got == *n {
                Ok(())
            } else {
                Err(format!(
                    "Gateway {key}: attachedListenerSets {got}, expected {n}"
                ))
            }
        })),
        Check::ListenerSetConditions(key, exp) => r2e(listener_set(s, key).and_then(|l| {
            listener_set_latest(l, objs, key)?;
            conditions_match(exp, &l.conditions).map_err(|e| format!("ListenerSet {key}: {e}"))
        })),
        Check::ListenerSetListenerConditions(key, name, exp) => {
            r2e(listener_set(s, key).and_then(|ls| {
                let l = ls
                    .listeners
                    .iter()
                    .find(|l| l.name == *name)
                    .ok_or_else(|| format!("ListenerSet {key}: no listener {name} in status"))?;
                conditions_match(exp, &l.conditions)
                    .map_err(|e| format!("ListenerSet {key} listener {name}: {e}"))
            }))
        }
        Check::ListenerSetListeners(key, exp) => r2e(listener_set(s, key).and_then(|l| {
            listener_set_latest(l, objs, key)?;
            listeners_match(exp, &l.listeners).map_err(|e| format!("ListenerSet {key}: {e}"))
        })),
    }
}

/// The `listeners` rule: same count; per expected name, the same
/// `attachedRoutes`, the listed conditions and the supported kinds.
pub fn listeners_match(exp: &[ListenerExp], actual: &[ListenerSt]) -> Result<(), String> {
    if exp.len() != actual.len() {
        return Err(format!(
            "expected {} listeners, status has {} [{}]",
            exp.len(),
            actual.len(),
            actual
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for e in exp {
        let l = actual
            .iter()
            .find(|l| l.name == e.name)
            .ok_or_else(|| format!("no listener {} in status", e.name))?;
        if let Some(n) = e.attached_routes {
            if l.attached_routes != n {
                return Err(format!(
                    "listener {}: attachedRoutes {}, expected {n}",
                    e.name, l.attached_routes
                ));
            }
        }
        conditions_match(&e.conditions, &l.conditions)
            .map_err(|err| format!("listener {}: {err}", e.name))?;
        if let Some(kinds) = &e.supported_kinds {
            if kinds.is_empty() && !l.supported_kinds.is_empty() {
                return Err(format!(
                    "listener {}: supportedKinds should be empty, got {:?}",
                    e.name,
                    l.supported_kinds
                        .iter()
                        .map(|k| k.kind.as_str())
                        .collect::<Vec<_>>()
                ));
            }
            for k in kinds {
                if !l.supported_kinds.iter().any(|a| kind_matches(k, a)) {
                    return Err(format!(
                        "listener {}: supportedKinds lacks {}",
                        e.name, k.kind
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Final verdict of one assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Unsupported(String),
}

/// Folds successive evaluations of a set of assertions (one per poll)
/// into verdicts; `no_accepted_parents` needs an empty parent list on two
/// polls at least `settle` apart.
pub struct Poll {
    verdicts: Vec<Option<Verdict>>,
    last: Vec<String>,
    empty_since: BTreeMap<usize, std::time::Instant>,
    settle: std::time::Duration,
}

impl Poll {
    pub fn new(n: usize, settle: std::time::Duration) -> Self {
        Self {
            verdicts: vec![None; n],
            last: vec![String::new(); n],
            empty_since: BTreeMap::new(),
            settle,
        }
    }

    pub fn done(&self) -> bool {
        self.verdicts.iter().all(Option::is_some)
    }

    /// Records one snapshot's evaluations (`evals[i]` for assertion `i`;
    /// decided ones are ignored).
    pub fn record(&mut self, i: usize, e: Eval, now: std::time::Instant) {
        if self.verdicts[i].is_some() {
            return;
        }
        match e {
            Eval::Pass => self.verdicts[i] = Some(Verdict::Pass),
            Eval::Unsupported(why) => self.verdicts[i] = Some(Verdict::Unsupported(why)),
            Eval::Fail(e) => {
                self.empty_since.remove(&i);
                self.last[i] = e;
            }
            Eval::NoParents => match self.empty_since.get(&i) {
                Some(t) if now.duration_since(*t) >= self.settle => {
                    self.verdicts[i] = Some(Verdict::Pass)
                }
                Some(_) => {}
                None => {
                    self.empty_since.insert(i, now);
                    self.last[i] = "status.parents was empty only once".into();
                }
            },
        }
    }

    pub fn pending(&self, i: usize) -> bool {
        self.verdicts[i].is_none()
    }

    /// The verdicts, undecided ones failing with their last error.
    pub fn finish(self, timeout: std::time::Duration) -> Vec<Verdict> {
        self.verdicts
            .into_iter()
            .zip(self.last)
            .map(|(v, last)| {
                v.unwrap_or_else(|| {
                    Verdict::Fail(if last.is_empty() {
                        format!("not met within {timeout:?}")
                    } else {
                        format!("{last} (after {timeout:?})")
                    })
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn c(kind: &str, status: &str, reason: &str, generation: Option<i64>) -> Cond {
        Cond {
            kind: kind.into(),
            status: status.into(),
            reason: reason.into(),
            observed_generation: generation,
        }
    }

    fn exp(yaml: &str) -> Vec<CondExp> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn condition_match_rules() {
        let actual = [
            c("Accepted", "True", "Accepted", Some(1)),
            c("ResolvedRefs", "False", "BackendNotFound", Some(1)),
        ];
        // Same type and status; reason only when given.
        assert!(conditions_match(&exp("[{type: Accepted, status: 'True'}]"), &actual).is_ok());
        assert!(conditions_match(
            &exp("[{type: ResolvedRefs, status: 'False', reason: BackendNotFound}]"),
            &actual
        )
        .is_ok());
        let e = conditions_match(
            &exp("[{type: ResolvedRefs, status: 'False', reason: RefNotPermitted}]"),
            &actual,
        )
        .unwrap_err();
        assert!(e.contains("RefNotPermitted"), "{e}");
        assert!(conditions_match(&exp("[{type: Accepted, status: 'False'}]"), &actual).is_err());
        assert!(conditions_match(&exp("[{type: Programmed, status: 'True'}]"), &actual).is_err());
        // Observed generation.
        assert!(at_generation(&actual, Some(1)).is_ok());
        assert!(at_generation(&actual, Some(2)).is_err());
        assert!(at_generation(&[c("Accepted", "True", "Accepted", None)], Some(1)).is_err());
    }

    const DOCS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra, generation: 2}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: skipped
  namespace: infra
  generation: 1
  annotations: {gateway-api/skip-this-for-readiness: "true"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app, generation: 3}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: lonely, namespace: infra, generation: 1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: ls, namespace: team, generation: 4}
"#;

    fn docs() -> Vec<Value> {
        super::super::manifests::parse_docs(DOCS, "x").unwrap()
    }

    fn agent(json: &str) -> AgentStatus {
        serde_json::from_str(json).unwrap()
    }

    /// What the agent serves (shape of agent/src/control/status.rs).
    const STATUS: &str = r#"{
      "gatewayClasses": [{"name": "x", "conditions": []}],
      "gateways": [{
        "namespace": "infra", "name": "gw",
        "conditions": [
          {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 2},
          {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "", "observedGeneration": 2}],
        "listeners": [
          {"name": "http", "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
           "attachedRoutes": 1,
           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 2}]},
          {"name": "tcp", "supportedKinds": [], "attachedRoutes": 0,
           "conditions": [{"type": "Accepted", "status": "False", "reason": "UnsupportedProtocol", "message": "", "observedGeneration": 2}]}]
      }],
      "httpRoutes": [{
        "namespace": "app", "name": "r",
        "parents": [{
          "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra", "name": "gw"},
          "controllerName": "sluice.dev/gateway-controller",
          "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 3},
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "", "observedGeneration": 3}]
        }]
      }]
    }"#;

    fn run(status_yaml: &str, s: &AgentStatus) -> Vec<Eval> {
        let docs = docs();
        let objs = Objects {
            docs: &docs,
            before_step: None,
        };
        let v: Value = serde_yaml::from_str(status_yaml).unwrap();
        assertions(&v)
            .iter()
            .map(|a| evaluate(&a.check, s, &objs))
            .collect()
    }

    fn fails(e: &Eval, needle: &str) -> bool {
        matches!(e, Eval::Fail(m) if m.contains(needle))
    }

    #[test]
    fn listener_set_status_and_attached_count() {
        let s = agent(
            r#"{
          "gateways": [{"namespace": "infra", "name": "gw", "attachedListenerSets": 1, "conditions": [], "listeners": []}],
          "listenerSets": [{
            "namespace": "team", "name": "ls",
            "conditions": [
              {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 4},
              {"type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": 4}],
            "listeners": [
              {"name": "web", "attachedRoutes": 2, "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
               "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 4}]},
              {"name": "clash", "attachedRoutes": 0, "supportedKinds": [],
               "conditions": [{"type": "Conflicted", "status": "True", "reason": "HostnameConflict", "observedGeneration": 4}]}]
          }]}"#,
        );
        let ok = run(
            r#"
gateways:
- gateway: {namespace: infra, name: gw}
  attached_listener_sets: 1
listener_sets:
- listener_set: {namespace: team, name: ls}
  conditions: [{type: Accepted, status: "True"}, {type: Programmed, status: "True", reason: Programmed}]
  listener_conditions:
    clash: [{type: Conflicted, status: "True", reason: HostnameConflict}]
  listeners:
  - {name: web, attachedRoutes: 2, supportedKinds: [{kind: HTTPRoute}], conditions: [{type: Accepted, status: "True"}]}
  - {name: clash, attachedRoutes: 0, conditions: []}
"#,
            &s,
        );
        assert_eq!(ok, vec![Eval::Pass; 4], "{ok:?}");
        let bad = run(
            r#"
gateways:
- gateway: {namespace: infra, name: gw}
  attached_listener_sets: 2
listener_sets:
- listener_set: {namespace: team, name: ls}
  conditions: [{type: Accepted, status: "False", reason: NotAllowed}]
  listener_conditions:
    web: [{type: Conflicted, status: "True"}]
  listeners:
  - {name: web, attachedRoutes: 1}
- listener_set: {namespace: team, name: missing}
  conditions: [{type: Accepted, status: "True"}]
"#,
            &s,
        );
        assert!(
            fails(&bad[0], "attachedListenerSets 1, expected 2"),
            "{bad:?}"
        );
        assert!(fails(&bad[1], "ListenerSet team/ls"), "{bad:?}");
        assert!(fails(&bad[2], "listener web"), "{bad:?}");
        assert!(matches!(&bad[3], Eval::Fail(_)), "{bad:?}");
        assert!(fails(&bad[4], "not in the agent's /status"), "{bad:?}");
    }

    #[test]
    fn route_parents() {
        let s = agent(STATUS);
        let ok = run(
            r#"
routes:
- route: {namespace: app, name: r}
  parents:
  - parent: {group: gateway.networking.k8s.io, kind: Gateway, namespace: infra, name: gw}
    controller: true
    require_namespace: true
    conditions: [{type: Accepted, status: 'True', reason: Accepted}, {type: ResolvedRefs, status: 'True'}]
  latest_conditions: true
"#,
            &s,
        );
        assert_eq!(ok, [Eval::Pass, Eval::Pass]);
        let bad = run(
            r#"
routes:
- route: {namespace: app, name: r}
  parents:
  - parent: {namespace: other, name: gw}
    conditions: []
  - parent: {namespace: infra, name: nope}
    conditions: []
  - parent: {namespace: infra, name: gw}
    conditions: [{type: Accepted, status: 'False'}]
- route: {namespace: app, name: missing}
  parents:
  - parent: {namespace: infra, name: gw}
    conditions: []
"#,
            &s,
        );
        assert!(fails(&bad[0], "parentRef.namespace infra"), "{bad:?}");
        assert!(
            fails(&bad[1], "no status.parents entry for nope"),
            "{bad:?}"
        );
        assert!(fails(&bad[2], "expected Accepted=False"), "{bad:?}");
        assert!(fails(&bad[3], "no status.parents entry"), "{bad:?}");

        // Unset parentRef.namespace: fine unless required; a stale generation fails.
        let mut s2 = s.clone();
        s2.http_routes[0].parents[0].parent_ref.namespace = None;
        s2.http_routes[0].parents[0].conditions[1].observed_generation = Some(2);
        let r = run(
            r#"
routes:
- route: {namespace: app, name: r}
  parents:
  - parent: {namespace: infra, name: gw}
    require_namespace: true
    conditions: []
- route: {namespace: app, name: r}
  parents:
  - parent: {namespace: infra, name: gw}
    conditions: []
"#,
            &s2,
        );
        assert!(fails(&r[0], "unset but required"), "{r:?}");
        assert!(fails(&r[1], "observedGeneration 2"), "{r:?}");
        // group/kind must be set when expected; controller name compared.
        s2.http_routes[0].parents[0].parent_ref.kind = None;
        s2.http_routes[0].parents[0].controller_name = "other".into();
        let r = run(
            r#"
routes:
- route: {namespace: app, name: r}
  parents:
  - parent: {kind: Gateway, namespace: infra, name: gw}
    conditions: []
- route: {namespace: app, name: r}
  parents:
  - parent: {namespace: infra, name: gw}
    controller: true
    conditions: []
"#,
            &s2,
        );
        assert!(fails(&r[0], "parentRef.kind is unset"), "{r:?}");
        assert!(fails(&r[1], "controllerName"), "{r:?}");
    }

    #[test]
    fn no_accepted_parents_needs_two_empty_polls_or_one_rejection() {
        let s = agent(STATUS);
        let yaml = "routes: [{route: {namespace: infra, name: lonely}, no_accepted_parents: true}]";
        let e = run(yaml, &s);
        assert_eq!(e, [Eval::NoParents]);
        let mut poll = Poll::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        poll.record(0, Eval::NoParents, t0);
        poll.record(0, Eval::NoParents, t0 + Duration::from_millis(500));
        assert!(!poll.done());
        poll.record(0, Eval::NoParents, t0 + Duration::from_millis(1100));
        assert_eq!(poll.finish(Duration::from_secs(5)), [Verdict::Pass]);
        // A single empty poll before the deadline is not enough.
        let mut poll = Poll::new(1, Duration::from_secs(1));
        poll.record(0, Eval::NoParents, t0);
        assert!(
            matches!(&poll.finish(Duration::from_secs(5))[0], Verdict::Fail(m) if m.contains("only once"))
        );

        // One parent, not accepted: passes; accepted: fails.
        let mut s2 = s.clone();
        s2.http_routes[0].name = "lonely".into();
        s2.http_routes[0].namespace = "infra".into();
        s2.http_routes[0].parents[0].conditions =
            vec![c("Accepted", "False", "NotAllowedByListeners", Some(1))];
        assert_eq!(run(yaml, &s2), [Eval::Pass]);
        s2.http_routes[0].parents[0].conditions = vec![c("Accepted", "True", "Accepted", Some(1))];
        assert!(fails(&run(yaml, &s2)[0], "expected Accepted=False"));
    }

    #[test]
    fn gateway_listeners_attached_routes_and_kinds() {
        let s = agent(STATUS);
        let ok = run(
            r#"
gateways:
- gateway: {namespace: infra, name: gw}
  listeners:
  - {name: http, supportedKinds: [{kind: HTTPRoute}], attachedRoutes: 1, conditions: [{type: Accepted, status: 'True'}]}
  - {name: tcp, supportedKinds: [], attachedRoutes: 0, conditions: [{type: Accepted, status: 'False', reason: UnsupportedProtocol}]}
  conditions: [{type: Accepted, status: 'True', reason: Accepted}]
  latest_conditions: true
  listener_conditions: {http: [{type: Accepted, status: 'True'}]}
"#,
            &s,
        );
        assert_eq!(ok, vec![Eval::Pass; 4]);
        let bad = run(
            r#"
gateways:
- gateway: {namespace: infra, name: gw}
  listeners:
  - {name: http, supportedKinds: [{kind: HTTPRoute}], attachedRoutes: 2, conditions: []}
  - {name: tcp, supportedKinds: [], attachedRoutes: 0, conditions: []}
- gateway: {namespace: infra, name: gw}
  listeners:
  - {name: http, supportedKinds: [], attachedRoutes: 1, conditions: []}
  - {name: tcp, supportedKinds: [{group: x.io, kind: TCPRoute}], attachedRoutes: 0, conditions: []}
- gateway: {namespace: infra, name: gw}
  listeners:
  - {name: http, supportedKinds: [{kind: HTTPRoute}], attachedRoutes: 1, conditions: []}
  zero_routes: true
  all_listeners: [{type: Accepted, status: 'True'}]
  has_address: true
  generation_changed: true
- gateway: {namespace: infra, name: absent}
  conditions: []
"#,
            &s,
        );
        assert!(fails(&bad[0], "attachedRoutes 1, expected 2"), "{bad:?}");
        assert!(fails(&bad[1], "supportedKinds should be empty"), "{bad:?}");
        assert!(
            fails(&bad[2], "expected 1 listeners, status has 2"),
            "{bad:?}"
        );
        assert!(fails(&bad[3], "expected no listener or one"), "{bad:?}");
        assert!(
            fails(&bad[4], "listener tcp: expected Accepted=True"),
            "{bad:?}"
        );
        assert!(fails(&bad[5], "status.addresses"), "{bad:?}");
        assert!(fails(&bad[6], "status.addresses"), "{bad:?}");
        assert!(matches!(bad[7], Eval::Unsupported(_)), "{bad:?}");
        assert!(fails(&bad[8], "not in the agent's /status"), "{bad:?}");

        // Kinds: a missing group means gateway.networking.k8s.io.
        let k = |g: Option<&str>, kind: &str| KindSt {
            group: g.map(Into::into),
            kind: kind.into(),
        };
        let e = KindExp {
            group: None,
            kind: "HTTPRoute".into(),
        };
        assert!(kind_matches(&e, &k(Some(GATEWAY_GROUP), "HTTPRoute")));
        assert!(kind_matches(&e, &k(None, "HTTPRoute")));
        assert!(!kind_matches(&e, &k(Some("x.io"), "HTTPRoute")));
        assert!(!kind_matches(&e, &k(None, "GRPCRoute")));
    }

    #[test]
    fn namespace_readiness_and_addresses() {
        let mut s = agent(STATUS);
        let yaml = "namespaces_ready: [infra]\ngateways: [{gateway: {namespace: infra, name: gw}, has_address: true}]";
        // `skipped` is annotated and ignored; gw is ready but has no address.
        let e = run(yaml, &s);
        assert_eq!(e[0], Eval::Pass);
        assert!(fails(&e[1], "status.addresses"));
        s.gateways[0].addresses = vec![AddressSt {
            kind: Some("IPAddress".into()),
            value: "127.0.10.1".into(),
        }];
        assert_eq!(run(yaml, &s)[1], Eval::Pass);
        s.gateways[0].conditions[1].status = "False".into();
        assert!(fails(&run(yaml, &s)[0], "expected Programmed=True"));
        s.gateways[0].conditions[1].status = "True".into();
        s.gateways[0].conditions[0].observed_generation = Some(1);
        assert!(fails(&run(yaml, &s)[0], "metadata.generation is 2"));
    }

    #[test]
    fn unknown_and_policy_assertions_are_reported() {
        let s = agent(STATUS);
        let e = run(
            "policies: [{kind: BackendTLSPolicy, policy: {namespace: infra, name: p}, ancestor: {namespace: infra, name: gw}, conditions: []}]\nmystery: 1",
            &s,
        );
        assert!(fails(&e[0], "no status"), "{e:?}");
        assert!(matches!(e[1], Eval::Unsupported(_)), "{e:?}");
    }

    #[test]
    fn policy_ancestor_conditions() {
        let s = agent(
            r#"{"policies": [{"kind": "BackendTLSPolicy", "namespace": "infra", "name": "p",
              "ancestors": [{"ancestorRef": {"namespace": "infra", "name": "gw"}, "controllerName": "c",
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}]}]}"#,
        );
        let check = |conds: &str, ancestor: &str| {
            run(
                &format!("policies: [{{kind: BackendTLSPolicy, policy: {{namespace: infra, name: p}}, ancestor: {{namespace: infra, name: {ancestor}}}, conditions: {conds}}}]"),
                &s,
            )
            .remove(0)
        };
        assert!(matches!(
            check("[{type: Accepted, status: 'True', reason: Accepted}]", "gw"),
            Eval::Pass
        ));
        assert!(fails(
            &check("[{type: Accepted, status: 'False'}]", "gw"),
            "Accepted=False"
        ));
        assert!(fails(&check("[]", "other"), "no ancestor"));
    }
}
