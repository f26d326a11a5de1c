//! Conversion of a GRPCRoute. A gRPC request is an HTTP/2 POST to
//! `/<service>/<method>`, so a GRPCRoute is checked here for what is its own
//! (method matches, the filter types it allows) and then rewritten into an
//! HTTPRoute of the same parents, hostnames, headers, filters and backends,
//! which [`super::route::http_route`] converts like any other. The result
//! keeps its kind ([`model::RouteKind::Grpc`]) and, on each match, the
//! service and method lengths the GRPCRoute precedence ranks by.
use std::sync::Arc;

use super::{model, resources as wire, route::http_route, validate::Doc};

/// Filter types a GRPCRoute allows (`ExtensionRef` is allowed by the CRD
/// too; the HTTPRoute conversion names it as not supported).
const GRPC_FILTERS: [&str; 4] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];

pub(super) fn grpc_route(doc: &mut Doc<'_>, r: wire::GrpcRoute) -> Option<model::HttpRoute> {
    let before = doc.errors.len();
    let mut ranks: Vec<Vec<model::GrpcMethodRank>> = Vec::new();
    let mut rules = Vec::new();
    for (ri, rule) in r.spec.rules.into_iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        allowed_filters(doc, &format!("{at}.filters"), &rule.filters);
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            allowed_filters(doc, &format!("{at}.backendRefs[{bi}].filters"), &b.filters);
        }
        let mut rule_ranks = Vec::new();
        let mut matches = Vec::new();
        for (mi, m) in rule.matches.into_iter().enumerate() {
            let field = format!("{at}.matches[{mi}].method");
            let (path, rank) = match &m.method {
                None => (None, model::GrpcMethodRank::default()),
                Some(method) => match method_path(doc, &field, method) {
                    Some(x) => (Some(x.0), x.1),
                    None => continue,
                },
            };
            rule_ranks.push(rank);
            matches.push(wire::HttpRouteMatch {
                path,
                headers: m.headers,
                query_params: Vec::new(),
                method: None,
            });
        }
        ranks.push(rule_ranks);
        rules.push(wire::HttpRouteRule {
            name: rule.name,
            matches,
            backend_refs: rule.backend_refs,
            filters: rule.filters,
            timeouts: None,
            retry: None,
            session_persistence: rule.session_persistence,
        });
    }
    if doc.errors.len() != before {
        return None;
    }
    let http = wire::HttpRoute {
        metadata: r.metadata,
        spec: wire::HttpRouteSpec {
            parent_refs: r.spec.parent_refs,
            hostnames: r.spec.hostnames,
            rules,
        },
    };
    let mut route = http_route(doc, http)?;
    route.kind = model::RouteKind::Grpc;
    for (ri, rule) in route.rules.iter_mut().enumerate() {
        for (mi, m) in rule.matches.iter_mut().enumerate() {
            // A rule without matches got the shared "any path" match: it
            // ranks as a gRPC match of no service and no method.
            let rank = ranks
                .get(ri)
                .and_then(|r| r.get(mi))
                .copied()
                .unwrap_or_default();
            let mut grpc = model::RouteMatch::clone(m);
            grpc.grpc = Some(rank);
            *m = Arc::new(grpc);
        }
    }
    Some(route)
}

/// Rejects filter types GRPCRoute does not have, naming the allowed ones.
fn allowed_filters(doc: &mut Doc<'_>, at: &str, filters: &[wire::HttpRouteFilter]) {
    for (i, f) in filters.iter().enumerate() {
        if !GRPC_FILTERS.contains(&f.kind.as_str()) {
            doc.err(
                format!("{at}[{i}].type"),
                format!(
                    "filter {} is not allowed on a GRPCRoute (allowed: RequestHeaderModifier, \
                     ResponseHeaderModifier, RequestMirror)",
                    f.kind
                ),
            );
        }
    }
}

/// The path match a method match becomes, with its rank.
fn method_path(
    doc: &mut Doc<'_>,
    at: &str,
    m: &wire::GrpcMethodMatch,
) -> Option<(wire::HttpPathMatch, model::GrpcMethodRank)> {
    let (service, method) = (m.service.as_deref(), m.method.as_deref());
    if service.is_none() && method.is_none() {
        doc.err(at, "one or both of 'service' or 'method' must be specified");
        return None;
    }
    let len = |s: Option<&str>| s.map_or(0, |s| s.len().min(usize::from(u16::MAX)) as u16);
    let rank = model::GrpcMethodRank {
        service: len(service),
        method: len(method),
    };
    let path = |kind: &str, value: String| wire::HttpPathMatch {
        kind: Some(kind.to_owned()),
        value: Some(value),
    };
    match m.kind.as_deref().unwrap_or("Exact") {
        "Exact" => {
            let before = doc.errors.len();
            if let Some(s) = service.filter(|s| !valid_service(s)) {
                doc.err(
                    format!("{at}.service"),
                    format!(
                        "service {s:?} has characters a gRPC service name cannot have \
                         (must match ^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$)"
                    ),
                );
            }
            if let Some(s) = method.filter(|s| !valid_method(s)) {
                doc.err(
                    format!("{at}.method"),
                    format!(
                        "method {s:?} has characters a gRPC method name cannot have \
                         (must match ^[A-Za-z_][A-Za-z_0-9]*$)"
                    ),
                );
            }
            if doc.errors.len() != before {
                return None;
            }
            let p = match (service, method) {
                (Some(s), Some(m)) => path("Exact", format!("/{s}/{m}")),
                // Every method of the service: the path's first segment.
                (Some(s), None) => path("PathPrefix", format!("/{s}")),
                // The method of any service. Method names are plain
                // identifiers (checked above), so nothing needs escaping.
                (None, Some(m)) => path("RegularExpression", format!("/[^/]+/{m}")),
                (None, None) => unreachable!("checked above"),
            };
            Some((p, rank))
        }
        "RegularExpression" => {
            let before = doc.errors.len();
            for (name, value) in [("service", service), ("method", method)] {
                if let Some(Err(e)) = value.map(model::Pattern::new) {
                    doc.err(
                        format!("{at}.{name}"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            if doc.errors.len() != before {
                return None;
            }
            let part =
                |p: Option<&str>| p.map_or_else(|| "[^/]+".to_owned(), |p| format!("(?:{p})"));
            Some((
                path(
                    "RegularExpression",
                    format!("/{}/{}", part(service), part(method)),
                ),
                rank,
            ))
        }
        other => {
            doc.err(
                format!("{at}.type"),
                format!(
                    "unsupported method match type {other:?} (supported: Exact, RegularExpression)"
                ),
            );
            None
        }
    }
}

/// `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`, the CRD's rule.
fn valid_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    !s.is_empty() && s.split('.').all(valid_method)
}

/// `^[A-Za-z_][A-Za-z_0-9]*$`, the CRD's rule.
fn valid_method(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{
        parse_documents, ConfigError, Filter, GrpcMethodRank, PathMatch, RouteKind, StringMatch,
    };

    fn route(rules: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
             metadata: {{name: g, namespace: ns}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [grpc.example.com]\n  rules:\n{rules}"
        )
    }

    fn errors(text: &str) -> String {
        match parse_documents([(Path::new("t.yaml"), text)]) {
            Err(ConfigError::Invalid(e)) => e
                .iter()
                .map(|e| format!("{}: {}\n", e.field, e.message))
                .collect(),
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn method_matches_become_paths_with_their_rank() {
        let text = route(
            r#"  - matches:
    - method: {service: echo.Echo, method: Say}
      headers: [{name: x-tier, value: gold}]
    - method: {service: echo.Echo}
    - method: {method: Say}
    - method: {type: RegularExpression, service: "echo\\..*", method: "S.*"}
    - method: {type: RegularExpression, method: "S.*"}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x-a, value: a}]}
    backendRefs: [{name: svc, port: 50051, weight: 3}]
  - backendRefs: [{name: other, port: 50051}]
"#,
        );
        let c = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.kind, RouteKind::Grpc);
        assert_eq!(r.hostnames.len(), 1);
        let m = &r.rules[0].matches;
        assert_eq!(m[0].path, PathMatch::Exact("/echo.Echo/Say".into()));
        assert_eq!(m[0].headers[0].value, StringMatch::Exact("gold".into()));
        assert_eq!(
            m[0].grpc,
            Some(GrpcMethodRank {
                service: 9,
                method: 3
            })
        );
        assert_eq!(m[1].path, PathMatch::Prefix("/echo.Echo".into()));
        assert!(m[2].path.matches("/a.B/Say") && !m[2].path.matches("/a.B/Sayx"));
        assert!(m[3].path.matches("/echo.Echo/Sing") && !m[3].path.matches("/x.Echo/Sing"));
        assert!(m[4].path.matches("/any.Service/Sing") && !m[4].path.matches("/any/Other"));
        assert!(matches!(r.rules[0].filters[0], Filter::RequestHeaders(_)));
        assert_eq!(r.rules[0].backends[0].weight, 3);
        // No matches: every request, ranked below every method match.
        let any = &r.rules[1].matches[0];
        assert!(any.path.matches("/x.Y/Z"));
        assert_eq!(any.grpc, Some(GrpcMethodRank::default()));
    }

    #[test]
    fn rejects_what_the_crd_rejects_and_what_grpc_route_lacks() {
        let e = errors(&route(
            r#"  - matches:
    - method: {}
    - method: {service: "echo/Echo", method: "Say-it"}
    - method: {type: RegularExpression, service: "("}
    - method: {type: Prefix, service: a}
    filters:
    - {type: RequestRedirect, requestRedirect: {statusCode: 301}}
    - {type: URLRewrite, urlRewrite: {hostname: x.com}}
    backendRefs: [{name: s, port: 1, filters: [{type: CORS, cors: {}}]}]
    sessionPersistence: {type: Cookie}
"#,
        ));
        assert!(e.contains("matches[0].method: one or both"), "{e}");
        assert!(
            e.contains("matches[1].method.service: service \"echo/Echo\""),
            "{e}"
        );
        assert!(
            e.contains("matches[1].method.method: method \"Say-it\""),
            "{e}"
        );
        assert!(
            e.contains("matches[2].method.service: invalid regular expression"),
            "{e}"
        );
        assert!(
            e.contains("matches[3].method.type: unsupported method match type"),
            "{e}"
        );
        assert!(
            e.contains("filters[0].type: filter RequestRedirect is not allowed on a GRPCRoute"),
            "{e}"
        );
        assert!(
            e.contains("filters[1].type: filter URLRewrite is not allowed"),
            "{e}"
        );
        assert!(
            e.contains("backendRefs[0].filters[0].type: filter CORS is not allowed"),
            "{e}"
        );
        // Only reported once the GRPCRoute's own checks pass.
        let e = errors(&route("  - sessionPersistence: {type: Cookie}\n"));
        assert!(
            e.contains("session persistence is not supported yet"),
            "{e}"
        );
        let e = errors(&route(
            "  - filters: [{type: ExtensionRef, extensionRef: {group: x, kind: y, name: z}}]\n",
        ));
        assert!(
            e.contains("filter ExtensionRef is not supported yet"),
            "{e}"
        );
    }

    #[test]
    fn the_example_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grpc");
        let files: Vec<_> = ["gateway.yaml", "backends.yaml", "routes.yaml"]
            .iter()
            .map(|f| (dir.join(f), std::fs::read_to_string(dir.join(f)).unwrap()))
            .collect();
        let c = parse_documents(files.iter().map(|(p, t)| (p.as_path(), t.as_str()))).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].kind, RouteKind::Grpc);
        assert_eq!(c.routes[0].rules.len(), 3);
    }

    #[test]
    fn service_and_method_names_follow_the_crd_pattern() {
        for ok in ["a", "_a.b_1", ".pkg.Svc", "grpc.health.v1.Health"] {
            assert!(super::valid_service(ok), "{ok}");
        }
        for bad in ["", ".", "1a", "a..b", "a.", "a/b", "a-b"] {
            assert!(!super::valid_service(bad), "{bad}");
        }
        assert!(super::valid_method("Say_1") && !super::valid_method("9x"));
    }
}
