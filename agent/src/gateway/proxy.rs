//! Request handling: pick shard listener → route → backend, forward upstream
//! with a pooled client, and stream the answer back.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use ipnet::IpNet;

use super::{
    deadline::Deadline,
    filters::{self, RedirectContext},
    full,
    mirror::{self, UpstreamBody},
    retry::Replay,
    upgrade::{self, upgrade_protocol},
    upstream_tls::{self, TlsPools},
    Body,
};
use crate::{
    config::{Filter, HeaderModifier, Redirect},
    metrics::{Metrics, Name, RequestLabels, ShardLabels, StatusClass},
    policy::cors,
    snapshot::{AppProtocol, BackendTarget, RequestView, RouteEntry, ShardId, Snapshot},
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
}

/// The TLS side of a terminated connection.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The server name the client sent (SNI), if any.
    pub sni: Option<Arc<str>>,
}

impl ConnInfo {
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
    snapshot: Arc<ArcSwap<Snapshot>>,
    client: Client<HttpConnector, UpstreamBody>,
    /// HTTP/2 with prior knowledge, for `kubernetes.io/h2c` backends.
    h2c: Client<HttpConnector, UpstreamBody>,
    /// TCP connector under the TLS pools.
    connector: HttpConnector,
    /// Pools of TLS backends (BackendTLSPolicy).
    tls_pools: TlsPools,
    metrics: Metrics,
    /// Peers whose `X-Forwarded-*` headers are believed and extended.
    trusted_proxies: Vec<IpNet>,
}

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

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, metrics: Metrics) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .http2_only(true)
            .build(connector.clone());
        let mut tcp = connector;
        // The TLS layer asks for https URIs; TCP underneath does not care.
        tcp.enforce_http(false);
        Self {
            snapshot,
            client,
            h2c,
            connector: tcp,
            tls_pools: TlsPools::default(),
            metrics,
            trusted_proxies: Vec::new(),
        }
    }

    /// Peers in these networks are proxies in front of the gateway: their
    /// `X-Forwarded-For` is appended to and their `X-Forwarded-Proto/Host`
    /// kept. From anyone else these headers are replaced, so a client
    /// cannot forge its address or scheme towards the backends.
    pub fn with_trusted_proxies(mut self, networks: Vec<IpNet>) -> Self {
        self.trusted_proxies = networks;
        self
    }

    fn is_trusted(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }

    /// The TLS server config of a shard port, when connections to it are TLS.
    pub fn tls_config(&self, shard: ShardId, port: u16) -> Option<Arc<rustls::ServerConfig>> {
        let snapshot = self.snapshot.load();
        let shard = snapshot.shard(shard)?;
        shard.tls.get(&shard.listener_port(port)).cloned()
    }

    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        // The request keeps this snapshot to the end, whatever is published meanwhile.
        let snapshot = self.snapshot.load_full();
        let (response, shard, route) = self.route_and_forward(&snapshot, conn, req).await;
        let status = response.status().as_u16();
        let shard = Name(shard);
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                shard: shard.clone(),
                route: Name(route),
                status_class: StatusClass(status),
            })
            .inc();
        self.metrics
            .request_duration
            .get_or_create(&ShardLabels { shard })
            .observe(start.elapsed().as_secs_f64());
        response
    }

    async fn route_and_forward(
        &self,
        snapshot: &Snapshot,
        conn: &ConnInfo,
        req: Request<Incoming>,
    ) -> (Response<Body>, Arc<str>, Arc<str>) {
        let none: Arc<str> = Arc::from("none");
        let Some(shard) = snapshot.shard(conn.shard) else {
            return (
                error(StatusCode::NOT_FOUND, "no gateway"),
                none.clone(),
                none,
            );
        };
        let shard_name = shard.name.clone();
        let Some(authority) = authority(&req) else {
            return (
                error(StatusCode::BAD_REQUEST, "missing Host header"),
                shard_name,
                none,
            );
        };
        let host = host_without_port(&authority).to_ascii_lowercase();
        let Some(listener) = shard.listener_for(conn.local.port(), &host) else {
            return (error(StatusCode::NOT_FOUND, "no route"), shard_name, none);
        };
        if let Some(tls) = &conn.tls {
            // The certificate was chosen for the SNI's listener; a Host that
            // belongs to another listener on the port is misdirected (RFC 9110
            // §15.5.20), as the Gateway API asks for listeners sharing a port.
            let sni = tls.sni.as_deref().unwrap_or("").to_ascii_lowercase();
            let by_sni = shard.listener_for(conn.local.port(), &sni);
            if by_sni.is_none_or(|l| l.name != listener.name) {
                return (
                    error(StatusCode::MISDIRECTED_REQUEST, "misdirected request"),
                    shard_name,
                    none,
                );
            }
        }
        let view = RequestView::new(
            req.method(),
            req.uri().path(),
            req.uri().query(),
            req.headers(),
        );
        let Some(entry) = listener.routes.find(&host, &view) else {
            return (error(StatusCode::NOT_FOUND, "no route"), shard_name, none);
        };
        let route_name = entry.route_name.clone();
        let target = Target {
            entry,
            listener_port: listener.port,
            scheme: conn.scheme(),
            host: &host,
            authority: &authority,
        };
        let forward = self.apply_rule(target, conn, req);
        let response = match entry.action.timeouts.request {
            Some(limit) => {
                let deadline = tokio::time::Instant::now() + limit;
                match tokio::time::timeout_at(deadline, forward).await {
                    // The body streams after this returns: it gets the rest of the budget.
                    Ok(r) => r.map(|body| Deadline::new(body, deadline).boxed()),
                    Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "request timeout"),
                }
            }
            None => forward.await,
        };
        (response, shard_name, route_name)
    }

    /// Runs the rule's filters, picks a backend, runs its filters and forwards.
    async fn apply_rule(
        &self,
        t: Target<'_>,
        conn: &ConnInfo,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let action = &t.entry.action;
        let (mut parts, body) = req.into_parts();
        let mut path = parts.uri.path().to_owned();
        let query = parts.uri.query().map(str::to_owned);
        let mut upstream_host: Option<String> = None;
        let mut response_mods: Vec<&HeaderModifier> = Vec::new();
        for f in &action.filters {
            if let Filter::ResponseHeaders(m) = f {
                response_mods.push(m);
            }
        }
        let cors_filter = action.filters.iter().find_map(|f| match f {
            Filter::Cors(c) => Some(c),
            _ => None,
        });
        let origin = parts.headers.get(header::ORIGIN).cloned();
        if let Some(c) = cors_filter {
            // Preflights are the gateway's to answer; they never reach a backend.
            if cors::is_preflight(&parts.method, &parts.headers) {
                return cors::preflight(c, &parts.headers);
            }
        }
        let finish = |mut resp: Response<Body>, mods: &[&HeaderModifier]| {
            for m in mods {
                filters::modify_headers(m, resp.headers_mut());
            }
            if let Some(c) = cors_filter {
                cors::annotate(c, origin.as_ref(), resp.headers_mut());
            }
            resp
        };
        for f in &action.filters {
            match f {
                Filter::RequestHeaders(m) => filters::modify_headers(m, &mut parts.headers),
                // Applied to the response; mirrors are sent with the upstream request.
                Filter::ResponseHeaders(_) | Filter::Mirror(_) | Filter::Cors(_) => {}
                Filter::ExternalAuth(_) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "external auth unavailable",
                    )
                }
                Filter::Redirect(r) => {
                    return finish(t.redirect(r, &path, query.as_deref()), &response_mods);
                }
                Filter::Rewrite(rw) => {
                    let out = filters::rewrite(rw, &t.entry.matcher.path, &path);
                    path = out.path;
                    if out.host.is_some() {
                        upstream_host = out.host;
                    }
                }
            }
        }
        let response = self
            .forward(
                t,
                conn,
                &mut parts,
                body,
                path,
                query,
                upstream_host,
                &mut response_mods,
            )
            .await;
        finish(response, &response_mods)
    }

    #[allow(clippy::too_many_arguments)] // The pieces of one request, split by the filters.
    async fn forward<'a>(
        &self,
        t: Target<'a>,
        conn: &ConnInfo,
        parts: &mut http::request::Parts,
        body: Incoming,
        mut path: String,
        query: Option<String>,
        upstream_host: Option<String>,
        response_mods: &mut Vec<&'a HeaderModifier>,
    ) -> Response<Body> {
        let action = &t.entry.action;
        let Some(backend) = action.backends.pick() else {
            // A rule without (non-zero-weight) backends answers 500 per Gateway API.
            return error(StatusCode::INTERNAL_SERVER_ERROR, "route has no backends");
        };
        // backendRef filters: only when this backend is picked, after the rule's.
        let mut upstream_host = upstream_host;
        for f in &backend.filters {
            match f {
                Filter::RequestHeaders(m) => filters::modify_headers(m, &mut parts.headers),
                Filter::ResponseHeaders(m) => response_mods.push(m),
                Filter::Redirect(r) => return t.redirect(r, &path, query.as_deref()),
                Filter::Rewrite(rw) => {
                    let out = filters::rewrite(rw, &t.entry.matcher.path, &path);
                    path = out.path;
                    if out.host.is_some() {
                        upstream_host = out.host;
                    }
                }
                // Rejected at backendRef level by validation.
                Filter::Mirror(_) | Filter::Cors(_) | Filter::ExternalAuth(_) => {}
            }
        }
        let endpoint = match &backend.target {
            BackendTarget::Invalid(reason) => {
                tracing::debug!(route = %t.entry.route, %reason, "invalid backend");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "backend not resolvable");
            }
            BackendTarget::Endpoints(_) => match backend.endpoint() {
                Some(ep) => ep,
                None => return error(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoints"),
            },
        };
        let path_and_query = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let head = std::mem::replace(parts, Request::new(()).into_parts().0);
        let mut req = Request::from_parts(head, body);
        let host = upstream_host.as_deref().unwrap_or(t.authority);
        let upgrade = upgrade_protocol(&req);
        let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let version = match (backend.protocol, &upgrade) {
            // Over TLS the version is ALPN's choice (see gateway::upstream_tls).
            (AppProtocol::H2c, None) if backend.tls.is_none() => http::Version::HTTP_2,
            _ => http::Version::HTTP_11,
        };
        let upstream = match upstream_request(
            req,
            conn,
            self.is_trusted(conn.peer.ip()),
            t.authority,
            host,
            &path_and_query,
            // TLS pools dial their endpoint; the URI carries the Host (HTTP/2 :authority).
            &match backend.tls {
                Some(_) => host.to_owned(),
                None => endpoint.to_string(),
            },
            version,
            upstream_tls::scheme(backend.tls.as_ref()),
        ) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        if let (Some(protocol), Some(downstream)) = (upgrade, downstream_upgrade) {
            return upgrade::forward(
                upstream,
                protocol,
                endpoint,
                backend.tls.as_deref(),
                downstream,
                &t.entry.route,
            )
            .await;
        }
        let upstream = self.send_mirrors(t.entry, upstream, &path_and_query);
        let (mut request, replay) = match &action.retry {
            Some(_) => {
                let (r, replay) = Replay::record(upstream);
                (r, Some(replay))
            }
            None => (upstream, None),
        };
        let mut endpoint = endpoint;
        let mut retries = 0;
        loop {
            // backendRequest covers one attempt until its full response is in.
            let deadline = action
                .timeouts
                .backend_request
                .map(|limit| tokio::time::Instant::now() + limit);
            let tls_client = backend
                .tls
                .as_ref()
                .map(|tls| self.tls_pools.client(tls, &self.connector, endpoint));
            let client = match (&tls_client, version) {
                (Some(c), _) => Upstream::Tls(c),
                (None, http::Version::HTTP_2) => Upstream::Plain(&self.h2c),
                (None, _) => Upstream::Plain(&self.client),
            };
            let sent = client.request(request);
            let outcome = match deadline {
                Some(at) => tokio::time::timeout_at(at, sent).await.ok(),
                None => Some(sent.await),
            };
            if let (Some(policy), Some(replay)) = (&action.retry, &replay) {
                let retriable = match &outcome {
                    None => true,
                    Some(Err(e)) => e.is_connect(),
                    Some(Ok(resp)) => policy.codes.contains(&resp.status().as_u16()),
                };
                if retriable && retries < policy.attempts {
                    // Another endpoint of the same backend, if it has several.
                    let next = backend.endpoint().and_then(|ep| {
                        let r = match backend.tls {
                            // The pool of `ep` dials it; the URI keeps the Host.
                            Some(_) => {
                                let mut r = replay.again(host)?;
                                *r.uri_mut() = with_scheme(r.uri(), "https")?;
                                r
                            }
                            None => replay.again(&ep.to_string())?,
                        };
                        Some((ep, r))
                    });
                    if let Some((ep, again)) = next {
                        drop(outcome);
                        tokio::time::sleep(policy.backoff).await;
                        tracing::debug!(route = %t.entry.route, from = %endpoint, to = %ep, retry = retries + 1, "retrying");
                        retries += 1;
                        endpoint = ep;
                        request = again;
                        continue;
                    }
                }
            }
            return match outcome {
                None => error(StatusCode::GATEWAY_TIMEOUT, "backend request timeout"),
                Some(Ok(resp)) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    let body = body.map_err(Into::into).boxed();
                    let body = match deadline {
                        Some(at) => Deadline::new(body, at).boxed(),
                        None => body,
                    };
                    Response::from_parts(parts, body)
                }
                Some(Err(e)) => {
                    tracing::warn!(
                        route = %t.entry.route,
                        endpoint = %upstream_tls::describe(endpoint, backend.tls.as_ref()),
                        error = %upstream_tls::error_chain(&e),
                        "upstream request failed"
                    );
                    let status = if e.is_connect() {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    error(status, "upstream unavailable")
                }
            };
        }
    }
}

impl Proxy {
    /// Starts the sampled mirrors of the rule with copies of `req` and
    /// returns the primary request, whose body now feeds the copies.
    fn send_mirrors(
        &self,
        entry: &RouteEntry,
        req: Request<Incoming>,
        path_and_query: &str,
    ) -> Request<UpstreamBody> {
        let targets: Vec<(SocketAddr, Option<upstream_tls::TlsClient>)> = entry
            .action
            .mirrors
            .iter()
            .filter(|m| m.sample())
            .filter_map(|m| {
                let ep = m.backend.endpoint();
                if ep.is_none() {
                    tracing::debug!(route = %entry.route, mirror = %m.backend.service, "mirror backend has no endpoint");
                }
                let ep = ep?;
                let tls = m
                    .backend
                    .tls
                    .as_ref()
                    .map(|tls| self.tls_pools.client(tls, &self.connector, ep));
                Some((ep, tls))
            })
            .collect();
        let (parts, body) = req.into_parts();
        let (primary, copies) = mirror::tee(body, targets.len());
        let req = Request::from_parts(parts, primary);
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned);
        for ((endpoint, tls), body) in targets.into_iter().zip(copies) {
            // As for the primary request: TLS pools dial their endpoint.
            let authority = match (&tls, &host) {
                (Some(_), Some(h)) => h.clone(),
                _ => endpoint.to_string(),
            };
            let Ok(uri) = Uri::builder()
                .scheme(if tls.is_some() { "https" } else { "http" })
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
            else {
                continue;
            };
            let copy = mirror::copy_head(&req, uri, body);
            let client = match tls {
                Some(c) => OwnedUpstream::Tls(c),
                None => OwnedUpstream::Plain(self.client.clone()),
            };
            let route = entry.route.clone();
            tokio::spawn(async move {
                let exchange = async {
                    match client.request(copy).await {
                        // Drained so the pooled connection can be reused.
                        Ok(resp) => resp
                            .into_body()
                            .collect()
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
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

/// The client a request goes out with.
enum Upstream<'a> {
    Plain(&'a Client<HttpConnector, UpstreamBody>),
    Tls(&'a upstream_tls::TlsClient),
}

impl Upstream<'_> {
    fn request(&self, req: Request<UpstreamBody>) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            Upstream::Plain(c) => c.request(req),
            Upstream::Tls(c) => c.request(req),
        }
    }
}

/// [`Upstream`] for a spawned task.
enum OwnedUpstream {
    Plain(Client<HttpConnector, UpstreamBody>),
    Tls(upstream_tls::TlsClient),
}

impl OwnedUpstream {
    fn request(&self, req: Request<UpstreamBody>) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            OwnedUpstream::Plain(c) => c.request(req),
            OwnedUpstream::Tls(c) => c.request(req),
        }
    }
}

/// `uri` with another scheme.
fn with_scheme(uri: &Uri, scheme: &str) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The routing decision for one request.
#[derive(Clone, Copy)]
struct Target<'a> {
    entry: &'a RouteEntry,
    listener_port: u16,
    /// `http` or `https`: how the request reached the gateway.
    scheme: &'static str,
    /// Request host, lower-case, without port.
    host: &'a str,
    /// Request authority as received (with port, if any).
    authority: &'a str,
}

impl Target<'_> {
    /// The response of a RequestRedirect filter for the request as it
    /// stands after the filters before it (`path` may be rewritten).
    fn redirect(&self, r: &Redirect, path: &str, query: Option<&str>) -> Response<Body> {
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
            return error(StatusCode::BAD_REQUEST, "request path cannot be redirected");
        };
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
        resp.headers_mut().insert(header::LOCATION, value);
        resp
    }
}

pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{message}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The request authority: `:authority` for HTTP/2, else the Host header.
fn authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
}

/// The request to the backend: `authority` is what the client asked for
/// (kept in X-Forwarded-Host), `host` what the backend sees as Host (differs
/// after a URLRewrite hostname).
#[allow(clippy::too_many_arguments)] // One request's pieces, as decided by the routing.
fn upstream_request(
    req: Request<Incoming>,
    conn: &ConnInfo,
    trusted_peer: bool,
    authority: &str,
    host: &str,
    path_and_query: &str,
    uri_authority: &str,
    version: http::Version,
    scheme: &'static str,
) -> Result<Request<Incoming>, String> {
    let (mut parts, body) = req.into_parts();
    parts.uri = Uri::builder()
        .scheme(scheme)
        .authority(uri_authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| format!("invalid request target: {e}"))?;
    parts.version = version;
    // `TE: trailers` is the one TE value that passes (gRPC relies on it).
    let te_trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("trailers"));
    strip_hop_by_hop(&mut parts.headers);
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let forwarded_host = HeaderValue::from_str(authority).map_err(|_| "invalid Host".to_owned())?;
    let host = HeaderValue::from_str(host).map_err(|_| "invalid Host".to_owned())?;
    parts.headers.insert(header::HOST, host);
    let peer_ip = conn.peer.ip().to_canonical().to_string();
    let h = &mut parts.headers;
    if !trusted_peer {
        // Whatever an untrusted client claims about earlier hops is dropped.
        for name in [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST] {
            h.remove(name);
        }
        h.remove(header::FORWARDED);
    }
    let earlier: Vec<&str> = h
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = if earlier.is_empty() {
        peer_ip
    } else {
        format!("{}, {peer_ip}", earlier.join(", "))
    };
    h.insert(
        X_FORWARDED_FOR.clone(),
        HeaderValue::from_str(&xff).map_err(|_| "invalid X-Forwarded-For".to_owned())?,
    );
    if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(conn.scheme()),
        );
    }
    if !h.contains_key(&X_FORWARDED_HOST) {
        h.insert(X_FORWARDED_HOST.clone(), forwarded_host);
    }
    Ok(Request::from_parts(parts, body))
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
