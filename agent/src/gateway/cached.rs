//! The upstream phase through a route's response cache
//! ([`crate::policy::response_cache`]). Runs after every request phase of
//! the policy (a hit never skips authentication, authorization or rate
//! limits) and before the upstream phase proper; only routes with a
//! `cache` section come here. A hit is answered without touching the
//! upstream pools; the response phase (CORS, response transforms) runs on
//! it as on any response. Every response of a cached route carries our
//! `Cache-Status` entry (RFC 9211).
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use http::{header, request::Parts, HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::{
    forward::Target,
    full,
    proxy::{Answered, ConnInfo, Proxy, UpstreamSeen},
    Body,
};
use crate::policy::{
    response_cache::{
        add_conditions,
        coalesce::{FlightGuard, Join},
        fill::Fill,
        key::BaseKey,
        respond, respond_not_modified,
        rules::{vary_names, RequestDirectives, RequestFacts},
        satisfies_conditions,
        store::{Entry, Found},
        CacheStatus, ResponseCache,
    },
    Rejection,
};

/// The access log and metric label of answers from the cache.
const CACHE_HIT: Answered = Answered("cache_hit");

/// Bound of a background refresh when the route sets no request timeout.
const REFRESH_LIMIT: Duration = Duration::from_secs(60);

/// Marks a response as answered by the cache.
fn from_cache(mut resp: Response<Body>) -> Response<Body> {
    resp.extensions_mut().insert(CACHE_HIT);
    resp
}

fn with_status(mut resp: Response<Body>, status: CacheStatus) -> Response<Body> {
    status.apply(resp.headers_mut());
    resp
}

fn reject_with_status(r: Rejection, status: CacheStatus) -> Rejection {
    r.with_header(
        http::HeaderName::from_static("cache-status"),
        status.value(),
    )
}

/// Whether the client sent conditions of its own (then its answer may be a
/// 304 meant for it; such requests are neither coalesced nor used to refresh).
fn conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::IF_MODIFIED_SINCE)
}

impl Proxy {
    /// The upstream phase through `cache`. `authorized`: the client sent
    /// `Authorization` or a policy section authenticated it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn cached(
        self: &Arc<Self>,
        cache: &Arc<ResponseCache>,
        authorized: bool,
        t: Target<'_>,
        conn: &ConnInfo,
        parts: Parts,
        body: Body,
        seen: &mut UpstreamSeen,
    ) -> Result<Response<Body>, Rejection> {
        let store = &cache.store;
        let base = BaseKey::new(
            &t.entry.route_name,
            t.entry.rule,
            t.scheme,
            t.host,
            &parts.uri,
        );
        let method = parts.method.clone();
        if method != Method::GET && method != Method::HEAD {
            let status = CacheStatus::forwarded("method");
            let outcome = self.forward(t, conn, parts, body, seen).await;
            // A successful unsafe request changed the resource (RFC 9111 §4.4).
            if let Ok(r) = &outcome {
                if !method.is_safe() && (r.status().is_success() || r.status().is_redirection()) {
                    store.invalidate(&base);
                }
            }
            return outcome
                .map(|r| with_status(r, status))
                .map_err(|r| reject_with_status(r, status));
        }
        let directives = RequestDirectives::parse(&parts.headers);
        let facts = RequestFacts {
            method: &method,
            directives,
            authorized,
        };
        let head = method == Method::HEAD;
        let now = Instant::now();
        let (fwd, stale) = match store.lookup(&base, &parts.headers) {
            Found::Entry(e) => {
                let young_enough = directives.max_age.is_none_or(|m| e.age(now).as_secs() <= m);
                if e.is_fresh(now) && young_enough && !directives.no_cache {
                    store.count_hit();
                    let status = CacheStatus {
                        hit: true,
                        ttl: Some(e.ttl(now)),
                        ..CacheStatus::default()
                    };
                    // The client's own validators match: it has the body.
                    if satisfies_conditions(&e, &parts.headers) {
                        return Ok(from_cache(respond_not_modified(&e, now, status)));
                    }
                    return Ok(from_cache(respond(&e, head, now, status)));
                }
                if !directives.no_cache && young_enough && e.within_stale_while_revalidate(now) {
                    store.count_hit();
                    self.refresh_in_background(cache, base, &e, &t, conn, &parts);
                    let status = CacheStatus {
                        hit: true,
                        ttl: Some(e.ttl(now)),
                        detail: Some("stale-while-revalidate"),
                        ..CacheStatus::default()
                    };
                    return Ok(from_cache(respond(&e, head, now, status)));
                }
                let fwd = if directives.no_cache {
                    "request"
                } else {
                    "stale"
                };
                (fwd, Some(e))
            }
            Found::VaryMiss => ("vary-miss", None),
            Found::UriMiss => ("uri-miss", None),
        };
        store.count_miss();
        if let Some(entry) = stale {
            return self
                .revalidate(cache, base, facts, entry, fwd, t, conn, parts, body, seen)
                .await;
        }
        // Misses of one key go upstream once; HEAD and conditional requests
        // are answered for themselves only.
        let mut guard = None;
        if !head && !conditional(&parts.headers) {
            match store.flights.join(&store.key(&base, &parts.headers)) {
                Join::Leader(g) => guard = Some(g),
                Join::Follower(w) => {
                    let done = w.wait(cache.spec.coalesce_wait).await;
                    let now = Instant::now();
                    if let (true, Found::Entry(e)) = (done, store.lookup(&base, &parts.headers)) {
                        if e.is_fresh(now) {
                            store.count_hit();
                            let status = CacheStatus {
                                fwd: Some(fwd),
                                collapsed: true,
                                ttl: Some(e.ttl(now)),
                                ..CacheStatus::default()
                            };
                            return Ok(from_cache(respond(&e, head, now, status)));
                        }
                    }
                }
            }
        }
        let request_headers = parts.headers.clone();
        let sent = SystemTime::now();
        match self.forward(t, conn, parts, body, seen).await {
            Ok(resp) => Ok(store_response(
                cache,
                base,
                facts,
                &request_headers,
                sent,
                resp,
                guard,
                fwd,
            )),
            Err(r) => Err(reject_with_status(r, CacheStatus::forwarded(fwd))),
        }
    }

    /// Forwards a request for a stale (or request-`no-cache`) entry with
    /// its validators: a 304 refreshes the entry, a server error or failure
    /// within `stale-if-error` is answered with the entry, anything else
    /// replaces it.
    #[allow(clippy::too_many_arguments)]
    async fn revalidate(
        self: &Arc<Self>,
        cache: &Arc<ResponseCache>,
        base: BaseKey,
        facts: RequestFacts<'_>,
        entry: Arc<Entry>,
        fwd: &'static str,
        t: Target<'_>,
        conn: &ConnInfo,
        mut parts: Parts,
        body: Body,
        seen: &mut UpstreamSeen,
    ) -> Result<Response<Body>, Rejection> {
        let head = parts.method == Method::HEAD;
        let own_conditions = conditional(&parts.headers);
        let request_headers = parts.headers.clone();
        add_conditions(&entry, &mut parts.headers);
        let sent = SystemTime::now();
        let outcome = self.forward(t, conn, parts, body, seen).await;
        let now = Instant::now();
        let stand_in = |upstream: StatusCode| {
            let status = CacheStatus {
                fwd: Some(fwd),
                fwd_status: Some(upstream.as_u16()),
                ttl: Some(entry.ttl(now)),
                detail: Some("stale-if-error"),
                ..CacheStatus::default()
            };
            cache.store.count_hit();
            Ok(from_cache(respond(&entry, head, now, status)))
        };
        match outcome {
            Ok(resp) if resp.status() == StatusCode::NOT_MODIFIED && !own_conditions => {
                let fresh = cache.refreshed(&entry, resp.headers(), sent);
                let status = CacheStatus {
                    fwd: Some(fwd),
                    fwd_status: Some(304),
                    stored: true,
                    ttl: Some(fresh.ttl(now)),
                    ..CacheStatus::default()
                };
                let answer = respond(&fresh, head, now, status);
                let names = vary_names(&fresh.headers).unwrap_or_default();
                cache.store.insert(base, names, fresh);
                Ok(answer)
            }
            Ok(resp) if resp.status().is_server_error() && entry.within_stale_if_error(now) => {
                stand_in(resp.status())
            }
            Err(r) if entry.within_stale_if_error(now) => stand_in(r.status),
            Ok(resp) => Ok(store_response(
                cache,
                base,
                facts,
                &request_headers,
                sent,
                resp,
                None,
                fwd,
            )),
            Err(r) => Err(reject_with_status(r, CacheStatus::forwarded(fwd))),
        }
    }

    /// Revalidates `entry` in the background (`stale-while-revalidate`),
    /// once at a time per key: the request it is served to does not wait.
    fn refresh_in_background(
        self: &Arc<Self>,
        cache: &Arc<ResponseCache>,
        base: BaseKey,
        entry: &Arc<Entry>,
        t: &Target<'_>,
        conn: &ConnInfo,
        parts: &Parts,
    ) {
        let Join::Leader(guard) = cache
            .store
            .flights
            .join(&cache.store.key(&base, &parts.headers))
        else {
            return;
        };
        // Owned copies: the task outlives the request.
        let (proxy, cache, entry) = (self.clone(), cache.clone(), entry.clone());
        let (route, host, authority) = (t.entry.clone(), t.host.to_owned(), t.authority.clone());
        let (listener_port, scheme, conn) = (t.listener_port, t.scheme, conn.clone());
        let mut request = http::Request::new(());
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            request.headers_mut().remove(h);
        }
        tokio::spawn(async move {
            let t = Target {
                entry: &route,
                listener_port,
                scheme,
                host: &host,
                authority: &authority,
                body_sent: None,
            };
            let (mut parts, ()) = request.into_parts();
            let request_headers = parts.headers.clone();
            add_conditions(&entry, &mut parts.headers);
            let limit = route.action.timeouts.request.unwrap_or(REFRESH_LIMIT);
            let sent = SystemTime::now();
            let mut seen = UpstreamSeen::default();
            let forwarded = proxy.forward(t, &conn, parts, full(""), &mut seen);
            let Ok(Ok(resp)) = tokio::time::timeout(limit, forwarded).await else {
                return;
            };
            if resp.status() == StatusCode::NOT_MODIFIED {
                let fresh = cache.refreshed(&entry, resp.headers(), sent);
                let names = vary_names(&fresh.headers).unwrap_or_default();
                cache.store.insert(base, names, fresh);
                return;
            }
            let facts = RequestFacts {
                method: &Method::GET,
                directives: RequestDirectives::default(),
                authorized: false,
            };
            let resp = store_response(
                &cache,
                base,
                facts,
                &request_headers,
                sent,
                resp,
                Some(guard),
                "stale",
            );
            // Read it (to at most the entry limit) so that it is stored.
            let max = usize::try_from(cache.spec.max_entry_bytes).unwrap_or(usize::MAX);
            let mut body = resp.into_body();
            let drain = async {
                let mut read = 0usize;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, |d| d.len());
                    if read > max {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(limit, drain).await;
        });
    }
}

/// The upstream response with our `Cache-Status`, stored as it streams
/// when it may be (and fits the entry limit by its declared length);
/// `guard` is released once it is stored or known not to be.
#[allow(clippy::too_many_arguments)]
fn store_response(
    cache: &Arc<ResponseCache>,
    base: BaseKey,
    facts: RequestFacts<'_>,
    request_headers: &HeaderMap,
    sent: SystemTime,
    resp: Response<Body>,
    guard: Option<FlightGuard>,
    fwd: &'static str,
) -> Response<Body> {
    let (mut head, body) = resp.into_parts();
    let mut status = CacheStatus::forwarded(fwd);
    let limit = cache.spec.max_entry_bytes;
    let body = match cache.prepare(
        base,
        facts,
        request_headers,
        sent,
        head.status,
        &head.headers,
    ) {
        Ok(pending) => {
            let declared = head
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                status.detail = Some("too-large");
                body
            } else {
                status.stored = true;
                status.ttl = Some(pending.head.ttl(Instant::now()));
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                Fill::new(body, cache.store.clone(), pending, limit, guard).boxed()
            }
        }
        Err(why) => {
            status.detail = Some(why.detail());
            body
        }
    };
    status.apply(&mut head.headers);
    Response::from_parts(head, body)
}
