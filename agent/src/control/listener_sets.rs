//! ListenerSets (GEP-1713): each set admitted by its parent Gateway's
//! `allowedListeners` adds its listeners to that Gateway, so everything after
//! this step (certificates, route attachment, route tables, the data path)
//! sees one Gateway with more listeners. A set's listener keeps its origin
//! ([`ListenerOrigin`]): routes select it by a ListenerSet parentRef, its
//! `allowedRoutes: Same` and certificate references are relative to the
//! set's namespace, and its status goes to the set.
//!
//! A set's listener that conflicts with one already on the Gateway (same
//! port with another protocol, or same port, protocol and hostname) is not
//! added: the Gateway's own listeners come first, then sets by age
//! (`creationTimestamp`), then by namespace/name; within a set, by order.
use std::{borrow::Cow, collections::HashMap, sync::Arc};

use super::{
    attach::NamespaceLabels,
    status::{cond, set_generation, ListenerProblem, ListenerSetStatus, ListenerStatus, RouteKind},
};
use crate::config::{
    AllowedListeners, Config, Gateway, HttpRoute, Listener, ListenerOrigin, ListenerSet, ObjectRef,
    ParentRef,
};

/// What resolving did with one ListenerSet whose parent Gateway exists.
#[derive(Debug, Clone)]
pub(crate) struct SetOutcome {
    /// The ListenerSet.
    pub set: ObjectRef,
    /// Its `metadata.generation`, for `observedGeneration`.
    pub generation: Option<i64>,
    /// Its parent Gateway.
    pub parent: ObjectRef,
    pub state: SetState,
}

#[derive(Debug, Clone)]
pub(crate) enum SetState {
    /// The Gateway's `allowedListeners` does not admit the set (message why).
    NotAllowed(String),
    /// Admitted: per listener of the set, in order, `None` when it was added
    /// to the Gateway, else the conflict that kept it out.
    Admitted(Vec<(Listener, Option<ListenerProblem>)>),
}

/// The routes the previous resolve pointed at Gateways, by namespace/name:
/// an unchanged route whose sets have the same Gateways is handed out again
/// as the same allocation, so the incremental compile (which tells routes
/// apart by address) reuses its entries instead of compiling it again.
pub(super) type Memo = HashMap<ObjectRef, Resolved>;

pub(super) struct Resolved {
    /// The route as the config had it (kept, so its address stays unique).
    input: Arc<HttpRoute>,
    /// The Gateway of each ListenerSet parentRef, in order.
    gateways: Vec<ObjectRef>,
    output: Arc<HttpRoute>,
}

/// `config` with every admitted ListenerSet's listeners added to its
/// Gateway and ListenerSet parentRefs of routes pointed at the set's Gateway;
/// borrowed unchanged when there are no ListenerSets.
pub(super) fn resolve<'c>(
    config: &'c Config,
    memo: &mut Memo,
) -> (Cow<'c, Config>, Vec<SetOutcome>) {
    if config.listener_sets.is_empty() {
        memo.clear();
        return (Cow::Borrowed(config), Vec::new());
    }
    let namespaces = NamespaceLabels::new(config);
    let mut sets: Vec<&ListenerSet> = config.listener_sets.iter().collect();
    sets.sort_by(|a, b| {
        (a.created.is_none(), a.created, &a.id).cmp(&(b.created.is_none(), b.created, &b.id))
    });
    let mut resolved = config.clone();
    let mut outcomes = Vec::new();
    for gateway in &mut resolved.gateways {
        let id = gateway.id.clone();
        for set in sets.iter().filter(|s| s.parent == id) {
            let state = match not_allowed(gateway, set, &namespaces) {
                Some(why) => SetState::NotAllowed(why),
                None => SetState::Admitted(
                    set.listeners
                        .iter()
                        .map(|l| {
                            let conflict = conflict(gateway, l);
                            if conflict.is_none() {
                                let origin = ListenerOrigin {
                                    set: set.id.clone(),
                                    section: l.name.clone(),
                                };
                                let mut added = l.clone();
                                added.name = origin.gateway_name();
                                added.origin = Some(origin);
                                gateway.listeners.push(added);
                            }
                            (l.clone(), conflict)
                        })
                        .collect(),
                ),
            };
            outcomes.push(SetOutcome {
                set: set.id.clone(),
                generation: set.generation,
                parent: gateway.id.clone(),
                state,
            });
        }
    }
    let parents: HashMap<&ObjectRef, &ObjectRef> = config
        .listener_sets
        .iter()
        .map(|s| (&s.id, &s.parent))
        .collect();
    let mut previous = std::mem::take(memo);
    for route in &mut resolved.routes {
        if route.parents.iter().all(|p| p.listener_set.is_none()) {
            continue;
        }
        let gateways: Vec<ObjectRef> = route
            .parents
            .iter()
            .filter_map(|p| p.listener_set.as_deref())
            .map(|id| {
                parents
                    .get(id)
                    .map_or(ParentRef::UNRESOLVED, |g| (*g).clone())
            })
            .collect();
        let id = (*route.id).clone();
        if let Some(r) = previous.remove(&id) {
            if Arc::ptr_eq(&r.input, route) && r.gateways == gateways {
                *route = r.output.clone();
                memo.insert(id, r);
                continue;
            }
        }
        // Only routes with a ListenerSet parentRef are copied.
        let input = route.clone();
        let mut sets = gateways.iter();
        for p in &mut Arc::make_mut(route).parents {
            if p.listener_set.is_some() {
                p.gateway = sets.next().expect("one Gateway per set").clone();
            }
        }
        memo.insert(
            id,
            Resolved {
                input,
                gateways,
                output: route.clone(),
            },
        );
    }
    (Cow::Owned(resolved), outcomes)
}

/// Why `gateway` does not admit `set`; `None` when it does.
fn not_allowed(
    gateway: &Gateway,
    set: &ListenerSet,
    namespaces: &NamespaceLabels<'_>,
) -> Option<String> {
    let ns = &set.id.namespace;
    match &gateway.allowed_listeners {
        AllowedListeners::All => None,
        AllowedListeners::Same if *ns == gateway.id.namespace => None,
        AllowedListeners::Selector(sel) if sel.matches(&namespaces.get(ns)) => None,
        AllowedListeners::None => Some(format!(
            "Gateway {} allows no ListenerSets (spec.allowedListeners)",
            gateway.id
        )),
        AllowedListeners::Same => Some(format!(
            "Gateway {} allows ListenerSets from its own namespace only",
            gateway.id
        )),
        AllowedListeners::Selector(_) => Some(format!(
            "Gateway {}: the labels of namespace {ns} do not match spec.allowedListeners.namespaces.selector",
            gateway.id
        )),
    }
}

/// How `l` conflicts with a listener already on `gateway`, which wins.
fn conflict(gateway: &Gateway, l: &Listener) -> Option<ListenerProblem> {
    super::status::conflict_with(l, &gateway.listeners)
}

/// The status of a set: `added` are the statuses of its listeners that were
/// added to the Gateway (computed with the Gateway's); the conflicted ones
/// are filled in here; `parent_refused`: the parent Gateway is not
/// accepted. Accepted when at least one listener is valid
/// (accepted, references resolved); Programmed when one is also programmed.
pub(super) fn set_status(
    set: &SetOutcome,
    added: Option<Vec<ListenerStatus>>,
    parent_refused: bool,
) -> ListenerSetStatus {
    let mut added = added.unwrap_or_default();
    let (mut conditions, listeners) = match &set.state {
        // The Gateway itself is not accepted (parameters Sluice cannot
        // resolve): nothing of the set is served either.
        _ if parent_refused => {
            let why = format!("the parent Gateway {} is not accepted", set.parent);
            (
                vec![
                    cond("Accepted", false, "ParentNotAccepted", why.clone()),
                    cond("Programmed", false, "ParentNotAccepted", why),
                ],
                Vec::new(),
            )
        }
        SetState::NotAllowed(why) => (
            vec![
                cond("Accepted", false, "NotAllowed", why.clone()),
                cond("Programmed", false, "NotAllowed", why.clone()),
            ],
            Vec::new(),
        ),
        SetState::Admitted(ls) => {
            let listeners: Vec<ListenerStatus> = ls
                .iter()
                .filter_map(|(l, conflict)| match conflict {
                    None => added
                        .iter()
                        .position(|a| a.name == l.name)
                        .map(|i| added.swap_remove(i)),
                    Some(p) => Some(conflicted(l, p, set.generation)),
                })
                .collect();
            let has = |l: &ListenerStatus, kind: &str| {
                l.conditions
                    .iter()
                    .any(|c| c.kind == kind && c.status == "True")
            };
            // Valid: accepted and its references resolve (a listener whose
            // certificate is not permitted does not make its set valid).
            let valid = |l: &ListenerStatus| has(l, "Accepted") && has(l, "ResolvedRefs");
            let any_valid = listeners.iter().any(valid);
            let invalid: Vec<&str> = listeners
                .iter()
                .filter(|l| !valid(l))
                .map(|l| l.name.as_str())
                .collect();
            let accepted = if !any_valid {
                cond(
                    "Accepted",
                    false,
                    "ListenersNotValid",
                    "no listener is valid",
                )
            } else if invalid.is_empty() {
                cond("Accepted", true, "Accepted", "")
            } else {
                cond(
                    "Accepted",
                    true,
                    "ListenersNotValid",
                    format!("listeners not valid: {}", invalid.join(", ")),
                )
            };
            let programmed = if !any_valid {
                cond(
                    "Programmed",
                    false,
                    "ListenersNotValid",
                    "no listener is valid",
                )
            } else if listeners.iter().any(|l| has(l, "Programmed")) {
                cond("Programmed", true, "Programmed", "")
            } else {
                cond("Programmed", false, "Invalid", "no listener is programmed")
            };
            (vec![accepted, programmed], listeners)
        }
    };
    set_generation(&mut conditions, set.generation);
    ListenerSetStatus {
        namespace: set.set.namespace.clone(),
        name: set.set.name.clone(),
        conditions,
        listeners,
    }
}

/// A listener of a set that lost a conflict: not accepted, not programmed,
/// conflicted, with the conflict as the reason of all three.
fn conflicted(l: &Listener, p: &ListenerProblem, generation: Option<i64>) -> ListenerStatus {
    let (reason, message) = match p {
        ListenerProblem::ProtocolConflict => (
            "ProtocolConflict",
            format!(
                "port {} is used with another protocol by a listener that takes precedence",
                l.port
            ),
        ),
        _ => (
            "HostnameConflict",
            format!(
                "port {} and hostname are used by a listener that takes precedence",
                l.port
            ),
        ),
    };
    let mut conditions = vec![
        cond("Accepted", false, reason, message.clone()),
        cond("ResolvedRefs", true, "ResolvedRefs", ""),
        cond("Programmed", false, reason, message.clone()),
        cond("Conflicted", true, reason, message),
    ];
    set_generation(&mut conditions, generation);
    ListenerStatus {
        name: l.name.clone(),
        supported_kinds: l
            .allowed_kinds
            .iter()
            .map(|k| RouteKind {
                group: super::refgrant::GATEWAY_GROUP,
                kind: k.as_str(),
            })
            .collect(),
        attached_routes: 0,
        conditions,
    }
}

#[cfg(test)]
#[path = "listener_sets_tests.rs"]
mod tests;
