//! The UDP data path: a UDP listener is one socket bound on the Gateway's
//! address and the listener port. Datagrams are relayed per client address
//! (a session): the first datagram of a new client picks a backend endpoint
//! of the listener's UDPRoute (weighted), a connected socket to it is opened,
//! and datagrams flow both ways — the backend's replies are sent to the
//! client from the listener socket — until the session is idle for
//! `udp_idle_timeout`. Sessions keep their backend across reloads; a reload
//! only changes where new sessions go.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{HeaderMap, Method};
use prometheus_client::metrics::counter::Counter;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{io::Interest, net::UdpSocket, sync::watch, task::JoinHandle, time::Instant};

use super::{fair::Fair, pktinfo, Proxy};
use crate::{
    metrics::{L4BytesLabels, Name, ShardLabels},
    snapshot::{RequestView, ShardId},
};

/// Largest datagram relayed (the largest UDP payload over IPv4); a larger
/// one cannot arrive.
const MAX_DATAGRAM: usize = 65_535;

/// Binds the UDP socket of a listener on `addr` (both datapaths: sk_lookup
/// steering is TCP-only).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    if addr.ip().is_unspecified() {
        // Replies must leave from the address each client sent to.
        super::pktinfo::enable(&socket, addr)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The relay task of one UDP listener socket.
pub struct UdpServer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    local: SocketAddr,
}

impl UdpServer {
    /// Starts relaying datagrams of `socket` for `shard`.
    pub fn spawn(
        shard: ShardId,
        socket: std::net::UdpSocket,
        proxy: Arc<Proxy>,
    ) -> std::io::Result<Self> {
        let local = socket.local_addr()?;
        // Replies are sent through a handle of its own, straight to the
        // kernel (see [`Sender`]).
        let replies = Sender(Arc::new(socket.try_clone()?));
        let socket = UdpSocket::from_std(socket)?;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(Fair::new(
            shard,
            relay_loop(shard, (socket, replies), local, proxy, rx),
        ));
        Ok(Self { stop, task, local })
    }

    /// The address the socket is bound on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops the relay: the socket and every session close now (UDP has
    /// nothing to drain).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Receives client datagrams, opens sessions and expires idle ones.
async fn relay_loop(
    shard: ShardId,
    (socket, replies): (UdpSocket, Sender),
    local: SocketAddr,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
) {
    let idle = proxy.edge.udp_idle_timeout;
    let mut sessions: Sessions<Session> =
        Sessions::new(proxy.edge.udp_max_sessions, Instant::now());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Expiry is checked a few times per idle timeout: a session lives at most
    // a quarter of it longer than idle.
    let mut tick =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shard_name = proxy.shard_label(shard);
    let active = proxy
        .metrics()
        .udp_sessions_active
        .get_or_create(&ShardLabels {
            shard: Name(shard_name.clone()),
        })
        .clone();
    loop {
        tokio::select! {
            r = socket.async_io(Interest::READABLE, || pktinfo::recv(socket.as_raw_fd(), &mut buf)) => {
                let (n, peer, destination) = match r {
                    Ok(x) => x,
                    // ICMP errors of earlier sends, and the like: the socket
                    // itself is fine.
                    Err(e) => {
                        tracing::debug!(shard, %local, error = %e, "UDP receive error");
                        continue;
                    }
                };
                let now = sessions.stamp(Instant::now());
                if let Some(s) = sessions.get(&peer) {
                    s.last.fetch_max(now, Ordering::Relaxed);
                    s.to_backend(&buf[..n]);
                    continue;
                }
                if sessions.is_full() {
                    tracing::debug!(shard, %peer, "UDP session limit reached; datagram dropped");
                    proxy.metrics().udp_session(&shard_name, &Arc::from(""), "session_limit");
                    continue;
                }
                // A wildcard socket answers from the address the client
                // sent to (see [`pktinfo`]); a bound one has only its own.
                let source = if local.ip().is_unspecified() {
                    pktinfo::reply_source(destination)
                } else {
                    None
                };
                let at = At { shard, local, peer, source, epoch: sessions.epoch };
                let Some(session) = open(at, &replies, &proxy, &shard_name, now) else {
                    continue;
                };
                session.to_backend(&buf[..n]);
                active.inc();
                sessions.insert(peer, session);
            }
            _ = tick.tick() => {
                let expired = sessions.expire(Instant::now(), idle);
                if expired > 0 {
                    active.dec_by(expired as i64);
                    tracing::debug!(shard, %local, expired, "idle UDP sessions closed");
                }
            }
            _ = stop.changed() => break,
        }
    }
    active.dec_by(sessions.len() as i64);
}

/// Opens the session of a new client: the route of the listener (of the
/// snapshot of this moment), a weighted backend endpoint, a socket connected
/// to it, and the task relaying its replies. `None` when it is refused
/// (counted).
fn open(
    at: At,
    replies: &Sender,
    proxy: &Arc<Proxy>,
    shard_name: &Arc<str>,
    now: u64,
) -> Option<Session> {
    let At {
        shard,
        local,
        peer,
        source,
        epoch,
    } = at;
    let snapshot = proxy.snapshot();
    let headers = HeaderMap::new();
    let any = RequestView::new(&Method::GET, "/", None, &headers);
    let entry = snapshot
        .shard(shard)
        .and_then(|s| s.udp_listener(local.port()))
        .and_then(|l| l.routes.find("", &any));
    let metrics = proxy.metrics();
    let Some(entry) = entry else {
        tracing::debug!(shard, %peer, "UDP datagram with no route; dropped");
        metrics.udp_session(shard_name, &Arc::from(""), "no_route");
        return None;
    };
    let route = entry.route_name.clone();
    let Some(endpoint) = entry.action.backends.pick().and_then(|b| b.endpoint()) else {
        tracing::debug!(shard, %peer, %route, "UDP route has no backend endpoint; dropped");
        metrics.udp_session(shard_name, &route, "no_backend");
        return None;
    };
    drop(snapshot);
    let (send, upstream) = match connect(endpoint) {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(shard, %peer, %endpoint, error = %e, "UDP backend socket not opened");
            metrics.udp_session(shard_name, &route, "connect_failure");
            return None;
        }
    };
    metrics.udp_session(shard_name, &route, "relayed");
    let counters = |direction| {
        let labels = L4BytesLabels {
            shard: Name(shard_name.clone()),
            route: Name(route.clone()),
            direction,
        };
        (
            metrics.udp_datagrams.get_or_create(&labels).clone(),
            metrics.udp_bytes.get_or_create(&labels).clone(),
        )
    };
    let up = counters("upstream");
    let down = counters("downstream");
    let last = Arc::new(AtomicU64::new(now));
    let replies = tokio::spawn(Fair::new(
        shard,
        relay_replies(
            upstream,
            (replies.clone(), source),
            peer,
            (epoch, last.clone()),
            down,
        ),
    ));
    Some(Session {
        send,
        last,
        up,
        replies,
    })
}

/// Where a new client's first datagram came in.
#[derive(Clone, Copy)]
struct At {
    shard: ShardId,
    local: SocketAddr,
    peer: SocketAddr,
    /// The address to answer from (a wildcard listener's), or `None` for
    /// the kernel's choice.
    source: Option<IpAddr>,
    /// The session table's epoch, that activity times count from.
    epoch: Instant,
}

/// A socket of the endpoint's family on an ephemeral port, connected to the
/// endpoint (the kernel then drops datagrams from anyone else): its sending
/// handle and its receiving one.
fn connect(endpoint: SocketAddr) -> std::io::Result<(Sender, UdpSocket)> {
    let any = match endpoint.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let s = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    s.connect(endpoint)?;
    s.set_nonblocking(true)?;
    let send = Sender(Arc::new(s.try_clone()?));
    Ok((send, UdpSocket::from_std(s)?))
}

/// A non-blocking handle that sends straight to the kernel. The tokio
/// socket's `try_send` answers WouldBlock until the reactor has seen the
/// socket writable once, which would drop a new session's first datagram;
/// and waiting for writability would let one full socket stall every
/// session. UDP is lossy: a full send buffer drops the datagram.
#[derive(Clone)]
struct Sender(Arc<std::net::UdpSocket>);

/// Sends the backend's datagrams to the client from the listener socket,
/// until the session is dropped (which aborts this task).
async fn relay_replies(
    upstream: UdpSocket,
    (listener, source): (Sender, Option<IpAddr>),
    peer: SocketAddr,
    (epoch, last): (Instant, Arc<AtomicU64>),
    (datagrams, bytes): (Counter, Counter),
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match upstream.recv(&mut buf).await {
            Ok(n) => n,
            // ICMP port unreachable of an earlier send (backend not
            // listening): later datagrams may still get through.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            // Anything else is not going away; the session expires idle.
            Err(_) => return,
        };
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        last.fetch_max(now, Ordering::Relaxed);
        if pktinfo::send(listener.0.as_raw_fd(), &buf[..n], peer, source).is_ok() {
            datagrams.inc();
            bytes.inc_by(n as u64);
        }
    }
}

/// One client's session.
struct Session {
    /// Sends to the backend (the reply task holds the receiving handle).
    send: Sender,
    /// Last datagram either way, as nanoseconds since the table's epoch.
    last: Arc<AtomicU64>,
    /// Datagrams and bytes client → backend.
    up: (Counter, Counter),
    replies: JoinHandle<()>,
}

impl Session {
    fn to_backend(&self, datagram: &[u8]) {
        if self.send.0.send(datagram).is_ok() {
            self.up.0.inc();
            self.up.1.inc_by(datagram.len() as u64);
        }
    }
}

impl Expiring for Session {
    fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Its reply task holds the receiving handle of the backend socket:
        // ending it closes the socket.
        self.replies.abort();
    }
}

/// What the session table needs of a session.
trait Expiring {
    /// Last activity, as nanoseconds since the table's epoch.
    fn last(&self) -> u64;
}

/// Sessions by client address, bounded, expired by idleness. Times are
/// nanoseconds since `epoch`, so activity can be stamped from other tasks
/// through an atomic.
struct Sessions<S> {
    map: HashMap<SocketAddr, S>,
    max: usize,
    epoch: Instant,
}

impl<S: Expiring> Sessions<S> {
    fn new(max: usize, epoch: Instant) -> Self {
        Self {
            map: HashMap::new(),
            max,
            epoch,
        }
    }

    /// `now` as a time of this table.
    fn stamp(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn get(&self, peer: &SocketAddr) -> Option<&S> {
        self.map.get(peer)
    }

    fn is_full(&self) -> bool {
        self.map.len() >= self.max
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds a session; the caller checked [`is_full`](Self::is_full).
    fn insert(&mut self, peer: SocketAddr, s: S) {
        debug_assert!(!self.is_full());
        self.map.insert(peer, s);
    }

    /// Drops the sessions without activity for `idle`; how many.
    fn expire(&mut self, now: Instant, idle: Duration) -> usize {
        let now = self.stamp(now);
        let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        let before = self.map.len();
        self.map.retain(|_, s| now.saturating_sub(s.last()) < idle);
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(u64);
    impl Expiring for Fake {
        fn last(&self) -> u64 {
            self.0
        }
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_table_is_bounded_and_expires_idle_sessions_only() {
        let epoch = Instant::now();
        let mut t = Sessions::new(2, epoch);
        let secs = |s: u64| s * 1_000_000_000;
        let (at0, at5) = (secs(0), secs(5));
        assert_eq!(t.stamp(epoch + Duration::from_secs(5)), at5);
        t.insert(peer(1), Fake(at0));
        assert!(!t.is_full());
        t.insert(peer(2), Fake(at5));
        assert!(t.is_full(), "two sessions fill a table of two");
        assert!(t.get(&peer(1)).is_some() && t.get(&peer(3)).is_none());
        // At 9 s with a 10 s idle timeout nothing is idle long enough.
        assert_eq!(
            t.expire(epoch + Duration::from_secs(9), Duration::from_secs(10)),
            0
        );
        // At 12 s the session last active at 0 s expires, the one at 5 s not.
        assert_eq!(
            t.expire(epoch + Duration::from_secs(12), Duration::from_secs(10)),
            1
        );
        assert!(t.get(&peer(1)).is_none() && t.get(&peer(2)).is_some());
        assert!(!t.is_full(), "an expired session frees its place");
        assert_eq!(t.len(), 1);
        t.insert(peer(3), Fake(secs(12)));
        assert_eq!(
            t.expire(epoch + Duration::from_secs(30), Duration::from_secs(10)),
            2
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn stamps_before_the_epoch_are_zero() {
        let epoch = Instant::now() + Duration::from_secs(5);
        let t: Sessions<Fake> = Sessions::new(1, epoch);
        assert_eq!(t.stamp(Instant::now()), 0);
        assert_eq!(t.stamp(epoch + Duration::from_millis(3)), 3_000_000);
    }
}
