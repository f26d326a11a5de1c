//! The generic half of policy attachment (GEP-713), shared by every policy
//! kind (SluicePolicy, BackendTLSPolicy): which objects a `targetRefs` entry
//! names, the levels a route rule inherits from (Gateway < listener <
//! HTTPRoute < rule; a Service or one of its ports for backend policies),
//! and conflicts between policies on the same target (the oldest wins, then
//! namespace/name).
use std::collections::HashMap;

use crate::{
    config::{BackendTlsPolicy, Gateway, HttpRoute, Listener, ObjectRef, PolicyTarget, RouteKind},
    control::refgrant::GATEWAY_GROUP,
};

/// Where a policy attaches, from least to most specific.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Gateway(ObjectRef),
    Listener(ObjectRef, String),
    Route(ObjectRef),
    Rule(ObjectRef, String),
    /// A backend Service (BackendTLSPolicy), or one port of it by name.
    Service(ObjectRef),
    ServicePort(ObjectRef, String),
}

impl Level {
    /// The level a target names, for a policy in `namespace` (targets are
    /// always in the policy's own namespace).
    pub fn of(namespace: &str, t: &PolicyTarget) -> Option<Level> {
        let id = ObjectRef::new(namespace, &t.name);
        match (t.group.as_str(), t.kind.as_str(), &t.section_name) {
            (GATEWAY_GROUP, "Gateway", None) => Some(Level::Gateway(id)),
            (GATEWAY_GROUP, "Gateway", Some(s)) => Some(Level::Listener(id, s.clone())),
            (GATEWAY_GROUP, "HTTPRoute", None) => Some(Level::Route(id)),
            (GATEWAY_GROUP, "HTTPRoute", Some(s)) => Some(Level::Rule(id, s.clone())),
            ("", "Service", None) => Some(Level::Service(id)),
            ("", "Service", Some(s)) => Some(Level::ServicePort(id, s.clone())),
            _ => None,
        }
    }

    /// The levels that apply to a rule of `route` served through `listener`
    /// of `gateway`, least specific first.
    pub fn chain(
        gateway: &Gateway,
        listener: &Listener,
        route: Option<(&HttpRoute, Option<&str>)>,
    ) -> Vec<Level> {
        let mut v = vec![
            Level::Gateway(gateway.id.clone()),
            Level::Listener(gateway.id.clone(), listener.name.clone()),
        ];
        // SluicePolicies target HTTPRoutes only: a GRPCRoute of the same
        // namespace/name is another object.
        if let Some((route, rule_name)) = route.filter(|(r, _)| r.kind == RouteKind::Http) {
            v.push(Level::Route((*route.id).clone()));
            if let Some(n) = rule_name {
                v.push(Level::Rule((*route.id).clone(), n.to_owned()));
            }
        }
        v
    }
}

impl Level {
    /// The levels of the routes (and named rules) a delegated rule was
    /// delegated through, root first.
    pub fn delegation(ancestors: &[crate::config::Ancestor]) -> Vec<Level> {
        let mut v = Vec::with_capacity(ancestors.len() * 2);
        for a in ancestors {
            v.push(Level::Route(a.route.clone()));
            if let Some(rule) = &a.rule {
                v.push(Level::Rule(a.route.clone(), rule.clone()));
            }
        }
        v
    }
}

/// Policies of one kind by the level they target, each list in precedence
/// order (oldest first, then namespace/name): on a conflict the first wins.
pub struct TargetIndex<'a, P> {
    by_level: HashMap<Level, Vec<&'a P>>,
}

/// What a policy kind tells the index.
pub trait Attached {
    fn id(&self) -> &ObjectRef;
    fn created(&self) -> Option<(i64, u32)>;
    fn targets(&self) -> &[PolicyTarget];
}

impl<'a, P: Attached> TargetIndex<'a, P> {
    pub fn new(policies: impl IntoIterator<Item = &'a P>) -> Self {
        let mut ordered: Vec<&P> = policies.into_iter().collect();
        ordered.sort_by(|a, b| {
            (a.created().is_none(), a.created(), a.id()).cmp(&(
                b.created().is_none(),
                b.created(),
                b.id(),
            ))
        });
        let mut by_level: HashMap<Level, Vec<&P>> = HashMap::new();
        for p in ordered {
            for t in p.targets() {
                if let Some(level) = Level::of(&p.id().namespace, t) {
                    let list = by_level.entry(level).or_default();
                    // The same target listed twice by one policy counts once.
                    if !list.iter().any(|x| x.id() == p.id()) {
                        list.push(p);
                    }
                }
            }
        }
        Self { by_level }
    }

    /// The policies attached at `level`, oldest first.
    pub fn at(&self, level: &Level) -> &[&'a P] {
        self.by_level.get(level).map_or(&[], Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.by_level.is_empty()
    }
}

impl Attached for BackendTlsPolicy {
    fn id(&self) -> &ObjectRef {
        &self.id
    }
    fn created(&self) -> Option<(i64, u32)> {
        self.created
    }
    fn targets(&self) -> &[PolicyTarget] {
        &self.targets
    }
}

impl Attached for crate::config::SluicePolicy {
    fn id(&self) -> &ObjectRef {
        &self.id
    }
    fn created(&self) -> Option<(i64, u32)> {
        self.created
    }
    fn targets(&self) -> &[PolicyTarget] {
        &self.targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P(ObjectRef, Option<(i64, u32)>, Vec<PolicyTarget>);

    impl Attached for P {
        fn id(&self) -> &ObjectRef {
            &self.0
        }
        fn created(&self) -> Option<(i64, u32)> {
            self.1
        }
        fn targets(&self) -> &[PolicyTarget] {
            &self.2
        }
    }

    fn target(kind: &str, name: &str, section: Option<&str>) -> PolicyTarget {
        PolicyTarget {
            group: "gateway.networking.k8s.io".into(),
            kind: kind.into(),
            name: name.into(),
            section_name: section.map(Into::into),
        }
    }

    #[test]
    fn oldest_first_then_name_and_targets_stay_in_their_namespace() {
        let ps = [
            P(
                ObjectRef::new("a", "young"),
                Some((20, 0)),
                vec![target("Gateway", "gw", None)],
            ),
            P(
                ObjectRef::new("a", "undated"),
                None,
                vec![target("Gateway", "gw", None)],
            ),
            P(
                ObjectRef::new("a", "old"),
                Some((10, 0)),
                vec![target("Gateway", "gw", None)],
            ),
            P(
                ObjectRef::new("b", "other-ns"),
                Some((1, 0)),
                vec![target("Gateway", "gw", None)],
            ),
            P(
                ObjectRef::new("a", "listener"),
                None,
                vec![
                    target("Gateway", "gw", Some("http")),
                    target("HTTPRoute", "r", Some("rule-1")),
                ],
            ),
        ];
        let idx = TargetIndex::new(&ps);
        let names: Vec<_> = idx
            .at(&Level::Gateway(ObjectRef::new("a", "gw")))
            .iter()
            .map(|p| p.0.name.as_str())
            .collect();
        assert_eq!(names, ["old", "young", "undated"]);
        assert_eq!(idx.at(&Level::Gateway(ObjectRef::new("b", "gw"))).len(), 1);
        assert_eq!(
            idx.at(&Level::Listener(ObjectRef::new("a", "gw"), "http".into()))
                .len(),
            1
        );
        assert_eq!(
            idx.at(&Level::Rule(ObjectRef::new("a", "r"), "rule-1".into()))
                .len(),
            1
        );
        assert!(idx.at(&Level::Route(ObjectRef::new("a", "r"))).is_empty());
    }
}
