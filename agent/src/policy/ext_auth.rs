//! `extAuth` (and the HTTPRoute `ExternalAuth` filter): an HTTP call to an
//! authorization service decides, with the semantics of Gateway API's
//! `HTTPExternalAuthFilter` (HTTP protocol) and of nginx `auth_request` /
//! oauth2-proxy.
//!
//! # The authorization request
//!
//! One HTTP/1.1 request per client request, over a pooled keep-alive client
//! owned by the section ([`AuthClient`]), to one of the ready endpoints in
//! turn (round-robin). It carries:
//!
//! - the original **method**, and as **path** the configured prefix followed
//!   by the original path and query, as received (Gateway API: "the path of
//!   the request to the auth server is the path prefix followed by the
//!   original path"). Method and path travel in the request line, so there
//!   is no `x-forwarded-method` / `x-forwarded-uri`;
//! - `Host`: the configured authority (the Service's `name.namespace`), as
//!   an auth service behind its own virtual hosts expects;
//! - `Authorization`, every value the client sent;
//! - `Content-Length`: the number of body bytes sent — `0` without
//!   `forwardBody`, as the Gateway API asks;
//! - `X-Forwarded-For`: the client address only (after `--trusted-proxies`,
//!   i.e. [`RequestCtx::client_ip`]), never the chain the client sent;
//!   `X-Forwarded-Host`: the authority the client asked for;
//!   `X-Forwarded-Proto`: the request's scheme when it carries one (HTTP/2
//!   `:scheme`, absolute-form targets) — an HTTP/1.1 request in origin form
//!   does not say whether it came over TLS, so then the header is left out
//!   rather than guessed;
//! - every header named in `allowedHeaders`, all its values. Several
//!   `Cookie` fields (HTTP/2 splits them) are joined into one, as HTTP/1.1
//!   requires. Names that would describe or break this request itself
//!   (`Host`, `Content-Length`, hop-by-hop and framing headers, `Expect`)
//!   or that the section sets (`X-Forwarded-*`) are not copied from the client.
//!
//! Nothing else: no cookies unless allowed, no `User-Agent`.
//!
//! With `forwardBody.maxSize` > 0 the first `maxSize` bytes of the request
//! body are sent; a longer body is truncated to `maxSize`, as the Gateway
//! API specifies. Only those bytes are read before the call; the upstream
//! still gets the whole body, unchanged ([`super::prefix`]). The time spent
//! reading them is the client's (the route's request timeout covers it),
//! not part of `timeout`.
//!
//! # The answer
//!
//! - **2xx** allows. Headers of the answer named in `allowedResponseHeaders`
//!   are set on the upstream request, replacing what the client sent under
//!   those names. An empty list copies every header of the answer (Gateway
//!   API: "all headers … except Authority or Host") except those that
//!   describe the answer itself rather than the request: hop-by-hop and
//!   framing headers, `Content-Type`, `Content-Encoding`, `Date`, `Server`
//!   and `Set-Cookie`.
//! - **Anything else** is returned to the client as the service sent it:
//!   status, headers (without hop-by-hop and framing headers) and body, so a
//!   `302` to a login page or a `401` with `WWW-Authenticate` reach the
//!   browser. Bodies over [`MAX_DENY_BODY`] bytes are not passed on: the
//!   client gets the status and headers with a short plain-text body
//!   instead (a truncated HTML or JSON document would be worse). This holds
//!   with `failOpen` too — the service answered.
//! - **No answer** — no ready endpoints, connection refused, `timeout`
//!   expired (for the whole call, connecting included), an invalid HTTP
//!   answer — fails closed with 503, or with `failOpen` lets the request
//!   pass without extra headers. Connection failures move on to the next
//!   endpoint (up to three attempts, within `timeout`): the request never
//!   reached the service, so trying another one is safe.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

use super::{
    context::{AuthnOutcome, Edits, HeaderEdit},
    prefix,
    state::{Compile, StateKey},
    Body, Reason, Rejection, RequestCtx, SectionMeta,
};

/// Largest answer body passed back to the client on a denial.
pub const MAX_DENY_BODY: usize = 64 * 1024;
/// Connection attempts per call when endpoints refuse connections.
const MAX_ATTEMPTS: usize = 3;
/// How long an idle connection to the service is kept. Below the usual
/// server-side keep-alive timeouts, so the pool rarely hands out a
/// connection the server is just closing.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// At most one warning per section in this interval while the service
/// cannot be reached (every call is logged at debug level).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Everything an external authorization section is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthConfig {
    /// Ready endpoints of the service port (empty: unavailable).
    pub endpoints: Vec<SocketAddr>,
    /// `Host` of the authorization requests (`name.namespace`), sent verbatim.
    pub authority: String,
    /// Path prefix; the original path follows it. A trailing `/` is ignored.
    pub path_prefix: String,
    /// Request headers sent along (besides the fixed ones; see the module doc
    /// for the few names that are never copied from the client).
    pub allowed_headers: Vec<HeaderName>,
    /// Headers of an allowing answer copied onto the upstream request;
    /// empty: all of them but those describing the answer itself.
    pub allowed_response_headers: Vec<HeaderName>,
    /// Body bytes buffered and sent along; 0: none.
    pub forward_body: u32,
    /// Limit for the whole call: connecting, sending, the answer's head and body.
    pub timeout: Duration,
    /// Allow requests when the service gives no answer.
    pub fail_open: bool,
}

/// A pooled HTTP/1.1 keep-alive client for authorization calls. Cheap to
/// clone (clones share the pool); connections are pooled per endpoint
/// address, so one client serves any endpoint set and can be kept across
/// reloads ([`ExtAuth::compile`]).
#[derive(Clone, Debug)]
pub struct AuthClient(Client<HttpConnector, Full<Bytes>>);

impl AuthClient {
    /// A client with an empty pool. Needs no runtime until the first call.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Connecting is bounded by the section's timeout for the whole call.
        connector.set_connect_timeout(None);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            // Closes idle connections on time instead of at the next checkout.
            .pool_timer(TokioTimer::new())
            // The section sets Host itself.
            .set_host(false)
            .build(connector);
        Self(client)
    }
}

impl Default for AuthClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a call gave no answer (logged; the client only sees 503).
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no ready endpoints")]
    NoEndpoints,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("exchange with {endpoint}: {source}")]
    Exchange {
        endpoint: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("request target {0:?} is not a valid URI")]
    Uri(String),
}

/// A compiled external authorization section.
pub struct ExtAuth {
    pub config: ExtAuthConfig,
    pub meta: Arc<SectionMeta>,
    client: AuthClient,
    /// Round-robin position.
    next: AtomicUsize,
    host: Option<HeaderValue>,
    prefix: Box<str>,
    /// `allowed_headers` without the names never copied from the client.
    request_headers: Box<[HeaderName]>,
    /// `allowed_response_headers` without the names never copied; `None`:
    /// every header of the answer but those.
    response_headers: Option<Box<[HeaderName]>>,
    /// Requests let through because the service gave no answer.
    fail_opens: AtomicU64,
    warn: WarnLimiter,
}

impl std::fmt::Debug for ExtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtAuth")
            .field("config", &self.config)
            .field("policy", &self.meta.policy)
            .finish_non_exhaustive()
    }
}

/// Headers never copied from the client into the authorization request:
/// this request's own framing and routing, hop-by-hop headers, and the
/// `X-Forwarded-*` the section sets itself.
fn never_forwarded(name: &HeaderName) -> bool {
    is_hop_or_framing(name)
        || [
            header::HOST,
            header::AUTHORIZATION, // always sent: listed, it would be sent twice
            header::EXPECT,
            X_FORWARDED_FOR.clone(),
            X_FORWARDED_HOST.clone(),
            X_FORWARDED_PROTO.clone(),
        ]
        .contains(name)
}

/// Hop-by-hop (RFC 9110 §7.6.1) and message framing headers: they describe
/// one connection or one message body, never what is carried on.
fn is_hop_or_framing(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::CONTENT_LENGTH,
    ]
    .contains(name)
}

/// Headers of an allowing answer that describe the answer itself and are
/// not copied onto the upstream request when no list is configured.
fn describes_answer(name: &HeaderName) -> bool {
    is_hop_or_framing(name)
        || [
            header::HOST,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::DATE,
            header::SERVER,
            header::SET_COOKIE,
        ]
        .contains(name)
}

impl ExtAuth {
    /// A section with its own connection pool.
    pub fn new(config: ExtAuthConfig, meta: Arc<SectionMeta>) -> Self {
        Self::with_client(config, meta, AuthClient::new())
    }

    /// A section whose connection pool is kept in the policy state, so a
    /// reload (new endpoints, another route) keeps the warm connections of
    /// the policy's authorization service.
    pub fn compile(config: ExtAuthConfig, meta: Arc<SectionMeta>, compile: &Compile<'_>) -> Self {
        let key = StateKey {
            policy: meta.policy.clone(),
            section: "extAuth",
            item: config.authority.clone(),
            // The client has no settings of its own: every spec shares it.
            fingerprint: 0,
        };
        let client = AuthClient::clone(&compile.get_or_insert(key, AuthClient::new));
        Self::with_client(config, meta, client)
    }

    /// A section calling through `client` (which may be shared).
    pub fn with_client(config: ExtAuthConfig, meta: Arc<SectionMeta>, client: AuthClient) -> Self {
        let mut request_headers: Vec<HeaderName> = Vec::new();
        for h in &config.allowed_headers {
            if !never_forwarded(h) && !request_headers.contains(h) {
                request_headers.push(h.clone());
            }
        }
        let response_headers = (!config.allowed_response_headers.is_empty()).then(|| {
            let mut v: Vec<HeaderName> = Vec::new();
            for h in &config.allowed_response_headers {
                if !is_hop_or_framing(h) && *h != header::HOST && !v.contains(h) {
                    v.push(h.clone());
                }
            }
            v.into_boxed_slice()
        });
        Self {
            host: HeaderValue::from_str(&config.authority)
                .ok()
                .filter(|h| !h.is_empty()),
            prefix: config.path_prefix.trim_end_matches('/').into(),
            request_headers: request_headers.into_boxed_slice(),
            response_headers,
            client,
            next: AtomicUsize::new(0),
            fail_opens: AtomicU64::new(0),
            warn: WarnLimiter::default(),
            config,
            meta,
        }
    }

    /// Requests allowed because the service gave no answer (`failOpen`).
    pub fn fail_open_count(&self) -> u64 {
        self.fail_opens.load(Ordering::Relaxed)
    }

    /// Asks the service about this request. `body` is replaced by an
    /// equivalent body when part of it is forwarded.
    pub async fn authenticate(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
        body: &mut Body,
        edits: &mut Edits,
    ) -> AuthnOutcome {
        let sent_body = match self.config.forward_body {
            0 => Bytes::new(),
            max => prefix::peek(body, max as usize).await,
        };
        let headers = self.request_headers(ctx, parts, sent_body.len());
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let answer = tokio::time::timeout_at(deadline, self.call(parts, headers, sent_body))
            .await
            .unwrap_or(Err(CallError::Timeout(self.config.timeout)));
        match answer {
            Ok(resp) if resp.status().is_success() => {
                self.allow(&resp, edits);
                // Reading the rest lets the connection go back to the pool.
                let _ = tokio::time::timeout_at(
                    deadline,
                    read_bounded(resp.into_body(), MAX_DENY_BODY),
                )
                .await;
                self.meta.allowed();
                AuthnOutcome::Authenticated
            }
            Ok(resp) => AuthnOutcome::Failed(self.deny(resp, deadline).await),
            Err(e) => self.unavailable(e),
        }
    }

    /// The headers of the authorization request.
    fn request_headers(&self, ctx: &RequestCtx<'_>, parts: &Parts, body_len: usize) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(8 + self.request_headers.len());
        if let Some(host) = &self.host {
            h.insert(header::HOST, host.clone());
        }
        for v in parts.headers.get_all(header::AUTHORIZATION) {
            h.append(header::AUTHORIZATION, v.clone());
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
        if let Ok(v) = HeaderValue::try_from(ctx.client_ip.to_canonical().to_string()) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        let host = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        if let Some(v) = host.or_else(|| HeaderValue::from_str(ctx.host).ok()) {
            h.insert(X_FORWARDED_HOST.clone(), v);
        }
        match parts.uri.scheme_str() {
            Some("https") => {
                h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
            }
            Some("http") => {
                h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
            }
            _ => {}
        }
        for name in self.request_headers.iter() {
            if *name == header::COOKIE {
                if let Some(v) = joined_cookies(&parts.headers) {
                    h.insert(header::COOKIE, v);
                }
                continue;
            }
            for v in parts.headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        h
    }

    /// Sends the request to an endpoint, the next ones when connecting fails.
    async fn call(
        &self,
        parts: &Parts,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, CallError> {
        let endpoints = &self.config.endpoints;
        if endpoints.is_empty() {
            return Err(CallError::NoEndpoints);
        }
        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .filter(|pq| pq.starts_with('/'))
            .unwrap_or("/");
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let attempts = endpoints.len().min(MAX_ATTEMPTS);
        let mut last = None;
        for i in 0..attempts {
            let endpoint = endpoints[(first + i) % endpoints.len()];
            let mut req = Request::new(Full::new(body.clone()));
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = self.uri(endpoint, path)?;
            // Copied only while another attempt may need the headers again.
            *req.headers_mut() = if i + 1 < attempts {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            if self.host.is_none() {
                // HTTP/1.1 needs a Host; the endpoint is the next best name.
                if let Ok(v) = HeaderValue::try_from(endpoint.to_string()) {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
            match self.client.0.request(req).await {
                Ok(resp) => return Ok(resp),
                // Nothing was sent: another endpoint may take it.
                Err(e) if e.is_connect() => {
                    last = Some(CallError::Connect {
                        endpoint,
                        source: e,
                    })
                }
                Err(e) => {
                    return Err(CallError::Exchange {
                        endpoint,
                        source: e,
                    })
                }
            }
        }
        Err(last.unwrap_or(CallError::NoEndpoints))
    }

    fn uri(&self, endpoint: SocketAddr, path: &str) -> Result<Uri, CallError> {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(56 + self.prefix.len() + path.len());
        let _ = write!(s, "http://{endpoint}");
        s.push_str(&self.prefix);
        s.push_str(path);
        // From a String the URI takes the buffer over: no copy.
        Uri::try_from(s).map_err(|e| CallError::Uri(e.to_string()))
    }

    /// The upstream header edits of an allowing answer.
    fn allow(&self, resp: &http::Response<Incoming>, edits: &mut Edits) {
        let answer = resp.headers();
        let mut copy = |name: &HeaderName| {
            // Set replaces what the client sent; further values are added.
            for (i, v) in answer.get_all(name).iter().enumerate() {
                edits.header(if i == 0 {
                    HeaderEdit::Set(name.clone(), v.clone())
                } else {
                    HeaderEdit::Append(name.clone(), v.clone())
                });
            }
        };
        match &self.response_headers {
            Some(names) => names.iter().for_each(copy),
            None => {
                for name in answer.keys() {
                    if !describes_answer(name) {
                        copy(name);
                    }
                }
            }
        }
    }

    /// The rejection passing a non-2xx answer on to the client.
    async fn deny(
        &self,
        resp: http::Response<Incoming>,
        deadline: tokio::time::Instant,
    ) -> Rejection {
        let (head, body) = resp.into_parts();
        let mut headers = head.headers;
        strip_hop_by_hop(&mut headers);
        let declared_too_large = body
            .size_hint()
            .exact()
            .is_some_and(|n| n > MAX_DENY_BODY as u64);
        let read = if declared_too_large {
            None
        } else {
            tokio::time::timeout_at(deadline, read_bounded(body, MAX_DENY_BODY))
                .await
                .ok()
                .flatten()
        };
        self.meta.denied(Reason::ExtAuthDenied);
        let mut r = Rejection::new(
            Reason::ExtAuthDenied,
            "the authorization service answer was too large or incomplete",
        )
        .with_status(head.status)
        .by(&self.meta);
        match read {
            Some(b) => r = r.with_body(b),
            None => {
                // The short text replaces their body: their labels would lie.
                headers.remove(header::CONTENT_TYPE);
                headers.remove(header::CONTENT_ENCODING);
            }
        }
        *r.headers_mut() = headers;
        r
    }

    fn unavailable(&self, e: CallError) -> AuthnOutcome {
        tracing::debug!(
            policy = %self.meta.policy,
            authority = %self.config.authority,
            fail_open = self.config.fail_open,
            error = %e,
            "external authorization gave no answer"
        );
        if let Some(suppressed) = self.warn.check() {
            tracing::warn!(
                policy = %self.meta.policy,
                authority = %self.config.authority,
                error = %e,
                since_last_warning = suppressed,
                "external authorization service unavailable; requests are {}",
                if self.config.fail_open {
                    "allowed (failOpen)"
                } else {
                    "refused with 503"
                }
            );
        }
        if self.config.fail_open {
            self.fail_opens.fetch_add(1, Ordering::Relaxed);
            // Allowed, but labelled with why: fail-open decisions are visible.
            self.meta.allowed_because(Reason::ExtAuthUnavailable);
            return AuthnOutcome::Authenticated;
        }
        self.meta.denied(Reason::ExtAuthUnavailable);
        AuthnOutcome::Failed(
            Rejection::new(
                Reason::ExtAuthUnavailable,
                "external authorization service unavailable",
            )
            .by(&self.meta),
        )
    }
}

/// `Cookie` as one field: HTTP/2 clients may split it into several, which
/// HTTP/1.1 forbids (RFC 9113 §8.2.3, RFC 6265 §5.4).
fn joined_cookies(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(header::COOKIE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut joined = BytesMut::new();
    for v in [first, second].into_iter().chain(values) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_maybe_shared(joined.freeze()).ok()
}

/// Removes hop-by-hop and framing headers, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in &named {
        headers.remove(n);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_or_framing(n))
        .cloned()
        .collect();
    for n in &hop {
        headers.remove(n);
    }
}

/// The whole body if it is at most `max` bytes and arrives intact.
async fn read_bounded(mut body: Incoming, max: usize) -> Option<Bytes> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.ok()?.into_data() {
            len += d.len();
            if len > max {
                return None;
            }
            chunks.push(d);
        }
    }
    Some(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(len);
            for c in &chunks {
                out.extend_from_slice(c);
            }
            out.freeze()
        }
    })
}

/// Lets one warning through per [`WARN_INTERVAL`] and counts the others.
#[derive(Debug, Default)]
struct WarnLimiter {
    /// Milliseconds since [`epoch`] of the last warning, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl WarnLimiter {
    /// `Some(events since the last warning)` when this event may warn.
    fn check(&self) -> Option<u64> {
        self.check_at(epoch().elapsed().as_millis() as u64 + 1)
    }

    /// [`Self::check`] at `now` (milliseconds since [`epoch`], plus one).
    fn check_at(&self, now: u64) -> Option<u64> {
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + WARN_INTERVAL.as_millis() as u64 {
            return None;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{atomic::AtomicUsize, Mutex},
    };

    use http::{Method, Response, StatusCode};
    use http_body_util::StreamBody;
    use hyper::{body::Frame, service::service_fn};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::policy::{full, BoxError, PolicyId};

    /// What the authorization server saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    }

    /// `None`: never answer.
    type Handler = dyn Fn(&Seen) -> Option<Response<Full<Bytes>>> + Send + Sync;

    struct AuthServer {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
    }

    impl AuthServer {
        fn last(&self) -> Seen {
            self.seen
                .lock()
                .unwrap()
                .last()
                .cloned()
                .expect("a request")
        }
        fn requests(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    /// A loopback HTTP/1.1 server answering with `handler`.
    async fn serve(
        handler: impl Fn(&Seen) -> Option<Response<Full<Bytes>>> + Send + Sync + 'static,
    ) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, c) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (s, handler) = (s.clone(), handler.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, handler) = (s.clone(), handler.clone());
                        async move {
                            let (p, b) = req.into_parts();
                            let body = b.collect().await.unwrap().to_bytes();
                            let seen = Seen {
                                method: p.method,
                                uri: p.uri,
                                headers: p.headers,
                                body,
                            };
                            s.lock().unwrap().push(seen.clone());
                            match handler(&seen) {
                                Some(r) => Ok::<_, Infallible>(r),
                                None => std::future::pending().await,
                            }
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        AuthServer {
            addr,
            seen,
            connections,
        }
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (n, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    fn config(endpoints: Vec<SocketAddr>) -> ExtAuthConfig {
        ExtAuthConfig {
            endpoints,
            authority: "authz.security".into(),
            path_prefix: String::new(),
            allowed_headers: Vec::new(),
            allowed_response_headers: Vec::new(),
            forward_body: 0,
            timeout: Duration::from_secs(10),
            fail_open: false,
        }
    }

    fn section(config: ExtAuthConfig) -> ExtAuth {
        ExtAuth::new(
            config,
            Arc::new(SectionMeta::detached(
                PolicyId::new("SluicePolicy", "shop", "p"),
                "extAuth",
            )),
        )
    }

    fn names(list: &[&'static str]) -> Vec<HeaderName> {
        list.iter().map(|n| HeaderName::from_static(n)).collect()
    }

    struct Outcome {
        out: AuthnOutcome,
        /// The request head as it would go upstream (edits applied on success).
        parts: Parts,
        body: Body,
    }

    impl Outcome {
        fn rejection(self) -> Rejection {
            match self.out {
                AuthnOutcome::Failed(r) => r,
                other => panic!("expected a rejection, got {other:?}"),
            }
        }
        fn allowed(&self) -> bool {
            matches!(self.out, AuthnOutcome::Authenticated)
        }
    }

    async fn run(a: &ExtAuth, req: Request<Body>) -> Outcome {
        let (mut parts, mut body) = req.into_parts();
        let mut ctx = RequestCtx::new(
            "10.0.0.9:4711".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
            "shop.example",
        );
        let mut edits = Edits::default();
        // Generous: turns a call that would hang (a lost timeout, a body
        // read to its end) into a failure instead of a stuck test.
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            a.authenticate(&mut ctx, &parts, &mut body, &mut edits),
        )
        .await
        .expect("authenticate returned");
        if matches!(out, AuthnOutcome::Authenticated) {
            edits.apply(&mut parts.headers, &mut parts.uri);
        }
        Outcome { out, parts, body }
    }

    fn get(uri: &str) -> http::request::Builder {
        Request::get(uri).header("host", "shop.example:8443")
    }

    fn refused_addr() -> SocketAddr {
        // Bound, then closed: nothing listens there any more.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn allow_sets_allowed_answer_headers_replacing_client_values() {
        let srv = serve(|_| {
            Some(answer(
                200,
                &[
                    ("x-user", "alice"),
                    ("x-groups", "admin"),
                    ("x-groups", "ops"),
                    ("x-internal", "not listed"),
                ],
                "",
            ))
        })
        .await;
        let mut c = config(vec![srv.addr]);
        c.allowed_response_headers = names(&["x-user", "x-groups", "x-absent"]);
        let a = section(c);
        let o = run(
            &a,
            get("/orders")
                .header("x-user", "forged")
                .header("x-user", "forged-too")
                .header("x-absent", "client value")
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert!(o.allowed());
        let h = &o.parts.headers;
        let users: Vec<_> = h.get_all("x-user").iter().collect();
        assert_eq!(users, ["alice"], "the client's values are replaced");
        let groups: Vec<_> = h.get_all("x-groups").iter().collect();
        assert_eq!(groups, ["admin", "ops"], "every value of the answer");
        assert!(!h.contains_key("x-internal"), "not listed: not copied");
        assert_eq!(
            h["x-absent"], "client value",
            "a listed header the answer lacks is left alone"
        );
        assert_eq!(a.meta.allowed_count(), 1);
    }

    /// Gateway API: without `allowedResponseHeaders` every header of the
    /// answer is copied, except those describing the answer itself.
    #[tokio::test]
    async fn no_response_list_copies_all_but_the_answers_own_headers() {
        let srv = serve(|_| {
            Some(answer(
                200,
                &[
                    ("x-user", "bob"),
                    ("content-type", "text/plain"),
                    ("set-cookie", "s=1"),
                    ("host", "evil"),
                ],
                "ok",
            ))
        })
        .await;
        let a = section(config(vec![srv.addr]));
        let o = run(
            &a,
            Request::post("/in")
                .header("host", "shop.example")
                .header("content-type", "application/json")
                .body(full("{}"))
                .unwrap(),
        )
        .await;
        assert!(o.allowed());
        let h = &o.parts.headers;
        assert_eq!(h["x-user"], "bob");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["host"], "shop.example");
        for n in ["set-cookie", "date", "content-length"] {
            assert!(!h.contains_key(n), "{n} copied");
        }
    }

    #[tokio::test]
    async fn denials_pass_status_headers_and_body_through() {
        let srv = serve(|s| {
            Some(if s.uri.path() == "/admin" {
                answer(
                    403,
                    &[("content-type", "application/json"), ("x-reason", "role")],
                    "{\"error\":\"forbidden\"}",
                )
            } else {
                answer(
                    401,
                    &[
                        ("www-authenticate", "Bearer realm=\"shop\""),
                        ("content-type", "text/html"),
                        ("connection", "keep-alive, x-hop"),
                        ("x-hop", "1"),
                    ],
                    "<h1>sign in</h1>",
                )
            })
        })
        .await;
        let mut c = config(vec![srv.addr]);
        c.allowed_response_headers = names(&["x-user"]);
        let a = section(c);

        let r = run(&a, get("/orders").body(full("")).unwrap())
            .await
            .rejection();
        assert_eq!(r.reason, Reason::ExtAuthDenied);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"shop\"");
        assert!(!r.headers().contains_key("connection"));
        assert!(!r.headers().contains_key("x-hop"), "named in Connection");
        assert!(!r.headers().contains_key("content-length"));
        assert_eq!(r.section.as_ref().unwrap().section, "extAuth");
        let resp = r.into_response();
        assert_eq!(resp.headers()["content-type"], "text/html");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"<h1>sign in</h1>");

        let r = run(&a, get("/admin").body(full("")).unwrap())
            .await
            .rejection();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.headers()["x-reason"], "role");
        let resp = r.into_response();
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"error\":\"forbidden\"}");
    }

    /// oauth2-proxy: a 302 to the sign-in page, with its CSRF cookie.
    #[tokio::test]
    async fn redirects_reach_the_client() {
        let srv = serve(|_| {
            Some(answer(
                302,
                &[
                    ("location", "https://login.example/start?rd=%2Forders"),
                    ("set-cookie", "_csrf=abc; Path=/; HttpOnly"),
                    ("set-cookie", "_flow=1; Path=/"),
                ],
                "",
            ))
        })
        .await;
        let a = section(config(vec![srv.addr]));
        let resp = run(&a, get("/orders").body(full("")).unwrap())
            .await
            .rejection()
            .into_response();
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(
            resp.headers()["location"],
            "https://login.example/start?rd=%2Forders"
        );
        assert_eq!(resp.headers().get_all("set-cookie").iter().count(), 2);
    }

    #[tokio::test]
    async fn path_is_prefix_then_original_path_and_query_with_the_same_method() {
        let srv = serve(|_| Some(answer(200, &[], ""))).await;
        let mut c = config(vec![srv.addr]);
        c.path_prefix = "/check/".into();
        let a = section(c);
        let o = run(
            &a,
            Request::delete("/orders/7?force=1&x=%20y")
                .header("host", "shop.example")
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert!(o.allowed());
        let s = srv.last();
        assert_eq!(s.method, Method::DELETE);
        assert_eq!(s.uri.to_string(), "/check/orders/7?force=1&x=%20y");

        let mut c = config(vec![srv.addr]);
        c.authority = String::new();
        let a = section(c);
        run(&a, get("/").body(full("")).unwrap()).await;
        let s = srv.last();
        assert_eq!(s.uri.to_string(), "/", "no prefix: the path as is");
        assert_eq!(
            s.headers["host"],
            srv.addr.to_string().as_str(),
            "without an authority the endpoint names the host"
        );
    }

    #[tokio::test]
    async fn only_the_fixed_and_allowed_headers_are_sent() {
        let srv = serve(|_| Some(answer(200, &[], ""))).await;
        let mut c = config(vec![srv.addr]);
        c.allowed_headers = names(&[
            "x-tenant",
            "cookie",
            "content-length",
            "x-forwarded-for",
            "connection",
        ]);
        let a = section(c);
        let o = run(
            &a,
            get("/p")
                .header("authorization", "Bearer t0k3n")
                .header("X-Tenant", "acme")
                .header("x-tenant", "second")
                .header("x-secret", "never")
                .header("user-agent", "curl/8")
                .header("cookie", "a=1")
                .header("cookie", "_oauth2_proxy=s")
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-proto", "https")
                .header("content-length", "5")
                .header("connection", "close")
                .body(full("hello"))
                .unwrap(),
        )
        .await;
        assert!(o.allowed());
        let s = srv.last();
        let mut got: Vec<_> = s
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "authorization: Bearer t0k3n",
                "content-length: 0",
                "cookie: a=1; _oauth2_proxy=s",
                "host: authz.security",
                "x-forwarded-for: 192.0.2.7",
                "x-forwarded-host: shop.example:8443",
                "x-tenant: acme",
                "x-tenant: second",
            ]
        );
        assert!(s.body.is_empty(), "no forwardBody: no body");
        // The upstream body is untouched.
        let up = o.body.collect().await.unwrap().to_bytes();
        assert_eq!(&up[..], b"hello");

        // An HTTP/2 request carries its scheme and authority in the URI.
        let a = section(config(vec![srv.addr]));
        run(
            &a,
            Request::get("https://Shop.Example/p")
                .body(full(""))
                .unwrap(),
        )
        .await;
        let s = srv.last();
        assert_eq!(s.headers["x-forwarded-proto"], "https");
        assert_eq!(s.headers["x-forwarded-host"], "Shop.Example");
        assert!(!s.headers.contains_key("authorization"));
    }

    fn streamed(chunks: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn forwarded_body_is_the_first_max_size_bytes_and_upstream_gets_it_all() {
        let srv = serve(|s| {
            Some(if s.body.starts_with(b"DENY") {
                answer(403, &[], "no")
            } else {
                answer(200, &[], "")
            })
        })
        .await;
        let mut c = config(vec![srv.addr]);
        c.forward_body = 10;
        let a = section(c);

        // Streamed in chunks that straddle the limit.
        let req = Request::post("/upload")
            .header("host", "shop.example")
            .body(streamed(&["0123", "4567", "89ab", "cdef", "-tail"]))
            .unwrap();
        let o = run(&a, req).await;
        assert!(o.allowed());
        let s = srv.last();
        assert_eq!(&s.body[..], b"0123456789", "truncated to maxSize");
        assert_eq!(s.headers["content-length"], "10");
        let up = o.body.collect().await.unwrap().to_bytes();
        assert_eq!(&up[..], b"0123456789abcdef-tail", "complete and unchanged");

        // Shorter than maxSize: all of it, with its real length.
        let o = run(
            &a,
            Request::put("/small")
                .header("host", "shop.example")
                .body(full("tiny"))
                .unwrap(),
        )
        .await;
        assert!(o.allowed());
        assert_eq!(&srv.last().body[..], b"tiny");
        assert_eq!(srv.last().headers["content-length"], "4");
        assert_eq!(&o.body.collect().await.unwrap().to_bytes()[..], b"tiny");

        // The service decides on the body.
        let r = run(
            &a,
            Request::post("/x")
                .header("host", "shop.example")
                .body(full("DENY me"))
                .unwrap(),
        )
        .await
        .rejection();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    /// The call is made as soon as maxSize bytes are in: a client still
    /// sending the rest is not waited for, and the rest streams on later.
    #[tokio::test]
    async fn body_beyond_max_size_is_not_waited_for() {
        let srv = serve(|_| Some(answer(200, &[], ""))).await;
        let mut c = config(vec![srv.addr]);
        c.forward_body = 4;
        let a = section(c);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let b = rx.recv().await?;
            Some((Ok::<_, BoxError>(Frame::data(b)), rx))
        });
        tx.send(Bytes::from_static(b"head")).await.unwrap();
        let req = Request::post("/stream")
            .header("host", "shop.example")
            .body(StreamBody::new(stream).boxed())
            .unwrap();
        let o = run(&a, req).await;
        assert!(o.allowed());
        assert_eq!(&srv.last().body[..], b"head");
        tx.send(Bytes::from_static(b"-more")).await.unwrap();
        tx.send(Bytes::from_static(b"-end")).await.unwrap();
        drop(tx);
        let up = o.body.collect().await.unwrap().to_bytes();
        assert_eq!(&up[..], b"head-more-end");
    }

    #[tokio::test]
    async fn timeout_fails_closed_or_open() {
        let srv = serve(|_| None).await;
        let mut c = config(vec![srv.addr]);
        c.timeout = Duration::from_millis(200);
        let started = Instant::now();
        let a = section(c.clone());
        let r = run(&a, get("/").body(full("")).unwrap()).await.rejection();
        assert_eq!(r.reason, Reason::ExtAuthUnavailable);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(srv.requests(), 1, "the service got the request");

        c.fail_open = true;
        c.allowed_response_headers = names(&["x-user"]);
        let a = section(c);
        let o = run(
            &a,
            get("/").header("x-user", "client").body(full("")).unwrap(),
        )
        .await;
        assert!(o.allowed());
        assert_eq!(o.parts.headers["x-user"], "client", "no headers added");
        assert_eq!(a.fail_open_count(), 1);
        // Counted as allow with its reason (ext_auth_unavailable), not as a passed check.
        assert_eq!(a.meta.allowed_count(), 0);
        // Generous: only shows the calls were cut off, not waited out.
        assert!(started.elapsed() < Duration::from_secs(8));
    }

    #[tokio::test]
    async fn refused_connections_fail_closed_or_open() {
        let refused = refused_addr();
        let a = section(config(vec![refused]));
        let r = run(&a, get("/").body(full("")).unwrap()).await.rejection();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.reason, Reason::ExtAuthUnavailable);

        let mut c = config(vec![refused]);
        c.fail_open = true;
        let a = section(c);
        assert!(run(&a, get("/").body(full("")).unwrap()).await.allowed());
        assert_eq!(a.fail_open_count(), 1);
    }

    #[tokio::test]
    async fn a_refusing_endpoint_is_skipped() {
        let srv = serve(|_| Some(answer(204, &[], ""))).await;
        let a = section(config(vec![refused_addr(), srv.addr]));
        for _ in 0..4 {
            // Whichever endpoint the round-robin starts with.
            assert!(run(&a, get("/").body(full("")).unwrap()).await.allowed());
        }
        assert_eq!(srv.requests(), 4);
    }

    #[tokio::test]
    async fn no_endpoints_is_503() {
        let a = section(config(vec![]));
        let r = run(&a, get("/").body(full("")).unwrap()).await.rejection();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.reason, Reason::ExtAuthUnavailable);
        let body = r.into_response().into_body().collect().await.unwrap();
        assert_eq!(
            &body.to_bytes()[..],
            b"external authorization service unavailable\n"
        );
    }

    #[tokio::test]
    async fn connections_are_kept_alive_and_reused() {
        let (one, two) = (
            serve(|_| Some(answer(200, &[("x-user", "u")], "ok"))).await,
            serve(|_| Some(answer(401, &[], "denied body"))).await,
        );
        let mut c = config(vec![one.addr]);
        c.allowed_response_headers = names(&["x-user"]);
        let a = section(c);
        for _ in 0..50 {
            assert!(run(&a, get("/").body(full("")).unwrap()).await.allowed());
        }
        assert_eq!(one.requests(), 50);
        let conns = one.connections.load(Ordering::SeqCst);
        assert!(conns <= 3, "{conns} connections for 50 sequential calls");

        // Denials read the answer to its end too.
        let b = section(config(vec![two.addr]));
        for _ in 0..20 {
            run(&b, get("/").body(full("")).unwrap()).await.rejection();
        }
        let conns = two.connections.load(Ordering::SeqCst);
        assert!(conns <= 3, "{conns} connections for 20 denials");
    }

    #[tokio::test]
    async fn round_robin_spreads_calls() {
        let (x, y) = (
            serve(|_| Some(answer(200, &[], ""))).await,
            serve(|_| Some(answer(200, &[], ""))).await,
        );
        let a = section(config(vec![x.addr, y.addr]));
        for _ in 0..10 {
            assert!(run(&a, get("/").body(full("")).unwrap()).await.allowed());
        }
        assert_eq!((x.requests(), y.requests()), (5, 5));
    }

    #[tokio::test]
    async fn oversized_denial_body_is_replaced() {
        static BIG: OnceLock<String> = OnceLock::new();
        let big: &'static str = BIG.get_or_init(|| "x".repeat(MAX_DENY_BODY + 1));
        let srv = serve(move |_| {
            Some(answer(
                403,
                &[("content-type", "text/html"), ("x-reason", "big")],
                big,
            ))
        })
        .await;
        let a = section(config(vec![srv.addr]));
        let r = run(&a, get("/").body(full("")).unwrap()).await.rejection();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.headers()["x-reason"], "big");
        let resp = r.into_response();
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.len() < 200, "{} bytes", body.len());
    }

    #[test]
    fn listed_names_that_would_break_the_call_are_dropped() {
        let mut c = config(vec![]);
        c.allowed_headers = names(&["host", "x-a", "transfer-encoding", "x-a", "expect"]);
        c.allowed_response_headers = names(&["content-length", "x-b", "connection"]);
        let a = section(c);
        assert_eq!(&a.request_headers[..], &names(&["x-a"])[..]);
        assert_eq!(a.response_headers.as_deref(), Some(&names(&["x-b"])[..]));
    }

    #[test]
    fn warnings_are_rate_limited() {
        let w = WarnLimiter::default();
        let interval = WARN_INTERVAL.as_millis() as u64;
        assert_eq!(w.check_at(1), Some(1));
        assert_eq!(w.check_at(2), None);
        assert_eq!(w.check_at(interval), None);
        assert_eq!(
            w.check_at(interval + 1),
            Some(3),
            "the next warning counts the suppressed ones"
        );
        assert_eq!(w.check_at(interval + 2), None);
    }

    #[test]
    fn compiled_sections_share_the_policy_pool() {
        let store = crate::policy::state::PolicyState::default();
        let meta = Arc::new(SectionMeta::detached(
            PolicyId::new("SluicePolicy", "shop", "p"),
            "extAuth",
        ));
        let c = store.compile();
        let _a = ExtAuth::compile(config(vec![]), meta.clone(), &c);
        let mut other = config(vec!["127.0.0.1:1".parse().unwrap()]);
        other.timeout = Duration::from_secs(1);
        let _b = ExtAuth::compile(other, meta, &c);
        assert_eq!(store.all::<AuthClient>().len(), 1);
    }
}
