//! The upstream phase: the rule's HTTPRoute filters, the backend choice
//! and its filters, the request to the backend (with retries, mirrors and
//! the backend request timeout) and the response header modifiers. Every
//! answer the gateway makes itself here is a [`Rejection`].
use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use http::{
    header, request::Parts, uri::PathAndQuery, HeaderMap, HeaderName, HeaderValue, Request,
    Response, Uri,
};
use http_body_util::BodyExt;

use super::{
    body_idle::is_body_idle,
    deadline::Deadline,
    filters::{self, RedirectContext},
    full,
    mirror::{self, UpstreamBody},
    pool::{Dial, UpstreamError},
    proxy::{Answered, Authority, ConnInfo, Proxy, UpstreamSeen},
    retry::Replay,
    upgrade::{self, upgrade_protocol},
    upstream_tls, Body,
};
use crate::{
    config::{Filter, HeaderModifier, Redirect},
    policy::{
        upstream::{Hold, Outcome},
        Reason, Rejection,
    },
    snapshot::{upstream_tls::UpstreamTls, AppProtocol, Backend, BackendTarget, RouteEntry},
};

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The routing decision for one request.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub entry: &'a RouteEntry,
    pub listener_port: u16,
    /// `http` or `https`: how the request reached the gateway.
    pub scheme: &'static str,
    /// Request host, lower-case, without port.
    pub host: &'a str,
    /// Request authority as received (with port, if any).
    pub authority: &'a Authority,
    /// Set once the client's request body has been read to its end; `None`
    /// when the request has no body to stream.
    pub body_sent: Option<&'a AtomicBool>,
}

impl Target<'_> {
    /// The response of a RequestRedirect filter for the request as it
    /// stands after the filters before it (`path` may be rewritten).
    fn redirect(
        &self,
        r: &Redirect,
        path: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, Rejection> {
        let location = filters::redirect_location(
            r,
            RedirectContext {
                scheme: self.scheme,
                listener_port: self.listener_port,
                host: self.host,
                path,
                query,
                matched: &self.entry.matcher.path,
            },
        );
        let Some(value) = filters::location_header(&location) else {
            return Err(Rejection::new(
                Reason::BadRequest,
                "request path cannot be redirected",
            ));
        };
        let mut resp = Response::new(full(""));
        *resp.status_mut() =
            http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::FOUND);
        resp.headers_mut().insert(header::LOCATION, value);
        resp.extensions_mut().insert(Answered("redirect"));
        Ok(resp)
    }
}

impl Proxy {
    /// Runs the rule's filters, picks a backend, runs its filters and
    /// forwards (retries, mirrors, timeouts); the response comes back with
    /// the response header modifiers applied. One function rather than a
    /// chain of async calls: each level would store and copy its callee's
    /// state.
    pub(super) async fn forward(
        &self,
        t: Target<'_>,
        conn: &ConnInfo,
        parts: Parts,
        body: Body,
        seen: &mut UpstreamSeen,
    ) -> Result<Response<Body>, Rejection> {
        let Planned {
            backend,
            parts,
            path_and_query,
            upstream_host,
            response_mods,
        } = match plan(&t, parts) {
            Ok(p) => p,
            Err(answer) => return answer,
        };
        let upstream_host = upstream_host.as_deref();
        let response = 'send: {
            let action = &t.entry.action;
            // With resilience sections: the request's hold on the backend
            // (breaker slot, in-flight count) and the endpoint's index.
            // Boxed: the default path pays one word in this future's state.
            let mut held: Option<Box<(Hold, usize)>> = None;
            let endpoint = match &backend.target {
                BackendTarget::Invalid(reason) => {
                    tracing::debug!(route = %t.entry.route, %reason, "invalid backend");
                    break 'send Err(Rejection::new(
                        Reason::BackendNotResolvable,
                        "backend not resolvable",
                    ));
                }
                BackendTarget::Endpoints(_) => {
                    let picked = match &backend.resilience {
                        None => backend.endpoint(),
                        Some(r) => match r.admit() {
                            Err(refused) => break 'send Err(refused),
                            Ok(mut hold) => r.pick(&parts.headers, conn.peer.ip()).map(|i| {
                                hold.attempt(r, i);
                                held = Some(Box::new((hold, i)));
                                r.endpoint(i)
                            }),
                        },
                    };
                    match picked {
                        Some(ep) => ep,
                        None => {
                            break 'send Err(Rejection::new(
                                Reason::NoReadyEndpoints,
                                "no ready endpoints",
                            ))
                        }
                    }
                }
            };
            seen.endpoint = Some(endpoint);
            let mut req = Request::from_parts(parts, body);
            let upgrade = upgrade_protocol(&req);
            let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
            let upstream = upstream_request(
                req,
                conn,
                self.is_trusted(conn.peer.ip()),
                t.authority,
                upstream_host,
                path_and_query,
            )
            .map_err(|e| Rejection::new(Reason::BadRequest, e))?;
            // What the backend sees as Host: HTTP/2 to a TLS backend carries it
            // as `:authority` too.
            let host = upstream_host.unwrap_or(t.authority.as_str());
            if let (Some(protocol), Some(downstream)) = (upgrade, downstream_upgrade) {
                // Boxed: a rare path with connection set-up state.
                break 'send Box::pin(upgrade::forward(
                    upstream,
                    protocol,
                    endpoint,
                    backend.tls.as_deref(),
                    downstream,
                    &t.entry.route,
                    conn.shard,
                ))
                .await;
            }
            let upstream = self.send_mirrors(t.entry, upstream);
            let (mut request, replay) = match &action.retry {
                Some(_) => {
                    let (r, replay) = Replay::record(upstream);
                    (r, Some(replay))
                }
                None => (upstream, None),
            };
            let mut endpoint = endpoint;
            let mut retries = 0;
            // One clock reading for the first attempt's deadlines and, when
            // the request is logged, the upstream time.
            let mut first = Some(tokio::time::Instant::now());
            if seen.timed {
                seen.sent = first.map(tokio::time::Instant::into_std);
            }
            loop {
                // backendRequest covers one attempt until its full response is in.
                let now = first.take().unwrap_or_else(tokio::time::Instant::now);
                let deadline = action.timeouts.backend_request.map(|limit| now + limit);
                // A route without timeouts still gets an answer in time (the
                // default bounds the response head only: long downloads and
                // streams are not cut).
                let head_deadline = deadline.or_else(|| {
                    action
                        .timeouts
                        .request
                        .is_none()
                        .then(|| now + self.edge_of(conn).upstream_response_timeout)
                });
                seen.attempt_started(request.headers_mut(), endpoint);
                let dial = Dial {
                    endpoint,
                    h2c: backend.protocol == AppProtocol::H2c,
                    tls: backend.tls.as_ref(),
                    authority: host,
                    breaker: backend.resilience.as_deref(),
                };
                // Made in the arm that awaits it (see `Proxy::serve`).
                let outcome = match head_deadline {
                    Some(mut at) => {
                        let send = self.pools.send(dial, request);
                        tokio::pin!(send);
                        loop {
                            match tokio::time::timeout_at(at, &mut send).await {
                                Ok(r) => break Some(r),
                                // The default timeout waits for the backend, not
                                // for an upload still coming in (the body idle
                                // timeout bounds that): it starts again.
                                Err(_)
                                    if deadline.is_none()
                                        && t.body_sent
                                            .is_some_and(|s| !s.load(Ordering::Relaxed)) =>
                                {
                                    at += self.edge_of(conn).upstream_response_timeout;
                                }
                                Err(_) => break None,
                            }
                        }
                    }
                    None => Some(self.pools.send(dial, request).await),
                };
                seen.attempt_ended(outcome.as_ref());
                if let (Some(r), Some((_, i))) = (&backend.resilience, held.as_deref()) {
                    let o = match &outcome {
                        None => Some(Outcome::ServerError),
                        Some(Ok(resp)) if resp.status().is_server_error() => {
                            Some(Outcome::ServerError)
                        }
                        Some(Ok(_)) => Some(Outcome::Success),
                        // Refused here, or the client's upload stalled: not
                        // the endpoint's doing.
                        Some(Err(UpstreamError::Overflow(_))) => None,
                        Some(Err(e)) if is_body_idle(e) => None,
                        Some(Err(e)) if e.is_connect() => Some(Outcome::ConnectFailure),
                        Some(Err(_)) => Some(Outcome::ServerError),
                    };
                    if let Some(o) = o {
                        r.record(*i, o);
                    }
                }
                if let (Some(policy), Some(replay)) = (&action.retry, &replay) {
                    let retriable = match &outcome {
                        None => true,
                        Some(Err(e)) => e.is_connect(),
                        Some(Ok(resp)) => policy.codes.contains(&resp.status().as_u16()),
                    };
                    if retriable && retries < policy.attempts {
                        // Another endpoint of the same backend, if it has several;
                        // the pool gives the copy the target form its connection needs.
                        let next = match (&backend.resilience, held.as_deref_mut()) {
                            (None, _) => backend
                                .endpoint()
                                .and_then(|ep| Some((ep, replay.again()?))),
                            // Another endpoint in the rotation, within the
                            // breaker's retry budget.
                            (Some(r), Some((hold, i))) => {
                                replay.again().filter(|_| r.retry(hold)).map(|again| {
                                    let j = r.pick_other(*i);
                                    hold.attempt(r, j);
                                    *i = j;
                                    (r.endpoint(j), again)
                                })
                            }
                            (Some(_), None) => None,
                        };
                        if let Some((ep, again)) = next {
                            drop(outcome);
                            tokio::time::sleep(policy.backoff).await;
                            tracing::debug!(route = %t.entry.route, from = %endpoint, to = %ep, retry = retries + 1, "retrying");
                            retries += 1;
                            seen.retries = retries;
                            seen.endpoint = Some(ep);
                            endpoint = ep;
                            request = again;
                            continue;
                        }
                    }
                }
                break 'send match outcome {
                    None => {
                        self.count_timeout(conn.shard, "upstream_response");
                        Err(Rejection::new(
                            Reason::UpstreamTimeout,
                            "backend request timeout",
                        ))
                    }
                    Some(Ok(resp)) => {
                        seen.head = seen.sent.map(|t| t.elapsed());
                        let (mut parts, body) = resp.into_parts();
                        let coding = strip_hop_by_hop(&mut parts.headers);
                        // RFC 9112 §6.1: a message with both Content-Length
                        // and Transfer-Encoding is a smuggling attempt or a
                        // broken backend; hyper read it as chunked, but the
                        // Content-Length passed on would frame it
                        // differently downstream. Other codings would be
                        // lost with the (hop-by-hop) header.
                        let ambiguous = match coding {
                            Coding::None => false,
                            Coding::Chunked => parts.headers.contains_key(header::CONTENT_LENGTH),
                            Coding::Other => true,
                        };
                        if ambiguous {
                            tracing::warn!(route = %t.entry.route, endpoint = %endpoint, "backend response with Content-Length and Transfer-Encoding, or a coding other than chunked");
                            break 'send Err(Rejection::new(
                                Reason::UpstreamError,
                                "invalid response framing from backend",
                            ));
                        }
                        let body = body.map_err(Into::into).boxed();
                        let body = match deadline {
                            Some(at) => Deadline::new(body, at).boxed(),
                            None => body,
                        };
                        // The backend hold lasts until the body is done.
                        let body = match held.take() {
                            Some(h) => Held { body, _hold: h.0 }.boxed(),
                            None => body,
                        };
                        Ok(Response::from_parts(parts, body))
                    }
                    Some(Err(e)) if is_body_idle(&e) => {
                        self.count_timeout(conn.shard, "request_body");
                        Err(Rejection::new(
                            Reason::RequestBodyTimeout,
                            "request body timeout",
                        ))
                    }
                    Some(Err(UpstreamError::Overflow(refused))) => Err(*refused),
                    Some(Err(e)) => {
                        tracing::warn!(
                            route = %t.entry.route,
                            endpoint = %upstream_tls::describe(endpoint, backend.tls.as_ref()),
                            error = %upstream_tls::error_chain(&e),
                            "upstream request failed"
                        );
                        Err(Rejection::new(
                            if e.is_connect() {
                                Reason::UpstreamConnect
                            } else {
                                Reason::UpstreamError
                            },
                            "upstream unavailable",
                        ))
                    }
                };
            }
        };
        finish(response, &response_mods)
    }

    /// Starts the sampled mirrors of the rule with copies of `req` and
    /// returns the primary request, whose body now feeds the copies.
    fn send_mirrors(
        &self,
        entry: &RouteEntry,
        req: Request<UpstreamBody>,
    ) -> Request<UpstreamBody> {
        if entry.action.mirrors.is_empty() {
            return req;
        }
        let targets: Vec<(SocketAddr, Option<Arc<UpstreamTls>>, bool)> = entry
            .action
            .mirrors
            .iter()
            .filter(|m| m.sample())
            .filter_map(|m| {
                let ep = m.backend.endpoint();
                if ep.is_none() {
                    tracing::debug!(route = %entry.route, mirror = %m.backend.service, "mirror backend has no endpoint");
                }
                let h2c = m.backend.protocol == AppProtocol::H2c;
                Some((ep?, m.backend.tls.clone(), h2c))
            })
            .collect();
        let (parts, body) = req.into_parts();
        let (primary, copies) = mirror::tee(body, targets.len());
        let req = Request::from_parts(parts, primary);
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        for ((endpoint, tls, h2c), body) in targets.into_iter().zip(copies) {
            let copy = mirror::copy_head(&req, req.uri().clone(), body);
            let pools = self.pools.clone();
            let route = entry.route.clone();
            let host = host.clone();
            tokio::spawn(async move {
                let exchange = async {
                    let dial = Dial {
                        endpoint,
                        // HTTP/1.1 unless HTTP/2 is required (gRPC), or what
                        // ALPN picks over TLS.
                        h2c,
                        tls: tls.as_ref(),
                        authority: &host,
                        // Mirrors are fire and forget: no breaker counts them.
                        breaker: None,
                    };
                    match pools.send(dial, copy).await {
                        // Drained so the pooled connection can be reused.
                        Ok(resp) => resp
                            .into_body()
                            .collect()
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(upstream_tls::error_chain(&e)),
                    }
                };
                match tokio::time::timeout(mirror::MIRROR_TIMEOUT, exchange).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%route, %endpoint, error = %e, "mirror request failed")
                    }
                    Err(_) => tracing::debug!(%route, %endpoint, "mirror request timed out"),
                }
            });
        }
        req
    }
}

/// A response body that keeps the request's hold on its backend (breaker
/// slot, endpoint in-flight count) until it is done or dropped.
struct Held {
    body: Body,
    _hold: Hold,
}

impl hyper::body::Body for Held {
    type Data = bytes::Bytes;
    type Error = crate::policy::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What the filters decided for a request that goes to a backend.
struct Planned<'a> {
    backend: &'a Backend,
    parts: Parts,
    path_and_query: PathAndQuery,
    /// The Host a URLRewrite set.
    upstream_host: Option<String>,
    response_mods: Vec<&'a HeaderModifier>,
}

/// The rule's filters, the backend choice and its filters; `Err` is the
/// answer when the gateway answers itself (a redirect, a rule without
/// backends, a target a rewrite made invalid).
#[allow(clippy::result_large_err)] // Either way it is the request's answer.
fn plan<'a>(
    t: &Target<'a>,
    mut parts: Parts,
) -> Result<Planned<'a>, Result<Response<Body>, Rejection>> {
    let action = &t.entry.action;
    // A shared handle on the request target: the path is copied only
    // when a filter rewrites it.
    let target = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut path: Cow<'_, str> = Cow::Borrowed(target.path());
    let query = target.query();
    let mut upstream_host: Option<String> = None;
    let mut response_mods: Vec<&HeaderModifier> = action
        .filters
        .iter()
        .filter_map(|f| match f {
            Filter::ResponseHeaders(m) => Some(m),
            _ => None,
        })
        .collect();
    for f in &action.filters {
        match f {
            Filter::RequestHeaders(m) => filters::modify_headers(m, &mut parts.headers),
            // Applied to the response, sent with the upstream request, or
            // run by the policy phases before this one.
            Filter::ResponseHeaders(_)
            | Filter::Mirror(_)
            | Filter::Cors(_)
            | Filter::ExternalAuth(_) => {}
            Filter::Redirect(r) => {
                return Err(finish(t.redirect(r, &path, query), &response_mods));
            }
            Filter::Rewrite(rw) => {
                let out = filters::rewrite(rw, &t.entry.matcher.path, &path);
                path = Cow::Owned(out.path);
                if out.host.is_some() {
                    upstream_host = out.host;
                }
            }
        }
    }
    let Some(backend) = action.backends.pick() else {
        // A rule without (non-zero-weight) backends answers 500 per Gateway API.
        return Err(Err(Rejection::new(
            Reason::NoBackends,
            "route has no backends",
        )));
    };
    // backendRef filters: only when this backend is picked, after the rule's.
    for f in &backend.filters {
        match f {
            Filter::RequestHeaders(m) => filters::modify_headers(m, &mut parts.headers),
            Filter::ResponseHeaders(m) => response_mods.push(m),
            Filter::Redirect(r) => return Err(t.redirect(r, &path, query)),
            Filter::Rewrite(rw) => {
                let out = filters::rewrite(rw, &t.entry.matcher.path, &path);
                path = Cow::Owned(out.path);
                if out.host.is_some() {
                    upstream_host = out.host;
                }
            }
            // Rejected at backendRef level by validation.
            Filter::Mirror(_) | Filter::Cors(_) | Filter::ExternalAuth(_) => {}
        }
    }
    let path_and_query = match path {
        Cow::Borrowed(_) => target.clone(),
        Cow::Owned(p) => {
            let pq = match query {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            PathAndQuery::try_from(pq).map_err(|e| {
                Err(Rejection::new(
                    Reason::BadRequest,
                    format!("invalid request target: {e}"),
                ))
            })?
        }
    };
    Ok(Planned {
        backend,
        parts,
        path_and_query,
        upstream_host,
        response_mods,
    })
}

/// The response header modifiers applied to a response.
fn finish(
    resp: Result<Response<Body>, Rejection>,
    mods: &[&HeaderModifier],
) -> Result<Response<Body>, Rejection> {
    resp.map(|mut r| {
        for m in mods {
            filters::modify_headers(m, r.headers_mut());
        }
        r
    })
}

/// Whether a header describes one hop only (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Whether a header carries what a client claims about earlier hops.
fn is_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "forwarded"
    )
}

/// The `Transfer-Encoding` a message had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    None,
    /// Exactly `chunked`.
    Chunked,
    /// Anything else: codings the gateway cannot pass on once the header
    /// is gone (it is hop-by-hop), or a list.
    Other,
}

/// Removes the hop-by-hop headers; the `Transfer-Encoding` there was.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) -> Coding {
    // One pass over the names: which hop-by-hop headers are there at all
    // (most messages carry none, or only `Connection`), so only those are
    // looked up and removed — each lookup hashes the name.
    let mut present = [false; 7];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return Coding::None;
    }
    let coding = if present[5] {
        let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
        match (values.next(), values.next()) {
            (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"chunked") => Coding::Chunked,
            _ => Coding::Other,
        }
    } else {
        Coding::None
    };
    // Headers named in Connection are hop-by-hop too. The usual tokens
    // (`keep-alive`, `close`, `upgrade`, `te`) name no header, or one of the
    // list above, which goes anyway.
    let mut named: Vec<HeaderName> = Vec::new();
    if present[0] {
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            let usual = ["keep-alive", "close", "upgrade", "te"]
                .iter()
                .any(|u| token.eq_ignore_ascii_case(u));
            if !usual {
                if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(n);
                }
            }
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    for name in &named {
        headers.remove(name);
    }
    coding
}

/// The request to the backend: `authority` is what the client asked for
/// (kept in X-Forwarded-Host), `rewritten_host` the Host a URLRewrite set.
/// The target is in origin form; the pool adds scheme and authority where
/// the connection needs them (HTTP/2).
fn upstream_request(
    req: Request<Body>,
    conn: &ConnInfo,
    trusted_peer: bool,
    authority: &Authority,
    rewritten_host: Option<&str>,
    path_and_query: PathAndQuery,
) -> Result<Request<Body>, String> {
    let (mut parts, body) = req.into_parts();
    parts.uri = Uri::from(path_and_query);
    parts.version = http::Version::HTTP_11;
    let h = &mut parts.headers;
    let (mut hop, mut forwarding) = (false, false);
    for name in h.keys() {
        hop |= is_hop_by_hop(name);
        forwarding |= is_forwarding(name);
    }
    if hop {
        // `TE: trailers` is the one TE value that passes (gRPC relies on it).
        let te_trailers = h
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case("trailers"));
        strip_hop_by_hop(h);
        if te_trailers {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    match rewritten_host {
        Some(host) => {
            let host = HeaderValue::from_str(host).map_err(|_| "invalid Host".to_owned())?;
            h.insert(header::HOST, host);
        }
        // The client's Host header goes on as it is.
        None if authority.is_host_header() => {}
        None => {
            h.insert(header::HOST, authority.value().clone());
        }
    }
    if !trusted_peer {
        // Whatever an untrusted client claims about earlier hops is dropped.
        if forwarding {
            for name in [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST] {
                h.remove(name);
            }
            h.remove(header::FORWARDED);
        }
        h.insert(X_FORWARDED_FOR.clone(), conn.peer_value.clone());
        h.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(conn.scheme()),
        );
        h.insert(X_FORWARDED_HOST.clone(), authority.value().clone());
        return Ok(Request::from_parts(parts, body));
    }
    let earlier: Vec<&str> = h
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = if earlier.is_empty() {
        conn.peer_value.clone()
    } else {
        let peer = conn.peer_value.to_str().unwrap_or_default();
        HeaderValue::from_str(&format!("{}, {peer}", earlier.join(", ")))
            .map_err(|_| "invalid X-Forwarded-For".to_owned())?
    };
    h.insert(X_FORWARDED_FOR.clone(), xff);
    if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(conn.scheme()),
        );
    }
    if !h.contains_key(&X_FORWARDED_HOST) {
        h.insert(X_FORWARDED_HOST.clone(), authority.value().clone());
    }
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_including_connection_named_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-custom, keep-alive"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
