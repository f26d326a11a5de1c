//! Conversion of an HTTPRoute: parentRefs, hostnames, matches, backendRefs
//! and timeouts (filters: [`super::filter`]), with the checks the CRDs make
//! (enums, CEL rules) so that a file source rejects what an API server would.
use http::{HeaderName, Method};

use super::{
    filter::{filters, FilterContext},
    model, resources as wire,
    time::{parse_duration, parse_timestamp},
    validate::{hostname, ns, Doc, GATEWAY_GROUP},
};

/// `spec.parentRefs` `maxItems` in the Gateway API CRD.
pub const MAX_PARENT_REFS: usize = 32;

pub(super) fn http_route(doc: &mut Doc<'_>, r: wire::HttpRoute) -> Option<model::HttpRoute> {
    let before = doc.errors.len();
    let namespace = ns(&r.metadata);
    let created = match &r.metadata.creation_timestamp {
        None => None,
        Some(t) => match parse_timestamp(t) {
            Some(t) => Some(t),
            None => {
                doc.err(
                    "metadata.creationTimestamp",
                    format!("not an RFC 3339 timestamp: {t:?}"),
                );
                None
            }
        },
    };
    if r.spec.parent_refs.len() > MAX_PARENT_REFS {
        doc.err(
            "spec.parentRefs",
            format!("at most {MAX_PARENT_REFS} parentRefs (the CRD's maxItems)"),
        );
    }
    let mut parents = Vec::new();
    let mut parent_routes = Vec::new();
    let mut foreign_parents = false;
    for p in &r.spec.parent_refs {
        let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        if group == GATEWAY_GROUP && kind == "HTTPRoute" {
            // A delegation parent (see `super::delegation`).
            parent_routes.push(model::ObjectRef::new(
                p.namespace.clone().unwrap_or_else(|| namespace.clone()),
                &p.name,
            ));
            continue;
        }
        let id = model::ObjectRef::new(
            p.namespace.clone().unwrap_or_else(|| namespace.clone()),
            &p.name,
        );
        let (gateway, listener_set) = match (group, kind) {
            (GATEWAY_GROUP, "Gateway") => (id, None),
            // The set's Gateway is known once the control plane resolves it.
            (GATEWAY_GROUP, "ListenerSet") => (model::ParentRef::UNRESOLVED, Some(Box::new(id))),
            // Not a parent this agent can be; other controllers may own it.
            _ => {
                foreign_parents = true;
                continue;
            }
        };
        parents.push(model::ParentRef {
            gateway,
            listener_set,
            section_name: p.section_name.clone(),
            port: p.port,
        });
    }
    let mut hostnames = Vec::new();
    for (i, h) in r.spec.hostnames.iter().enumerate() {
        if let Some(h) = hostname(doc, &format!("spec.hostnames[{i}]"), h) {
            hostnames.push(h);
        }
    }
    let mut rules = Vec::new();
    for (ri, rule) in r.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let mut matches = Vec::new();
        for (mi, m) in rule.matches.iter().enumerate() {
            if let Some(m) = route_match(doc, &format!("{at}.matches[{mi}]"), m) {
                matches.push(std::sync::Arc::new(m));
            }
        }
        if rule.matches.is_empty() {
            matches.push(model::RouteMatch::any_path());
        }
        let single_prefix_match =
            matches.len() == 1 && matches!(matches[0].path, model::PathMatch::Prefix(_));
        let ctx = FilterContext {
            namespace: &namespace,
            single_prefix_match,
        };
        let rule_filters = filters(doc, &format!("{at}.filters"), &rule.filters, ctx, true);
        let mut backends = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let field = format!("{at}.backendRefs[{bi}]");
            let group = b.group.as_deref().unwrap_or("");
            let kind = b.kind.as_deref().unwrap_or("Service");
            let backend_filters = filters(doc, &format!("{field}.filters"), &b.filters, ctx, false);
            // Another kind is not a config error but an unresolved reference
            // (ResolvedRefs=False, InvalidKind; its share of traffic gets 500).
            let consul = group == super::policy::SLUICE_GROUP && kind == model::CONSUL_SERVICE_KIND;
            let unsupported_kind = (!consul && (!group.is_empty() || kind != "Service"))
                .then(|| format!("{group}/{kind}").into_boxed_str());
            if consul && b.namespace.as_ref().is_some_and(|n| *n != namespace) {
                doc.err(
                    format!("{field}.namespace"),
                    "a ConsulService backend must be in the route's namespace",
                );
                continue;
            }
            let port = match b.port {
                Some(p) => p,
                // Each instance's registered port.
                None if consul => 0,
                None if unsupported_kind.is_some() => 0,
                None => {
                    doc.err(
                        format!("{field}.port"),
                        "port is required for a Service backend",
                    );
                    continue;
                }
            };
            if b.weight.is_some_and(|w| w > 1_000_000) {
                doc.err(format!("{field}.weight"), "weight must be 0-1000000");
            }
            let name = if consul {
                format!("{}{}", model::CONSUL_BACKEND_PREFIX, b.name)
            } else {
                b.name.clone()
            };
            backends.push(model::BackendRef {
                service: model::ObjectRef::new(
                    b.namespace.clone().unwrap_or_else(|| namespace.clone()),
                    name,
                ),
                port,
                weight: b.weight.unwrap_or(1),
                filters: compact_filters(backend_filters),
                unsupported_kind,
            });
        }
        let timeouts = timeouts(doc, &format!("{at}.timeouts"), rule.timeouts.as_ref());
        let retry = rule
            .retry
            .as_ref()
            .and_then(|r| retry(doc, &format!("{at}.retry"), r))
            .map(std::sync::Arc::new);
        if rule.session_persistence.is_some() {
            doc.err(
                format!("{at}.sessionPersistence"),
                "session persistence is not supported yet",
            );
        }
        if let Some(n) = &rule.name {
            if r.spec.rules[..ri]
                .iter()
                .any(|o| o.name.as_ref() == Some(n))
            {
                doc.err(format!("{at}.name"), format!("duplicate rule name {n:?}"));
            }
        }
        rules.push(model::RouteRule {
            name: rule.name.clone(),
            matches: matches.into_boxed_slice(),
            filters: compact_filters(rule_filters),
            backends: backends.into_boxed_slice(),
            timeouts,
            retry,
        });
    }
    if r.spec.rules.is_empty() {
        rules.push(model::RouteRule {
            name: None,
            matches: Box::new([model::RouteMatch::any_path()]),
            filters: model::Filters::default(),
            backends: Box::default(),
            timeouts: model::Timeouts::default(),
            retry: None,
        });
    }
    let delegates = rules.iter().any(|r: &model::RouteRule| {
        r.backends
            .iter()
            .any(|b| b.unsupported_kind.as_deref() == Some(super::DELEGATION_KIND))
    });
    (doc.errors.len() == before).then(|| {
        model::HttpRoute {
            id: model::ObjectRef::new(namespace, &r.metadata.name).into(),
            kind: model::RouteKind::Http,
            generation: r.metadata.generation,
            created,
            // Exactly sized (see `compact_filters`).
            parents: parents.into_boxed_slice(),
            hostnames: hostnames.into_boxed_slice(),
            rules: rules.into_boxed_slice(),
            delegation: super::Delegation::of_converted(parent_routes, foreign_parents, delegates),
        }
    })
}

/// The shared, exactly sized form of `filters`: a `Vec` grown by `push`
/// keeps room for four elements, and route elements are large (at 5,000
/// routes the spare room was 17 MB; the route's other lists are boxed
/// slices, exactly sized when converted, for the same reason).
fn compact_filters(mut filters: Vec<model::Filter>) -> model::Filters {
    for f in &mut filters {
        if let model::Filter::RequestHeaders(m) | model::Filter::ResponseHeaders(m) = f {
            m.set.shrink_to_fit();
            m.add.shrink_to_fit();
            m.remove.shrink_to_fit();
        }
    }
    filters.into()
}

fn route_match(doc: &mut Doc<'_>, at: &str, m: &wire::HttpRouteMatch) -> Option<model::RouteMatch> {
    let before = doc.errors.len();
    let (kind, value) = match &m.path {
        Some(p) => (
            p.kind.as_deref().unwrap_or("PathPrefix"),
            p.value.as_deref().unwrap_or("/"),
        ),
        None => ("PathPrefix", "/"),
    };
    let path = match kind {
        "Exact" | "PathPrefix" if !value.starts_with('/') => {
            doc.err(
                format!("{at}.path.value"),
                format!("path must start with '/': {value:?}"),
            );
            None
        }
        // CRD rules: no "//", "/./", "/../", "%2f", "%2F", "#" in literal paths.
        "Exact" | "PathPrefix"
            if ["//", "/./", "/../", "%2f", "%2F", "#"]
                .iter()
                .any(|s| value.contains(s))
                || value.ends_with("/..")
                || value.ends_with("/.") =>
        {
            doc.err(
                format!("{at}.path.value"),
                format!("path must not contain '//', '/./', '/../', '%2f' or '#': {value:?}"),
            );
            None
        }
        // Requests are matched in their normalised form (`crate::path`), so
        // a literal path is too: `/%7Euser` matches a request for `/~user`.
        "Exact" | "PathPrefix" => {
            match crate::path::normalize(value, &crate::path::PathRules::default()) {
                Err(e) => {
                    doc.err(format!("{at}.path.value"), format!("{e}: {value:?}"));
                    None
                }
                Ok(value) if kind == "Exact" => Some(model::PathMatch::Exact(value.into_owned())),
                Ok(value) => {
                    let trimmed = value.trim_end_matches('/');
                    Some(model::PathMatch::Prefix(
                        if trimmed.is_empty() { "/" } else { trimmed }.into(),
                    ))
                }
            }
        }
        "RegularExpression" => {
            pattern(doc, &format!("{at}.path.value"), value).map(model::PathMatch::Regex)
        }
        other => {
            doc.err(
                format!("{at}.path.type"),
                format!(
                    "unsupported path match type {other:?} (supported: Exact, PathPrefix, RegularExpression)"
                ),
            );
            None
        }
    };
    let method = match m.method.as_deref() {
        None => None,
        Some(
            s @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE"
            | "PATCH"),
        ) => Method::from_bytes(s.as_bytes()).ok(),
        Some(other) => {
            doc.err(
                format!("{at}.method"),
                format!(
                    "unsupported method {other:?} (supported: GET, HEAD, POST, PUT, DELETE, CONNECT, \
                     OPTIONS, TRACE, PATCH)"
                ),
            );
            None
        }
    };
    let mut headers: Vec<model::HeaderMatch> = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let field = format!("{at}.headers[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            doc.err(
                format!("{field}.name"),
                format!("invalid header name {:?}", h.name),
            );
            continue;
        };
        if m.headers[..i].iter().any(|x| x.name == h.name) {
            // The API server rejects exact duplicates (list-map key `name`).
            doc.err(
                format!("{field}.name"),
                format!("duplicate header match {:?}", h.name),
            );
            continue;
        }
        if headers.iter().any(|x| x.name == name) {
            // Equivalent up to case: the spec says only the first counts.
            continue;
        }
        if let Some(value) = string_match(doc, &field, h) {
            headers.push(model::HeaderMatch { name, value });
        }
    }
    let mut query_params: Vec<model::QueryMatch> = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        let field = format!("{at}.queryParams[{i}]");
        if q.name.is_empty() {
            doc.err(format!("{field}.name"), "must not be empty");
            continue;
        }
        if query_params.iter().any(|x| x.name == q.name) {
            doc.err(
                format!("{field}.name"),
                format!("duplicate query parameter match {:?}", q.name),
            );
            continue;
        }
        if let Some(value) = string_match(doc, &field, q) {
            query_params.push(model::QueryMatch {
                name: q.name.clone(),
                value,
            });
        }
    }
    let path = path?;
    (doc.errors.len() == before).then_some(model::RouteMatch {
        path,
        method,
        headers: headers.into_boxed_slice(),
        query_params: query_params.into_boxed_slice(),
        grpc: None,
    })
}

fn string_match(
    doc: &mut Doc<'_>,
    field: &str,
    m: &wire::HttpValueMatch,
) -> Option<model::StringMatch> {
    match m.kind.as_deref().unwrap_or("Exact") {
        "Exact" => Some(model::StringMatch::Exact(m.value.clone())),
        "RegularExpression" => {
            pattern(doc, &format!("{field}.value"), &m.value).map(model::StringMatch::Regex)
        }
        other => {
            doc.err(
                format!("{field}.type"),
                format!("unsupported match type {other:?} (supported: Exact, RegularExpression)"),
            );
            None
        }
    }
}

fn pattern(doc: &mut Doc<'_>, field: &str, source: &str) -> Option<model::Pattern> {
    match model::Pattern::new(source) {
        Ok(p) => Some(p),
        Err(e) => {
            doc.err(field, format!("invalid regular expression: {e}"));
            None
        }
    }
}

fn timeouts(doc: &mut Doc<'_>, at: &str, t: Option<&wire::HttpRouteTimeouts>) -> model::Timeouts {
    let Some(t) = t else {
        return model::Timeouts::default();
    };
    let mut parse = |field: &str, raw: Option<&String>| {
        let raw = raw?;
        match parse_duration(raw) {
            // "0s" disables the timeout (Gateway API).
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => {
                doc.err(
                    format!("{at}.{field}"),
                    format!("invalid duration {raw:?} (expected e.g. 10s, 500ms, 1m30s)"),
                );
                None
            }
        }
    };
    let request = parse("request", t.request.as_ref());
    let backend_request = parse("backendRequest", t.backend_request.as_ref());
    if let (Some(r), Some(b)) = (request, backend_request) {
        if b > r {
            doc.err(
                format!("{at}.backendRequest"),
                "backendRequest timeout cannot be longer than request timeout",
            );
        }
    }
    model::Timeouts {
        request,
        backend_request,
    }
}

fn retry(doc: &mut Doc<'_>, at: &str, r: &wire::HttpRouteRetry) -> Option<model::Retry> {
    let before = doc.errors.len();
    for (i, c) in r.codes.iter().enumerate() {
        if !(400..=599).contains(c) {
            doc.err(
                format!("{at}.codes[{i}]"),
                format!("must be 400-599, got {c}"),
            );
        }
    }
    if r.attempts == Some(0) {
        doc.err(format!("{at}.attempts"), "must be at least 1");
    }
    let backoff = match &r.backoff {
        None => model::Retry::DEFAULT_BACKOFF,
        Some(raw) => parse_duration(raw).unwrap_or_else(|| {
            doc.err(
                format!("{at}.backoff"),
                format!("invalid duration {raw:?} (expected e.g. 100ms, 1s)"),
            );
            model::Retry::DEFAULT_BACKOFF
        }),
    };
    (doc.errors.len() == before).then(|| model::Retry {
        codes: r.codes.clone(),
        attempts: r.attempts.unwrap_or(model::Retry::DEFAULT_ATTEMPTS),
        backoff,
    })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use crate::config::{
        parse_documents, AllowedRoutes, ConfigError, Filter, LabelOperator, PathMatch,
        PathModifier, StringMatch,
    };

    fn route(rules: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: r, namespace: ns, creationTimestamp: \"2024-01-01T00:00:00Z\"}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}"
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
    fn converts_matches_filters_and_timeouts() {
        let text = route(
            r#"  - matches:
    - path: {type: RegularExpression, value: "/v[0-9]+"}
      method: POST
      headers: [{name: Version, value: one}, {name: x-id, type: RegularExpression, value: "[0-9]+"}]
      queryParams: [{name: animal, value: whale}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-A, value: a}], add: [{name: X-B, value: b}], remove: [X-C]}
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301}
    timeouts: {request: 10s, backendRequest: 2s}
    backendRefs:
    - name: svc
      port: 80
      filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: X-D, value: d}]}}]
"#,
        );
        let c = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.created, Some((1_704_067_200, 0)));
        let m = &r.rules[0].matches[0];
        assert!(matches!(&m.path, PathMatch::Regex(p) if p.as_str() == "/v[0-9]+"));
        assert_eq!(m.method, Some(http::Method::POST));
        assert_eq!(m.headers[0].name.as_str(), "version");
        assert!(matches!(&m.headers[1].value, StringMatch::Regex(_)));
        assert_eq!(m.query_params[0].name, "animal");
        let f = &r.rules[0].filters;
        assert!(
            matches!(&f[0], Filter::RequestHeaders(h) if h.set.len() == 1 && h.remove[0] == "x-c")
        );
        assert!(
            matches!(&f[1], Filter::Redirect(r) if r.status == 301 && r.scheme.as_deref() == Some("https"))
        );
        assert_eq!(r.rules[0].timeouts.request, Some(Duration::from_secs(10)));
        assert!(matches!(
            &r.rules[0].backends[0].filters[0],
            Filter::ResponseHeaders(_)
        ));
    }

    /// Literal paths are kept in the form requests are matched in.
    #[test]
    fn literal_paths_are_normalised_like_requests() {
        let text = route(
            "  - matches: [{path: {type: PathPrefix, value: /%7Euser/%41pi/}}, {path: {type: Exact, value: /a%2db}}]\n    backendRefs: [{name: svc, port: 80}]\n",
        );
        let c = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        let m = &c.routes[0].rules[0].matches;
        assert_eq!(m[0].path, PathMatch::Prefix("/~user/Api".into()));
        assert_eq!(m[1].path, PathMatch::Exact("/a-b".into()));
        let e = errors(&route(
            "  - matches: [{path: {value: /a%zz}}]\n    backendRefs: [{name: svc, port: 80}]\n",
        ));
        assert!(
            e.contains("matches[0].path.value") && e.contains("two hex digits"),
            "{e}"
        );
    }

    #[test]
    fn rejects_what_the_crd_rejects() {
        let e = errors(&route(
            r#"  - filters:
    - {type: RequestRedirect, requestRedirect: {statusCode: 404}}
    - {type: URLRewrite, urlRewrite: {hostname: "*.x.com"}}
"#,
        ));
        assert!(
            e.contains("spec.rules[0].filters[0].requestRedirect.statusCode"),
            "{e}"
        );
        assert!(
            e.contains("spec.rules[0].filters[1].urlRewrite.hostname: a wildcard"),
            "{e}"
        );
        assert!(
            e.contains("either a RequestRedirect or a URLRewrite"),
            "{e}"
        );
        let e = errors(&route(
            r#"  - matches: [{path: {type: Exact, value: /x}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /y}}}
"#,
        ));
        assert!(e.contains("exactly one PathPrefix match"), "{e}");
        let e = errors(&route(
            r#"  - matches: [{method: FETCH, headers: [{name: a, value: "1"}, {name: a, value: "2"}]}]
    timeouts: {request: 1s, backendRequest: 2s}
"#,
        ));
        assert!(e.contains("matches[0].method: unsupported method"), "{e}");
        assert!(e.contains("matches[0].headers[1].name: duplicate"), "{e}");
        assert!(
            e.contains("timeouts.backendRequest: backendRequest timeout cannot be longer"),
            "{e}"
        );
    }

    #[test]
    fn unimplemented_filters_are_named() {
        let e = errors(&route(
            "  - filters: [{type: ExtensionRef, extensionRef: {group: x, kind: y, name: z}}]\n",
        ));
        assert!(
            e.contains("spec.rules[0].filters[0].type: filter ExtensionRef is not supported yet"),
            "{e}"
        );
        let e = errors(&route(
            "  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, \
             percent: 10, fraction: {numerator: 1}}}]\n",
        ));
        assert!(e.contains("only one of percent or fraction"), "{e}");
        let e = errors(&route(
            "  - backendRefs: [{name: s, port: 80, filters: [{type: CORS, cors: {}}]}]\n",
        ));
        assert!(e.contains("not supported on a backendRef"), "{e}");
        let e = errors(&route("  - sessionPersistence: {type: Cookie}\n"));
        assert!(
            e.contains(
                "spec.rules[0].sessionPersistence: session persistence is not supported yet"
            ),
            "{e}"
        );
        let e = errors(&route(
            "  - retry: {attempts: 0, codes: [200], backoff: soon}\n",
        ));
        assert!(e.contains("retry.codes[0]: must be 400-599"), "{e}");
        assert!(e.contains("retry.attempts: must be at least 1"), "{e}");
        assert!(e.contains("retry.backoff: invalid duration"), "{e}");
    }

    #[test]
    fn cors_filter_is_converted_and_checked() {
        let text = route(
            r#"  - filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com", "http://x.io:8080", "*"]
        allowMethods: [GET, "*"]
        allowHeaders: [x-a]
        allowCredentials: true
"#,
        );
        let c = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        let Filter::Cors(cors) = &c.routes[0].rules[0].filters[0] else {
            panic!("CORS filter expected")
        };
        assert_eq!(cors.max_age, 5);
        assert!(cors.allow_credentials);
        assert_eq!(cors.allow_origins.len(), 4);
        assert_eq!(
            super::super::filter::origin_pattern("https://*.bar.com"),
            Some(crate::config::OriginPattern::Origin {
                scheme: "https".into(),
                host: "*.bar.com".into(),
                host_suffix: Some(".bar.com".into()),
                port: 443,
            })
        );
        let e = errors(
            &text
                .replace("http://x.io:8080", "ftp://x.io")
                .replace("[GET,", "[FETCH,"),
        );
        assert!(e.contains("cors.allowOrigins[2]: not an origin"), "{e}");
        assert!(
            e.contains("cors.allowMethods[0]: unsupported method"),
            "{e}"
        );
    }

    #[test]
    fn header_names_equal_up_to_case_keep_the_first() {
        let text = route(
            r#"  - matches: [{headers: [{name: Version, value: one}, {name: version, value: two}]}]
"#,
        );
        let c = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        let h = &c.routes[0].rules[0].matches[0].headers;
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].value, StringMatch::Exact("one".into()));
    }

    #[test]
    fn path_modifiers_are_kept() {
        let text = route(
            r#"  - matches: [{path: {type: PathPrefix, value: /old/}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
"#,
        );
        let c = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        assert!(matches!(
            &c.routes[0].rules[0].filters[0],
            Filter::Rewrite(r) if r.path == Some(PathModifier::ReplacePrefixMatch("/new".into()))
        ));
    }

    #[test]
    fn namespaces_grants_and_selectors() {
        let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {env: prod}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: team-b}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team-a}]
  to: [{group: "", kind: Service, name: svc}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {env: prod}
          matchExpressions: [{key: tier, operator: NotIn, values: [legacy]}]
"#;
        let c = parse_documents([(Path::new("t.yaml"), text)]).unwrap();
        assert_eq!(
            c.namespaces[0].labels["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(c.reference_grants[0].to[0].name.as_deref(), Some("svc"));
        let AllowedRoutes::Selector(sel) = &c.gateways[0].listeners[0].allowed_routes else {
            panic!("selector expected")
        };
        assert_eq!(sel.match_expressions[0].operator, LabelOperator::NotIn);
        assert!(sel.matches(&c.namespaces[0].labels));
        let e = errors(&text.replace("operator: NotIn", "operator: Maybe"));
        assert!(
            e.contains("matchExpressions[0].operator: unsupported operator"),
            "{e}"
        );
    }
}
