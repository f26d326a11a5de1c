//! ReferenceGrant checks: a reference from an object in one namespace to an
//! object in another is allowed only when a ReferenceGrant in the target's
//! namespace names the source (group, kind, namespace) in `from` and the
//! target (group, kind, optional name) in `to`.
use crate::config::{Config, ObjectRef, ReferenceGrant};

/// The API group of HTTPRoute and the other Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The kind and group of one side of a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind<'a> {
    /// `""` for the core group.
    pub group: &'a str,
    pub kind: &'a str,
}

impl Kind<'static> {
    pub const HTTP_ROUTE: Kind<'static> = Kind {
        group: GATEWAY_GROUP,
        kind: "HTTPRoute",
    };
    pub const GRPC_ROUTE: Kind<'static> = Kind {
        group: GATEWAY_GROUP,
        kind: "GRPCRoute",
    };
    pub const TLS_ROUTE: Kind<'static> = Kind {
        group: GATEWAY_GROUP,
        kind: "TLSRoute",
    };
    pub const TCP_ROUTE: Kind<'static> = Kind {
        group: GATEWAY_GROUP,
        kind: "TCPRoute",
    };
    pub const UDP_ROUTE: Kind<'static> = Kind {
        group: GATEWAY_GROUP,
        kind: "UDPRoute",
    };
    pub const SERVICE: Kind<'static> = Kind {
        group: "",
        kind: "Service",
    };
    pub const GATEWAY: Kind<'static> = Kind {
        group: GATEWAY_GROUP,
        kind: "Gateway",
    };
    pub const LISTENER_SET: Kind<'static> = Kind {
        group: GATEWAY_GROUP,
        kind: "ListenerSet",
    };
    pub const SECRET: Kind<'static> = Kind {
        group: "",
        kind: "Secret",
    };
}

impl Kind<'static> {
    /// The kind a route was written as, for ReferenceGrant `from`.
    pub fn of_route(kind: crate::config::RouteKind) -> Self {
        match kind {
            crate::config::RouteKind::Http => Kind::HTTP_ROUTE,
            crate::config::RouteKind::Grpc => Kind::GRPC_ROUTE,
            crate::config::RouteKind::Tls => Kind::TLS_ROUTE,
            crate::config::RouteKind::Tcp => Kind::TCP_ROUTE,
            crate::config::RouteKind::Udp => Kind::UDP_ROUTE,
        }
    }
}

/// Every ReferenceGrant of a config, for lookups while compiling.
#[derive(Debug)]
pub struct ReferenceGrants<'a> {
    grants: &'a [ReferenceGrant],
}

impl<'a> ReferenceGrants<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self {
            grants: &config.reference_grants,
        }
    }

    /// Whether an object of `from_kind` in namespace `from_ns` may refer to
    /// `to` of `to_kind`. Same-namespace references need no grant.
    pub fn allows(
        &self,
        from_kind: Kind<'_>,
        from_ns: &str,
        to_kind: Kind<'_>,
        to: &ObjectRef,
    ) -> bool {
        if from_ns == to.namespace {
            return true;
        }
        self.grants
            .iter()
            .filter(|g| g.id.namespace == to.namespace)
            .any(|g| {
                g.from.iter().any(|f| {
                    f.group == from_kind.group && f.kind == from_kind.kind && f.namespace == from_ns
                }) && g.to.iter().any(|t| {
                    t.group == to_kind.group
                        && t.kind == to_kind.kind
                        && t.name.as_ref().is_none_or(|n| *n == to.name)
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GrantFrom, GrantTo};

    fn grant(ns: &str, from_ns: &str, from_kind: &str, to_name: Option<&str>) -> ReferenceGrant {
        ReferenceGrant {
            id: ObjectRef::new(ns, "g"),
            from: vec![GrantFrom {
                group: GATEWAY_GROUP.into(),
                kind: from_kind.into(),
                namespace: from_ns.into(),
            }],
            to: vec![GrantTo {
                group: "".into(),
                kind: "Service".into(),
                name: to_name.map(Into::into),
            }],
        }
    }

    fn allows(grants: Vec<ReferenceGrant>, from_ns: &str, to: &ObjectRef) -> bool {
        let config = Config {
            reference_grants: grants,
            ..Config::default()
        };
        ReferenceGrants::new(&config).allows(Kind::HTTP_ROUTE, from_ns, Kind::SERVICE, to)
    }

    #[test]
    fn same_namespace_needs_no_grant() {
        assert!(allows(vec![], "a", &ObjectRef::new("a", "svc")));
        assert!(!allows(vec![], "a", &ObjectRef::new("b", "svc")));
    }

    #[test]
    fn grant_must_live_in_target_namespace_and_name_source() {
        let svc = ObjectRef::new("b", "svc");
        assert!(allows(vec![grant("b", "a", "HTTPRoute", None)], "a", &svc));
        assert!(allows(
            vec![grant("b", "a", "HTTPRoute", Some("svc"))],
            "a",
            &svc
        ));
        assert!(!allows(
            vec![grant("b", "a", "HTTPRoute", Some("other"))],
            "a",
            &svc
        ));
        assert!(
            !allows(vec![grant("a", "a", "HTTPRoute", None)], "a", &svc),
            "grant in the wrong namespace"
        );
        assert!(
            !allows(vec![grant("b", "c", "HTTPRoute", None)], "a", &svc),
            "grant for another namespace"
        );
        assert!(
            !allows(vec![grant("b", "a", "GRPCRoute", None)], "a", &svc),
            "grant for another kind"
        );
    }
}
