//! The response cache (`cache` section): a shared HTTP cache per policy
//! with the RFC 9111 rules ([`rules`]), a byte-bounded store ([`store`])
//! keyed per route rule ([`key`]), coalescing of concurrent misses
//! ([`coalesce`]) and storing while streaming ([`fill`]).
//!
//! Not to be confused with [`super::cache`], the cache of verified
//! credentials. The request path is in `crate::gateway::cached`: the lookup
//! runs after authentication, authorization, rate limits and the request
//! transform (a hit never bypasses them) and before the upstream phase;
//! the response phase (CORS, response transforms) runs on hits too.
pub mod coalesce;
pub mod fill;
pub mod key;
pub mod metrics;
pub mod rules;
pub mod store;

use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use self::{
    fill::Pending,
    rules::{CacheControl, NotStored, RequestFacts},
    store::{Entry, Store},
};
use super::{full, Body, SectionMeta};

/// The validated `cache` section (what the store is built from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheSpec {
    /// Bound of everything the policy's store holds.
    pub max_bytes: u64,
    /// Bound of one entry; larger responses stream through uncached.
    pub max_entry_bytes: u64,
    /// Freshness of responses the origin gives none for; `None`: not stored
    /// (unless they carry a validator).
    pub default_ttl: Option<Duration>,
    /// How long concurrent misses wait for the one request that went upstream.
    pub coalesce_wait: Duration,
}

/// Default `maxBytes`: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default `maxEntryBytes`: 1 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 20;
/// Default `coalesceWait`.
pub const DEFAULT_COALESCE_WAIT: Duration = Duration::from_secs(5);

/// Problems of a `cache` section.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("maxBytes must be at least 1")]
    ZeroBytes,
    #[error("maxEntryBytes ({entry}) must not exceed maxBytes ({total})")]
    EntryOverTotal { entry: u64, total: u64 },
}

impl CacheSpec {
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_bytes == 0 || self.max_entry_bytes == 0 {
            return Err(Error::ZeroBytes);
        }
        if self.max_entry_bytes > self.max_bytes {
            return Err(Error::EntryOverTotal {
                entry: self.max_entry_bytes,
                total: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// The compiled section: the spec and the store it uses (from the policy
/// state, shared by every route the policy governs).
#[derive(Debug)]
pub struct ResponseCache {
    pub spec: CacheSpec,
    pub store: Arc<Store>,
    pub meta: Arc<SectionMeta>,
}

/// `Cache-Status` (RFC 9211) of one response: one entry, ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Answered from the cache without going upstream.
    pub hit: bool,
    /// Why it went upstream: `uri-miss`, `vary-miss`, `miss`, `stale`,
    /// `request`, `method`, `bypass`.
    pub fwd: Option<&'static str>,
    /// The upstream status, when it differs from the one sent (a 304 that
    /// refreshed an entry, an error a stale entry stood in for).
    pub fwd_status: Option<u16>,
    pub stored: bool,
    /// Answered with what a concurrent request fetched.
    pub collapsed: bool,
    /// Freshness left (negative: stale).
    pub ttl: Option<i64>,
    pub detail: Option<&'static str>,
}

/// The name of this cache in `Cache-Status`.
pub const CACHE_NAME: &str = "sluice";
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

impl CacheStatus {
    pub fn forwarded(fwd: &'static str) -> Self {
        Self {
            fwd: Some(fwd),
            ..Self::default()
        }
    }

    /// The field value.
    pub fn value(&self) -> HeaderValue {
        let mut s = String::from(CACHE_NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={f}");
        }
        if let Some(st) = self.fwd_status {
            let _ = write!(s, "; fwd-status={st}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(t) = self.ttl {
            let _ = write!(s, "; ttl={t}");
        }
        if let Some(d) = self.detail {
            let _ = write!(s, "; detail={d}");
        }
        HeaderValue::try_from(s).expect("cache status is ASCII")
    }

    /// Appends this entry to `headers` (after any upstream cache's).
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.append(CACHE_STATUS, self.value());
    }
}

/// Fields never stored: about one connection (RFC 9110 §7.6.1), or
/// recomputed on every use.
const NOT_STORED: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::AGE,
];

impl ResponseCache {
    /// The entry to store for an upstream response, or why there is none.
    /// `sent`: when the request went upstream (for its age).
    pub fn prepare(
        &self,
        base: key::BaseKey,
        req: RequestFacts<'_>,
        req_headers: &HeaderMap,
        sent: SystemTime,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Pending, NotStored> {
        let cc = CacheControl::parse(headers);
        let lifetime = rules::storable(req, status, headers, &cc, self.spec.default_ttl)?;
        let names = rules::vary_names(headers).ok_or(NotStored::VaryStar)?;
        let mut stored = headers.clone();
        for h in &NOT_STORED {
            stored.remove(h);
        }
        Ok(Pending {
            base,
            head: Entry {
                status,
                headers: stored,
                body: Bytes::new(),
                vary: key::vary_values(&names, req_headers),
                stored: Instant::now(),
                initial_age: rules::initial_age(headers, sent, SystemTime::now()),
                lifetime,
                cc,
            },
            names,
        })
    }

    /// The entry refreshed by a `304 Not Modified` (RFC 9111 §4.3.4): its
    /// fields updated from the 304's, its age restarted.
    pub fn refreshed(&self, entry: &Entry, not_modified: &HeaderMap, sent: SystemTime) -> Entry {
        let mut headers = entry.headers.clone();
        for name in not_modified.keys() {
            // The body did not change: neither did its framing.
            if NOT_STORED.contains(name)
                || name == header::CONTENT_LENGTH
                || name == header::CONTENT_ENCODING
            {
                continue;
            }
            headers.remove(name);
            for v in not_modified.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let cc = CacheControl::parse(&headers);
        let lifetime = rules::explicit_lifetime(&headers, &cc)
            .or(self.spec.default_ttl)
            .unwrap_or(Duration::ZERO);
        Entry {
            status: entry.status,
            initial_age: rules::initial_age(not_modified, sent, SystemTime::now()),
            headers,
            body: entry.body.clone(),
            vary: entry.vary.clone(),
            stored: Instant::now(),
            lifetime,
            cc,
        }
    }
}

/// The response for a stored entry (`head`: without the body).
pub fn respond(entry: &Entry, head: bool, now: Instant, status: CacheStatus) -> Response<Body> {
    let body = if head {
        full(Bytes::new())
    } else {
        full(entry.body.clone())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = entry.status;
    let headers = resp.headers_mut();
    *headers = entry.headers.clone();
    headers.insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
    status.apply(headers);
    resp
}

/// Whether a client's own conditions are met by a stored entry, so that a
/// `304 Not Modified` answers it (RFC 9111 §4.3.2; RFC 9110 §13.1.2:
/// `If-None-Match` with the weak comparison, which then decides alone;
/// else `If-Modified-Since` against `Last-Modified`).
pub fn satisfies_conditions(entry: &Entry, request: &HeaderMap) -> bool {
    let mut tags = request.get_all(header::IF_NONE_MATCH).iter().peekable();
    if tags.peek().is_some() {
        let Some(etag) = entry
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        return tags
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == "*" || opaque(t) == opaque(etag));
    }
    let date = |v: &HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
    match (
        request.get(header::IF_MODIFIED_SINCE).and_then(date),
        entry.headers.get(header::LAST_MODIFIED).and_then(date),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// The `304 Not Modified` for a stored entry whose validators the client
/// already has: its fields, no content.
pub fn respond_not_modified(entry: &Entry, now: Instant, status: CacheStatus) -> Response<Body> {
    let mut resp = respond(entry, true, now, status);
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

/// Adds the validators of a stored entry to a request that revalidates it
/// (RFC 9111 §4.3.1), unless the client sent conditions of its own.
pub fn add_conditions(entry: &Entry, headers: &mut HeaderMap) {
    if headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE)
    {
        return;
    }
    if let Some(etag) = entry.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    } else if let Some(lm) = entry.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyId, PolicyMetrics};

    fn cache() -> ResponseCache {
        let id = PolicyId::new("SluicePolicy", "ns", "p");
        ResponseCache {
            spec: CacheSpec {
                max_bytes: 1 << 20,
                max_entry_bytes: 1 << 16,
                default_ttl: None,
                coalesce_wait: DEFAULT_COALESCE_WAIT,
            },
            store: Arc::new(Store::new(id.clone(), 1 << 20, 1 << 16)),
            meta: Arc::new(PolicyMetrics::default().section(&id, "cache")),
        }
    }

    #[test]
    fn cache_status_values() {
        let v = CacheStatus {
            hit: true,
            ttl: Some(42),
            ..Default::default()
        };
        assert_eq!(v.value(), "sluice; hit; ttl=42");
        let v = CacheStatus {
            fwd: Some("stale"),
            fwd_status: Some(304),
            stored: true,
            ttl: Some(-3),
            ..Default::default()
        };
        assert_eq!(
            v.value(),
            "sluice; fwd=stale; fwd-status=304; stored; ttl=-3"
        );
        let mut h = HeaderMap::new();
        h.insert("cache-status", HeaderValue::from_static("origin; hit"));
        CacheStatus::forwarded("uri-miss").apply(&mut h);
        let all: Vec<_> = h.get_all("cache-status").iter().collect();
        assert_eq!(all, ["origin; hit", "sluice; fwd=uri-miss"]);
    }

    #[test]
    fn spec_bounds_are_checked() {
        let mut s = cache().spec;
        assert_eq!(s.validate(), Ok(()));
        s.max_entry_bytes = s.max_bytes + 1;
        assert!(matches!(s.validate(), Err(Error::EntryOverTotal { .. })));
        s.max_bytes = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_304_refreshes_fields_and_age_but_not_the_body() {
        let c = cache();
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let base = key::BaseKey::new(&Arc::from("ns/r"), 0, "http", "h", &"/".parse().unwrap());
        let req = RequestFacts {
            method: &http::Method::GET,
            directives: Default::default(),
            authorized: false,
        };
        let mut p = c
            .prepare(
                base,
                req,
                &HeaderMap::new(),
                SystemTime::now(),
                StatusCode::OK,
                &h,
            )
            .unwrap();
        assert!(!p.head.headers.contains_key(header::CONNECTION));
        p.head.body = Bytes::from_static(b"hello");
        let mut nm = HeaderMap::new();
        nm.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        nm.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let e = c.refreshed(&p.head, &nm, SystemTime::now());
        assert_eq!(e.lifetime, Duration::from_secs(60));
        assert_eq!(e.headers[header::CONTENT_LENGTH], "5");
        assert_eq!(e.headers[header::ETAG], "\"v1\"");
        assert_eq!(&e.body[..], b"hello");
        let mut req = HeaderMap::new();
        add_conditions(&e, &mut req);
        assert_eq!(req[header::IF_NONE_MATCH], "\"v1\"");
        let resp = respond(&e, true, Instant::now(), CacheStatus::default());
        assert_eq!(resp.headers()[header::AGE], "0");
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "5");
        let nm = respond_not_modified(&e, Instant::now(), CacheStatus::default());
        assert_eq!(nm.status(), StatusCode::NOT_MODIFIED);
        assert!(!nm.headers().contains_key(header::CONTENT_LENGTH));
        assert_eq!(nm.headers()[header::ETAG], "\"v1\"");
    }

    #[test]
    fn client_conditions_are_evaluated_against_the_entry() {
        let c = cache();
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Mon, 07 Dec 2026 04:00:00 GMT"),
        );
        let base = key::BaseKey::new(&Arc::from("ns/r"), 0, "http", "h", &"/".parse().unwrap());
        let req = RequestFacts {
            method: &http::Method::GET,
            directives: Default::default(),
            authorized: false,
        };
        let e = c
            .prepare(
                base,
                req,
                &HeaderMap::new(),
                SystemTime::now(),
                StatusCode::OK,
                &h,
            )
            .unwrap()
            .head;
        let cond = |pairs: &[(&'static str, &'static str)]| {
            let mut r = HeaderMap::new();
            for (n, v) in pairs {
                r.append(*n, HeaderValue::from_static(v));
            }
            satisfies_conditions(&e, &r)
        };
        assert!(
            cond(&[("if-none-match", "\"v0\", \"v1\"")]),
            "weak comparison"
        );
        assert!(cond(&[("if-none-match", "*")]));
        assert!(!cond(&[("if-none-match", "\"v2\"")]));
        assert!(
            !cond(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Tue, 08 Dec 2026 00:00:00 GMT")
            ]),
            "If-None-Match decides alone"
        );
        assert!(cond(&[(
            "if-modified-since",
            "Mon, 07 Dec 2026 04:00:00 GMT"
        )]));
        assert!(!cond(&[(
            "if-modified-since",
            "Mon, 07 Dec 2026 03:59:59 GMT"
        )]));
        assert!(!cond(&[]));
    }
}
