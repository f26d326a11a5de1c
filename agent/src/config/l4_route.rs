//! Conversion of TLSRoute, TCPRoute and UDPRoute. All carry parents, one rule of
//! weighted backends and (TLSRoute) hostnames: exactly the parts an HTTPRoute
//! has, so they are rewritten into an HTTPRoute without matches or filters
//! and converted by [`super::route::http_route`]; the result keeps its kind
//! ([`model::RouteKind::Tls`], [`model::RouteKind::Tcp`],
//! [`model::RouteKind::Udp`]), which decides the listeners it attaches to and
//! that its connections (datagrams) are relayed, not proxied.
use super::{model, resources as wire, route::http_route, validate::Doc};

/// apiVersions read for TLSRoute (v1 is the standard channel's; the alpha
/// versions have the same fields).
pub(super) const TLS_ROUTE_VERSIONS: [&str; 3] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1alpha3",
    "gateway.networking.k8s.io/v1alpha2",
];

/// apiVersions read for TCPRoute.
pub(super) const TCP_ROUTE_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1alpha2",
];

/// apiVersions read for UDPRoute (v1 is served by the experimental CRD;
/// v1alpha2 has the same fields).
pub(super) const UDP_ROUTE_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1alpha2",
];

/// Most backendRefs a rule may have (the CRD's maxItems).
const MAX_BACKEND_REFS: usize = 16;

/// Converts a TLSRoute, TCPRoute or UDPRoute (`kind` says which).
pub(super) fn l4_route(
    doc: &mut Doc<'_>,
    kind: model::RouteKind,
    r: wire::L4Route,
) -> Option<model::HttpRoute> {
    let before = doc.errors.len();
    if kind != model::RouteKind::Tls && !r.spec.hostnames.is_empty() {
        doc.err(
            "spec.hostnames",
            format!("not a field of {}", kind.as_str()),
        );
    }
    // v1 allows exactly one rule: with no matches, a second rule could never
    // be chosen over the first.
    if r.spec.rules.len() != 1 {
        doc.err(
            "spec.rules",
            format!(
                "exactly one rule is required ({} given; v1 {} has one rule of backends)",
                r.spec.rules.len(),
                kind.as_str()
            ),
        );
    }
    for (ri, rule) in r.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}].backendRefs");
        if rule.backend_refs.is_empty() {
            doc.err(&at, "at least one backendRef is required");
        }
        if rule.backend_refs.len() > MAX_BACKEND_REFS {
            doc.err(
                &at,
                format!("at most {MAX_BACKEND_REFS} backendRefs (the CRD's maxItems)"),
            );
        }
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            if !b.filters.is_empty() {
                doc.err(
                    format!("{at}[{bi}].filters"),
                    format!("not a field of {} backendRefs", kind.as_str()),
                );
            }
        }
    }
    if doc.errors.len() != before {
        return None;
    }
    let rules = r
        .spec
        .rules
        .into_iter()
        .map(|rule| wire::HttpRouteRule {
            name: rule.name,
            matches: Vec::new(),
            filters: Vec::new(),
            backend_refs: rule.backend_refs,
            timeouts: None,
            retry: None,
            session_persistence: None,
        })
        .collect();
    let http = wire::HttpRoute {
        metadata: r.metadata,
        spec: wire::HttpRouteSpec {
            parent_refs: r.spec.parent_refs,
            hostnames: r.spec.hostnames,
            rules,
        },
    };
    let mut route = http_route(doc, http)?;
    route.kind = kind;
    Some(route)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_documents, ConfigError, RouteKind};

    fn parse(text: &str) -> Result<super::super::Config, ConfigError> {
        parse_documents([(Path::new("test.yaml"), text)])
    }

    const TLS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\n\
        metadata: {name: r, namespace: ns}\nspec:\n  parentRefs: [{name: gw}]\n  \
        hostnames: ['*.example.com', a.example.org]\n  \
        rules: [{backendRefs: [{name: svc, port: 443, weight: 3}, {name: other, port: 8443}]}]\n";

    #[test]
    fn tls_route_converts_with_its_kind_hostnames_and_weights() {
        let c = parse(TLS).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.kind, RouteKind::Tls);
        assert_eq!(r.hostnames.len(), 2);
        assert_eq!(r.hostnames[0].to_string(), "*.example.com");
        assert_eq!(r.rules.len(), 1);
        let b = &r.rules[0].backends;
        assert_eq!((b[0].port, b[0].weight), (443, 3));
        assert_eq!((b[1].port, b[1].weight), (8443, 1));
        assert!(r.rules[0].filters.is_empty());
        // Same document as v1alpha2 and v1alpha3.
        for v in ["v1alpha2", "v1alpha3"] {
            let c = parse(&TLS.replace("/v1\n", &format!("/{v}\n"))).unwrap();
            assert_eq!(c.routes[0].kind, RouteKind::Tls);
        }
    }

    #[test]
    fn tcp_route_converts_and_refuses_what_it_does_not_have() {
        let tcp = TLS
            .replace("TLSRoute", "TCPRoute")
            .replace("  hostnames: ['*.example.com', a.example.org]\n", "");
        let c = parse(&tcp).unwrap();
        assert_eq!(c.routes[0].kind, RouteKind::Tcp);
        assert!(c.routes[0].hostnames.is_empty());

        let err = parse(&TLS.replace("TLSRoute", "TCPRoute"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.hostnames") && err.contains("TCPRoute"),
            "{err}"
        );
        let two_rules = TLS.replace(
            "rules: [{backendRefs: [{name: svc, port: 443, weight: 3}, {name: other, port: 8443}]}]",
            "rules: [{backendRefs: [{name: svc, port: 443}]}, {backendRefs: [{name: b, port: 1}]}]",
        );
        let err = parse(&two_rules).unwrap_err().to_string();
        assert!(err.contains("exactly one rule"), "{err}");
        let filters = TLS.replace(
            "{name: other, port: 8443}",
            "{name: other, port: 8443, filters: [{type: RequestHeaderModifier}]}",
        );
        let err = parse(&filters).unwrap_err().to_string();
        assert!(
            err.contains("spec.rules[0].backendRefs[1].filters"),
            "{err}"
        );
        let err = parse(&TLS.replace("/v1\n", "/v9\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported TLSRoute version"), "{err}");
    }

    #[test]
    fn the_example_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/l4");
        let files: Vec<_> = ["gateway.yaml", "backends.yaml", "routes.yaml"]
            .iter()
            .map(|f| (dir.join(f), std::fs::read_to_string(dir.join(f)).unwrap()))
            .collect();
        let c = parse_documents(files.iter().map(|(p, t)| (p.as_path(), t.as_str()))).unwrap();
        let kinds: Vec<RouteKind> = c.routes.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [RouteKind::Tcp, RouteKind::Tls, RouteKind::Udp]);
        let protocols: Vec<_> = c.gateways[0]
            .listeners
            .iter()
            .map(|l| l.protocol.clone())
            .collect();
        assert_eq!(
            protocols,
            [
                super::super::ListenerProtocol::Tcp,
                super::super::ListenerProtocol::TlsPassthrough,
                super::super::ListenerProtocol::Udp
            ]
        );
    }

    #[test]
    fn udp_route_converts_in_both_versions_and_refuses_hostnames() {
        let udp = TLS
            .replace("TLSRoute", "UDPRoute")
            .replace("  hostnames: ['*.example.com', a.example.org]\n", "");
        for v in ["v1", "v1alpha2"] {
            let c = parse(&udp.replace("/v1\n", &format!("/{v}\n"))).unwrap();
            let r = &c.routes[0];
            assert_eq!(r.kind, RouteKind::Udp);
            let b = &r.rules[0].backends;
            assert_eq!((b[0].port, b[0].weight), (443, 3));
            assert_eq!((b[1].port, b[1].weight), (8443, 1));
        }
        let err = parse(&TLS.replace("TLSRoute", "UDPRoute"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.hostnames") && err.contains("not a field of UDPRoute"),
            "{err}"
        );
        let err = parse(&udp.replace("/v1\n", "/v1alpha3\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported UDPRoute version"), "{err}");
        let no_backends = udp.replace(
            "rules: [{backendRefs: [{name: svc, port: 443, weight: 3}, {name: other, port: 8443}]}]",
            "rules: [{backendRefs: []}]",
        );
        let err = parse(&no_backends).unwrap_err().to_string();
        assert!(err.contains("at least one backendRef"), "{err}");
    }
}
