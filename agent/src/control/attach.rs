//! Which routes attach to which listener: parentRef selection, `allowedRoutes`
//! namespaces, and the hostname intersection. Shared by the compile step and
//! the status model, which must agree on exactly this.
use std::collections::{BTreeMap, HashMap};

use crate::config::{
    AllowedRoutes, Config, Gateway, Hostname, HttpRoute, Listener, ParentRef, NAMESPACE_NAME_LABEL,
};

pub(super) fn parent_selects(p: &ParentRef, gateway: &Gateway, listener: &Listener) -> bool {
    p.gateway == gateway.id
        // A Gateway parentRef selects the Gateway's own listeners only; a
        // ListenerSet parentRef only that set's (GEP-1713).
        && p.listener_set.as_deref() == listener.origin.as_ref().map(|o| &o.set)
        && p.section_name.as_ref().is_none_or(|s| s == listener.section())
        && p.port.is_none_or(|port| port == listener.port)
}

pub(super) fn namespace_allowed(
    listener: &Listener,
    gateway: &Gateway,
    route: &HttpRoute,
    namespaces: &NamespaceLabels,
) -> bool {
    if !listener.allows(route.kind) {
        return false;
    }
    // A delegated route attaches as its root did: the root's namespace is
    // the one the Gateway admits.
    let namespace = route
        .delegation
        .as_ref()
        .and_then(|d| d.root())
        .map_or(&route.id.namespace, |r| &r.namespace);
    match &listener.allowed_routes {
        // A ListenerSet's listener: the set's namespace.
        AllowedRoutes::Same => *namespace == listener.namespace(gateway),
        AllowedRoutes::All => true,
        AllowedRoutes::Selector(sel) => sel.matches(&namespaces.get(namespace)),
    }
}

/// Labels of the Namespaces in the config. A namespace that is not declared
/// still has the label Kubernetes gives every namespace (its name).
pub(super) struct NamespaceLabels<'a> {
    declared: HashMap<&'a str, &'a BTreeMap<String, String>>,
}

impl<'a> NamespaceLabels<'a> {
    pub(super) fn new(config: &'a Config) -> Self {
        Self {
            declared: config
                .namespaces
                .iter()
                .map(|n| (n.name.as_str(), &n.labels))
                .collect(),
        }
    }

    pub(super) fn get(&self, namespace: &str) -> BTreeMap<String, String> {
        match self.declared.get(namespace) {
            Some(labels) => (*labels).clone(),
            None => BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned())]),
        }
    }
}

/// Hostnames under which a route is reachable through a listener: `[None]`
/// (any host the listener takes) when neither names one, the intersection
/// otherwise; empty when they do not intersect (the route does not attach).
pub(super) fn effective_hostnames(
    listener: Option<&Hostname>,
    route: &[Hostname],
) -> Vec<Option<Hostname>> {
    match (listener, route.is_empty()) {
        (None, true) => vec![None],
        (Some(l), true) => vec![Some(l.clone())],
        (None, false) => route.iter().cloned().map(Some).collect(),
        (Some(l), false) => {
            let mut v: Vec<Option<Hostname>> = route
                .iter()
                .filter_map(|r| Hostname::intersect(l, r))
                .map(Some)
                .collect();
            v.sort();
            v.dedup();
            v
        }
    }
}
