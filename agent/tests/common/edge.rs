//! Helpers for edge tests: an app with chosen settings, raw-byte clients and
//! backends (the framing under test must be exactly what is on the wire),
//! and metric samples read from `/metrics`.
use std::{net::SocketAddr, time::Duration};

use sluice::app::{self, App, DatapathMode, Settings};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{admin_get, config_dir, gateway_yaml, service_yaml, write_config};

/// An HTTPRoute `infra/r` sending everything to Service `infra/echo`.
pub const ROUTE_TO_ECHO: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
"#;

/// The app (userspace datapath) with Gateway `infra/gw` on `port` routing
/// everything to `backend`, its settings changed by `edit` first.
pub async fn start_routed(port: u16, backend: SocketAddr, edit: impl FnOnce(&mut Settings)) -> App {
    let dir = config_dir();
    let config = format!(
        "{}{}{ROUTE_TO_ECHO}",
        gateway_yaml(port),
        service_yaml("infra", "echo", backend)
    );
    write_config(&dir, "all.yaml", &config);
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    edit(&mut settings);
    app::build(settings).await.expect("app starts")
}

/// A connection to the gateway on `port` that was admitted: a request on
/// it has been answered 200 (the connection stays open).
pub async fn admitted_connection(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the gateway");
    s.write_all(b"GET / HTTP/1.1\r\nHost: echo.example.com\r\n\r\n")
        .await
        .expect("write request");
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.expect("read the status line");
    assert_eq!(&buf, b"HTTP/1.1 200", "port {port}");
    s
}

/// Writes `bytes` to the gateway on `port` and reads until it closes the
/// connection (or `within` passes): what came back, as text.
pub async fn raw_exchange(port: u16, bytes: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the gateway");
    s.write_all(bytes).await.expect("write request");
    read_until_close(&mut s, within).await.0
}

/// Reads from `s` until EOF, a reset, or `within`; the text read and
/// whether the peer closed.
pub async fn read_until_close(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// The status code of a raw HTTP/1.1 response text (0 when there is none).
pub fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A backend that answers every request with exactly `response`, then
/// closes the connection.
pub async fn raw_backend(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A backend that accepts connections and reads, but never answers.
pub async fn silent_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// The value of the sample `name{…}` whose labels include every one of
/// `labels` (`key="value"`), summed over matches; 0 when there is none.
pub async fn metric(app: &App, name: &str, labels: &[&str]) -> f64 {
    let text = admin_get(app, "/metrics").await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Connections a [`holding_backend`] has accepted, and of those, how many
/// the gateway has closed.
#[derive(Clone, Default)]
pub struct Held {
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Held {
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A backend that reads requests and never answers, counting the
/// connections it gets and the ones closed from the gateway's side (an
/// HTTP/1.1 upstream request is cancelled by closing its connection).
pub async fn holding_backend() -> (SocketAddr, Held) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = Held::default();
    let counts = held.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counts
                .accepted
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let closed = counts.closed.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    (addr, held)
}

/// Waits (bounded by `within`) until `done` holds; whether it did.
pub async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
