//! One accept loop per shard socket; each shard is a bulkhead with its own
//! connection limit, so a flood on one Gateway cannot exhaust another's.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use super::{ConnInfo, Proxy};
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
    shutdown: watch::Sender<bool>,
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
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let locals = sockets.iter().map(|s| s.local).collect();
        for s in sockets {
            let listener = TcpListener::from_std(s.listener)?;
            tasks.spawn(accept_loop(
                shard,
                listener,
                proxy.clone(),
                limit.clone(),
                rx.clone(),
            ));
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
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn accept_loop(
    shard: ShardId,
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limit: Arc<tokio::sync::Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let info = ConnInfo { shard, local, peer };
        let proxy = proxy.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(info, req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(shard, %peer, error = %e, "connection ended with error");
            }
            drop(permit);
        });
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
