//! Request handling: the phases of [`crate::policy`] around routing and the
//! upstream phase ([`super::forward`]). Each request runs
//! connection → pre-route → route match → policy phases → upstream →
//! response phase, once; whatever the gateway answers itself is a
//! [`Rejection`], whose reason labels the request metrics.
use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
    sync::{atomic::AtomicBool, Arc},
    time::Instant,
};

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use ipnet::IpNet;

use super::{
    body_idle::IdleBody,
    deadline::Deadline,
    edge::EdgeSettings,
    forward::Target,
    host::{valid_authority, HostError},
    load::{ShardLoad, ShardLoads},
    logged::{CountedRequest, LoggedResponse},
    per_source::PerSource,
    pool::Pools,
    Body,
};
use crate::{
    access_log::{self, request_id, AccessLog, Entry},
    metrics::{Metrics, Name, RequestLabels, RuleMetrics, ShardLabels, StatusClass},
    policy::{Reason, Rejection, RequestCtx, RoutePolicy, SectionMeta, Verdict},
    snapshot::{RequestView, ShardId, Snapshot},
    telemetry::{RequestTrace, Tracer},
};

/// What the accept loop knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub shard: ShardId,
    /// The address the client dialled (with sk_lookup, the gateway address,
    /// not the shard socket's own bind address).
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Set when the connection was TLS-terminated here.
    pub tls: Option<TlsInfo>,
    /// The peer's address as an `X-Forwarded-For` value, formatted once per
    /// connection rather than per request.
    pub(super) peer_value: HeaderValue,
    /// The shard's requests in flight (set by the accept loop; without it
    /// the shard's cap is not applied).
    pub(super) load: Option<Arc<ShardLoad>>,
    /// The Gateway's connection settings when its policy sets any (set by
    /// the accept loop); otherwise the agent's.
    pub(super) edge: Option<Arc<EdgeSettings>>,
}

/// The TLS side of a terminated connection.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The server name the client sent (SNI), if any, lower-case.
    pub sni: Option<Arc<str>>,
    /// The negotiated protocol version (`TLSv1.3`), for the access log.
    pub version: Option<&'static str>,
}

impl ConnInfo {
    pub fn new(shard: ShardId, local: SocketAddr, peer: SocketAddr, tls: Option<TlsInfo>) -> Self {
        let peer_value = HeaderValue::try_from(peer.ip().to_canonical().to_string())
            .expect("an IP address is a valid header value");
        Self {
            shard,
            local,
            peer,
            tls,
            peer_value,
            load: None,
            edge: None,
        }
    }

    /// `https` for TLS-terminated connections, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// The L7 request handler shared by all shards.
pub struct Proxy {
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    /// Upstream connections (plain HTTP/1.1, h2c and TLS), per worker.
    pub(super) pools: Arc<Pools>,
    metrics: Metrics,
    /// Peers whose `X-Forwarded-*` headers are believed and extended.
    trusted_proxies: Vec<IpNet>,
    /// Client-side timeouts and limits.
    pub(super) edge: EdgeSettings,
    /// Open connections per client address and shard.
    pub(super) per_source: PerSource,
    /// Open client connections of the whole agent.
    pub(super) clients: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests in flight per shard.
    pub(super) loads: ShardLoads,
    /// Asked by the accept loops whether a connection is served.
    connection_gate: Option<ConnectionGate>,
    access_log: AccessLog,
    /// Give every request an `X-Request-Id`.
    request_ids: bool,
    /// Trace context and OTLP spans (off: one `None` check per request).
    tracer: Tracer,
}

/// Decides at accept whether a connection from a peer is served (the rate
/// limits' penalty box, in userspace mode the only place it is enforced).
pub type ConnectionGate = Arc<dyn Fn(ShardId, IpAddr) -> bool + Send + Sync>;

/// How a response the gateway made itself, that is not a rejection, is
/// labelled (a redirect filter, a CORS preflight).
#[derive(Debug, Clone, Copy)]
pub(super) struct Answered(pub &'static str);

/// The labels of one handled request.
struct Handled<'s> {
    shard: Arc<str>,
    route: Arc<str>,
    reason: &'static str,
    /// The matched rule's resolved counters (when a rule was matched).
    rule: Option<&'s RuleMetrics>,
    /// Why the gateway answered itself, and which policy section decided.
    rejected: Option<(Reason, Option<Arc<SectionMeta>>)>,
}

/// What the access log needs to know of the upstream exchange.
#[derive(Debug, Default)]
pub(super) struct UpstreamSeen {
    /// Record times (only when the access log is on: two clock reads).
    pub timed: bool,
    /// The endpoint of the last attempt.
    pub endpoint: Option<SocketAddr>,
    pub retries: u32,
    /// When the first attempt was sent.
    pub sent: Option<Instant>,
    /// First attempt sent → response head received.
    pub head: Option<std::time::Duration>,
    /// The trace of a recorded request: a client span per attempt.
    pub trace: Option<RequestTrace>,
}

impl UpstreamSeen {
    /// An attempt is about to be sent to `endpoint` (names its span in the
    /// request's `traceparent` when the request is recorded).
    #[inline]
    pub(super) fn attempt_started(&mut self, headers: &mut http::HeaderMap, endpoint: SocketAddr) {
        if let Some(t) = &mut self.trace {
            t.start_attempt(headers, endpoint);
        }
    }

    /// The attempt ended: the backend's status, or why it failed.
    #[inline]
    pub(super) fn attempt_ended<B>(
        &mut self,
        outcome: Option<&Result<Response<B>, super::pool::UpstreamError>>,
    ) {
        if let Some(t) = &mut self.trace {
            match outcome {
                None => t.end_attempt(None, Some("timeout")),
                Some(Ok(r)) => t.end_attempt(Some(r.status().as_u16()), None),
                Some(Err(e)) if e.is_connect() => t.end_attempt(None, Some("connect")),
                Some(Err(_)) => t.end_attempt(None, Some("upstream")),
            }
        }
    }
}

/// An access log entry in the making, with the request body's byte count.
/// Not boxed itself (two words in the request's future); the entry is, once,
/// and travels on to the response body as it is.
struct LogEntry {
    entry: Box<Entry>,
    request_read: Option<Arc<std::sync::atomic::AtomicU64>>,
}

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("none"));

impl Proxy {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, metrics: Metrics) -> Self {
        Self {
            snapshot,
            pools: Arc::new(Pools::default()),
            metrics,
            trusted_proxies: Vec::new(),
            edge: EdgeSettings::default(),
            per_source: PerSource::default(),
            clients: Arc::default(),
            loads: ShardLoads::default(),
            connection_gate: None,
            access_log: AccessLog::default(),
            request_ids: false,
            tracer: Tracer::default(),
        }
    }

    /// Propagates trace context and records sampled requests as spans.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// The timeouts and limits of a connection: its Gateway's, or the agent's.
    #[inline]
    pub(super) fn edge_of<'a>(&'a self, conn: &'a ConnInfo) -> &'a EdgeSettings {
        conn.edge.as_deref().unwrap_or(&self.edge)
    }

    /// Client-side timeouts and limits other than the defaults.
    pub fn with_edge(mut self, edge: EdgeSettings) -> Self {
        self.edge = edge;
        self
    }

    /// The shard's name for a metric label (`none` once it is gone): only
    /// for rare events, it loads the snapshot.
    pub(super) fn shard_label(&self, shard: ShardId) -> Arc<str> {
        self.snapshot
            .load()
            .shard(shard)
            .map_or_else(|| NONE.clone(), |s| s.name.clone())
    }

    /// Counts an expired timeout of a shard's connection or request.
    pub(super) fn count_timeout(&self, shard: ShardId, reason: &'static str) {
        self.metrics.timeout(&self.shard_label(shard), reason);
    }

    /// Shards that refused requests for load since the agent started:
    /// name, requests refused, in flight now, the limit (for `/readyz`).
    pub fn shedding(&self) -> Vec<(Arc<str>, u64, usize, usize)> {
        let snapshot = self.snapshot.load();
        let limit = |id: ShardId| {
            snapshot
                .shard(id)
                .and_then(|s| s.connection.as_ref()?.max_requests_in_flight)
                .unwrap_or(self.edge.max_in_flight_per_shard)
        };
        let mut out: Vec<_> = self
            .loads
            .all()
            .into_iter()
            .filter(|(_, l)| l.shed() > 0)
            .map(|(id, l)| (self.shard_label(id), l.shed(), l.in_flight(), limit(id)))
            .collect();
        out.sort();
        out
    }

    /// Counts requests a client abandoned before their answer.
    pub(super) fn count_abandoned(&self, shard: ShardId, n: u64) {
        self.metrics.abandoned(&self.shard_label(shard), n);
    }

    /// Counts a connection closed to protect a shard.
    pub(super) fn count_shed(&self, shard: ShardId, reason: &'static str) {
        self.metrics.shed(&self.shard_label(shard), reason);
    }

    /// Logs every request to `log` (when enabled) and, with `request_ids`,
    /// gives every request an `X-Request-Id` (kept when a trusted proxy sent
    /// one), forwarded upstream and returned.
    pub fn with_access_log(mut self, log: AccessLog, request_ids: bool) -> Self {
        self.access_log = log;
        self.request_ids = request_ids;
        self
    }

    /// Connections whose peer `gate` refuses are closed at accept.
    pub fn with_connection_gate(mut self, gate: ConnectionGate) -> Self {
        self.connection_gate = Some(gate);
        self
    }

    /// Whether a connection from `peer` to `shard` is served.
    pub fn admit_connection(&self, shard: ShardId, peer: IpAddr) -> bool {
        self.connection_gate.as_ref().is_none_or(|g| g(shard, peer))
    }

    /// Upstream "connections" that answer every request with `200` and
    /// `body` without any I/O: the request-path benchmark measures
    /// everything else of the data path with it.
    pub fn with_canned_upstream(mut self, body: bytes::Bytes) -> Self {
        self.pools = Arc::new(Pools::canned(body));
        self
    }

    /// Peers in these networks are proxies in front of the gateway: their
    /// `X-Forwarded-For` is appended to and their `X-Forwarded-Proto/Host`
    /// kept. From anyone else these headers are replaced, so a client
    /// cannot forge its address or scheme towards the backends.
    pub fn with_trusted_proxies(mut self, networks: Vec<IpNet>) -> Self {
        self.trusted_proxies = networks;
        self
    }

    pub(super) fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }

    /// The client's address: the peer, or — when the peer is a trusted
    /// proxy — the nearest address in `X-Forwarded-For` that is not one.
    fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted_proxies.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all(&super::forward::X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .map(|a| a.to_canonical())
            .collect();
        hops.iter()
            .rev()
            .find(|a| !self.is_trusted(**a))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }

    /// The snapshot being served (the L4 relay reads its routes from it).
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The TLS server config of a shard port, when connections to it are TLS.
    pub fn tls_config(&self, shard: ShardId, port: u16) -> Option<Arc<rustls::ServerConfig>> {
        let snapshot = self.snapshot.load();
        let shard = snapshot.shard(shard)?;
        shard.tls.get(&shard.listener_port(port)).cloned()
    }

    /// Handles one request of a connection. Errors are responses: the
    /// `Result` is what hyper's service wants. Takes its `Arc`s by value and
    /// is generic over the request body: the server boxes this future
    /// itself (one allocation, no wrapper future around it), and the
    /// request-path benchmark runs it without sockets (the server passes
    /// hyper's `Incoming`).
    pub async fn handle<B>(
        self: Arc<Self>,
        conn: Arc<ConnInfo>,
        req: Request<B>,
    ) -> Result<Response<Body>, std::convert::Infallible>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<super::BoxError>,
    {
        let start = Instant::now();
        // The request keeps this snapshot to the end, whatever is published meanwhile.
        let snapshot = self.snapshot.load_full();
        let snapshot: &Snapshot = &snapshot;
        let conn: &ConnInfo = &conn;
        let mut req = req;
        let request_id = self
            .request_ids
            .then(|| self.request_id(conn, req.headers_mut()));
        // Sets the traceparent the request is forwarded with; only recorded
        // requests keep their trace.
        let trace = self.tracer.begin(req.headers_mut()).filter(|t| t.sampled);
        // Boxed and only when logging or tracing: the fields live across the
        // awaits below, and every byte of this future is copied as it is
        // polled. A recorded request's spans are made of its entry.
        let mut entry = (self.access_log.enabled() || trace.is_some())
            .then(|| self.log_entry(conn, &req, request_id.clone(), start));
        let mut seen = UpstreamSeen {
            timed: entry.is_some(),
            trace,
            ..UpstreamSeen::default()
        };
        // Inline rather than a function of its own: every async call level
        // stores its callee's state in its own and copies it when it is
        // first awaited.
        // Gateway-made answers to gRPC requests are gRPC statuses.
        let grpc = super::grpc_status::is_grpc(req.headers());
        let (response, handled) = 'serve: {
            let rejected = |r: Rejection, shard: &Arc<str>, route: &Arc<str>| {
                let handled = Handled {
                    shard: shard.clone(),
                    route: route.clone(),
                    reason: r.reason.label(),
                    rule: None,
                    rejected: Some((r.reason, r.section.clone())),
                };
                (super::grpc_status::answer(r, grpc), handled)
            };
            // Connection → listener.
            let Some(shard) = snapshot.shard(conn.shard) else {
                break 'serve rejected(
                    Rejection::new(Reason::NoGateway, "no gateway"),
                    &NONE,
                    &NONE,
                );
            };
            // Held until the response head: the shard's bulkhead for requests.
            let _in_flight = match &conn.load {
                Some(load) => match load.enter(self.edge_of(conn).max_in_flight_per_shard) {
                    Some(counted) => Some(counted),
                    None => {
                        break 'serve rejected(
                            Rejection::new(Reason::Overloaded, "gateway overloaded")
                                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
                            &shard.name,
                            &NONE,
                        )
                    }
                },
                None => None,
            };
            let authority = match Authority::of(&req) {
                Ok(a) => a,
                Err(e) => {
                    let reason = match e {
                        HostError::Missing => Reason::MissingHost,
                        _ => Reason::BadRequest,
                    };
                    break 'serve rejected(
                        Rejection::new(reason, e.to_string()),
                        &shard.name,
                        &NONE,
                    );
                }
            };
            // hyper bounds the head; the target alone gets its own limit.
            let uri = req.uri();
            let target_len = uri.path_and_query().map_or(0, |p| p.as_str().len())
                + uri.authority().map_or(0, |a| a.as_str().len());
            if target_len > self.edge_of(conn).max_uri_bytes {
                break 'serve rejected(
                    Rejection::new(Reason::UriTooLong, "request target too long"),
                    &shard.name,
                    &NONE,
                );
            }
            // Matched and forwarded in one canonical form (`super::path`).
            let normalized = match crate::path::normalize(uri.path(), &self.edge_of(conn).path) {
                Ok(std::borrow::Cow::Owned(path)) => Some(path),
                Ok(std::borrow::Cow::Borrowed(_)) => None,
                Err(e) => {
                    break 'serve rejected(
                        Rejection::new(Reason::BadRequest, e.to_string()),
                        &shard.name,
                        &NONE,
                    )
                }
            };
            if let Some(path) = normalized {
                *req.uri_mut() = crate::path::with_path(req.uri(), &path);
                // Logged (and traced) as routed and forwarded.
                if let Some(e) = &mut entry {
                    e.entry.uri = req.uri().clone();
                }
            }
            let host = authority.routing_host();
            let listener = shard.listener_for(conn.local.port(), &host);
            if let (Some(e), Some(l)) = (&mut entry, listener) {
                e.entry.listener = Some(l.name.clone());
            }
            let Some(listener) = listener else {
                break 'serve rejected(
                    Rejection::new(Reason::NoRoute, "no route"),
                    &shard.name,
                    &NONE,
                );
            };
            if let Some(tls) = &conn.tls {
                // The certificate was chosen for the SNI's listener; a Host that
                // belongs to another listener on the port is misdirected (RFC 9110
                // §15.5.20), as the Gateway API asks for listeners sharing a port.
                let by_sni =
                    shard.listener_for(conn.local.port(), tls.sni.as_deref().unwrap_or(""));
                if by_sni.is_none_or(|l| l.name != listener.name) {
                    break 'serve rejected(
                        Rejection::new(Reason::Misdirected, "misdirected request"),
                        &shard.name,
                        &NONE,
                    );
                }
            }
            // The route lookup has no side effects: the pre-route checks use
            // the matched route's effective policy (or the listener's).
            let view = RequestView::new(
                req.method(),
                req.uri().path(),
                req.uri().query(),
                req.headers(),
            );
            let route_entry = listener.routes.find(&host, &view);
            drop(view);
            let route_name = route_entry.map_or(&*NONE, |e| &e.route_name);
            let policy: &RoutePolicy = match route_entry {
                Some(e) => &e.action.policy,
                None => &listener.policy,
            };
            if let (Some(e), Some(log)) = (&mut entry, &policy.log) {
                e.entry.filter = Some(log.filter);
            }
            let (parts, body) = req.into_parts();
            let has_policy = !policy.is_empty();
            let mut ctx = has_policy.then(|| {
                let mut ctx = RequestCtx::new(
                    conn.peer,
                    self.client_ip(conn.peer.ip(), &parts.headers),
                    &host,
                );
                ctx.source_namespace = snapshot.identity.namespace_of(ctx.client_ip);
                ctx
            });
            if let Some(ctx) = &ctx {
                if let Err(r) = policy.pre_route(ctx, &parts) {
                    break 'serve rejected(r, &shard.name, route_name);
                }
            }
            let Some(route_entry) = route_entry else {
                break 'serve rejected(
                    Rejection::new(Reason::NoRoute, "no route"),
                    &shard.name,
                    &NONE,
                );
            };
            // Only a request that streams a body pays for watching it.
            let body_sent = (!body.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
            let mut body: Body = match &body_sent {
                None => body.map_err(Into::into).boxed(),
                Some(sent) => IdleBody::new(
                    body.map_err(Into::into).boxed(),
                    self.edge_of(conn).body_idle_timeout,
                    sent.clone(),
                )
                .boxed(),
            };
            let target = Target {
                entry: route_entry,
                listener_port: listener.port,
                scheme: conn.scheme(),
                host: &host,
                authority: &authority,
                body_sent: body_sent.as_deref(),
            };
            let mut request_read = None;
            // Without a body (most requests) there is nothing to count.
            if entry.is_some() && body_sent.is_some() {
                let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
                body = CountedRequest::new(body, read.clone()).boxed();
                request_read = Some(read);
            }
            if let Some(e) = &mut entry {
                e.entry.rule = Some(route_entry.rule);
            }
            let deadline = route_entry
                .action
                .timeouts
                .request
                .map(|limit| tokio::time::Instant::now() + limit);
            // The exchange is made in the arm that awaits it: a future made
            // before the `match` and moved into `timeout_at` would be stored
            // twice in this future's state.
            let outcome = match deadline {
                Some(at) => match tokio::time::timeout_at(
                    at,
                    self.exchange(policy, ctx.as_mut(), target, conn, parts, body, &mut seen),
                )
                .await
                {
                    // The body streams after this returns: it gets the rest of the budget.
                    Ok(r) => r.map(|resp| resp.map(|b| Deadline::new(b, at).boxed())),
                    Err(_) => Err(Rejection::new(Reason::RequestTimeout, "request timeout")),
                },
                None => {
                    self.exchange(policy, ctx.as_mut(), target, conn, parts, body, &mut seen)
                        .await
                }
            };
            let (mut response, reason, rejected) = match outcome {
                Ok(resp) => {
                    let reason = resp
                        .extensions()
                        .get::<Answered>()
                        .map_or("upstream", |a| a.0);
                    (resp, reason, None)
                }
                Err(r) => {
                    let reason = r.reason.label();
                    let rejected = Some((r.reason, r.section.clone()));
                    (super::grpc_status::answer(r, grpc), reason, rejected)
                }
            };
            if let Some(ctx) = &ctx {
                policy.response(ctx, response.headers_mut());
                if let Some(e) = &mut entry {
                    e.entry.principal = ctx.identity.principal();
                }
            }
            if let (Some(e), Some(read)) = (&mut entry, request_read) {
                e.request_read = Some(read);
            }
            (
                response,
                Handled {
                    shard: shard.name.clone(),
                    route: route_entry.route_name.clone(),
                    reason,
                    rule: Some(&route_entry.action.metrics),
                    rejected,
                },
            )
        };
        let status = response.status().as_u16();
        let elapsed = start.elapsed().as_secs_f64();
        match handled.rule {
            // The common case: counters resolved once per rule, no label hashing.
            Some(rule) => {
                if handled.reason == "upstream" {
                    rule.upstream(&self.metrics, &handled.shard, &handled.route, status)
                        .inc();
                } else {
                    self.count(&handled, status);
                }
                rule.duration(&self.metrics, &handled.shard)
                    .observe(elapsed);
            }
            None => {
                self.count(&handled, status);
                self.metrics
                    .request_duration
                    .get_or_create(&ShardLabels {
                        shard: Name(handled.shard.clone()),
                    })
                    .observe(elapsed);
            }
        }
        let mut response = response;
        if let Some(id) = request_id {
            response
                .headers_mut()
                .insert(X_REQUEST_ID, request_id::never_indexed(id));
        }
        if let Some(e) = entry {
            response = self.logged(response, e, handled, seen, start);
        }
        Ok(response)
    }

    /// The request's id: a trusted proxy's, else a new one; set on the
    /// request, so that it is forwarded.
    fn request_id(&self, conn: &ConnInfo, headers: &mut http::HeaderMap) -> HeaderValue {
        // One lookup for both the check and the insert.
        match headers.entry(X_REQUEST_ID) {
            http::header::Entry::Occupied(mut o) => {
                if request_id::acceptable(o.get()) && self.is_trusted(conn.peer.ip()) {
                    return o.get().clone();
                }
                let id = request_id::generate();
                o.insert(id.clone());
                id
            }
            http::header::Entry::Vacant(v) => v.insert(request_id::generate()).clone(),
        }
    }

    /// The access log entry with what is known when the request arrives.
    fn log_entry<B>(
        &self,
        conn: &ConnInfo,
        req: &Request<B>,
        request_id: Option<HeaderValue>,
        start: Instant,
    ) -> LogEntry {
        let h = req.headers();
        // The headers the entry keeps, in one pass over a request's few
        // headers rather than a hash lookup each; the first of each name,
        // as `get` gives it.
        let (mut host, mut x_forwarded_for, mut user_agent, mut received_id, mut traceparent) =
            (None, None, None, None, None);
        for (name, value) in h {
            let slot = if name == header::HOST {
                &mut host
            } else if name == header::USER_AGENT {
                &mut user_agent
            } else if name == super::forward::X_FORWARDED_FOR {
                &mut x_forwarded_for
            } else if name == X_REQUEST_ID {
                &mut received_id
            } else if name == crate::telemetry::context::TRACEPARENT {
                &mut traceparent
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        let entry = Entry {
            time: access_log::wall_clock(start),
            gateway: NONE.clone(),
            listener: None,
            route: None,
            rule: None,
            method: req.method().clone(),
            // The URI's authority travels with `uri`; no copy of it here.
            authority: match req.uri().authority() {
                Some(_) => None,
                None => host.cloned(),
            },
            uri: req.uri().clone(),
            query: self.access_log.query_mode(),
            version: req.version(),
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration: Default::default(),
            upstream: None,
            upstream_time: None,
            retries: 0,
            tls_version: conn.tls.as_ref().and_then(|t| t.version),
            sni: conn.tls.as_ref().and_then(|t| t.sni.clone()),
            peer: conn.peer,
            client: self.client_ip(conn.peer.ip(), h),
            x_forwarded_for: x_forwarded_for.cloned(),
            user_agent: user_agent.cloned(),
            request_id: request_id.or_else(|| received_id.cloned()),
            trace_id: traceparent.and_then(access_log::trace_id),
            principal: None,
            policy: None,
            reason: "upstream",
            flag: "-",
            incomplete: false,
            trace: None,
            filter: None,
        };
        LogEntry {
            entry: Box::new(entry),
            request_read: None,
        }
    }

    /// Completes the entry with the outcome and hands the response body the
    /// job of sending it when the body is done.
    fn logged(
        &self,
        response: Response<Body>,
        log: LogEntry,
        handled: Handled<'_>,
        mut seen: UpstreamSeen,
        start: Instant,
    ) -> Response<Body> {
        let LogEntry {
            mut entry,
            request_read,
        } = log;
        entry.gateway = handled.shard;
        entry.route = (!Arc::ptr_eq(&handled.route, &NONE)).then_some(handled.route);
        entry.status = response.status().as_u16();
        entry.reason = handled.reason;
        let (reason, section) = handled.rejected.unzip();
        entry.flag = access_log::flag(reason, handled.reason);
        entry.policy = section.flatten().map(|s| (s.policy.to_string(), s.section));
        entry.upstream = seen.endpoint;
        entry.upstream_time = seen.head;
        entry.retries = seen.retries;
        entry.trace = seen.trace.take();
        response.map(|body| {
            LoggedResponse::new(
                body,
                entry,
                self.access_log.clone(),
                self.tracer.clone(),
                start,
                request_read,
            )
            .boxed()
        })
    }

    /// Counts a request through the family (answers of the gateway itself).
    fn count(&self, handled: &Handled<'_>, status: u16) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                shard: Name(handled.shard.clone()),
                route: Name(handled.route.clone()),
                status_class: StatusClass(status),
                reason: handled.reason,
            })
            .inc();
    }

    /// The policy phases that need the body (CORS preflight,
    /// authentication, authorization, transforms, body limit) and the
    /// upstream phase.
    // The request's parts travel as arguments rather than in a struct: a
    // struct would be one more value moved into this future's state.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        self: &Arc<Self>,
        policy: &RoutePolicy,
        ctx: Option<&mut RequestCtx<'_>>,
        target: Target<'_>,
        conn: &ConnInfo,
        mut parts: http::request::Parts,
        mut body: Body,
        seen: &mut UpstreamSeen,
    ) -> Result<Response<Body>, Rejection> {
        let mut limit_hit = None;
        let mut cache = None;
        if let Some(ctx) = ctx {
            ctx.origin = parts.headers.get(header::ORIGIN).cloned();
            // Before authentication strips it: a request that came with
            // credentials may get a personal answer (RFC 9111 §3.5).
            let sent_credentials =
                policy.cache.is_some() && parts.headers.contains_key(header::AUTHORIZATION);
            // Boxed: authentication may call out (JWKS, external auth), and
            // that state inline would enlarge every request's future, policy
            // or not (futures are moved byte for byte as they are awaited).
            match Box::pin(policy.request(ctx, &mut parts, &mut body)).await? {
                Verdict::Respond(mut resp) => {
                    resp.extensions_mut().insert(Answered("cors_preflight"));
                    return Ok(resp);
                }
                Verdict::Forward => {}
            }
            let (limited, hit) = policy.limit_body(body);
            body = limited;
            limit_hit = hit;
            if let Some(c) = &policy.cache {
                let id = &ctx.identity;
                // An external authorization service leaves no identity
                // here, but may have set identity headers for the backend.
                let authenticated = id.claims.is_some()
                    || id.api_client.is_some()
                    || id.user.is_some()
                    || policy
                        .authn
                        .iter()
                        .any(|a| matches!(a, crate::policy::Authenticator::Ext(_)));
                cache = Some((c, sent_credentials || authenticated));
            }
        }
        let outcome = match cache {
            // Boxed: routes without a cache do not carry its state.
            Some((c, authorized)) => {
                Box::pin(self.cached(c, authorized, target, conn, parts, body, seen)).await
            }
            None => self.forward(target, conn, parts, body, seen).await,
        };
        match (outcome, limit_hit) {
            // The body outgrew the limit while streaming: the exchange
            // failed because of it, and it is the client's 413.
            (Err(_), Some(hit)) if hit.hit() => Err(policy
                .limits
                .as_ref()
                .map(|l| l.streamed_rejection())
                .unwrap_or_else(|| Rejection::new(Reason::BodyTooLarge, "body too large"))),
            (outcome, _) => outcome,
        }
    }
}

/// The request authority as received: `:authority` for HTTP/2 (and an
/// absolute-form HTTP/1.1 target), else the Host header. Kept as a header
/// value: the Host header's is shared with the request, not copied.
#[derive(Clone)]
pub(super) struct Authority {
    value: HeaderValue,
    /// Whether `value` is the request's own Host header (else the
    /// upstream request needs one).
    from_host_header: bool,
}

impl Authority {
    /// The authority of `req`, checked: one `Host`, valid syntax, and on
    /// HTTP/2 a `Host` that agrees with `:authority`. An absolute-form
    /// HTTP/1.1 target wins over `Host` (RFC 9112 §3.2.2), which must still
    /// be there and valid.
    fn of<B>(req: &Request<B>) -> Result<Self, HostError> {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(HostError::Duplicate);
        }
        if let Some(host) = host {
            if !valid_authority(host.as_bytes()) {
                return Err(HostError::Invalid);
            }
        }
        if let Some(a) = req.uri().authority() {
            if !valid_authority(a.as_str().as_bytes()) {
                return Err(HostError::InvalidAuthority);
            }
            match (req.version(), host) {
                (http::Version::HTTP_2, Some(h))
                    if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) =>
                {
                    return Err(HostError::Mismatch);
                }
                (http::Version::HTTP_11, None) => return Err(HostError::Missing),
                _ => {}
            }
            return Ok(Self {
                value: HeaderValue::from_str(a.as_str())
                    .map_err(|_| HostError::InvalidAuthority)?,
                from_host_header: false,
            });
        }
        // Valid authority syntax is visible ASCII, so `as_str` never falls back.
        let value = host.ok_or(HostError::Missing)?;
        Ok(Self {
            value: value.clone(),
            from_host_header: true,
        })
    }

    pub(super) fn as_str(&self) -> &str {
        self.value.to_str().unwrap_or_default()
    }

    pub(super) fn value(&self) -> &HeaderValue {
        &self.value
    }

    pub(super) fn is_host_header(&self) -> bool {
        self.from_host_header
    }

    /// The host that chooses the listener and the route: lower-case, without
    /// the port (an IPv6 literal without its brackets).
    fn routing_host(&self) -> Cow<'_, str> {
        lower(host_without_port(self.as_str()))
    }
}

/// The routing host of a request head as [`Proxy::handle`] computes it
/// before any routing, or why the request is refused (`400`): one valid
/// `Host`, agreeing with `:authority` on HTTP/2, then lower-cased and
/// without the port. Used by the `request_head` and
/// `route_match` fuzz targets (`agent/fuzz`).
pub fn request_host<B>(req: &Request<B>) -> Result<String, HostError> {
    Authority::of(req).map(|a| a.routing_host().into_owned())
}

/// `s` in lower case, copied only when it is not already.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
    }

    #[test]
    fn client_ip_walks_trusted_hops_from_the_right() {
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let p = Proxy::new(snapshot, Metrics::default())
            .with_trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()]);
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.7, 198.51.100.2, 10.1.1.1".parse().unwrap(),
        );
        let ip = |peer: &str, h: &http::HeaderMap| p.client_ip(peer.parse().unwrap(), h);
        assert_eq!(
            ip("10.0.0.1", &h),
            "198.51.100.2".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(ip("192.0.2.1", &h), "192.0.2.1".parse::<IpAddr>().unwrap());
        let empty = http::HeaderMap::new();
        assert_eq!(
            ip("10.0.0.1", &empty),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
