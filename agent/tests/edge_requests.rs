//! Request limits (head size, header count, target length, connections per
//! source address) and strict authority checks (one valid Host, absolute
//! form, `:authority` against Host on HTTP/2), on the wire as a client
//! sends them.
mod common;

use std::time::Duration;

use common::{edge::*, *};
use tokio::net::TcpStream;

const WITHIN: Duration = Duration::from_secs(10);

/// A GET with `extra` header lines, closing the connection after it.
fn get_with(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: echo.example.com\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn head_size_header_count_and_target_length_have_limits() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, |_| {}).await;
    let status =
        |bytes: Vec<u8>| async move { status_of(&raw_exchange(port, &bytes, WITHIN).await) };
    // One 128 KiB header: far past the 32 KiB head.
    let big = format!("X-Big: {}\r\n", "a".repeat(128 * 1024));
    assert_eq!(status(get_with("/", &big)).await, 431);
    // 40 KiB over several headers: the whole head counts, not one line.
    let many_lines: String = (0..5)
        .map(|i| format!("X-L{i}: {}\r\n", "b".repeat(8 * 1024)))
        .collect();
    assert_eq!(status(get_with("/", &many_lines)).await, 431);
    // 16 KiB passes.
    let fine = format!("X-Fine: {}\r\n", "c".repeat(16 * 1024));
    assert_eq!(status(get_with("/", &fine)).await, 200);
    // Header count: 100 in all passes, 120 does not.
    let headers = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    assert_eq!(status(get_with("/", &headers(90))).await, 200);
    assert_eq!(status(get_with("/", &headers(120))).await, 431);
    // Target length: 8 KiB.
    let long = format!("/{}", "p".repeat(9 * 1024));
    assert_eq!(status(get_with(&long, "")).await, 414);
    let ok = format!("/{}", "p".repeat(7 * 1024));
    assert_eq!(status(get_with(&ok, "")).await, 200);
    let counted = metric(
        &app,
        "sluice_http_requests_total",
        &[r#"reason="uri_too_long""#],
    )
    .await;
    assert_eq!(counted, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn host_must_be_single_and_valid() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, |_| {}).await;
    let raw = |head: &'static str| async move { raw_exchange(port, head.as_bytes(), WITHIN).await };
    let cases = [
        // Two different Hosts: a proxy routing by the other sends it elsewhere.
        ("GET / HTTP/1.1\r\nHost: echo.example.com\r\nHost: admin.internal\r\nConnection: close\r\n\r\n", 400),
        // Two equal ones are refused too (RFC 9112 §3.2).
        ("GET / HTTP/1.1\r\nHost: echo.example.com\r\nHost: echo.example.com\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: echo example.com\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: echo.example.com/x\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: user@echo.example.com\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: echo.example.com:http\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        // Absolute form without Host: HTTP/1.1 requires it anyway.
        ("GET http://echo.example.com/ HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: Echo.Example.com:80\r\nConnection: close\r\n\r\n", 200),
    ];
    for (head, want) in cases {
        let text = raw(head).await;
        assert_eq!(status_of(&text), want, "{head:?} → {text}");
    }
    // Absolute form: the target's authority wins over Host (RFC 9112
    // §3.2.2), and it is what the backend sees as Host.
    let text = raw("GET http://echo.example.com/abs HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&text), 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let echo: serde_json::Value = serde_json::from_str(body).expect("echo JSON");
    assert_eq!(echo["host"], "echo.example.com", "{echo}");
    app.shutdown().await;
}

#[tokio::test]
async fn h2_authority_and_host_must_agree() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, |_| {}).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    for (host, want) in [
        (Some("other.example.com"), 400),
        (Some("echo.example.com"), 200),
        (None, 200),
    ] {
        let mut req = http::Request::get("http://echo.example.com/h2");
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let (resp, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
        let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
        assert_eq!(resp.status().as_u16(), want, "Host {host:?}");
        client = client.ready().await.unwrap();
    }
    app.shutdown().await;
}

#[tokio::test]
async fn connections_per_source_address_are_limited_at_accept() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, |s| s.edge.max_connections_per_source = 3).await;
    // A served request proves each connection was admitted.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(admitted_connection(port).await);
    }
    // The fourth is closed without an answer.
    let text = raw_exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: echo.example.com\r\n\r\n",
        WITHIN,
    )
    .await;
    assert_eq!(text, "", "shed at accept");
    let shed = metric(
        &app,
        "sluice_connections_shed_total",
        &[r#"reason="per_source_limit""#],
    )
    .await;
    assert_eq!(shed, 1.0);
    // A closed connection frees its place.
    drop(open.pop());
    let mut admitted = false;
    for _ in 0..50 {
        let text = raw_exchange(port, &get_with("/", ""), WITHIN).await;
        if status_of(&text) == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a place was released");
    app.shutdown().await;
}

#[tokio::test]
async fn trusted_proxies_are_exempt_from_the_per_source_limit() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, |s| {
        s.edge.max_connections_per_source = 1;
        s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    // A served request proves each connection was admitted.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(admitted_connection(port).await);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn client_connections_of_the_whole_agent_are_limited_at_accept() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, |s| s.edge.max_client_connections = 2).await;
    // A served request proves each connection was admitted.
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(admitted_connection(port).await);
    }
    let text = raw_exchange(port, &get_with("/", ""), WITHIN).await;
    assert_eq!(text, "", "the third connection is shed at accept");
    let shed = metric(
        &app,
        "sluice_connections_shed_total",
        &[r#"reason="agent_connection_limit""#],
    )
    .await;
    assert_eq!(shed, 1.0);
    drop(open);
    let mut admitted = false;
    for _ in 0..50 {
        if status_of(&raw_exchange(port, &get_with("/", ""), WITHIN).await) == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "closed connections give their places back");
    app.shutdown().await;
}
