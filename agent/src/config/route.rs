//! Conversion of an HTTPRoute: parentRefs, hostnames, matches, filters,
//! backendRefs and timeouts, with the checks the Gateway API CRDs make
//! (enums, CEL rules) so that a file source rejects what an API server would.
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::{
    model, resources as wire,
    validate::{hostname, ns, Doc, GATEWAY_GROUP},
};

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
    let mut parents = Vec::new();
    for p in &r.spec.parent_refs {
        let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || kind != "Gateway" {
            // Not a parent this agent can be; other controllers may own it.
            continue;
        }
        parents.push(model::ParentRef {
            gateway: model::ObjectRef::new(
                p.namespace.clone().unwrap_or_else(|| namespace.clone()),
                &p.name,
            ),
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
                matches.push(m);
            }
        }
        if rule.matches.is_empty() {
            matches.push(model::RouteMatch::path(model::PathMatch::Prefix(
                "/".into(),
            )));
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
            let unsupported_kind =
                (!group.is_empty() || kind != "Service").then(|| format!("{group}/{kind}"));
            let port = match b.port {
                Some(p) => p,
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
            backends.push(model::BackendRef {
                service: model::ObjectRef::new(
                    b.namespace.clone().unwrap_or_else(|| namespace.clone()),
                    &b.name,
                ),
                port,
                weight: b.weight.unwrap_or(1),
                filters: backend_filters,
                unsupported_kind,
            });
        }
        let timeouts = timeouts(doc, &format!("{at}.timeouts"), rule.timeouts.as_ref());
        if rule.retry.is_some() {
            doc.err(format!("{at}.retry"), "retries are not supported yet");
        }
        if rule.session_persistence.is_some() {
            doc.err(
                format!("{at}.sessionPersistence"),
                "session persistence is not supported yet",
            );
        }
        rules.push(model::RouteRule {
            matches,
            filters: rule_filters,
            backends,
            timeouts,
        });
    }
    if r.spec.rules.is_empty() {
        rules.push(model::RouteRule {
            matches: vec![model::RouteMatch::path(model::PathMatch::Prefix(
                "/".into(),
            ))],
            filters: Vec::new(),
            backends: Vec::new(),
            timeouts: model::Timeouts::default(),
        });
    }
    (doc.errors.len() == before).then(|| model::HttpRoute {
        id: model::ObjectRef::new(namespace, &r.metadata.name),
        generation: r.metadata.generation,
        created,
        parents,
        hostnames,
        rules,
    })
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
        "Exact" => Some(model::PathMatch::Exact(value.to_owned())),
        "PathPrefix" => {
            let trimmed = value.trim_end_matches('/');
            Some(model::PathMatch::Prefix(
                if trimmed.is_empty() { "/" } else { trimmed }.into(),
            ))
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
        headers,
        query_params,
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

/// What filter conversion needs to know about the rule.
#[derive(Clone, Copy)]
struct FilterContext<'a> {
    /// The route's namespace, the default for backend references.
    namespace: &'a str,
    /// The rule has exactly one match and it is a PathPrefix, which
    /// `ReplacePrefixMatch` requires.
    single_prefix_match: bool,
}

/// Converts rule-level (`rule_level`) or backendRef-level filters.
fn filters(
    doc: &mut Doc<'_>,
    at: &str,
    raw: &[wire::HttpRouteFilter],
    ctx: FilterContext<'_>,
    rule_level: bool,
) -> Vec<model::Filter> {
    let single_prefix_match = ctx.single_prefix_match;
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, f) in raw.iter().enumerate() {
        let field = format!("{at}[{i}]");
        let ty = f.kind.as_str();
        // The CRD allows each of these at most once per list.
        if matches!(
            ty,
            "RequestHeaderModifier"
                | "ResponseHeaderModifier"
                | "RequestRedirect"
                | "URLRewrite"
                | "CORS"
        ) {
            if seen.contains(&ty) {
                doc.err(
                    format!("{field}.type"),
                    format!("filter {ty} may appear only once"),
                );
                continue;
            }
            seen.push(ty);
        }
        let set = [
            ("requestHeaderModifier", f.request_header_modifier.is_some()),
            (
                "responseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            ("requestRedirect", f.request_redirect.is_some()),
            ("urlRewrite", f.url_rewrite.is_some()),
            ("requestMirror", f.request_mirror.is_some()),
            ("cors", f.cors.is_some()),
        ];
        let expected = match ty {
            "RequestHeaderModifier" => Some("requestHeaderModifier"),
            "ResponseHeaderModifier" => Some("responseHeaderModifier"),
            "RequestRedirect" => Some("requestRedirect"),
            "URLRewrite" => Some("urlRewrite"),
            "RequestMirror" => Some("requestMirror"),
            "CORS" => Some("cors"),
            _ => None,
        };
        if let Some((other, _)) = set
            .iter()
            .find(|(name, present)| *present && Some(*name) != expected)
        {
            doc.err(
                format!("{field}.{other}"),
                format!("must not be set for filter type {ty}"),
            );
            continue;
        }
        let converted = match ty {
            "RequestHeaderModifier" => f
                .request_header_modifier
                .as_ref()
                .map(|m| header_modifier(doc, &format!("{field}.requestHeaderModifier"), m))
                .map(model::Filter::RequestHeaders),
            "ResponseHeaderModifier" => f
                .response_header_modifier
                .as_ref()
                .map(|m| header_modifier(doc, &format!("{field}.responseHeaderModifier"), m))
                .map(model::Filter::ResponseHeaders),
            "RequestMirror" | "CORS" if !rule_level => {
                // Support at backendRef level is implementation-specific in the spec.
                doc.err(
                    format!("{field}.type"),
                    format!("filter {ty} is not supported on a backendRef (use it on the rule)"),
                );
                continue;
            }
            "RequestRedirect" => f.request_redirect.as_ref().and_then(|r| {
                redirect(
                    doc,
                    &format!("{field}.requestRedirect"),
                    r,
                    single_prefix_match,
                )
                .map(model::Filter::Redirect)
            }),
            "URLRewrite" => f.url_rewrite.as_ref().and_then(|r| {
                rewrite(doc, &format!("{field}.urlRewrite"), r, single_prefix_match)
                    .map(model::Filter::Rewrite)
            }),
            "RequestMirror" => f
                .request_mirror
                .as_ref()
                .and_then(|m| mirror(doc, &format!("{field}.requestMirror"), m, ctx.namespace))
                .map(model::Filter::Mirror),
            "CORS" => f
                .cors
                .as_ref()
                .and_then(|c| cors(doc, &format!("{field}.cors"), c))
                .map(model::Filter::Cors),
            "ExternalAuth" | "ExtensionRef" => {
                doc.err(
                    format!("{field}.type"),
                    format!("filter {ty} is not supported yet"),
                );
                continue;
            }
            other => {
                doc.err(
                    format!("{field}.type"),
                    format!(
                        "unknown filter type {other:?} (supported: RequestHeaderModifier, \
                         ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror, CORS)"
                    ),
                );
                continue;
            }
        };
        match converted {
            Some(c) => out.push(c),
            None if expected.is_some_and(|e| !set.iter().any(|(n, p)| *n == e && *p)) => doc.err(
                format!("{field}.{}", expected.unwrap_or_default()),
                format!("required for filter type {ty}"),
            ),
            None => {}
        }
    }
    if seen.contains(&"RequestRedirect") && seen.contains(&"URLRewrite") {
        doc.err(
            at,
            "may specify either a RequestRedirect or a URLRewrite filter, but not both",
        );
    }
    out
}

fn mirror(
    doc: &mut Doc<'_>,
    at: &str,
    m: &wire::HttpRequestMirrorFilter,
    namespace: &str,
) -> Option<model::Mirror> {
    let before = doc.errors.len();
    let b = &m.backend_ref;
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        doc.err(
            format!("{at}.backendRef.kind"),
            format!("unsupported backend kind {group}/{kind} (supported: core Service)"),
        );
    }
    if b.port.is_none() {
        doc.err(
            format!("{at}.backendRef.port"),
            "port is required for a Service backend",
        );
    }
    let (numerator, denominator) = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            doc.err(at, "only one of percent or fraction may be specified");
            (0, 1)
        }
        (Some(p), None) if p > 100 => {
            doc.err(format!("{at}.percent"), "must be 0-100");
            (0, 1)
        }
        (Some(p), None) => (p, 100),
        (None, Some(f)) => {
            let d = f.denominator.unwrap_or(100);
            if d == 0 || f.numerator > d {
                doc.err(
                    format!("{at}.fraction"),
                    "denominator must be at least 1 and not below numerator",
                );
            }
            (f.numerator, d.max(1))
        }
        (None, None) => (1, 1),
    };
    (doc.errors.len() == before).then(|| model::Mirror {
        service: model::ObjectRef::new(b.namespace.as_deref().unwrap_or(namespace), &b.name),
        port: b.port.unwrap_or_default(),
        numerator,
        denominator,
    })
}

fn cors(doc: &mut Doc<'_>, at: &str, c: &wire::HttpCorsFilter) -> Option<model::Cors> {
    let before = doc.errors.len();
    let mut allow_origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        match origin_pattern(o) {
            Some(p) => allow_origins.push(p),
            None => doc.err(
                format!("{at}.allowOrigins[{i}]"),
                format!("not an origin (scheme://host[:port], host may start with *.) or *: {o:?}"),
            ),
        }
    }
    const METHODS: [&str; 10] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*",
    ];
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            doc.err(
                format!("{at}.allowMethods[{i}]"),
                format!("unsupported method {m:?}"),
            );
        }
    }
    let mut names = |list: &str, items: &[String]| {
        for (i, h) in items.iter().enumerate() {
            if h != "*" && HeaderName::from_bytes(h.as_bytes()).is_err() {
                doc.err(
                    format!("{at}.{list}[{i}]"),
                    format!("invalid header name {h:?}"),
                );
            }
        }
    };
    names("allowHeaders", &c.allow_headers);
    names("exposeHeaders", &c.expose_headers);
    if c.max_age == Some(0) {
        doc.err(format!("{at}.maxAge"), "must be at least 1");
    }
    (doc.errors.len() == before).then(|| model::Cors {
        allow_origins,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: c.max_age.unwrap_or(5),
    })
}

/// Parses an `allowOrigins` entry (the CRD pattern: `*`, or
/// `http(s)://host[:port]` where host may be `*` or start with `*.`).
pub(super) fn origin_pattern(raw: &str) -> Option<model::OriginPattern> {
    if raw == "*" {
        return Some(model::OriginPattern::Any);
    }
    let (scheme, rest) = raw.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse::<u16>().ok().filter(|p| *p > 0)?)
        }
        Some(_) => return None,
        None => (rest, default_port),
    };
    let host = host.to_ascii_lowercase();
    let label_ok =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let host_suffix = if host == "*" {
        Some(String::new())
    } else if let Some(suffix) = host.strip_prefix("*.") {
        if !suffix.split('.').all(label_ok) {
            return None;
        }
        Some(format!(".{suffix}"))
    } else {
        if !host.split('.').all(label_ok) {
            return None;
        }
        None
    };
    Some(model::OriginPattern::Origin {
        scheme: scheme.to_owned(),
        host,
        host_suffix,
        port,
    })
}

fn header_modifier(
    doc: &mut Doc<'_>,
    at: &str,
    m: &wire::HttpHeaderFilter,
) -> model::HeaderModifier {
    let mut out = model::HeaderModifier::default();
    let pairs = |doc: &mut Doc<'_>, list: &str, items: &[wire::HttpHeader]| {
        let mut v: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for (i, h) in items.iter().enumerate() {
            let field = format!("{at}.{list}[{i}]");
            let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
                doc.err(
                    format!("{field}.name"),
                    format!("invalid header name {:?}", h.name),
                );
                continue;
            };
            let Ok(value) = HeaderValue::from_str(&h.value) else {
                doc.err(
                    format!("{field}.value"),
                    format!("invalid header value {:?}", h.value),
                );
                continue;
            };
            if v.iter().any(|(n, _)| *n == name) {
                doc.err(
                    format!("{field}.name"),
                    format!("duplicate header {:?}", h.name),
                );
                continue;
            }
            v.push((name, value));
        }
        v
    };
    out.set = pairs(doc, "set", &m.set);
    out.add = pairs(doc, "add", &m.add);
    for (i, r) in m.remove.iter().enumerate() {
        match HeaderName::from_bytes(r.as_bytes()) {
            Ok(n) if !out.remove.contains(&n) => out.remove.push(n),
            Ok(_) => doc.err(
                format!("{at}.remove[{i}]"),
                format!("duplicate header {r:?}"),
            ),
            Err(_) => doc.err(
                format!("{at}.remove[{i}]"),
                format!("invalid header name {r:?}"),
            ),
        }
    }
    out
}

fn path_modifier(
    doc: &mut Doc<'_>,
    at: &str,
    p: &wire::HttpPathModifier,
    single_prefix_match: bool,
    filter: &str,
) -> Option<model::PathModifier> {
    let (value, modifier): (Option<&String>, fn(String) -> model::PathModifier) = match p
        .kind
        .as_str()
    {
        "ReplaceFullPath" => (
            p.replace_full_path.as_ref(),
            model::PathModifier::ReplaceFullPath,
        ),
        "ReplacePrefixMatch" => {
            if !single_prefix_match {
                doc.err(
                    format!("{at}.type"),
                    format!(
                        "when using {filter} with path.replacePrefixMatch, exactly one PathPrefix \
                         match must be specified"
                    ),
                );
                return None;
            }
            (
                p.replace_prefix_match.as_ref(),
                model::PathModifier::ReplacePrefixMatch,
            )
        }
        other => {
            doc.err(
                format!("{at}.type"),
                format!("unsupported path modifier {other:?} (supported: ReplaceFullPath, ReplacePrefixMatch)"),
            );
            return None;
        }
    };
    let field = if p.kind == "ReplaceFullPath" {
        "replaceFullPath"
    } else {
        "replacePrefixMatch"
    };
    let Some(value) = value else {
        doc.err(
            format!("{at}.{field}"),
            format!("required for type {}", p.kind),
        );
        return None;
    };
    if !value.starts_with('/') || value.contains(['?', '#']) {
        doc.err(
            format!("{at}.{field}"),
            format!("must be an absolute path without query or fragment: {value:?}"),
        );
        return None;
    }
    Some(modifier(value.clone()))
}

fn redirect(
    doc: &mut Doc<'_>,
    at: &str,
    r: &wire::HttpRequestRedirectFilter,
    single_prefix_match: bool,
) -> Option<model::Redirect> {
    let before = doc.errors.len();
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some(s @ ("http" | "https")) => Some(s.to_owned()),
        Some(other) => {
            doc.err(
                format!("{at}.scheme"),
                format!("unsupported scheme {other:?} (supported: http, https)"),
            );
            None
        }
    };
    let hostname = r
        .hostname
        .as_ref()
        .and_then(|h| exact_hostname(doc, &format!("{at}.hostname"), h));
    let path = r.path.as_ref().and_then(|p| {
        path_modifier(
            doc,
            &format!("{at}.path"),
            p,
            single_prefix_match,
            "RequestRedirect",
        )
    });
    if r.port == Some(0) {
        doc.err(format!("{at}.port"), "port must be 1-65535");
    }
    let status = r.status_code.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        doc.err(
            format!("{at}.statusCode"),
            format!("unsupported status code {status} (supported: 301, 302, 303, 307, 308)"),
        );
    }
    (doc.errors.len() == before).then_some(model::Redirect {
        scheme,
        hostname,
        path,
        port: r.port,
        status,
    })
}

fn rewrite(
    doc: &mut Doc<'_>,
    at: &str,
    r: &wire::HttpUrlRewriteFilter,
    single_prefix_match: bool,
) -> Option<model::Rewrite> {
    let before = doc.errors.len();
    let hostname = r
        .hostname
        .as_ref()
        .and_then(|h| exact_hostname(doc, &format!("{at}.hostname"), h));
    let path = r.path.as_ref().and_then(|p| {
        path_modifier(
            doc,
            &format!("{at}.path"),
            p,
            single_prefix_match,
            "URLRewrite",
        )
    });
    (doc.errors.len() == before).then_some(model::Rewrite { hostname, path })
}

/// A `PreciseHostname`: no wildcard.
fn exact_hostname(doc: &mut Doc<'_>, field: &str, raw: &str) -> Option<String> {
    match hostname(doc, field, raw)? {
        model::Hostname::Exact(h) => Some(h),
        model::Hostname::Wildcard(_) => {
            doc.err(field, format!("a wildcard is not allowed here: {raw:?}"));
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

/// A Gateway API `Duration`: 1-4 groups of up to 5 digits with unit h, m, s or ms.
pub(super) fn parse_duration(raw: &str) -> Option<Duration> {
    let mut rest = raw;
    let mut total = Duration::ZERO;
    let mut groups = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).ok()?;
        groups += 1;
    }
    (1..=4).contains(&groups).then_some(total)
}

/// An RFC 3339 timestamp (`2024-05-01T10:00:00Z`, optional fraction, `Z` or
/// `±hh:mm`) as (Unix seconds, nanoseconds).
pub(super) fn parse_timestamp(raw: &str) -> Option<(i64, u32)> {
    let b = raw.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(&raw[0..4])?, num(&raw[5..7])?, num(&raw[8..10])?);
    let (hour, min, sec) = (num(&raw[11..13])?, num(&raw[14..16])?, num(&raw[17..19])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &raw[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut s = frac[..digits.min(9)].to_owned();
        while s.len() < 9 {
            s.push('0');
        }
        nanos = s.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[3..4], ":") => {
            let sign = match &rest[0..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (num(&rest[1..3])? * 3600 + num(&rest[4..6])? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + min * 60 + sec - offset, nanos))
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::{parse_duration, parse_timestamp};
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
        let e = errors(&route("  - retry: {attempts: 2}\n"));
        assert!(
            e.contains("spec.rules[0].retry: retries are not supported yet"),
            "{e}"
        );
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
            super::origin_pattern("https://*.bar.com"),
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("123456s"), None);
        assert_eq!(parse_duration("1s1s1s1s1s"), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_timestamp("2024-03-01T00:00:00Z"),
            Some((1_709_251_200, 0))
        );
        assert_eq!(
            parse_timestamp("2024-03-01T01:00:00+01:00"),
            Some((1_709_251_200, 0))
        );
        assert_eq!(
            parse_timestamp("2024-03-01T00:00:00.5Z"),
            Some((1_709_251_200, 500_000_000))
        );
        assert_eq!(parse_timestamp("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
