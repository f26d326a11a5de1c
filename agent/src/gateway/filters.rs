//! HTTPRoute filters on the data path: header modifiers, redirects and URL
//! rewrites. Pure functions over header maps and strings, so each rule of the
//! spec is unit-tested here without sockets.
use http::{HeaderMap, HeaderValue};

use crate::config::{HeaderModifier, PathMatch, PathModifier, Redirect, Rewrite};

/// Applies a header modifier: remove, then set (replacing every value), then
/// add (appending a value). Names are case-insensitive by construction.
pub fn modify_headers(m: &HeaderModifier, headers: &mut HeaderMap) {
    for name in &m.remove {
        headers.remove(name);
    }
    for (name, value) in &m.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &m.add {
        headers.append(name.clone(), value.clone());
    }
}

/// The path after a path modifier. `matched` is the match that selected the
/// rule; `ReplacePrefixMatch` replaces its prefix element-wise, keeping what
/// follows (`/foo/bar` with prefix `/foo` and replacement `/xyz` → `/xyz/bar`).
pub fn modify_path(modifier: &PathModifier, matched: &PathMatch, path: &str) -> String {
    match modifier {
        PathModifier::ReplaceFullPath(p) => p.clone(),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let rest = match matched {
                // Validation only admits PathPrefix matches here; anything else
                // keeps the whole path after the replacement.
                PathMatch::Prefix(prefix) if prefix != "/" => {
                    path.get(prefix.len()..).unwrap_or("")
                }
                _ => path,
            };
            let mut out = replacement.trim_end_matches('/').to_owned();
            out.push_str(rest);
            if out.is_empty() {
                out.push('/');
            }
            out
        }
    }
}

/// What a redirect needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RedirectContext<'a> {
    /// `http` or `https`: the listener's protocol.
    pub scheme: &'a str,
    pub listener_port: u16,
    /// Request host, without port.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub matched: &'a PathMatch,
}

/// The `Location` of a RequestRedirect. Port rules of the Gateway API: an
/// explicit port wins; else a configured scheme brings its well-known port;
/// else the listener's port. The port is left out when it is the default for
/// the resulting scheme (80 for http, 443 for https).
pub fn redirect_location(r: &Redirect, ctx: RedirectContext<'_>) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(ctx.scheme);
    let port = match (r.port, r.scheme.as_deref()) {
        (Some(p), _) => p,
        (None, Some("http")) => 80,
        (None, Some("https")) => 443,
        (None, _) => ctx.listener_port,
    };
    let host = r.hostname.as_deref().unwrap_or(ctx.host);
    let mut out = format!("{scheme}://");
    if host.contains(':') {
        // An IPv6 literal from the Host header.
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
    let default_port = matches!((scheme, port), ("http", 80) | ("https", 443));
    if !default_port {
        out.push(':');
        out.push_str(&port.to_string());
    }
    match &r.path {
        Some(m) => out.push_str(&modify_path(m, ctx.matched, ctx.path)),
        None => out.push_str(ctx.path),
    }
    if let Some(q) = ctx.query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The request target and Host after a URLRewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub path: String,
    /// Replacement Host, if the rewrite names one.
    pub host: Option<String>,
}

pub fn rewrite(r: &Rewrite, matched: &PathMatch, path: &str) -> Rewritten {
    Rewritten {
        path: match &r.path {
            Some(m) => modify_path(m, matched, path),
            None => path.to_owned(),
        },
        host: r.hostname.clone(),
    }
}

/// A `Location` value; redirect hosts and paths are validated, so this only
/// fails on a request path with bytes a header cannot carry.
pub fn location_header(location: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(location).ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    #[test]
    fn header_modifier_removes_sets_and_adds() {
        let m = HeaderModifier {
            set: vec![(
                HeaderName::from_static("x-set"),
                HeaderValue::from_static("new"),
            )],
            add: vec![(
                HeaderName::from_static("x-add"),
                HeaderValue::from_static("two"),
            )],
            remove: vec![HeaderName::from_static("x-remove")],
        };
        let mut h = HeaderMap::new();
        h.append("X-Set", HeaderValue::from_static("old1"));
        h.append("X-Set", HeaderValue::from_static("old2"));
        h.insert("x-add", HeaderValue::from_static("one"));
        h.insert("X-Remove", HeaderValue::from_static("gone"));
        modify_headers(&m, &mut h);
        assert_eq!(h.get_all("x-set").iter().collect::<Vec<_>>(), ["new"]);
        assert_eq!(
            h.get_all("x-add").iter().collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(!h.contains_key("x-remove"));
    }

    #[test]
    fn replace_prefix_match_table_of_the_spec() {
        // (request path, matched prefix as configured, replacement, result)
        let table = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/anything", "/", "/xyz", "/xyz/anything"),
        ];
        for (path, matched, replacement, want) in table {
            // Configured prefixes are stored without a trailing slash (see config).
            let stored = matched.trim_end_matches('/');
            let stored = if stored.is_empty() { "/" } else { stored };
            let got = modify_path(
                &PathModifier::ReplacePrefixMatch(replacement.into()),
                &prefix(stored),
                path,
            );
            assert_eq!(got, want, "{path} {matched} {replacement}");
        }
        assert_eq!(
            modify_path(
                &PathModifier::ReplaceFullPath("/one".into()),
                &prefix("/full"),
                "/full/x"
            ),
            "/one"
        );
    }

    fn redirect(scheme: Option<&str>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme: scheme.map(Into::into),
            hostname: Some("example.org".into()),
            path: None,
            port,
            status: 302,
        }
    }

    fn location(r: &Redirect, listener_scheme: &str, listener_port: u16) -> String {
        redirect_location(
            r,
            RedirectContext {
                scheme: listener_scheme,
                listener_port,
                host: "gw.example.com",
                path: "/p",
                query: None,
                matched: &prefix("/"),
            },
        )
    }

    #[test]
    fn redirect_port_defaults() {
        // Listener on port 80 (http).
        assert_eq!(
            location(&redirect(None, None), "http", 80),
            "http://example.org/p"
        );
        assert_eq!(
            location(&redirect(None, Some(80)), "http", 80),
            "http://example.org/p"
        );
        assert_eq!(
            location(&redirect(None, Some(8080)), "http", 80),
            "http://example.org:8080/p"
        );
        assert_eq!(
            location(&redirect(Some("https"), None), "http", 80),
            "https://example.org/p"
        );
        assert_eq!(
            location(&redirect(Some("https"), Some(443)), "http", 80),
            "https://example.org/p"
        );
        assert_eq!(
            location(&redirect(Some("https"), Some(8443)), "http", 80),
            "https://example.org:8443/p"
        );
        // Listener on 8080: no scheme and no port keep the listener port.
        assert_eq!(
            location(&redirect(None, None), "http", 8080),
            "http://example.org:8080/p"
        );
        assert_eq!(
            location(&redirect(None, Some(80)), "http", 8080),
            "http://example.org/p"
        );
        assert_eq!(
            location(&redirect(Some("https"), None), "http", 8080),
            "https://example.org/p"
        );
        // HTTPS listener on 443.
        assert_eq!(
            location(&redirect(None, None), "https", 443),
            "https://example.org/p"
        );
        assert_eq!(
            location(&redirect(Some("http"), None), "https", 443),
            "http://example.org/p"
        );
        assert_eq!(
            location(&redirect(Some("http"), Some(8080)), "https", 443),
            "http://example.org:8080/p"
        );
    }

    #[test]
    fn redirect_keeps_request_host_path_and_query_when_unset() {
        let r = Redirect {
            scheme: None,
            hostname: None,
            path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
            port: None,
            status: 301,
        };
        let got = redirect_location(
            &r,
            RedirectContext {
                scheme: "http",
                listener_port: 80,
                host: "gw.example.com",
                path: "/old/x",
                query: Some("a=1"),
                matched: &prefix("/old"),
            },
        );
        assert_eq!(got, "http://gw.example.com/new/x?a=1");
        let v6 = RedirectContext {
            scheme: "http",
            listener_port: 8080,
            host: "::1",
            path: "/",
            query: None,
            matched: &prefix("/"),
        };
        assert_eq!(
            redirect_location(&Redirect { path: None, ..r }, v6),
            "http://[::1]:8080/"
        );
    }

    #[test]
    fn rewrite_host_and_path() {
        let r = Rewrite {
            hostname: Some("backend.example.org".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
        };
        assert_eq!(
            rewrite(&r, &prefix("/v1"), "/v1/users"),
            Rewritten {
                path: "/v2/users".into(),
                host: Some("backend.example.org".into())
            }
        );
    }
}
