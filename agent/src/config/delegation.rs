//! HTTPRoute delegation as the model sees it: which routes a route lets
//! delegate to it (its parentRefs of kind HTTPRoute) and, once the control
//! plane has flattened a delegation tree (see `control::delegation`), which
//! routes and rules a served rule was delegated through. A backendRef of
//! kind HTTPRoute stays an ordinary [`super::BackendRef`] with
//! `unsupported_kind` set to [`DELEGATION_KIND`]: only the compile gives it
//! meaning.
use std::sync::Arc;

use super::model::ObjectRef;

/// `unsupported_kind` of a backendRef naming a child HTTPRoute.
pub const DELEGATION_KIND: &str = "gateway.networking.k8s.io/HTTPRoute";

/// A child's name in a delegating backendRef that selects every HTTPRoute of
/// the namespace (as kgateway does).
pub const DELEGATE_ALL: &str = "*";

/// Delegation facts of one HTTPRoute; absent on routes that take no part in
/// delegation (most of them), so that ordinary routes pay one pointer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delegation {
    /// `parentRefs` of kind HTTPRoute: when not empty, only these routes may
    /// delegate to this one.
    pub parent_routes: Vec<ObjectRef>,
    /// The route has parentRefs of kinds this agent does not serve (a
    /// Service for the mesh, another controller's parent): it is not a
    /// child either, or `name: "*"` would put a mesh route on a Gateway.
    pub foreign_parents: bool,
    /// Set on a route produced by flattening: per rule of that route, the
    /// routes (and rule names) it was delegated through, root first.
    pub chains: Vec<Arc<[Ancestor]>>,
}

/// One delegating step above a flattened rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ancestor {
    pub route: ObjectRef,
    /// The name of the delegating rule, if it has one (what a policy's
    /// `sectionName` selects).
    pub rule: Option<String>,
}

impl Delegation {
    /// The delegation facts of a freshly converted route: `None` unless it
    /// names parent routes, has parentRefs of other kinds, or delegates itself.
    pub fn of_converted(
        parent_routes: Vec<ObjectRef>,
        foreign_parents: bool,
        delegates: bool,
    ) -> Option<Arc<Self>> {
        (delegates || foreign_parents || !parent_routes.is_empty()).then(|| {
            Arc::new(Delegation {
                parent_routes,
                foreign_parents,
                chains: Vec::new(),
            })
        })
    }

    /// Whether a route with these facts may be a delegated child: it has no
    /// parentRefs but (optionally) HTTPRoute ones.
    pub fn may_be_child(d: Option<&Self>) -> bool {
        d.is_none_or(|d| !d.foreign_parents)
    }

    /// The root of a flattened route's delegation tree (the route attached
    /// to the Gateway): every rule has the same.
    pub fn root(&self) -> Option<&ObjectRef> {
        self.chains.first()?.first().map(|a| &a.route)
    }

    /// The ancestors of rule `rule` of a flattened route (empty otherwise).
    pub fn ancestors(&self, rule: usize) -> &[Ancestor] {
        self.chains.get(rule).map_or(&[], |c| c)
    }
}
