//! The L4 data path: connections of TLS Passthrough and TCP listeners are
//! relayed, byte for byte, to a backend of the route their listener's route
//! table gives. For TLS the route is chosen by the SNI of the ClientHello,
//! which is read (never answered) and then sent on to the backend with
//! everything after it; the backend terminates TLS.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderMap, Method};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
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
/// Longest a backend may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection was not relayed, as counted in `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    NotTls,
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
    let (prefix, host) = match mode {
        L4Mode::Tcp => (Vec::new(), None),
        L4Mode::TlsPassthrough => match read_client_hello(&mut client).await {
            Ok(x) => x,
            Err(why) => {
                refuse(&proxy, shard, None, why, peer);
                return;
            }
        },
    };
    // The snapshot of the moment the route is chosen; a later reload does
    // not move a connection that is being relayed.
    let snapshot = proxy.snapshot();
    let Some(s) = snapshot.shard(shard) else {
        return;
    };
    let host = host.unwrap_or_default();
    let listener = match mode {
        // The most specific listener hostname covering the SNI (a name-less
        // hello only reaches a listener without hostname).
        L4Mode::TlsPassthrough => s.listener_for(local.port(), &host),
        L4Mode::Tcp => {
            let port = s.listener_port(local.port());
            s.listeners.iter().find(|l| l.port == port)
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
    let mut sent = prefix.len() as u64;
    if !prefix.is_empty() && upstream.write_all(&prefix).await.is_err() {
        return;
    }
    // Both directions until both ends are done; an end that closes its
    // sending side (half-close) has that passed on while the other
    // direction keeps flowing.
    let (up, down) = match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(shard, %peer, error = %e, "relayed connection ended with error");
            (0, 0)
        }
    };
    sent += up;
    let metrics = proxy.metrics();
    metrics.l4_bytes(&shard_name, &route, "upstream", sent);
    metrics.l4_bytes(&shard_name, &route, "downstream", down);
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
