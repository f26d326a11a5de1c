//! Request handling: the phases of [`crate::policy`] around routing and the
//! upstream phase ([`super::forward`]). Each request runs
//! connection → pre-route → route match → policy phases → upstream →
//! response phase, once; whatever the gateway answers itself is a
//! [`Rejection`], whose reason labels the request metrics.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use arc_swap::ArcSwap;
use http::{header, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use ipnet::IpNet;

use super::{
    deadline::Deadline, forward::Target, mirror::UpstreamBody, upstream_tls::TlsPools, Body,
};
use crate::{
    metrics::{Metrics, Name, RequestLabels, ShardLabels, StatusClass},
    policy::{Reason, Rejection, RequestCtx, RoutePolicy, Verdict},
    snapshot::{RequestView, ShardId, Snapshot},
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
    pub(super) client: Client<HttpConnector, UpstreamBody>,
    /// HTTP/2 with prior knowledge, for `kubernetes.io/h2c` backends.
    pub(super) h2c: Client<HttpConnector, UpstreamBody>,
    /// TCP connector under the TLS pools.
    pub(super) connector: HttpConnector,
    /// Pools of TLS backends (BackendTLSPolicy).
    pub(super) tls_pools: TlsPools,
    metrics: Metrics,
    /// Peers whose `X-Forwarded-*` headers are believed and extended.
    trusted_proxies: Vec<IpNet>,
    /// Asked by the accept loops whether a connection is served.
    connection_gate: Option<ConnectionGate>,
}

/// Decides at accept whether a connection from a peer is served (the rate
/// limits' penalty box, in userspace mode the only place it is enforced).
pub type ConnectionGate = Arc<dyn Fn(ShardId, IpAddr) -> bool + Send + Sync>;

/// How a response the gateway made itself, that is not a rejection, is
/// labelled (a redirect filter, a CORS preflight).
#[derive(Debug, Clone, Copy)]
pub(super) struct Answered(pub &'static str);

/// The labels of one handled request.
struct Handled {
    shard: Arc<str>,
    route: Arc<str>,
    reason: &'static str,
}

static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("none"));

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
            connection_gate: None,
        }
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
            .get_all("x-forwarded-for")
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
        let (response, handled) = self.serve(&snapshot, conn, req).await;
        let status = response.status().as_u16();
        let shard = Name(handled.shard);
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                shard: shard.clone(),
                route: Name(handled.route),
                status_class: StatusClass(status),
                reason: handled.reason,
            })
            .inc();
        self.metrics
            .request_duration
            .get_or_create(&ShardLabels { shard })
            .observe(start.elapsed().as_secs_f64());
        response
    }

    async fn serve(
        &self,
        snapshot: &Snapshot,
        conn: &ConnInfo,
        req: Request<Incoming>,
    ) -> (Response<Body>, Handled) {
        let rejected = |r: Rejection, shard: &Arc<str>, route: &Arc<str>| {
            let handled = Handled {
                shard: shard.clone(),
                route: route.clone(),
                reason: r.reason.label(),
            };
            (r.into_response(), handled)
        };
        // Connection → listener.
        let Some(shard) = snapshot.shard(conn.shard) else {
            return rejected(
                Rejection::new(Reason::NoGateway, "no gateway"),
                &NONE,
                &NONE,
            );
        };
        let Some(authority) = authority(&req) else {
            return rejected(
                Rejection::new(Reason::MissingHost, "missing Host header"),
                &shard.name,
                &NONE,
            );
        };
        let host = host_without_port(&authority).to_ascii_lowercase();
        let Some(listener) = shard.listener_for(conn.local.port(), &host) else {
            return rejected(
                Rejection::new(Reason::NoRoute, "no route"),
                &shard.name,
                &NONE,
            );
        };
        if let Some(tls) = &conn.tls {
            // The certificate was chosen for the SNI's listener; a Host that
            // belongs to another listener on the port is misdirected (RFC 9110
            // §15.5.20), as the Gateway API asks for listeners sharing a port.
            let sni = tls.sni.as_deref().unwrap_or("").to_ascii_lowercase();
            let by_sni = shard.listener_for(conn.local.port(), &sni);
            if by_sni.is_none_or(|l| l.name != listener.name) {
                return rejected(
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
        let entry = listener.routes.find(&host, &view);
        let route_name = entry.map_or(&*NONE, |e| &e.route_name);
        let policy: &RoutePolicy = match entry {
            Some(e) => &e.action.policy,
            None => &listener.policy,
        };
        let (mut parts, body) = req.into_parts();
        let mut ctx = RequestCtx::new(
            conn.peer,
            self.client_ip(conn.peer.ip(), &parts.headers),
            &host,
        );
        let has_policy = !policy.is_empty();
        if has_policy {
            ctx.source_namespace = snapshot.identity.namespace_of(ctx.client_ip);
            if let Err(r) = policy.pre_route(&ctx, &parts) {
                return rejected(r, &shard.name, route_name);
            }
        }
        let Some(entry) = entry else {
            return rejected(
                Rejection::new(Reason::NoRoute, "no route"),
                &shard.name,
                &NONE,
            );
        };
        let target = Target {
            entry,
            listener_port: listener.port,
            scheme: conn.scheme(),
            host: &host,
            authority: &authority,
        };
        let mut body: Body = body.map_err(Into::into).boxed();
        let deadline = entry
            .action
            .timeouts
            .request
            .map(|limit| tokio::time::Instant::now() + limit);
        let work = async {
            let mut limit_hit = None;
            if has_policy {
                ctx.origin = parts.headers.get(header::ORIGIN).cloned();
                match policy.request(&mut ctx, &mut parts, &mut body).await? {
                    Verdict::Respond(mut resp) => {
                        resp.extensions_mut().insert(Answered("cors_preflight"));
                        return Ok(resp);
                    }
                    Verdict::Forward => {}
                }
                let (limited, hit) = policy.limit_body(body);
                body = limited;
                limit_hit = hit;
            }
            let outcome = self.forward(target, conn, parts, body).await;
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
        };
        let outcome = match deadline {
            Some(at) => match tokio::time::timeout_at(at, work).await {
                // The body streams after this returns: it gets the rest of the budget.
                Ok(r) => r.map(|resp| resp.map(|b| Deadline::new(b, at).boxed())),
                Err(_) => Err(Rejection::new(Reason::RequestTimeout, "request timeout")),
            },
            None => work.await,
        };
        let (mut response, reason) = match outcome {
            Ok(resp) => {
                let reason = resp
                    .extensions()
                    .get::<Answered>()
                    .map_or("upstream", |a| a.0);
                (resp, reason)
            }
            Err(r) => {
                let reason = r.reason.label();
                (r.into_response(), reason)
            }
        };
        if has_policy {
            policy.response(&ctx, response.headers_mut());
        }
        (
            response,
            Handled {
                shard: shard.name.clone(),
                route: entry.route_name.clone(),
                reason,
            },
        )
    }
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
