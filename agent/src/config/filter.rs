//! Conversion of HTTPRoute filters (rule level and backendRef level), with
//! the CRD's enum and CEL checks.
use http::{HeaderName, HeaderValue};

use super::{
    model, resources as wire,
    validate::{hostname, Doc},
};

/// What filter conversion needs to know about the rule.
#[derive(Clone, Copy)]
pub(super) struct FilterContext<'a> {
    /// The route's namespace, the default for backend references.
    pub namespace: &'a str,
    /// The rule has exactly one match and it is a PathPrefix, which
    /// `ReplacePrefixMatch` requires.
    pub single_prefix_match: bool,
}

/// Converts rule-level (`rule_level`) or backendRef-level filters.
pub(super) fn filters(
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
                | "ExternalAuth"
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
            ("externalAuth", f.external_auth.is_some()),
        ];
        let expected = match ty {
            "RequestHeaderModifier" => Some("requestHeaderModifier"),
            "ResponseHeaderModifier" => Some("responseHeaderModifier"),
            "RequestRedirect" => Some("requestRedirect"),
            "URLRewrite" => Some("urlRewrite"),
            "RequestMirror" => Some("requestMirror"),
            "CORS" => Some("cors"),
            "ExternalAuth" => Some("externalAuth"),
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
            "RequestMirror" | "CORS" | "ExternalAuth" if !rule_level => {
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
                .map(|r| model::Filter::Redirect(Box::new(r)))
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
                .and_then(|c| cors_filter(doc, &format!("{field}.cors"), c))
                .map(|c| model::Filter::Cors(Box::new(c))),
            "ExternalAuth" => f.external_auth.as_ref().and_then(|e| {
                super::policy::convert::ext_auth(
                    doc,
                    &format!("{field}.externalAuth"),
                    e,
                    ctx.namespace,
                )
                .map(|e| model::Filter::ExternalAuth(Box::new(e)))
            }),
            "ExtensionRef" => {
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
                         ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror, CORS, ExternalAuth)"
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

pub(super) fn cors_filter(
    doc: &mut Doc<'_>,
    at: &str,
    c: &wire::HttpCorsFilter,
) -> Option<model::Cors> {
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
