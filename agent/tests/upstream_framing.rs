//! Strict framing of backend responses: a response whose length is
//! ambiguous or whose chunking is broken never reaches the client as a
//! complete success. Each backend writes exact bytes on a raw socket.
mod common;

use std::time::Duration;

use common::{edge::*, *};

const WITHIN: Duration = Duration::from_secs(10);
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: echo.example.com\r\nConnection: close\r\n\r\n";

/// What the client gets through the gateway when the backend answers `response`.
async fn through_gateway(response: &'static [u8]) -> String {
    let backend = raw_backend(response).await;
    let port = free_port();
    let app = start_routed(port, backend, |_| {}).await;
    let text = raw_exchange(port, REQUEST, WITHIN).await;
    app.shutdown().await;
    text
}

/// Whether `text` is a complete response: a head and, for a chunked body,
/// the last chunk; for a Content-Length body, all of it.
fn complete(text: &str) -> bool {
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        Some(n) => body.len() == n,
        None => true,
    }
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_a_502() {
    let text = through_gateway(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          b\r\nhello world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&text), 502, "{text}");
}

#[tokio::test]
async fn differing_content_lengths_are_a_502() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\n\r\nhello world"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 11\r\n\r\nhello world"[..],
    ] {
        let text = through_gateway(response).await;
        assert_eq!(status_of(&text), 502, "{text}");
    }
}

#[tokio::test]
async fn equal_duplicate_content_lengths_pass_as_one() {
    // RFC 9110 §8.6 lets a recipient accept a repeated identical value.
    let text =
        through_gateway(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
            .await;
    assert_eq!(status_of(&text), 200, "{text}");
    assert!(complete(&text), "{text}");
    assert!(text.ends_with("hello"));
}

#[tokio::test]
async fn invalid_chunking_never_arrives_as_a_complete_success() {
    for response in [
        // Chunk size that is not hex.
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"[..],
        // Chunk longer than announced.
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"[..],
        // Connection closed before the last chunk.
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"[..],
        // Content-Length body cut short.
        &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"[..],
    ] {
        let text = through_gateway(response).await;
        let status = status_of(&text);
        // Either refused outright, or the head went out and the body is
        // visibly cut (no last chunk, fewer bytes than announced).
        assert!(
            status == 502 || (status == 200 && !complete(&text)),
            "{:?} → {text:?}",
            String::from_utf8_lossy(response)
        );
    }
}

#[tokio::test]
async fn transfer_encoding_other_than_chunked_is_a_502() {
    // hyper reads it as delimited by the connection's close (RFC 9112
    // §6.3), but the coding would be lost with the hop-by-hop header.
    let text = through_gateway(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&text), 502, "{text}");
}
