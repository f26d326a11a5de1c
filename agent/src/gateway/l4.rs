//! The L4 data path: connections of TLS Passthrough and TCP listeners are
//! relayed, byte for byte, to a backend of the route their listener's route
//! table gives. For TLS the route is chosen by the SNI of the ClientHello,
//! which is read (never answered) and then sent on to the backend with
//! everything after it; the backend terminates TLS.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{HeaderMap, Method};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    client_hello::{self, Parsed},
    Proxy,
};
use crate::snapshot::{L4Mode, RequestView, RouteEntry, ShardId};

/// Longest a client may take to send its whole ClientHello.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes buffered while waiting for the ClientHello: a ClientHello with
/// post-quantum key shares is ~2 KB; one record holds 16 KiB, and a hello
/// larger than four records' worth is refused rather than buffered.
pub const MAX_CLIENT_HELLO_BYTES: usize = 64 * 1024;
/// Longest a client may take to complete a TLS handshake (TLS Terminate).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a backend may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection was not relayed, as counted in `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    NotTls,
    TlsHandshake,
    TlsHandshakeTimeout,
    HelloTimeout,
    HelloTooLarge,
    NoRoute,
    NoBackend,
    ConnectFailure,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::NotTls => "not_tls",
            Refused::TlsHandshake => "tls_handshake_failed",
            Refused::TlsHandshakeTimeout => "tls_handshake_timeout",
            Refused::HelloTimeout => "client_hello_timeout",
            Refused::HelloTooLarge => "client_hello_too_large",
            Refused::NoRoute => "no_route",
            Refused::NoBackend => "no_backend",
            Refused::ConnectFailure => "connect_failure",
        }
    }
}

/// Serves one accepted connection of an L4 listener to its end. Refusing a
/// connection is closing it: there is no protocol to answer in.
pub(super) async fn serve(
    shard: ShardId,
    mode: L4Mode,
    mut client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    proxy: Arc<Proxy>,
) {
    let at = At {
        shard,
        mode,
        peer,
        local,
    };
    match mode {
        L4Mode::Tcp => route_and_relay(at, client, Vec::new(), String::new(), proxy).await,
        // UDP listeners have no accept loop ([`super::udp`]); a TCP
        // connection to a UDP port is not ours to serve.
        L4Mode::Udp => refuse(&proxy, shard, None, Refused::NoRoute, peer),
        L4Mode::TlsPassthrough => match read_client_hello(&mut client).await {
            Ok((prefix, host)) => {
                route_and_relay(at, client, prefix, host.unwrap_or_default(), proxy).await
            }
            Err(why) => refuse(&proxy, shard, None, why, peer),
        },
        L4Mode::TlsTerminate => {
            // The certificates of the moment of the handshake, as for HTTPS.
            let Some(config) = proxy.tls_config(shard, local.port()) else {
                // The listener went away with a reload since the accept.
                return refuse(&proxy, shard, None, Refused::NoRoute, peer);
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(client))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(shard, %peer, error = %e, "TLS handshake failed");
                    return refuse(&proxy, shard, None, Refused::TlsHandshake, peer);
                }
                Err(_) => return refuse(&proxy, shard, None, Refused::TlsHandshakeTimeout, peer),
            };
            let host = tls
                .get_ref()
                .1
                .server_name()
                .map(str::to_ascii_lowercase)
                .unwrap_or_default();
            route_and_relay(at, tls, Vec::new(), host, proxy).await
        }
    }
}

/// Where a connection came in.
#[derive(Clone, Copy)]
struct At {
    shard: ShardId,
    mode: L4Mode,
    peer: SocketAddr,
    local: SocketAddr,
}

/// Picks the route of the connection's listener (by `host`, the server name,
/// for TLS) and relays `client` to one of its backends, `prefix` (the bytes
/// already read) first.
async fn route_and_relay<C>(at: At, mut client: C, prefix: Vec<u8>, host: String, proxy: Arc<Proxy>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let At {
        shard,
        mode,
        peer,
        local,
    } = at;
    // The snapshot of the moment the route is chosen; a later reload does
    // not move a connection that is being relayed.
    let snapshot = proxy.snapshot();
    let Some(s) = snapshot.shard(shard) else {
        return;
    };
    let listener = match mode {
        // The most specific listener hostname covering the SNI (a name-less
        // hello only reaches a listener without hostname).
        L4Mode::TlsPassthrough | L4Mode::TlsTerminate => s.listener_for(local.port(), &host),
        L4Mode::Tcp | L4Mode::Udp => {
            let port = s.listener_port(local.port());
            s.listeners
                .iter()
                .find(|l| l.port == port && l.l4 == Some(mode))
        }
    };
    let headers = HeaderMap::new();
    let any = RequestView::new(&Method::GET, "/", None, &headers);
    let Some(entry) = listener.and_then(|l| l.routes.find(&host, &any)) else {
        refuse(&proxy, shard, None, Refused::NoRoute, peer);
        return;
    };
    let Some(endpoint) = entry.action.backends.pick().and_then(|b| b.endpoint()) else {
        // No backends with weight, an unresolved reference, no endpoints.
        refuse(&proxy, shard, Some(entry), Refused::NoBackend, peer);
        return;
    };
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(u)) => u,
            _ => {
                refuse(&proxy, shard, Some(entry), Refused::ConnectFailure, peer);
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    let shard_name = s.name.clone();
    let route = entry.route_name.clone();
    drop(snapshot);
    proxy
        .metrics()
        .l4_connection(&shard_name, &route, "relayed");
    if !prefix.is_empty() && upstream.write_all(&prefix).await.is_err() {
        return;
    }
    let idle = proxy.edge.l4_idle_timeout;
    let (up, down, ended) = relay(&mut client, &mut upstream, idle).await;
    match ended {
        Ended::Closed => {}
        Ended::Idle => {
            proxy.count_timeout(shard, "l4_idle");
            tracing::debug!(shard, %peer, ?idle, "relayed connection idle; closed");
        }
        Ended::Error(e) => {
            tracing::debug!(shard, %peer, error = %e, "relayed connection ended with error")
        }
    }
    let metrics = proxy.metrics();
    metrics.l4_bytes(&shard_name, &route, "upstream", prefix.len() as u64 + up);
    metrics.l4_bytes(&shard_name, &route, "downstream", down);
}

/// How a relay ended.
#[derive(Debug)]
enum Ended {
    /// Both ends closed (each half-close passed on).
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    Error(std::io::Error),
}

/// Relays both directions until both ends are done — an end that closes its
/// sending side (half-close) has that passed on while the other direction
/// keeps flowing — or until neither side sent a byte for `idle`. Returns the
/// bytes relayed client → backend and back, also when cut short. The two
/// directions run independently (a blocked write one way never stops the
/// other way being read).
async fn relay<C>(client: &mut C, upstream: &mut TcpStream, idle: Duration) -> (u64, u64, Ended)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let start = tokio::time::Instant::now();
    // Time of the last byte either way, as nanoseconds since `start`.
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let both = async {
        tokio::try_join!(
            pipe(&mut client_read, &mut upstream_write, &up, &last, start),
            pipe(&mut upstream_read, &mut client_write, &down, &last, start),
        )
    };
    tokio::pin!(both);
    let ended = loop {
        let since = Duration::from_nanos(last.load(Ordering::Relaxed));
        let deadline = start + since + idle;
        tokio::select! {
            r = &mut both => break match r {
                Ok(_) => Ended::Closed,
                Err(e) => Ended::Error(e),
            },
            () = tokio::time::sleep_until(deadline) => {
                // A byte may have moved since the deadline was taken.
                if Duration::from_nanos(last.load(Ordering::Relaxed)) == since {
                    break Ended::Idle;
                }
            }
        }
    };
    (
        up.load(Ordering::Relaxed),
        down.load(Ordering::Relaxed),
        ended,
    )
}

/// One direction of [`relay`]: copies until the reader's end, then closes
/// the writer's sending side.
async fn pipe(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    count: &AtomicU64,
    last: &AtomicU64,
    start: tokio::time::Instant,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let stamp = || {
            let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            last.store(now, Ordering::Relaxed);
        };
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        // Bytes moved: a relay waiting on a slow reader is not idle.
        stamp();
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        stamp();
    }
}

/// Reads until the ClientHello is complete: the bytes read (to be sent on
/// as they are) and its server name.
async fn read_client_hello(client: &mut TcpStream) -> Result<(Vec<u8>, Option<String>), Refused> {
    let mut buf = Vec::with_capacity(2048);
    let mut reader = client_hello::HelloReader::default();
    let read = async {
        loop {
            match reader.feed(&buf) {
                Parsed::Hello(name) => return Ok(name),
                Parsed::Invalid(_) => return Err(Refused::NotTls),
                Parsed::Incomplete => {}
            }
            if buf.len() >= MAX_CLIENT_HELLO_BYTES {
                return Err(Refused::HelloTooLarge);
            }
            let mut chunk = [0u8; 4096];
            let room = (MAX_CLIENT_HELLO_BYTES - buf.len()).min(chunk.len());
            match client.read(&mut chunk[..room]).await {
                Ok(0) | Err(_) => return Err(Refused::NotTls),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(CLIENT_HELLO_TIMEOUT, read).await {
        Ok(Ok(name)) => Ok((buf, name)),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(Refused::HelloTimeout),
    }
}

fn refuse(
    proxy: &Proxy,
    shard: ShardId,
    entry: Option<&RouteEntry>,
    why: Refused,
    peer: SocketAddr,
) {
    tracing::debug!(shard, %peer, reason = why.label(), "L4 connection refused");
    let snapshot = proxy.snapshot();
    let Some(s) = snapshot.shard(shard) else {
        return;
    };
    let route = entry.map_or_else(|| Arc::from(""), |e| e.route_name.clone());
    proxy.metrics().l4_connection(&s.name, &route, why.label());
}
