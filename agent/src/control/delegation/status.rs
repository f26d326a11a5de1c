//! Route status as delegation tells it (see the parent module).
use super::{ChildReport, Flattened};
use crate::{
    config::HttpRoute,
    control::{
        refgrant::GATEWAY_GROUP,
        route_status::{RouteOutcome, RouteStatuses},
        status::{Condition, ParentRefStatus, RouteParentStatus, RouteStatus},
        CONTROLLER_NAME,
    },
};
use std::collections::BTreeMap;

impl Flattened {
    pub(in crate::control) fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.report.warnings.iter().cloned()
    }

    /// Route status as delegation tells it: children name their parent
    /// routes, delegating routes with refused references do not resolve.
    pub(in crate::control) fn patch_status(&self, statuses: &RouteStatuses) -> RouteStatuses {
        let mut changed: BTreeMap<(String, String), RouteStatus> = BTreeMap::new();
        for (id, c) in &self.report.children {
            let Some(root) = &c.root else { continue };
            if statuses.get(&root.namespace, &root.name).is_none() {
                continue; // a tree under Gateways of other controllers
            }
            let Some(route) = self.config.routes.iter().find(|r| *r.id == *id) else {
                continue;
            };
            let computed = statuses.get(&id.namespace, &id.name);
            changed.insert(
                (id.namespace.clone(), id.name.clone()),
                child_status(route, c, computed.as_ref()),
            );
        }
        for (id, (reason, messages)) in &self.report.refused {
            let key = (id.namespace.clone(), id.name.clone());
            let Some(mut s) = changed
                .remove(&key)
                .or_else(|| statuses.get(&id.namespace, &id.name))
            else {
                continue;
            };
            for p in &mut s.parents {
                for cond in &mut p.conditions {
                    if cond.kind == "ResolvedRefs" {
                        cond.status = "False";
                        cond.reason = reason;
                        cond.message = messages.join("; ");
                    }
                }
            }
            changed.insert(key, s);
        }
        let removed: Vec<(&str, &str)> = changed
            .keys()
            .filter(|(ns, n)| statuses.get(ns, n).is_some())
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
            .collect();
        statuses.patch(
            &removed,
            changed
                .values()
                .cloned()
                .map(|s| RouteOutcome::Given(Box::new(s)))
                .collect(),
        )
    }
}

/// The status of a delegated route: one entry per parent route.
fn child_status(route: &HttpRoute, c: &ChildReport, computed: Option<&RouteStatus>) -> RouteStatus {
    let cond = |kind, ok: bool, reason, message: String| Condition {
        kind,
        status: if ok { "True" } else { "False" },
        reason,
        message,
        observed_generation: route.generation,
    };
    // Through the root's Gateways: accepted when one of them accepted it.
    let through: Vec<&Vec<Condition>> = computed
        .map(|s| s.parents.iter().map(|p| &p.conditions).collect())
        .unwrap_or_default();
    let find = |kind: &str| {
        through
            .iter()
            .flat_map(|cs| cs.iter())
            .filter(|c| c.kind == kind)
            .max_by_key(|c| c.status == "True")
            .cloned()
    };
    let gateway_accepted = find("Accepted");
    let resolved = find("ResolvedRefs")
        .map(|mut r| {
            r.observed_generation = route.generation;
            r
        })
        .unwrap_or_else(|| cond("ResolvedRefs", true, "ResolvedRefs", String::new()));
    let parents = c
        .parents
        .iter()
        .map(|(parent, refused)| {
            // Per parent: a child may serve through one parent route and
            // not through another.
            let served = c.served.get(parent).copied().unwrap_or(0);
            let accepted = match (refused, &gateway_accepted) {
                (Some((reason, why)), _) => cond("Accepted", false, reason, why.clone()),
                (None, _) if served == 0 => cond(
                    "Accepted",
                    false,
                    "UnsupportedValue",
                    format!("no rule is served: {}", c.dropped.join("; ")),
                ),
                (None, Some(a)) if a.status != "True" => Condition {
                    observed_generation: route.generation,
                    ..a.clone()
                },
                (None, _) => cond("Accepted", true, "Accepted", String::new()),
            };
            let mut conditions = vec![accepted, resolved.clone()];
            if !c.dropped.is_empty() && served > 0 {
                conditions.push(cond(
                    "PartiallyInvalid",
                    true,
                    "UnsupportedValue",
                    c.dropped.join("; "),
                ));
            }
            RouteParentStatus {
                parent_ref: ParentRefStatus {
                    group: GATEWAY_GROUP,
                    kind: "HTTPRoute",
                    namespace: parent.namespace.clone(),
                    name: parent.name.clone(),
                    section_name: None,
                    port: None,
                },
                controller_name: CONTROLLER_NAME,
                conditions,
            }
        })
        .collect();
    RouteStatus {
        kind: "HTTPRoute",
        namespace: route.id.namespace.clone(),
        name: route.id.name.clone(),
        parents,
    }
}
