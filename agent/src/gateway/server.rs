//! One accept loop per shard socket; each shard is a bulkhead with its own
//! connection limit, so a flood on one Gateway cannot exhaust another's.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::TokioIo,
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use super::{
    conn_watch::ConnWatch,
    edge::ShardEdge,
    fair::{Fair, ShardExecutor},
    ConnInfo, Proxy, TlsInfo,
};
use crate::snapshot::ShardId;

/// A listening socket of a shard, before it is handed to the accept loop.
pub struct ShardSocket {
    pub listener: std::net::TcpListener,
    pub local: SocketAddr,
}

impl ShardSocket {
    /// A socket for sk_lookup steering: bound to loopback on an ephemeral port,
    /// reachable for gateway traffic only through `sk_lookup_dispatch`.
    pub fn steering(ipv6: bool) -> std::io::Result<Self> {
        let addr: SocketAddr = if ipv6 {
            "[::1]:0".parse().expect("literal")
        } else {
            "127.0.0.1:0".parse().expect("literal")
        };
        Self::bind(addr)
    }

    /// A socket bound to the listener address itself (userspace datapath).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        socket.set_nonblocking(true)?;
        let listener: std::net::TcpListener = socket.into();
        let local = listener.local_addr()?;
        Ok(Self { listener, local })
    }
}

/// Running accept loops of one shard.
pub struct ShardServer {
    shutdown: watch::Sender<Stop>,
    tasks: JoinSet<()>,
    locals: Vec<SocketAddr>,
}

impl ShardServer {
    pub fn spawn(
        shard: ShardId,
        sockets: Vec<ShardSocket>,
        proxy: Arc<Proxy>,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        let limit = Arc::new(tokio::sync::Semaphore::new(max_connections));
        Self::spawn_with_limit(shard, sockets, proxy, limit)
    }

    /// Like [`ShardServer::spawn`], sharing the connection limit with other
    /// servers of the same shard (sockets added by a reload join the shard's
    /// bulkhead instead of getting their own).
    pub fn spawn_with_limit(
        shard: ShardId,
        sockets: Vec<ShardSocket>,
        proxy: Arc<Proxy>,
        limit: Arc<tokio::sync::Semaphore>,
    ) -> std::io::Result<Self> {
        let (shutdown, rx) = watch::channel(Stop::Running);
        let mut tasks = JoinSet::new();
        let locals = sockets.iter().map(|s| s.local).collect();
        let workers = super::workers::handles();
        for s in sockets {
            if workers.is_empty() {
                let listener = TcpListener::from_std(s.listener)?;
                tasks.spawn(Fair::new(
                    shard,
                    accept_loop(shard, listener, proxy.clone(), limit.clone(), rx.clone()),
                ));
                continue;
            }
            // Every worker accepts from the same socket, through its own
            // handle registered with its own event loop.
            for worker in workers {
                let handle = s.listener.try_clone()?;
                let listener = {
                    let _in_worker = worker.enter();
                    TcpListener::from_std(handle)?
                };
                tasks.spawn_on(
                    Fair::new(
                        shard,
                        accept_loop(shard, listener, proxy.clone(), limit.clone(), rx.clone()),
                    ),
                    worker,
                );
            }
        }
        Ok(Self {
            shutdown,
            tasks,
            locals,
        })
    }

    /// Addresses of the sockets this server accepts on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// Stops accepting and waits (bounded) for open connections to finish.
    pub async fn shutdown(self) {
        self.stop(Stop::Now).await;
    }

    /// Like [`shutdown`](Self::shutdown), but first serves connections already
    /// queued on the sockets (agent hand-over: a successor owns the SockMap slots).
    pub async fn shutdown_after_backlog(self) {
        self.stop(Stop::AfterBacklog).await;
    }

    async fn stop(mut self, how: Stop) {
        let _ = self.shutdown.send(how);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// How an accept loop stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// Stop accepting at once (the listener set changed, or no successor).
    Now,
    /// First accept what is already queued on the socket: connections that
    /// sk_lookup steered here before a successor agent took over the SockMap
    /// slot would otherwise be reset when the socket closes.
    AfterBacklog,
}

async fn accept_loop(
    shard: ShardId,
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limit: Arc<tokio::sync::Semaphore>,
    mut shutdown: watch::Receiver<Stop>,
) {
    let graceful = GracefulShutdown::new();
    // The Gateway's connection settings, remade only when its policy changes.
    let mut edge = ShardEdge::new(shard, &proxy.edge, None);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(shard, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if !proxy.admit_connection(shard, peer.ip()) {
            // In the penalty box: closed before any byte is read.
            continue;
        }
        {
            let snapshot = proxy.snapshot.load();
            let policy = snapshot.shard(shard).and_then(|s| s.connection.as_ref());
            if !edge.is_for(policy) {
                edge = ShardEdge::new(shard, &proxy.edge, policy.cloned());
            }
        }
        serve(shard, stream, peer, &proxy, &edge, &graceful, Some(permit));
    }
    if *shutdown.borrow() == Stop::AfterBacklog {
        // Bounded: until the queue stays empty for 100 ms, at most 2 s.
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(100), listener.accept()).await {
                Ok(Ok((stream, peer))) => {
                    serve(shard, stream, peer, &proxy, &edge, &graceful, None)
                }
                _ => break,
            }
        }
    }
    // Release the port now, not after the drain: a reload may bind it again.
    drop(listener);
    // Bounded drain: in-flight requests get time to finish, then we go.
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(shard, "connections still open after 10 s drain; closing");
    }
}

/// One open client connection of the agent-wide budget; released on drop.
struct ClientSlot(Arc<std::sync::atomic::AtomicUsize>);

impl ClientSlot {
    /// A place, or `None` when `limit` connections are open (`0`: no limit).
    fn take(open: &Arc<std::sync::atomic::AtomicUsize>, limit: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        let mut n = open.load(Ordering::Relaxed);
        loop {
            if limit != 0 && n >= limit {
                return None;
            }
            match open.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Self(open.clone())),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Longest a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn serve(
    shard: ShardId,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    proxy: &Arc<Proxy>,
    edge: &ShardEdge,
    graceful: &GracefulShutdown,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    // Shed at accept: a client past its share of the shard's connections
    // is closed before any TLS or HTTP work is spent on it.
    // Trusted proxies in front carry many clients' connections: exempt.
    let per_source_limit = if proxy.is_trusted(peer.ip()) {
        0
    } else {
        edge.settings.max_connections_per_source
    };
    // The agent-wide guard first: whichever Gateway the connection is
    // for, the process's descriptors are one budget.
    let Some(agent_slot) = ClientSlot::take(&proxy.clients, edge.settings.max_client_connections)
    else {
        proxy.count_shed(shard, "agent_connection_limit");
        tracing::debug!(shard, %peer, "agent-wide client connection limit reached");
        return;
    };
    let Some(source_slot) = proxy.per_source.admit(shard, peer.ip(), per_source_limit) else {
        proxy.count_shed(shard, "per_source_limit");
        tracing::debug!(shard, %peer, "connection limit per source address reached");
        return;
    };
    // TLS Passthrough and TCP listeners relay bytes instead of speaking HTTP
    // (same socket, same admission and per-source limit as HTTP listeners).
    let l4 = proxy
        .snapshot()
        .shard(shard)
        .and_then(|s| s.l4_mode(local.port()));
    if let Some(mode) = l4 {
        let proxy = proxy.clone();
        // Held while the relay runs: the accept loop's bounded drain waits
        // for it as for HTTP connections (a relay is not cut by the drain,
        // only by the agent's exit after it).
        let watcher = graceful.watcher();
        tokio::spawn(Fair::new(shard, async move {
            super::l4::serve(shard, mode, stream, peer, local, proxy).await;
            drop((permit, source_slot, agent_slot, watcher));
        }));
        return;
    }
    // Decided per connection from the current snapshot: a rotated
    // certificate is used by the next handshake, on the same socket.
    let tls = proxy.tls_config(shard, local.port());
    let proxy = proxy.clone();
    let builder = edge.builder.clone();
    // Only a Gateway with its own settings carries them per connection.
    let settings = edge.policy_set().then(|| edge.settings.clone());
    let watcher = graceful.watcher();
    // The connection's work is the shard's: a flooded Gateway's connections
    // wait their turn behind a quiet one's (gateway::fair).
    tokio::spawn(Fair::new(shard, async move {
        let load = proxy.loads.of(shard);
        let mut info = ConnInfo::new(shard, local, peer, None);
        info.load = Some(load);
        info.edge = settings;
        match tls {
            None => serve_io(info, TokioIo::new(stream), proxy, builder, watcher).await,
            // Boxed: the handshake's and the TLS stream's state would
            // otherwise make every plaintext connection's task as large
            // (in a debug build 7.0 kB instead of 2.7 kB, held for as long
            // as the connection stays open).
            Some(config) => {
                Box::pin(serve_tls(info, config, stream, proxy, builder, watcher)).await
            }
        }
        drop((permit, source_slot, agent_slot));
    }));
}

/// Terminates TLS (bounded by [`TLS_HANDSHAKE_TIMEOUT`]) and serves the
/// connection.
async fn serve_tls(
    mut info: ConnInfo,
    config: Arc<rustls::ServerConfig>,
    stream: tokio::net::TcpStream,
    proxy: Arc<Proxy>,
    builder: auto::Builder<ShardExecutor>,
    watcher: Watcher,
) {
    let (shard, peer) = (info.shard, info.peer);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(shard, %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(shard, %peer, "TLS handshake timed out");
            return;
        }
    };
    // Lower-cased once here, not per request (listener names are).
    let sni = stream
        .get_ref()
        .1
        .server_name()
        .map(|n| Arc::<str>::from(n.to_ascii_lowercase()));
    let version = stream.get_ref().1.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    });
    info.tls = Some(TlsInfo { sni, version });
    serve_io(info, TokioIo::new(stream), proxy, builder, watcher).await;
}

async fn serve_io<I>(
    info: ConnInfo,
    io: TokioIo<I>,
    proxy: Arc<Proxy>,
    builder: auto::Builder<ShardExecutor>,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (shard, peer) = (info.shard, info.peer);
    // Shared by the connection's requests (HTTP/2 streams run as tasks of their own).
    let info = Arc::new(info);
    // Until the first request the connection is on the clock of the header
    // timeout, which hyper only starts once it has told HTTP/1.1 from
    // HTTP/2 (a client that sends nothing, or trickles the first bytes,
    // would otherwise stay forever).
    let watch = Arc::new(ConnWatch::new(proxy.clone(), shard));
    let header_timeout = proxy.edge_of(&info).header_timeout;
    let counter = proxy.clone();
    let requests = watch.clone();
    // The request's future is boxed here, once: hyper then moves a pointer
    // into its in-flight slot instead of the whole state, and an idle
    // keep-alive connection holds no room for it.
    let service = service_fn(move |req| {
        let guard = requests.request();
        let handled = proxy.clone().handle(info.clone(), req);
        Box::pin(async move {
            let response = handled.await;
            guard.answered();
            response
        })
    });
    let conn = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    let conn = watcher.watch(conn);
    tokio::pin!(conn);
    let first_head = tokio::time::sleep(header_timeout);
    tokio::pin!(first_head);
    let mut first_head_due = true;
    let result = loop {
        tokio::select! {
            r = &mut conn => break r,
            () = &mut first_head, if first_head_due => {
                first_head_due = false;
                if !watch.started() {
                    counter.count_timeout(shard, "header");
                    tracing::debug!(shard, %peer, "no request head within the header timeout; closing");
                    return;
                }
            }
            () = watch.calm.notified() => {
                // Dropping the connection drops its requests' futures, and
                // with them their upstream requests.
                counter.count_shed(shard, "h2_resets");
                tracing::info!(shard, %peer, "client abandoned too many requests before their answer (HTTP/2 rapid reset?); closing the connection");
                return;
            }
        }
    };
    if let Err(e) = result {
        // hyper's own header timeout (keep-alive idle, or a trickled head).
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            counter.count_timeout(shard, "header");
        }
        tracing::debug!(shard, %peer, error = %e, "connection ended with error");
    }
}
