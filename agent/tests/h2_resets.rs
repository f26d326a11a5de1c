//! HTTP/2 rapid reset (CVE-2023-44487): a client that opens streams, lets
//! them be forwarded and resets them. Each reset cancels its upstream
//! request at once; past the limit the connection is closed and counted.
mod common;

use std::time::Duration;

use common::{edge::*, *};
use tokio::net::TcpStream;

const WITHIN: Duration = Duration::from_secs(10);

/// Opens `n` streams on `client`, waits until the backend holds all of
/// them, then resets them all.
async fn forward_then_reset(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    held: &Held,
    n: usize,
) {
    let before = held.accepted();
    let mut streams = Vec::new();
    for i in 0..n {
        *client = client.clone().ready().await.expect("stream slot");
        let req = http::Request::get(format!("http://echo.example.com/r{i}"))
            .body(())
            .unwrap();
        streams.push(client.send_request(req, true).expect("open stream"));
    }
    assert!(
        eventually(WITHIN, || held.accepted() >= before + n).await,
        "forwarded: {} of {n}",
        held.accepted() - before
    );
    for (_, mut send) in streams {
        send.send_reset(h2::Reason::CANCEL);
    }
}

#[tokio::test]
async fn a_reset_stream_cancels_its_upstream_request() {
    let (backend, held) = holding_backend().await;
    let port = free_port();
    let app = start_routed(port, backend, |_| {}).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2c");
    let conn = tokio::spawn(conn);
    forward_then_reset(&mut client, &held, 20).await;
    assert!(
        eventually(WITHIN, || held.closed() >= 20).await,
        "upstream requests cancelled: {} of 20",
        held.closed()
    );
    // Under the limit: the connection stays open.
    assert!(!conn.is_finished());
    assert!(
        metric_eventually(&app, "sluice_http_requests_abandoned_total", 20.0).await,
        "abandoned requests counted"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn too_many_resets_close_the_connection() {
    let (backend, held) = holding_backend().await;
    let port = free_port();
    let app = start_routed(port, backend, |s| s.edge.h2_max_resets = 10).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2c");
    let conn = tokio::spawn(conn);
    forward_then_reset(&mut client, &held, 15).await;
    // The connection is closed: the client's connection task ends.
    let ended = tokio::time::timeout(WITHIN, conn).await;
    assert!(
        ended.is_ok(),
        "connection still open after 15 resets with a limit of 10"
    );
    // Every upstream request of the connection is cancelled with it.
    assert!(
        eventually(WITHIN, || held.closed() >= 15).await,
        "{}",
        held.closed()
    );
    let shed = metric(
        &app,
        "sluice_connections_shed_total",
        &[r#"reason="h2_resets""#],
    )
    .await;
    assert_eq!(shed, 1.0);
    // The gateway goes on serving other connections.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(h2::client::handshake(tcp).await.is_ok());
    app.shutdown().await;
}

/// Whether the metric's sum reaches `at_least` within the bound.
async fn metric_eventually(app: &sluice::app::App, name: &str, at_least: f64) -> bool {
    let until = tokio::time::Instant::now() + WITHIN;
    while tokio::time::Instant::now() < until {
        if metric(app, name, &[]).await >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
