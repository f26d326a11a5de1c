//! Request matching and match precedence, as the Gateway API defines them for
//! HTTPRoute: a match holds when its path, method, every header and every
//! query parameter condition hold; among matching rules the most specific
//! wins (see [`precedence`]).
use std::{borrow::Cow, cmp::Ordering, cmp::Reverse};

use http::{HeaderMap, Method};

use super::RouteEntry;
use crate::config::{PathMatch, RouteMatch};

/// What matching needs to know about a request, computed once per request.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// Decoded query parameters in request order.
    query: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> RequestView<'a> {
    pub fn new(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> Self {
        let query = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Self {
            method,
            path,
            headers,
            query,
        }
    }

    /// The request's value of a header: repeated headers are combined with
    /// `,` (RFC 9110 §5.3). `None` when absent or not valid text.
    fn header(&self, name: &http::HeaderName) -> Option<Cow<'a, str>> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?.to_str().ok()?;
        let mut rest = values.peekable();
        if rest.peek().is_none() {
            return Some(Cow::Borrowed(first));
        }
        let mut joined = first.to_owned();
        for v in rest {
            joined.push(',');
            joined.push_str(v.to_str().ok()?);
        }
        Some(Cow::Owned(joined))
    }

    /// The first value of a query parameter (names are case-sensitive). The
    /// spec leaves repeated parameters open and suggests the first value.
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Whether every condition of `m` holds for the request.
pub fn matches(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    m.path.matches(req.path)
        && m.method.as_ref().is_none_or(|method| method == req.method)
        && m.headers
            .iter()
            .all(|h| req.header(&h.name).is_some_and(|v| h.value.matches(&v)))
        && m.query_params
            .iter()
            .all(|q| req.query(&q.name).is_some_and(|v| q.value.matches(v)))
}

/// Gateway API precedence among entries of the same hostname: an Exact path,
/// then (implementation-specific, as in Envoy Gateway) a RegularExpression path
/// by pattern length, then the longest PathPrefix; then a method match; then
/// more header matches; then more query matches; then the older route
/// (creation time, then namespace/name); then rule order within a route.
/// `Less` means `a` is tried first.
///
/// GRPCRoute matches rank by their own rule: the longer service, then the
/// longer method, then more header matches. GRPCRoutes and HTTPRoutes must
/// not share a hostname (the status refuses the younger one); should their
/// entries meet anyway, HTTPRoute entries come first, which keeps the order
/// total.
pub fn precedence(a: &RouteEntry, b: &RouteEntry) -> Ordering {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Rank {
        Http(u8, Reverse<usize>, bool, Reverse<usize>, Reverse<usize>),
        Grpc(Reverse<u16>, Reverse<u16>, Reverse<usize>),
    }
    fn rank(m: &RouteMatch) -> Rank {
        if let Some(g) = m.grpc {
            return Rank::Grpc(
                Reverse(g.service),
                Reverse(g.method),
                Reverse(m.headers.len()),
            );
        }
        let (kind, len) = match &m.path {
            PathMatch::Exact(s) => (0u8, s.len()),
            PathMatch::Regex(p) => (1, p.as_str().len()),
            PathMatch::Prefix(s) => (2, s.len()),
        };
        Rank::Http(
            kind,
            Reverse(len),
            m.method.is_none(),
            Reverse(m.headers.len()),
            Reverse(m.query_params.len()),
        )
    }
    rank(&a.matcher)
        .cmp(&rank(&b.matcher))
        .then_with(|| a.created.cmp(&b.created))
        .then_with(|| a.route.cmp(&b.route))
        .then(a.rule.cmp(&b.rule))
        .then(a.match_index.cmp(&b.match_index))
}

/// `%XX` decoding; invalid escapes and non-UTF-8 results are kept as written.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{HeaderName, HeaderValue};

    use super::*;
    use crate::{
        config::{HeaderMatch, ObjectRef, Pattern, QueryMatch, StringMatch},
        snapshot::{RouteTable, RuleAction},
    };

    fn view<'a>(method: &'a Method, pq: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        let (path, query) = match pq.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (pq, None),
        };
        RequestView::new(method, path, query, headers)
    }

    fn header(name: &str, value: StringMatch) -> HeaderMatch {
        HeaderMatch {
            name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value,
        }
    }

    fn exact(s: &str) -> StringMatch {
        StringMatch::Exact(s.into())
    }

    fn regex(s: &str) -> StringMatch {
        StringMatch::Regex(Pattern::new(s).unwrap())
    }

    fn entry(
        order: usize,
        rule: usize,
        m: RouteMatch,
        tag: &str,
    ) -> (Option<crate::config::Hostname>, RouteEntry) {
        (
            None,
            RouteEntry {
                route: Arc::new(ObjectRef::new("ns", tag)),
                route_name: Arc::from(tag),
                created: (order as i64, 0),
                rule: rule as u32,
                match_index: 0,
                matcher: Arc::new(m),
                action: Arc::new(RuleAction::default()),
            },
        )
    }

    #[test]
    fn header_names_are_case_insensitive_and_values_exact() {
        let m = RouteMatch {
            headers: vec![header("Version", exact("one"))].into(),
            ..RouteMatch::path(PathMatch::Prefix("/".into()))
        };
        let mut h = HeaderMap::new();
        h.insert("version", HeaderValue::from_static("one"));
        assert!(matches(&m, &view(&Method::GET, "/", &h)));
        h.insert("version", HeaderValue::from_static("One"));
        assert!(!matches(&m, &view(&Method::GET, "/", &h)));
        assert!(!matches(&m, &view(&Method::GET, "/", &HeaderMap::new())));
    }

    #[test]
    fn header_regex_matches_whole_value() {
        let m = RouteMatch {
            headers: vec![header("x-id", regex("[0-9]+"))].into(),
            ..RouteMatch::path(PathMatch::Prefix("/".into()))
        };
        let mut h = HeaderMap::new();
        h.insert("x-id", HeaderValue::from_static("123"));
        assert!(matches(&m, &view(&Method::GET, "/", &h)));
        h.insert("x-id", HeaderValue::from_static("123a"));
        assert!(!matches(&m, &view(&Method::GET, "/", &h)));
    }

    #[test]
    fn repeated_headers_are_joined_with_commas() {
        let m = RouteMatch {
            headers: vec![header("x", exact("a,b"))].into(),
            ..RouteMatch::path(PathMatch::Prefix("/".into()))
        };
        let mut h = HeaderMap::new();
        h.append("x", HeaderValue::from_static("a"));
        h.append("x", HeaderValue::from_static("b"));
        assert!(matches(&m, &view(&Method::GET, "/", &h)));
    }

    #[test]
    fn query_params_exact_regex_first_value_and_decoding() {
        let m = RouteMatch {
            query_params: vec![
                QueryMatch {
                    name: "animal".into(),
                    value: exact("whale"),
                },
                QueryMatch {
                    name: "n".into(),
                    value: regex("[0-9]{2}"),
                },
            ]
            .into(),
            ..RouteMatch::path(PathMatch::Prefix("/".into()))
        };
        let h = HeaderMap::new();
        assert!(matches(&m, &view(&Method::GET, "/?animal=whale&n=42", &h)));
        assert!(matches(
            &m,
            &view(&Method::GET, "/?n=42&animal=wh%61le", &h)
        ));
        assert!(!matches(
            &m,
            &view(&Method::GET, "/?animal=dolphin&animal=whale&n=42", &h)
        ));
        assert!(
            !matches(&m, &view(&Method::GET, "/?Animal=whale&n=42", &h)),
            "names are case-sensitive"
        );
        assert!(!matches(
            &m,
            &view(&Method::GET, "/?animal=whale&n=420", &h)
        ));
        assert!(!matches(&m, &view(&Method::GET, "/?animal=whale", &h)));
    }

    #[test]
    fn method_and_regex_path() {
        let m = RouteMatch {
            method: Some(Method::POST),
            ..RouteMatch::path(PathMatch::Regex(Pattern::new("/v[0-9]+/.*").unwrap()))
        };
        let h = HeaderMap::new();
        assert!(matches(&m, &view(&Method::POST, "/v2/users", &h)));
        assert!(!matches(&m, &view(&Method::GET, "/v2/users", &h)));
        assert!(!matches(&m, &view(&Method::POST, "/x/v2/users", &h)));
    }

    #[test]
    fn precedence_follows_the_spec_order() {
        let prefix = |p: &str| RouteMatch::path(PathMatch::Prefix(p.into()));
        let with_method = RouteMatch {
            method: Some(Method::GET),
            ..prefix("/")
        };
        let one_header = RouteMatch {
            headers: vec![header("a", exact("1"))].into(),
            ..prefix("/")
        };
        let two_headers = RouteMatch {
            headers: vec![header("a", exact("1")), header("b", exact("2"))].into(),
            ..prefix("/")
        };
        let query = RouteMatch {
            headers: vec![header("a", exact("1"))].into(),
            query_params: vec![QueryMatch {
                name: "q".into(),
                value: exact("1"),
            }]
            .into(),
            ..prefix("/")
        };
        let t = RouteTable::build(vec![
            entry(0, 0, prefix("/"), "plain"),
            entry(0, 1, one_header.clone(), "one-header"),
            entry(0, 2, two_headers, "two-headers"),
            entry(0, 3, query, "header-and-query"),
            entry(0, 4, with_method, "method"),
            entry(0, 5, prefix("/long"), "long"),
            entry(
                0,
                6,
                RouteMatch::path(PathMatch::Exact("/long".into())),
                "exact",
            ),
            entry(1, 0, one_header, "newer-route"),
        ]);
        let mut h = HeaderMap::new();
        let name = |m: &Method, pq: &str, h: &HeaderMap| {
            t.find("h", &view(m, pq, h))
                .map(|e| e.route.name.clone())
                .unwrap()
        };
        assert_eq!(name(&Method::GET, "/long", &h), "exact");
        assert_eq!(name(&Method::GET, "/long/x", &h), "long");
        assert_eq!(name(&Method::GET, "/", &h), "method");
        assert_eq!(name(&Method::POST, "/", &h), "plain");
        h.insert("a", HeaderValue::from_static("1"));
        assert_eq!(
            name(&Method::POST, "/", &h),
            "one-header",
            "older route wins the tie"
        );
        assert_eq!(name(&Method::POST, "/?q=1", &h), "header-and-query");
        h.insert("b", HeaderValue::from_static("2"));
        assert_eq!(name(&Method::POST, "/?q=1", &h), "two-headers");
    }

    #[test]
    fn grpc_precedence_is_service_then_method_then_headers() {
        let grpc = |path: PathMatch, service: u16, method: u16| RouteMatch {
            grpc: Some(crate::config::GrpcMethodRank { service, method }),
            ..RouteMatch::path(path)
        };
        // Method-only as a regex, which as an HTTPRoute path would be tried
        // before the service prefix: for gRPC the service ranks first.
        let method_only = grpc(PathMatch::Regex(Pattern::new("/[^/]+/Say").unwrap()), 0, 3);
        let service_only = grpc(PathMatch::Prefix("/a.Echo".into()), 6, 0);
        let with_header = RouteMatch {
            headers: vec![header("x", exact("1"))].into(),
            ..grpc(PathMatch::Prefix("/a.Echo".into()), 6, 0)
        };
        let t = RouteTable::build(vec![
            entry(0, 0, method_only, "method-only"),
            entry(0, 1, service_only, "service-only"),
            entry(1, 0, with_header, "service-and-header"),
            entry(0, 2, grpc(PathMatch::Prefix("/".into()), 0, 0), "any"),
        ]);
        let mut h = HeaderMap::new();
        let name = |pq: &str, h: &HeaderMap| {
            t.find("h", &view(&Method::POST, pq, h))
                .map(|e| e.route.name.clone())
                .unwrap()
        };
        assert_eq!(name("/a.Echo/Say", &h), "service-only");
        assert_eq!(name("/b.Echo/Say", &h), "method-only");
        assert_eq!(name("/b.Echo/Other", &h), "any");
        h.insert("x", HeaderValue::from_static("1"));
        assert_eq!(name("/a.Echo/Say", &h), "service-and-header");
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%ff"), "%ff");
    }
}
