//! The RFC 9111 rules of a *shared* cache: reading `Cache-Control`, whether
//! a response may be stored (§3, §3.5), its freshness lifetime (§4.2.1)
//! and age (§4.2.3), and when a stale response may still be used
//! (RFC 5861 `stale-while-revalidate` / `stale-if-error`).
//!
//! Deliberately stricter than the RFC where it allows a choice that could
//! leak one client's answer to another: responses with `Set-Cookie` are
//! never stored, `private="field"` and `no-cache="field"` count as their
//! unqualified forms, and no heuristic freshness is used unless the policy
//! sets `defaultTtl`.
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method, StatusCode};

/// The directives of `Cache-Control` a shared cache acts on. Durations in
/// seconds; a directive given twice keeps the smaller value (the safer one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate` (the same for a shared cache).
    pub must_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// The directives of every `Cache-Control` field of `headers`.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Not readable: treated as if it forbade reuse.
                cc.no_store = true;
                continue;
            };
            for item in split_directives(value) {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                // An unreadable number makes the response stale (§4.2.1): 0.
                let secs = || Some(arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0));
                let keep_min = |slot: &mut Option<u64>, v: Option<u64>| {
                    *slot = match (*slot, v) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                };
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => keep_min(&mut cc.max_age, secs()),
                    "s-maxage" => keep_min(&mut cc.s_maxage, secs()),
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    "stale-while-revalidate" => keep_min(&mut cc.stale_while_revalidate, secs()),
                    "stale-if-error" => keep_min(&mut cc.stale_if_error, secs()),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Splits a `Cache-Control` value at commas outside quoted strings.
fn split_directives(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// What a request asks of the cache (§5.2.1).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDirectives {
    /// `no-cache`, or `Pragma: no-cache` without `Cache-Control`: a stored
    /// response must be validated first.
    pub no_cache: bool,
    /// `no-store`: nothing of this exchange is stored.
    pub no_store: bool,
    /// `max-age`: stored responses older than this are not acceptable.
    pub max_age: Option<u64>,
}

impl RequestDirectives {
    pub fn parse(headers: &HeaderMap) -> Self {
        let cc = CacheControl::parse(headers);
        let pragma_no_cache = !headers.contains_key(header::CACHE_CONTROL)
            && headers
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
        Self {
            no_cache: cc.no_cache || pragma_no_cache,
            no_store: cc.no_store,
            max_age: cc.max_age,
        }
    }
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1),
/// less 206 (ranges are not stored).
fn cacheable_by_default(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Why a response is not stored (the `detail` of `Cache-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    /// A request with credentials and a response that does not allow
    /// sharing it (§3.5).
    Authorization,
    VaryStar,
    SetCookie,
    /// No freshness information, no validator and no `defaultTtl`.
    NoFreshness,
}

impl NotStored {
    pub fn detail(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::VaryStar => "vary-star",
            NotStored::SetCookie => "set-cookie",
            NotStored::NoFreshness => "no-freshness",
        }
    }
}

/// The request facts storability depends on.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub directives: RequestDirectives,
    /// The client sent `Authorization`, or a policy authenticated it: the
    /// response may be personal.
    pub authorized: bool,
}

/// Whether a response may be stored (§3), and if so its freshness
/// lifetime: explicit (`s-maxage`, `max-age`, `Expires`), else
/// `default_ttl`, else zero when it carries a validator (stored, and
/// revalidated on every use).
pub fn storable(
    req: RequestFacts<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    default_ttl: Option<Duration>,
) -> Result<Duration, NotStored> {
    if req.method != Method::GET {
        return Err(NotStored::Method);
    }
    // Final answers only; no ranges, no 304s; server errors only as 501
    // (cacheable by default): a passing outage must not be kept.
    let s = status.as_u16();
    if !(200..500).contains(&s) && s != 501 || s == 206 || s == 304 {
        return Err(NotStored::Status);
    }
    if cc.no_store || req.directives.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if req.authorized && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if vary_names(headers).is_none() {
        return Err(NotStored::VaryStar);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let explicit = explicit_lifetime(headers, cc);
    let by_default = cacheable_by_default(status);
    match explicit {
        Some(l) => Ok(l),
        None if !by_default && !cc.public => Err(NotStored::Status),
        None => match default_ttl {
            Some(ttl) if !cc.no_cache => Ok(ttl),
            _ if has_validator(headers) => Ok(Duration::ZERO),
            _ => Err(NotStored::NoFreshness),
        },
    }
}

/// The freshness lifetime the origin gave (§4.2.1): `s-maxage`, `max-age`,
/// then `Expires` − `Date`. A `no-cache` response is stored but never
/// fresh: lifetime zero.
pub fn explicit_lifetime(headers: &HeaderMap, cc: &CacheControl) -> Option<Duration> {
    if cc.no_cache {
        return Some(Duration::ZERO);
    }
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(s));
    }
    let expires = headers.get(header::EXPIRES)?;
    // An invalid Expires (e.g. "0") means already expired.
    let Some(expires) = http_date(expires) else {
        return Some(Duration::ZERO);
    };
    let date = headers
        .get(header::DATE)
        .and_then(http_date)
        .unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// Whether the response has a validator for a conditional request.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// The lower-case field names of `Vary`; `None` for `Vary: *` (never matches).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<http::HeaderName>> {
    let mut names = Vec::new();
    for v in headers.get_all(header::VARY) {
        let Ok(v) = v.to_str() else { return None };
        for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if n == "*" {
                return None;
            }
            let Ok(name) = http::HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()) else {
                return None;
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// The age the response already had when it was received (§4.2.3):
/// the larger of the apparent age (received − `Date`) and `Age` plus the
/// time the exchange took.
pub fn initial_age(headers: &HeaderMap, sent: SystemTime, received: SystemTime) -> Duration {
    let apparent = headers
        .get(header::DATE)
        .and_then(http_date)
        .and_then(|d| received.duration_since(d).ok())
        .unwrap_or(Duration::ZERO);
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let delay = received.duration_since(sent).unwrap_or(Duration::ZERO);
    apparent.max(age + delay)
}

fn http_date(v: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn facts(authorized: bool) -> RequestFacts<'static> {
        RequestFacts {
            method: &Method::GET,
            directives: RequestDirectives::default(),
            authorized,
        }
    }

    fn check(pairs: &[(&str, &str)], status: u16, authorized: bool) -> Result<u64, NotStored> {
        let h = headers(pairs);
        storable(
            facts(authorized),
            StatusCode::from_u16(status).unwrap(),
            &h,
            &CacheControl::parse(&h),
            None,
        )
        .map(|d| d.as_secs())
    }

    #[test]
    fn directives_are_parsed_case_insensitively_with_quotes_and_duplicates() {
        let h = headers(&[
            ("cache-control", "Max-Age=60, no-cache=\"set-cookie, x-a\""),
            (
                "cache-control",
                "max-age=30, s-maxage=\"90\", Proxy-Revalidate",
            ),
            (
                "cache-control",
                "stale-while-revalidate=5, stale-if-error=7, public",
            ),
        ]);
        let cc = CacheControl::parse(&h);
        assert_eq!(cc.max_age, Some(30), "the smaller of two max-age wins");
        assert_eq!(cc.s_maxage, Some(90));
        assert!(cc.no_cache && cc.must_revalidate && cc.public && !cc.private);
        assert_eq!(cc.stale_while_revalidate, Some(5));
        assert_eq!(cc.stale_if_error, Some(7));
        let bad = CacheControl::parse(&headers(&[("cache-control", "max-age=soon")]));
        assert_eq!(bad.max_age, Some(0), "an unreadable max-age is stale");
    }

    #[test]
    fn storability_follows_the_shared_cache_rules() {
        assert_eq!(
            check(&[("cache-control", "max-age=60")], 200, false),
            Ok(60)
        );
        assert_eq!(
            check(&[("cache-control", "max-age=60, s-maxage=5")], 200, false),
            Ok(5),
            "s-maxage wins in a shared cache"
        );
        assert_eq!(
            check(&[("cache-control", "no-store, max-age=60")], 200, false),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(&[("cache-control", "private, max-age=60")], 200, false),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(&[("cache-control", "max-age=60")], 200, true),
            Err(NotStored::Authorization)
        );
        for allowed in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            assert!(
                check(&[("cache-control", allowed)], 200, true).is_ok(),
                "{allowed}"
            );
        }
        assert_eq!(
            check(
                &[("cache-control", "max-age=60"), ("vary", "*")],
                200,
                false
            ),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            check(
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
                200,
                false
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(check(&[], 200, false), Err(NotStored::NoFreshness));
        assert_eq!(
            check(&[("etag", "\"v1\"")], 200, false),
            Ok(0),
            "validator only"
        );
        assert_eq!(
            check(
                &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
                200,
                false
            ),
            Ok(0)
        );
        assert_eq!(
            check(&[("cache-control", "max-age=60")], 206, false),
            Err(NotStored::Status)
        );
        assert_eq!(
            check(&[("cache-control", "max-age=60")], 500, false),
            Err(NotStored::Status)
        );
        assert_eq!(
            check(&[("cache-control", "max-age=60")], 302, false),
            Ok(60)
        );
        assert_eq!(
            check(&[("etag", "\"v1\"")], 302, false),
            Err(NotStored::Status)
        );
        let h = headers(&[]);
        let with_default = storable(
            facts(false),
            StatusCode::OK,
            &h,
            &CacheControl::parse(&h),
            Some(Duration::from_secs(9)),
        );
        assert_eq!(with_default, Ok(Duration::from_secs(9)));
        let post = RequestFacts {
            method: &Method::POST,
            ..facts(false)
        };
        let h = headers(&[("cache-control", "max-age=60")]);
        assert_eq!(
            storable(post, StatusCode::OK, &h, &CacheControl::parse(&h), None),
            Err(NotStored::Method)
        );
    }

    #[test]
    fn expires_counts_from_date_and_an_invalid_one_is_expired() {
        let h = headers(&[
            ("date", "Mon, 07 Dec 2026 04:00:00 GMT"),
            ("expires", "Mon, 07 Dec 2026 04:02:00 GMT"),
        ]);
        assert_eq!(
            explicit_lifetime(&h, &CacheControl::parse(&h)),
            Some(Duration::from_secs(120))
        );
        let h = headers(&[("expires", "0")]);
        assert_eq!(
            explicit_lifetime(&h, &CacheControl::parse(&h)),
            Some(Duration::ZERO)
        );
        let h = headers(&[
            ("cache-control", "max-age=5"),
            ("expires", "Mon, 07 Dec 2026 04:02:00 GMT"),
        ]);
        assert_eq!(
            explicit_lifetime(&h, &CacheControl::parse(&h)),
            Some(Duration::from_secs(5)),
            "max-age wins over Expires"
        );
    }

    #[test]
    fn age_is_the_larger_of_apparent_and_corrected_age() {
        let received = httpdate::parse_http_date("Mon, 07 Dec 2026 04:00:10 GMT").unwrap();
        let sent = received - Duration::from_secs(1);
        let h = headers(&[("date", "Mon, 07 Dec 2026 04:00:00 GMT"), ("age", "3")]);
        assert_eq!(initial_age(&h, sent, received), Duration::from_secs(10));
        let h = headers(&[("date", "Mon, 07 Dec 2026 04:00:10 GMT"), ("age", "30")]);
        assert_eq!(initial_age(&h, sent, received), Duration::from_secs(31));
    }

    #[test]
    fn request_directives_and_pragma() {
        let r = RequestDirectives::parse(&headers(&[("pragma", "no-cache")]));
        assert!(r.no_cache);
        let r = RequestDirectives::parse(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=5"),
        ]));
        assert!(!r.no_cache, "Pragma only counts without Cache-Control");
        assert_eq!(r.max_age, Some(5));
    }

    #[test]
    fn vary_names_are_sorted_and_star_never_matches() {
        let h = headers(&[("vary", "Accept-Encoding, accept"), ("vary", "X-Tenant")]);
        let names: Vec<_> = vary_names(&h)
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["accept", "accept-encoding", "x-tenant"]);
        assert!(vary_names(&headers(&[("vary", "accept, *")])).is_none());
    }
}
