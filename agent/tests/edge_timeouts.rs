//! Client-side timeouts (header, keep-alive idle, request body) and the
//! default upstream response timeout: each closes or answers within a
//! generous bound and is counted in `sluice_http_timeouts_total`.
mod common;

use std::time::Duration;

use common::{edge::*, *};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// Generous bound for a 1 s timeout on a loaded CI machine.
const WITHIN: Duration = Duration::from_secs(15);

fn short_timeouts(s: &mut sluice::app::Settings) {
    s.edge.header_timeout = Duration::from_secs(1);
    s.edge.body_idle_timeout = Duration::from_secs(1);
    s.edge.upstream_response_timeout = Duration::from_secs(1);
}

#[tokio::test]
async fn silent_trickling_and_idle_clients_are_closed_after_the_header_timeout() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, short_timeouts).await;
    let start = tokio::time::Instant::now();
    // Sends nothing at all.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // Starts what could be an HTTP/2 preface, then nothing more.
    let mut preface = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    preface.write_all(b"PR").await.unwrap();
    // Trickles a head one byte every 200 ms: never idle, never complete.
    let trickle = tokio::spawn(async move {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        for b in b"GET / HTTP/1.1\r\nHost: echo.example.com\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if s.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if start.elapsed() > WITHIN {
                return false;
            }
        }
        unreachable!()
    });
    // A keep-alive connection that got its answer and then stays idle.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: echo.example.com\r\n\r\n")
        .await
        .unwrap();
    let (text, closed) = read_until_close(&mut silent, WITHIN).await;
    assert!(closed && text.is_empty(), "silent client: {text:?}");
    let (_, closed) = read_until_close(&mut preface, WITHIN).await;
    assert!(closed, "client stuck in the HTTP/2 preface");
    let (text, closed) = read_until_close(&mut idle, WITHIN).await;
    assert!(closed, "idle keep-alive connection");
    assert_eq!(status_of(&text), 200, "{text}");
    assert!(trickle.await.unwrap(), "trickling client was never closed");
    assert!(start.elapsed() < WITHIN);
    let counted = metric(
        &app,
        "sluice_http_timeouts_total",
        &[r#"reason="header""#, r#"shard="infra/gw""#],
    )
    .await;
    assert!(counted >= 4.0, "header timeouts counted: {counted}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_slow_backend_is_not_cut_by_the_header_timeout() {
    // The header timeout bounds the client's head, not the exchange.
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, |s| {
        s.edge.header_timeout = Duration::from_secs(1);
    })
    .await;
    let r = TestClient::new(port)
        .get("echo.example.com", "/?delay_ms=2500")
        .await;
    assert_eq!(r.status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_is_counted() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, short_timeouts).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: echo.example.com\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let (text, _) = read_until_close(&mut s, WITHIN).await;
    assert_eq!(status_of(&text), 408, "{text}");
    let counted = metric(
        &app,
        "sluice_http_timeouts_total",
        &[r#"reason="request_body""#],
    )
    .await;
    assert!(counted >= 1.0, "{counted}");
    // A body that keeps coming, slower than the timeout in all, passes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: echo.example.com\r\nContent-Length: 6\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for chunk in [b"ab", b"cd", b"ef"] {
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(chunk).await.unwrap();
    }
    let (text, _) = read_until_close(&mut s, WITHIN).await;
    assert_eq!(status_of(&text), 200, "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_never_answers_gets_504_on_a_route_without_timeouts() {
    let backend = silent_backend().await;
    let port = free_port();
    let app = start_routed(port, backend, short_timeouts).await;
    let start = tokio::time::Instant::now();
    let r = tokio::time::timeout(WITHIN, TestClient::new(port).get("echo.example.com", "/"))
        .await
        .expect("answered in time");
    assert_eq!(r.status, 504);
    assert!(start.elapsed() < WITHIN);
    let counted = metric(
        &app,
        "sluice_http_timeouts_total",
        &[r#"reason="upstream_response""#],
    )
    .await;
    assert_eq!(counted, 1.0);
    app.shutdown().await;
}
