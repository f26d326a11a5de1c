//! CORS, for the HTTPRoute CORS filter and the policy `cors` section alike
//! (one implementation): preflight requests are answered here; actual requests
//! get the CORS response headers when their Origin is allowed. Wildcards are
//! answered by echoing what the client asked for, which the spec allows in
//! every case (and requires when credentials are allowed).
use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::{full, Body, SectionMeta};

/// `HTTPCORSFilter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<OriginPattern>,
    pub allow_credentials: bool,
    /// Method names; `*` allows any.
    pub allow_methods: Vec<String>,
    /// Header names; `*` allows any.
    pub allow_headers: Vec<String>,
    /// Header names; `*` exposes all.
    pub expose_headers: Vec<String>,
    /// Seconds (default 5).
    pub max_age: u32,
}

/// One `allowOrigins` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin.
    Any,
    /// `scheme://host[:port]`; `host_suffix` is set for `*.example.com`
    /// (as `.example.com`, one or more labels in front) or for a lone `*`
    /// host (as the empty string: any host).
    Origin {
        scheme: String,
        host: String,
        host_suffix: Option<String>,
        /// Explicit or the scheme's default.
        port: u16,
    },
}

/// CORS on the data path: from a policy `cors` section or an HTTPRoute
/// CORS filter (which, being the most specific, wins).
#[derive(Debug)]
pub struct CorsPolicy {
    pub cors: Cors,
    /// The policy section, when it came from a SluicePolicy (the HTTPRoute
    /// filter is not counted as a policy decision).
    pub meta: Option<Arc<SectionMeta>>,
}

impl CorsPolicy {
    /// The answer to a preflight request; `None` for any other request.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
        if !is_preflight(method, headers) {
            return None;
        }
        if let Some(m) = &self.meta {
            m.allowed();
        }
        Some(preflight(&self.cors, headers))
    }

    /// Adds the CORS response headers of an actual request.
    pub fn annotate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        annotate(&self.cors, origin, headers);
    }
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Whether `origin` (`scheme://host[:port]`, as sent by a browser) is allowed.
pub fn origin_allowed(c: &Cors, origin: &str) -> bool {
    let Some((scheme, host, port)) = parse_origin(origin) else {
        return false;
    };
    c.allow_origins.iter().any(|p| match p {
        OriginPattern::Any => true,
        OriginPattern::Origin {
            scheme: s,
            host: h,
            host_suffix,
            port: pt,
        } => {
            s == scheme
                && *pt == port
                && match host_suffix {
                    // A lone `*` host, or `*.suffix`: one or more labels in front.
                    Some(suffix) => {
                        suffix.is_empty()
                            || (host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                    }
                    None => *h == host,
                }
        }
    })
}

fn parse_origin(origin: &str) -> Option<(&str, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (rest, default),
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

fn list(values: &[String]) -> Option<HeaderValue> {
    HeaderValue::from_str(&values.join(", ")).ok()
}

/// The gateway's answer to a preflight request: 204, with CORS headers only
/// when the Origin is allowed (the browser then refuses the actual request).
pub fn preflight(c: &Cors, req: &HeaderMap) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = req.get(header::ORIGIN) else {
        return resp;
    };
    if !origin.to_str().is_ok_and(|o| origin_allowed(c, o)) {
        return resp;
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if c.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if c.allow_methods.iter().any(|m| m == "*") {
        if let Some(m) = req.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m.clone());
        }
    } else if let Some(v) = (!c.allow_methods.is_empty())
        .then(|| list(&c.allow_methods))
        .flatten()
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if c.allow_headers.iter().any(|x| x == "*") {
        if let Some(v) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
    } else if let Some(v) = (!c.allow_headers.is_empty())
        .then(|| list(&c.allow_headers))
        .flatten()
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    expose(c, h);
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(c.max_age));
    resp
}

fn expose(c: &Cors, h: &mut HeaderMap) {
    let wildcard = c.expose_headers.iter().any(|x| x == "*");
    // `*` cannot be used with credentials, and the names are not known ahead.
    if wildcard && c.allow_credentials {
        return;
    }
    let value = if wildcard {
        Some(HeaderValue::from_static("*"))
    } else {
        (!c.expose_headers.is_empty())
            .then(|| list(&c.expose_headers))
            .flatten()
    };
    if let Some(v) = value {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

/// Adds the CORS headers of an actual (non-preflight) cross-origin request
/// to its response.
pub fn annotate(c: &Cors, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
    resp.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else { return };
    if !origin.to_str().is_ok_and(|o| origin_allowed(c, o)) {
        return;
    }
    resp.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if c.allow_credentials {
        resp.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    expose(c, resp);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(raw: &str) -> OriginPattern {
        if raw == "*" {
            return OriginPattern::Any;
        }
        let (scheme, host) = raw.split_once("://").unwrap();
        let (host, port) = match host.split_once(':') {
            Some((h, p)) => (h, p.parse().unwrap()),
            None => (host, if scheme == "https" { 443 } else { 80 }),
        };
        let host_suffix = match host {
            "*" => Some(String::new()),
            h => h.strip_prefix('*').map(str::to_owned),
        };
        OriginPattern::Origin {
            scheme: scheme.into(),
            host: host.into(),
            host_suffix,
            port,
        }
    }

    fn cors(origins: &[&str], credentials: bool, methods: &[&str], headers: &[&str]) -> Cors {
        Cors {
            allow_origins: origins.iter().map(|o| pattern(o)).collect(),
            allow_credentials: credentials,
            allow_methods: methods.iter().map(|s| s.to_string()).collect(),
            allow_headers: headers.iter().map(|s| s.to_string()).collect(),
            expose_headers: vec!["x-header-3".into(), "x-header-4".into()],
            max_age: 3600,
        }
    }

    #[test]
    fn origin_matching() {
        let c = cors(
            &[
                "https://www.foo.com",
                "https://*.bar.com",
                "http://local:8080",
            ],
            false,
            &[],
            &[],
        );
        assert!(origin_allowed(&c, "https://www.foo.com"));
        assert!(origin_allowed(&c, "https://www.foo.com:443"));
        assert!(!origin_allowed(&c, "http://www.foo.com"));
        assert!(!origin_allowed(&c, "https://www.foo.com:8443"));
        assert!(origin_allowed(&c, "https://www.bar.com"));
        assert!(origin_allowed(&c, "https://xpto.www.bar.com"));
        assert!(!origin_allowed(&c, "https://bar.com"));
        assert!(!origin_allowed(&c, "https://foobar.com"));
        assert!(origin_allowed(&c, "http://local:8080"));
        assert!(!origin_allowed(&c, "http://local"));
        assert!(origin_allowed(
            &cors(&["*"], false, &[], &[]),
            "https://foobar.com:12345"
        ));
    }

    fn request(origin: &str, method: &str, headers: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            method.parse().unwrap(),
        );
        if let Some(v) = headers {
            h.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn preflight_with_lists_and_credentials() {
        let c = cors(
            &["https://www.foo.com"],
            true,
            &["GET", "OPTIONS"],
            &["x-header-1", "x-header-2"],
        );
        let r = preflight(
            &c,
            &request("https://www.foo.com", "GET", Some("x-header-1")),
        );
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://www.foo.com");
        assert_eq!(h["access-control-allow-methods"], "GET, OPTIONS");
        assert_eq!(h["access-control-allow-headers"], "x-header-1, x-header-2");
        assert_eq!(h["access-control-expose-headers"], "x-header-3, x-header-4");
        assert_eq!(h["access-control-max-age"], "3600");
        assert_eq!(h["access-control-allow-credentials"], "true");
        let r = preflight(&c, &request("https://foobar.com", "GET", None));
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }

    #[test]
    fn preflight_wildcards_echo_the_request() {
        let c = cors(&["*"], true, &["*"], &["*"]);
        let r = preflight(
            &c,
            &request(
                "https://other.foo.com",
                "PUT",
                Some("x-header-1, x-header-2"),
            ),
        );
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://other.foo.com");
        assert_eq!(h["access-control-allow-methods"], "PUT");
        assert_eq!(h["access-control-allow-headers"], "x-header-1, x-header-2");
        let r = preflight(&c, &request("https://other.foo.com", "PUT", None));
        assert!(r.headers().get("access-control-allow-headers").is_none());
    }

    #[test]
    fn actual_request_headers() {
        let c = cors(&["https://www.foo.com"], false, &[], &[]);
        let mut h = HeaderMap::new();
        annotate(
            &c,
            Some(&HeaderValue::from_static("https://www.foo.com")),
            &mut h,
        );
        assert_eq!(h["access-control-allow-origin"], "https://www.foo.com");
        assert!(h.get("access-control-allow-credentials").is_none());
        let mut h = HeaderMap::new();
        annotate(
            &c,
            Some(&HeaderValue::from_static("https://evil.com")),
            &mut h,
        );
        assert!(h.get("access-control-allow-origin").is_none());
        assert_eq!(h["vary"], "Origin");
    }
}
