//! SluicePolicy status (Gateway API `PolicyStatus`): one `ancestors` entry
//! per Gateway of ours the policy takes effect through, with `Accepted`
//! and the reason — `Accepted`, `Conflicted` (every section it sets at that
//! target lost to an older policy), `Invalid` (the spec or a reference is
//! bad: its targets fail closed), `TargetNotFound`.
use std::collections::BTreeSet;

use super::{
    attach::Level,
    merge::{conflicts, SectionKind},
    Policies,
};
use crate::{
    config::{Config, Gateway, ObjectRef, SluicePolicy},
    control::{
        refgrant::GATEWAY_GROUP,
        status::{Condition, ParentRefStatus, PolicyAncestorStatus, PolicyStatus},
    },
};

/// Most ancestors reported per policy (the CRD's limit).
const MAX_ANCESTORS: usize = 16;

fn condition(
    ok: bool,
    reason: &'static str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        kind: "Accepted",
        status: if ok { "True" } else { "False" },
        reason,
        message,
        observed_generation: generation,
    }
}

fn gateway_ref(id: &ObjectRef, section: Option<&str>) -> ParentRefStatus {
    ParentRefStatus {
        group: GATEWAY_GROUP,
        kind: "Gateway",
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        section_name: section.map(str::to_owned),
        port: None,
    }
}

/// The status of every SluicePolicy whose targets are in scope.
pub(in crate::control) fn policy_status(
    config: &Config,
    policies: &Policies<'_>,
    ours: &[&Gateway],
    controller: &'static str,
) -> Vec<PolicyStatus> {
    let mut out = Vec::new();
    for p in &config.policies {
        let mut ancestors: Vec<PolicyAncestorStatus> = Vec::new();
        let mut push = |ancestor: ParentRefStatus, c: Condition| {
            if ancestors.len() < MAX_ANCESTORS
                && !ancestors.iter().any(|a| {
                    a.ancestor_ref.namespace == ancestor.namespace
                        && a.ancestor_ref.name == ancestor.name
                        && a.ancestor_ref.kind == ancestor.kind
                        && a.ancestor_ref.section_name == ancestor.section_name
                })
            {
                ancestors.push(PolicyAncestorStatus {
                    ancestor_ref: ancestor,
                    controller_name: controller,
                    conditions: vec![c],
                });
            }
        };
        for t in &p.targets {
            let Some(level) = Level::of(&p.id.namespace, t) else {
                continue;
            };
            let found = resolve(config, ours, &level);
            let accepted = match &found {
                Err(why) => condition(false, "TargetNotFound", why.clone(), p.generation),
                Ok(_) => accepted(p, policies, &level),
            };
            match found {
                Ok(gateways) => {
                    for g in gateways {
                        let section = match &level {
                            Level::Listener(_, l) => Some(l.as_str()),
                            _ => None,
                        };
                        push(gateway_ref(&g, section), accepted.clone());
                    }
                }
                // Not found: the target itself stands in for the ancestor,
                // when it is a Gateway of ours; else nothing of ours is affected.
                Err(_) => {
                    if let Level::Gateway(id) | Level::Listener(id, _) = &level {
                        if ours.iter().any(|g| g.id == *id) {
                            push(gateway_ref(id, None), accepted.clone());
                        }
                    } else if let Level::Route(id) | Level::Rule(id, _) = &level {
                        // A route that exists but has no rule of that name:
                        // its Gateways are the ancestors.
                        for g in route_gateways(config, ours, id) {
                            push(gateway_ref(&g, None), accepted.clone());
                        }
                    }
                }
            }
        }
        if !ancestors.is_empty() {
            out.push(PolicyStatus {
                kind: "SluicePolicy",
                namespace: p.id.namespace.clone(),
                name: p.id.name.clone(),
                ancestors,
            });
        }
    }
    out
}

/// The Gateways of ours that `level` takes effect through, or why it is not found.
fn resolve(config: &Config, ours: &[&Gateway], level: &Level) -> Result<Vec<ObjectRef>, String> {
    match level {
        Level::Gateway(id) | Level::Listener(id, _) => {
            let Some(g) = ours.iter().find(|g| g.id == *id) else {
                return Err(format!(
                    "Gateway {id} not found (or not of a Sluice GatewayClass)"
                ));
            };
            if let Level::Listener(_, name) = level {
                if !g.listeners.iter().any(|l| l.name == *name) {
                    return Err(format!("Gateway {id} has no listener {name:?}"));
                }
            }
            Ok(vec![g.id.clone()])
        }
        Level::Route(id) | Level::Rule(id, _) => {
            let Some(route) = config.routes.iter().find(|r| *r.id == *id) else {
                return Err(format!("HTTPRoute {id} not found"));
            };
            if let Level::Rule(_, name) = level {
                if !route.rules.iter().any(|r| r.name.as_deref() == Some(name)) {
                    return Err(format!("HTTPRoute {id} has no rule named {name:?}"));
                }
            }
            Ok(route_gateways(config, ours, id))
        }
        Level::Service(_) | Level::ServicePort(..) => {
            Err("a SluicePolicy cannot target a Service".to_owned())
        }
    }
}

fn route_gateways(config: &Config, ours: &[&Gateway], route: &ObjectRef) -> Vec<ObjectRef> {
    let set: BTreeSet<ObjectRef> = config
        .routes
        .iter()
        .filter(|r| *r.id == *route)
        .flat_map(|r| r.parents.iter().map(|p| p.gateway.clone()))
        .filter(|g| ours.iter().any(|o| o.id == *g))
        .collect();
    set.into_iter().collect()
}

fn accepted(p: &SluicePolicy, policies: &Policies<'_>, level: &Level) -> Condition {
    if let Some(why) = &p.invalid {
        return condition(false, "Invalid", why.clone(), p.generation);
    }
    if let Some(errors) = policies.errors().get(&p.id) {
        return condition(
            false,
            "Invalid",
            format!(
                "{}; the targets answer 500 until this is fixed",
                errors.join("; ")
            ),
            p.generation,
        );
    }
    let lost: Vec<(SectionKind, ObjectRef)> = conflicts(policies.index().at(level))
        .into_iter()
        .filter(|(loser, _, _)| loser.id == p.id)
        .map(|(_, k, winner)| (k, winner.id.clone()))
        .collect();
    let set = SectionKind::ALL
        .iter()
        .filter(|k| k.is_set(&p.defaults) || k.is_set(&p.overrides))
        .count();
    let describe = |lost: &[(SectionKind, ObjectRef)]| {
        lost.iter()
            .map(|(k, w)| format!("{} (kept from older SluicePolicy {w})", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !lost.is_empty() && lost.len() >= set {
        return condition(
            false,
            "Conflicted",
            format!(
                "every section conflicts with an older policy on this target: {}",
                describe(&lost)
            ),
            p.generation,
        );
    }
    let message = if lost.is_empty() {
        "policy accepted".to_owned()
    } else {
        format!(
            "accepted; conflicting sections not applied: {}",
            describe(&lost)
        )
    };
    condition(true, "Accepted", message, p.generation)
}

/// Adds `ResolvedRefs` to the ancestors of SluicePolicies with remote JWKS:
/// `False`/`JWKSUnavailable` (with why) while a key set has never loaded —
/// its routes answer 503 — else `True`. `remote` lists (policy, loaded,
/// detail) for every remote key set in use.
pub fn jwks_conditions(
    policies: &mut [PolicyStatus],
    remote: &[(crate::policy::PolicyId, bool, String)],
) {
    for p in policies.iter_mut().filter(|p| p.kind == "SluicePolicy") {
        let mine: Vec<&(crate::policy::PolicyId, bool, String)> = remote
            .iter()
            .filter(|(id, _, _)| *id.namespace == *p.namespace && *id.name == *p.name)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let missing: Vec<&str> = mine
            .iter()
            .filter(|(_, loaded, _)| !loaded)
            .map(|(_, _, why)| why.as_str())
            .collect();
        for a in &mut p.ancestors {
            let generation = a.conditions.first().and_then(|c| c.observed_generation);
            a.conditions.retain(|c| c.kind != "ResolvedRefs");
            a.conditions.push(if missing.is_empty() {
                Condition {
                    kind: "ResolvedRefs",
                    status: "True",
                    reason: "ResolvedRefs",
                    message: "every remote JWKS is loaded".into(),
                    observed_generation: generation,
                }
            } else {
                Condition {
                    kind: "ResolvedRefs",
                    status: "False",
                    reason: "JWKSUnavailable",
                    message: format!(
                        "{}; requests needing these keys answer 503 until they load",
                        missing.join("; ")
                    ),
                    observed_generation: generation,
                }
            });
        }
    }
}
