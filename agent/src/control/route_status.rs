//! The status of every HTTPRoute, kept compact: what each check found (most
//! routes: nothing wrong) next to the route itself, shared with the config.
//! The Gateway API form ([`RouteStatus`]) is built when someone reads it —
//! `/status`, the Kubernetes status writer — instead of being held for every
//! route: at 50,000 routes the strings of that form were most of the status.
//!
//! The list is sorted by namespace/name and split into chunks that successive
//! statuses share, so that a one-route change copies one chunk.
use std::sync::Arc;

use serde::Serialize;

use super::status::{Condition, ParentRefStatus, RouteParentStatus, RouteStatus};
use crate::{config::HttpRoute, snapshot::Unresolved};

/// What the status checks found for one route.
#[derive(Debug, Clone)]
pub(super) enum RouteOutcome {
    Checked {
        route: Arc<HttpRoute>,
        /// Bit `i`: `parents[i]` names a Gateway of ours (the only ones this
        /// agent reports on). The CRD allows at most 32 parentRefs.
        ours: u32,
        /// The parentRefs of ours that do not attach: index and why.
        refused: Box<[(u8, &'static str, Box<str>)]>,
        /// The first backend or mirror reference that does not resolve.
        unresolved: Option<Box<Unresolved>>,
    },
    /// A status given as is (other sources, tests).
    Given(Box<RouteStatus>),
}

impl RouteOutcome {
    /// Namespace and name of the route.
    pub(super) fn key(&self) -> (&str, &str) {
        match self {
            RouteOutcome::Checked { route, .. } => (&route.id.namespace, &route.id.name),
            RouteOutcome::Given(s) => (&s.namespace, &s.name),
        }
    }

    fn status(&self, controller: &'static str) -> RouteStatus {
        let (route, ours, refused, unresolved) = match self {
            RouteOutcome::Given(s) => return RouteStatus::clone(s),
            RouteOutcome::Checked {
                route,
                ours,
                refused,
                unresolved,
            } => (route, *ours, refused, unresolved),
        };
        let cond = |kind, ok, reason, message: &str| Condition {
            kind,
            status: if ok { "True" } else { "False" },
            reason,
            message: message.to_owned(),
            observed_generation: route.generation,
        };
        let resolved = match unresolved {
            None => cond("ResolvedRefs", true, "ResolvedRefs", ""),
            Some(u) => cond("ResolvedRefs", false, u.reason, &u.message),
        };
        let parents = route
            .parents
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 32 && ours & (1 << i) != 0)
            .map(|(i, p)| {
                // As written: the ListenerSet, not the Gateway it resolved to.
                let parent = p.listener_set.as_deref().unwrap_or(&p.gateway);
                let accepted = match refused.iter().find(|(at, _, _)| usize::from(*at) == i) {
                    None => cond("Accepted", true, "Accepted", ""),
                    Some((_, reason, message)) => cond("Accepted", false, reason, message),
                };
                RouteParentStatus {
                    parent_ref: ParentRefStatus {
                        group: super::refgrant::GATEWAY_GROUP,
                        kind: if p.listener_set.is_some() {
                            "ListenerSet"
                        } else {
                            "Gateway"
                        },
                        namespace: parent.namespace.clone(),
                        name: parent.name.clone(),
                        section_name: p.section_name.clone(),
                        port: p.port,
                    },
                    controller_name: controller,
                    conditions: vec![accepted, resolved.clone()],
                }
            })
            .collect();
        RouteStatus {
            kind: route.kind.as_str(),
            namespace: route.id.namespace.clone(),
            name: route.id.name.clone(),
            parents,
        }
    }
}

/// Routes per chunk aimed at: copying one is cheap, the chunk list short.
const CHUNK: usize = 128;

type Chunk = Arc<[RouteOutcome]>;

/// The status of every route that has a parent of ours, sorted by
/// namespace/name; see the module documentation.
#[derive(Clone)]
pub struct RouteStatuses {
    controller: &'static str,
    chunks: Arc<[Chunk]>,
    len: usize,
}

impl Default for RouteStatuses {
    fn default() -> Self {
        RouteStatuses {
            controller: super::CONTROLLER_NAME,
            chunks: Arc::from([]),
            len: 0,
        }
    }
}

impl std::fmt::Debug for RouteStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<RouteStatus>> for RouteStatuses {
    /// Statuses made elsewhere, as they are.
    fn from(mut statuses: Vec<RouteStatus>) -> Self {
        statuses.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Self::build(
            super::CONTROLLER_NAME,
            statuses
                .into_iter()
                .map(|s| RouteOutcome::Given(Box::new(s)))
                .collect(),
        )
    }
}

impl Serialize for RouteStatuses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl RouteStatuses {
    /// From outcomes sorted by namespace/name.
    pub(super) fn build(controller: &'static str, sorted: Vec<RouteOutcome>) -> Self {
        let len = sorted.len();
        RouteStatuses {
            controller,
            chunks: sorted.chunks(CHUNK).map(Chunk::from).collect(),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every route's status, in namespace/name order.
    pub fn iter(&self) -> impl Iterator<Item = RouteStatus> + '_ {
        self.outcomes().map(|o| o.status(self.controller))
    }

    fn outcomes(&self) -> impl Iterator<Item = &RouteOutcome> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The status of route `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<RouteStatus> {
        let key = (namespace, name);
        let c = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|o| o.key() < key));
        let chunk = self.chunks.get(c)?;
        let i = chunk.binary_search_by(|o| o.key().cmp(&key)).ok()?;
        Some(chunk[i].status(self.controller))
    }

    /// This list without the routes of `removed` (namespace, name) and with
    /// `added`: only the chunks those fall in are copied. Namespace/names
    /// are unique (the compile guarantees it before patching).
    pub(super) fn patch(&self, removed: &[(&str, &str)], added: Vec<RouteOutcome>) -> Self {
        if removed.len() + added.len() > CHUNK {
            // Many changes: one merge of the whole list is cheaper.
            let mut all: Vec<RouteOutcome> = self
                .outcomes()
                .filter(|o| !removed.contains(&o.key()))
                .cloned()
                .collect();
            all.extend(added);
            all.sort_by(|a, b| a.key().cmp(&b.key()));
            return Self::build(self.controller, all);
        }
        let mut chunks: Vec<Chunk> = self.chunks.to_vec();
        let mut len = self.len;
        let mut edit = |chunks: &mut Vec<Chunk>, key: (&str, &str), with: Option<RouteOutcome>| {
            let mut c = chunks
                .partition_point(|c| c.last().is_some_and(|o| o.key() < key))
                .min(chunks.len().saturating_sub(1));
            if chunks.is_empty() {
                chunks.push(Chunk::from([]));
                c = 0;
            }
            let mut v: Vec<RouteOutcome> = chunks[c].to_vec();
            match (v.binary_search_by(|o| o.key().cmp(&key)), with) {
                (Ok(i), None) => {
                    v.remove(i);
                    len -= 1;
                }
                (Err(i), Some(o)) => {
                    v.insert(i, o);
                    len += 1;
                }
                // Removing what is not there, adding what is: neither happens.
                _ => return,
            }
            if v.is_empty() {
                chunks.remove(c);
            } else if v.len() > 2 * CHUNK {
                let right = v.split_off(v.len() / 2);
                chunks[c] = v.into();
                chunks.insert(c + 1, right.into());
            } else {
                chunks[c] = v.into();
            }
        };
        for &key in removed {
            edit(&mut chunks, key, None);
        }
        for o in added {
            let key = o.key();
            // The key borrows from `o`, which moves into the list: compare
            // by owned copies.
            let key = (key.0.to_owned(), key.1.to_owned());
            edit(&mut chunks, (&key.0, &key.1), Some(o));
        }
        RouteStatuses {
            controller: self.controller,
            chunks: chunks.into(),
            len,
        }
    }
}
