//! Upstream connections: a lean pool of hyper client connections per
//! backend endpoint, one pool per data-path worker.
//!
//! Why not hyper-util's legacy `Client`: per request it parses and hashes
//! the URI's scheme and authority for its pool key, takes a pool-wide lock,
//! and spawns a task that waits for the connection to become ready again
//! before handing it back. Here a request takes an idle HTTP/1.1
//! connection of its endpoint (last in, first out: the warmest one) from
//! its worker's pool, sends on it directly, and the connection goes back
//! when the response body has been read to its end; HTTP/2 (h2c, or TLS
//! with ALPN h2) shares one multiplexed connection per endpoint.
//!
//! A pooled HTTP/1.1 connection the backend closed while it was idle is
//! detected before the request is written ([`SendRequest::try_send_request`]
//! hands the request back), and the request goes out on a fresh connection;
//! a request that was written is never sent twice here (retries are the
//! route's business, [`super::retry`]).
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use hyper::{
    body::{Body as HttpBody, Frame, Incoming, SizeHint},
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::mirror::UpstreamBody;
use crate::{policy::upstream::Slot, snapshot::upstream_tls::UpstreamTls};

/// Longest wait for a backend's TCP connection (and TLS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections older than this are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle HTTP/1.1 connections kept per endpoint; more are closed on return.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// How often idle connections are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why an upstream exchange failed. The messages leave the cause to
/// [`std::error::Error::source`] (logs print the chain).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {endpoint}")]
    Connect {
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {endpoint}: timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout { endpoint: SocketAddr },
    #[error("TLS handshake with {endpoint}")]
    Tls {
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake with {endpoint}")]
    Handshake {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream exchange")]
    Http(#[source] hyper::Error),
    /// A new connection would pass a `circuitBreaker` limit of the backend
    /// (`maxPendingRequests`, `maxConnections`): the request is answered
    /// with this rejection, nothing was sent.
    #[error("{0}")]
    Overflow(Box<crate::policy::Rejection>),
}

impl UpstreamError {
    /// No connection could be made: nothing reached the backend, so
    /// another endpoint may be tried.
    pub fn is_connect(&self) -> bool {
        !matches!(self, UpstreamError::Http(_) | UpstreamError::Overflow(_))
    }
}

/// How to reach one backend endpoint.
#[derive(Clone, Copy)]
pub struct Dial<'a> {
    pub endpoint: SocketAddr,
    /// HTTP/2 with prior knowledge (`kubernetes.io/h2c`); ignored for TLS,
    /// where ALPN decides.
    pub h2c: bool,
    pub tls: Option<&'a Arc<UpstreamTls>>,
    /// `:authority` of HTTP/2 requests (HTTP/1.1 requests carry `Host`).
    pub authority: &'a str,
    /// The backend's circuit breaker, when a policy sets one: a new
    /// connection takes a pending slot while it is made and a connection
    /// slot for as long as it is open.
    pub breaker: Option<&'a crate::policy::upstream::BackendPolicy>,
}

/// Keys are endpoints from the config: a seeded fast hash, not SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Pool key: the endpoint and how it is spoken to. TLS settings are told
/// apart by the address of the snapshot's [`UpstreamTls`] (checked against
/// a weak reference, so a reused address never shares connections).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    endpoint: SocketAddr,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Http1,
    H2c,
    Tls(usize),
}

/// The connections of one key.
#[derive(Default)]
struct Group {
    /// The TLS settings the connections were made with.
    tls: Option<Weak<UpstreamTls>>,
    /// Idle HTTP/1.1 connections, most recently used at the back.
    idle: VecDeque<Idle>,
    /// The shared HTTP/2 connection, once there is one.
    h2: Option<http2::SendRequest<UpstreamBody>>,
}

struct Idle {
    tx: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

#[derive(Default)]
struct Shard {
    groups: FastMap<Key, Group>,
    last_sweep: Option<Instant>,
}

impl Shard {
    /// Closes idle connections past their time and forgets closed ones.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        self.groups.retain(|_, g| {
            g.idle
                .retain(|i| !i.tx.is_closed() && now.duration_since(i.since) < IDLE_TIMEOUT);
            if g.h2.as_ref().is_some_and(|h| h.is_closed()) {
                g.h2 = None;
            }
            let tls_alive = g.tls.as_ref().is_none_or(|w| w.strong_count() > 0);
            tls_alive && (!g.idle.is_empty() || g.h2.is_some())
        });
    }
}

/// The pools of all workers.
pub struct Pools {
    shards: Box<[Mutex<Shard>]>,
    /// Answer every request with this body instead of connecting
    /// ([`Pools::canned`]: the request-path benchmark without sockets).
    canned: Option<Bytes>,
}

impl Default for Pools {
    /// A pool per CPU: threads index them by [`set_worker_index`], modulo.
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

thread_local! {
    /// Index of the data-path worker running on this thread (0 elsewhere).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as data-path worker `index`: its requests use pool `index`.
pub fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(index));
}

impl Pools {
    /// Pools for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            canned: None,
        }
    }

    /// Pools that never connect: every request is answered `200` with
    /// `body`, as a backend on a pooled connection would. For measuring the
    /// request path without sockets (`cargo bench --bench request_path`).
    pub fn canned(body: Bytes) -> Self {
        Self {
            canned: Some(body),
            ..Self::new(1)
        }
    }

    fn shard(&self) -> (usize, &Mutex<Shard>) {
        let i = WORKER.with(|w| w.get()) % self.shards.len();
        (i, &self.shards[i])
    }

    /// Sends `req` to the endpoint, on a pooled connection when there is
    /// one. The URI is set to what the connection needs (origin form for
    /// HTTP/1.1; scheme and `dial.authority` for HTTP/2).
    pub async fn send(
        self: &Arc<Self>,
        dial: Dial<'_>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let key = Key {
            endpoint: dial.endpoint,
            kind: match (dial.tls, dial.h2c) {
                (Some(t), _) => Kind::Tls(Arc::as_ptr(t) as usize),
                (None, true) => Kind::H2c,
                (None, false) => Kind::Http1,
            },
        };
        if let Some(body) = &self.canned {
            drop(req);
            let mut resp = Response::new(PooledBody {
                inner: Inner::Canned(Some(body.clone())),
                back: None,
            });
            resp.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            );
            return Ok(resp);
        }
        let (index, shard) = self.shard();
        loop {
            match self.checkout(shard, key, dial.tls) {
                Some(Conn::H2(mut tx)) => {
                    if tx.ready().await.is_err() {
                        self.forget_h2(shard, key);
                        continue;
                    }
                    set_h2_uri(&mut req, &dial);
                    match tx.try_send_request(req).await {
                        Ok(resp) => return Ok(resp.map(PooledBody::plain)),
                        Err(mut e) => match e.take_message() {
                            // The connection went away before the request was sent.
                            Some(r) => {
                                req = r;
                                self.forget_h2(shard, key);
                            }
                            None => return Err(UpstreamError::Http(e.into_error())),
                        },
                    }
                }
                Some(Conn::H1(mut tx)) => {
                    if tx.ready().await.is_err() {
                        continue;
                    }
                    set_h1_uri(&mut req);
                    match tx.try_send_request(req).await {
                        Ok(resp) => {
                            let back = Return {
                                pools: Arc::downgrade(self),
                                index,
                                key,
                                tx,
                            };
                            return Ok(resp.map(|b| PooledBody::pooled(b, back)));
                        }
                        Err(mut e) => match e.take_message() {
                            // Closed by the backend while idle: a fresh connection.
                            Some(r) => req = r,
                            None => return Err(UpstreamError::Http(e.into_error())),
                        },
                    }
                }
                // Boxed: connecting (TCP, TLS, HTTP/2 handshakes) is the
                // rare path, and its state would make every request's
                // future — which is moved, byte for byte, as it is
                // awaited — kilobytes larger.
                None => {
                    let slots = match dial.breaker.map(|b| b.connect_slots()) {
                        Some(Err(refused)) => {
                            return Err(UpstreamError::Overflow(Box::new(refused)))
                        }
                        Some(Ok(slots)) => slots,
                        None => None,
                    };
                    return Box::pin(self.send_new(index, shard, key, dial, req, slots)).await;
                }
            }
        }
    }

    /// A pooled connection of `key`, if one is usable.
    fn checkout(
        &self,
        shard: &Mutex<Shard>,
        key: Key,
        tls: Option<&Arc<UpstreamTls>>,
    ) -> Option<Conn> {
        let now = Instant::now();
        let mut s = shard.lock().expect("pool lock");
        if s.last_sweep
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            s.sweep(now);
        }
        let g = s.groups.get_mut(&key)?;
        if let (Some(tls), Some(weak)) = (tls, &g.tls) {
            // Same address, other settings: the old ones are gone.
            if !weak.upgrade().is_some_and(|t| Arc::ptr_eq(&t, tls)) {
                s.groups.remove(&key);
                return None;
            }
        }
        if let Some(h2) = &g.h2 {
            if !h2.is_closed() {
                return Some(Conn::H2(h2.clone()));
            }
            g.h2 = None;
        }
        while let Some(idle) = g.idle.pop_back() {
            if !idle.tx.is_closed() && now.duration_since(idle.since) < IDLE_TIMEOUT {
                return Some(Conn::H1(idle.tx));
            }
        }
        None
    }

    fn forget_h2(&self, shard: &Mutex<Shard>, key: Key) {
        if let Some(g) = shard.lock().expect("pool lock").groups.get_mut(&key) {
            g.h2 = None;
        }
    }

    /// Opens a connection for `key` and sends the request on it.
    async fn send_new(
        self: &Arc<Self>,
        index: usize,
        shard: &Mutex<Shard>,
        key: Key,
        dial: Dial<'_>,
        mut req: Request<UpstreamBody>,
        slots: Option<(Slot, Slot)>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let (pending, open) = slots.unzip();
        let conn = connect(&dial, open).await;
        // Connected (or not): no longer pending.
        drop(pending);
        match conn? {
            Conn::H2(mut tx) => {
                {
                    let mut s = shard.lock().expect("pool lock");
                    let g = s.groups.entry(key).or_default();
                    g.tls = dial.tls.map(Arc::downgrade);
                    g.h2 = Some(tx.clone());
                }
                set_h2_uri(&mut req, &dial);
                let resp = tx.send_request(req).await.map_err(UpstreamError::Http)?;
                Ok(resp.map(PooledBody::plain))
            }
            Conn::H1(mut tx) => {
                set_h1_uri(&mut req);
                let resp = tx.send_request(req).await.map_err(UpstreamError::Http)?;
                let back = Return {
                    pools: Arc::downgrade(self),
                    index,
                    key,
                    tx,
                };
                if let Some(tls) = dial.tls {
                    let mut s = shard.lock().expect("pool lock");
                    s.groups.entry(key).or_default().tls = Some(Arc::downgrade(tls));
                }
                Ok(resp.map(|b| PooledBody::pooled(b, back)))
            }
        }
    }

    fn give_back(&self, index: usize, key: Key, tx: http1::SendRequest<UpstreamBody>) {
        let Some(shard) = self.shards.get(index) else {
            return;
        };
        let mut s = shard.lock().expect("pool lock");
        let g = s.groups.entry(key).or_default();
        if g.idle.len() >= MAX_IDLE_PER_ENDPOINT {
            return;
        }
        g.idle.push_back(Idle {
            tx,
            since: Instant::now(),
        });
    }

    /// Idle HTTP/1.1 connections and HTTP/2 connections held, for tests.
    pub fn idle_counts(&self) -> (usize, usize) {
        let mut out = (0, 0);
        for shard in self.shards.iter() {
            let s = shard.lock().expect("pool lock");
            for g in s.groups.values() {
                out.0 += g.idle.len();
                out.1 += usize::from(g.h2.is_some());
            }
        }
        out
    }
}

enum Conn {
    H1(http1::SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

fn set_h1_uri(req: &mut Request<UpstreamBody>) {
    // Origin form: the request line carries the path; Host says the rest.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;
}

fn set_h2_uri(req: &mut Request<UpstreamBody>, dial: &Dial<'_>) {
    let scheme = if dial.tls.is_some() { "https" } else { "http" };
    let ok = req.uri().scheme_str() == Some(scheme)
        && req
            .uri()
            .authority()
            .is_some_and(|a| a.as_str() == dial.authority);
    if !ok {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        if let Ok(uri) = Uri::builder()
            .scheme(scheme)
            .authority(dial.authority)
            .path_and_query(pq)
            .build()
        {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = Version::HTTP_2;
}

/// A new connection to the endpoint: TCP, TLS when configured, then the
/// HTTP handshake; the connection runs in a task of its own.
async fn connect(dial: &Dial<'_>, open: Option<Slot>) -> Result<Conn, UpstreamError> {
    let endpoint = dial.endpoint;
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(UpstreamError::Connect { endpoint, source }),
        Err(_) => return Err(UpstreamError::ConnectTimeout { endpoint }),
    };
    let _ = tcp.set_nodelay(true);
    match dial.tls {
        None if dial.h2c => handshake_h2(endpoint, tcp, open).await,
        None => handshake_h1(endpoint, tcp, open).await,
        Some(tls) => {
            // ALPN offers both; the backend's choice decides the protocol.
            let config = Arc::new(tls.config_with_alpn(&[b"h2", b"http/1.1"]));
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = match tokio::time::timeout(
                CONNECT_TIMEOUT,
                connector.connect(tls.server_name.clone(), tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => return Err(UpstreamError::Tls { endpoint, source }),
                Err(_) => return Err(UpstreamError::ConnectTimeout { endpoint }),
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                handshake_h2(endpoint, stream, open).await
            } else {
                handshake_h1(endpoint, stream, open).await
            }
        }
    }
}

/// `open` (a circuit breaker's connection slot) is held by the connection's
/// task: given back when the connection closes.
async fn handshake_h1<T>(
    endpoint: SocketAddr,
    io: T,
    open: Option<Slot>,
) -> Result<Conn, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|source| UpstreamError::Handshake { endpoint, source })?;
    tokio::spawn(async move {
        let _open = open;
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, error = %e, "upstream connection ended with error");
        }
    });
    Ok(Conn::H1(tx))
}

async fn handshake_h2<T>(
    endpoint: SocketAddr,
    io: T,
    open: Option<Slot>,
) -> Result<Conn, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|source| UpstreamError::Handshake { endpoint, source })?;
    tokio::spawn(async move {
        let _open = open;
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, error = %e, "upstream HTTP/2 connection ended with error");
        }
    });
    Ok(Conn::H2(tx))
}

/// Where a connection goes when its response has been read.
struct Return {
    pools: Weak<Pools>,
    index: usize,
    key: Key,
    tx: http1::SendRequest<UpstreamBody>,
}

/// A backend's response body; an HTTP/1.1 connection goes back to its pool
/// once the body has been read to its end (a body dropped before that
/// closes the connection: hyper cannot reuse it).
pub struct PooledBody {
    inner: Inner,
    back: Option<Return>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.back.is_some())
            .finish_non_exhaustive()
    }
}

enum Inner {
    Incoming(Incoming),
    /// See [`Pools::canned`].
    Canned(Option<Bytes>),
}

impl Inner {
    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Incoming(b) => b.is_end_stream(),
            Inner::Canned(b) => b.is_none(),
        }
    }
}

impl PooledBody {
    fn plain(inner: Incoming) -> Self {
        Self {
            inner: Inner::Incoming(inner),
            back: None,
        }
    }

    fn pooled(inner: Incoming, back: Return) -> Self {
        let mut b = Self {
            inner: Inner::Incoming(inner),
            back: Some(back),
        };
        // Bodies known to be empty (204, 304, HEAD, Content-Length: 0) are done now.
        if b.inner.is_end_stream() {
            b.release();
        }
        b
    }

    fn release(&mut self) {
        if let Some(r) = self.back.take() {
            if let Some(pools) = r.pools.upgrade() {
                pools.give_back(r.index, r.key, r.tx);
            }
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.inner {
            Inner::Incoming(b) => std::task::ready!(Pin::new(b).poll_frame(cx)),
            Inner::Canned(b) => return Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        match &frame {
            // Servers stop polling once `is_end_stream` says so: release here.
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            None => this.release(),
            // An error: the connection is not reused.
            Some(Err(_)) => this.back = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Incoming(b) => b.size_hint(),
            Inner::Canned(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A raw HTTP/1.1 backend answering `ok` to `per_connection` requests
    /// per connection, then closing it (without saying so); counts accepts.
    async fn backend(per_connection: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    for _ in 0..per_connection {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get() -> Request<UpstreamBody> {
        let mut req = Request::new(super::super::full(""));
        *req.uri_mut() = "http://backend.example/p".parse().unwrap();
        req.headers_mut()
            .insert(http::header::HOST, "backend.example".parse().unwrap());
        req
    }

    fn dial(endpoint: SocketAddr) -> Dial<'static> {
        Dial {
            endpoint,
            h2c: false,
            tls: None,
            authority: "backend.example",
            breaker: None,
        }
    }

    async fn exchange(pools: &Arc<Pools>, endpoint: SocketAddr) -> String {
        let resp = pools.send(dial(endpoint), get()).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_serves_request_after_request() {
        let (addr, accepted) = backend(usize::MAX).await;
        let pools = Arc::new(Pools::new(1));
        for _ in 0..3 {
            assert_eq!(exchange(&pools, addr).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pools.idle_counts(), (1, 0));
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced() {
        let (addr, accepted) = backend(1).await;
        let pools = Arc::new(Pools::new(1));
        for _ in 0..3 {
            assert_eq!(exchange(&pools, addr).await, "ok");
            // As when a backend closes an idle connection: its task notices
            // the end of the stream, and the pool skips it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_dropped_early_does_not_return_its_connection() {
        let (addr, accepted) = backend(usize::MAX).await;
        let pools = Arc::new(Pools::new(1));
        let resp = pools.send(dial(addr), get()).await.unwrap();
        drop(resp);
        assert_eq!(pools.idle_counts(), (0, 0));
        assert_eq!(exchange(&pools, addr).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = unused.local_addr().unwrap();
        drop(unused);
        let pools = Arc::new(Pools::new(1));
        let err = pools.send(dial(addr), get()).await.unwrap_err();
        assert!(err.is_connect(), "{err}");
    }
}
