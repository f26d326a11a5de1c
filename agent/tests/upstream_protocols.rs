//! Upstream protocols: WebSocket upgrades passed through and spliced,
//! `appProtocol: kubernetes.io/h2c` backends reached over HTTP/2 prior
//! knowledge (gRPC-style trailers end to end), `kubernetes.io/wss` reported
//! as unsupported.
// The tungstenite handshake callback signature has a large Err type.
#![allow(clippy::result_large_err)]
mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{body::Frame, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{handshake::server, Message};

/// A WebSocket backend answering every text message with `echo:<text>`;
/// records the path and X-Forwarded-For of each handshake.
async fn ws_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let callback = |req: &server::Request, resp: server::Response| {
                    let xff = req
                        .headers()
                        .get("x-forwarded-for")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    log.lock()
                        .unwrap()
                        .push(format!("{} {xff}", req.uri().path()));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg {
                        let reply = format!("echo:{}", t.as_str());
                        if ws.send(Message::text(reply)).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An HTTP/2-only backend (prior knowledge): answers with the protocol
/// version it saw and a `grpc-status: 0` trailer, as a gRPC server does.
async fn h2c_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let te = req
                        .headers()
                        .get("te")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    let body = format!("{:?} te={te}", req.version());
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let frames = vec![
                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(body))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body = StreamBody::new(futures_util::stream::iter(frames));
                    let mut resp = Response::new(body);
                    resp.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Service `infra/name` on port 8080 with `appProtocol` and one endpoint.
fn service_with_protocol(name: &str, app_protocol: &str, backend: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: infra}}
spec: {{ports: [{{name: p, port: 8080, appProtocol: "{app_protocol}"}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: infra, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"]}}]
ports: [{{name: p, port: {port}}}]
"#,
        port = backend.port()
    )
}

fn route(name: &str, host: &str, backend: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules: [{{backendRefs: [{{name: {backend}, port: 8080}}]}}]
"#
    )
}

struct Fixture {
    app: sluice::app::App,
    port: u16,
    ws_seen: Arc<Mutex<Vec<String>>>,
}

async fn fixture() -> Fixture {
    let (ws, ws_seen) = ws_backend().await;
    let h2c = h2c_backend().await;
    let port = free_port();
    let dir = config_dir();
    let config = [
        gateway_yaml(port),
        service_yaml("infra", "ws-plain", ws),
        service_with_protocol("ws-app", "kubernetes.io/ws", ws),
        service_with_protocol("grpc", "kubernetes.io/h2c", h2c),
        service_yaml("infra", "h2-as-http1", h2c),
        service_with_protocol("wss", "kubernetes.io/wss", ws),
        route("ws-plain", "ws.example.com", "ws-plain"),
        route("ws-app", "ws-app.example.com", "ws-app"),
        route("grpc", "grpc.example.com", "grpc"),
        route("h2-as-http1", "wrong.example.com", "h2-as-http1"),
        route("wss", "wss.example.com", "wss"),
    ]
    .concat();
    write_config(&dir, "all.yaml", &config);
    let app = start(&dir).await;
    Fixture { app, port, ws_seen }
}

async fn ws_roundtrip(port: u16, host: &str, path: &str) -> Vec<String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{host}{path}"), tcp)
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut replies = Vec::new();
    for text in ["hello", "second message"] {
        ws.send(Message::text(text)).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Text(t))) => replies.push(t.as_str().to_owned()),
            other => panic!("expected a text reply, got {other:?}"),
        }
    }
    ws.close(None).await.unwrap();
    replies
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let f = fixture().await;
    for host in ["ws.example.com", "ws-app.example.com"] {
        let replies = ws_roundtrip(f.port, host, "/chat").await;
        assert_eq!(replies, ["echo:hello", "echo:second message"], "{host}");
    }
    let seen = f.ws_seen.lock().unwrap().clone();
    assert_eq!(seen, ["/chat 127.0.0.1", "/chat 127.0.0.1"]);
    // A plain request to the same route is still an ordinary request: the
    // WebSocket backend refuses it without an upgrade.
    let r = TestClient::new(f.port).get("ws.example.com", "/chat").await;
    assert_ne!(r.status, StatusCode::SWITCHING_PROTOCOLS);
    f.app.shutdown().await;
}

#[tokio::test]
async fn h2c_app_protocol_reaches_http2_backends_with_trailers() {
    let f = fixture().await;
    // HTTP/1.1 downstream, HTTP/2 upstream.
    let r = TestClient::new(f.port)
        .get("grpc.example.com", "/svc/Method")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.starts_with("HTTP/2.0"), "{}", r.body);
    // Without appProtocol the same backend is spoken to in HTTP/1.1 and fails.
    let r = TestClient::new(f.port).get("wrong.example.com", "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);

    // gRPC shape: h2 downstream (prior knowledge), TE: trailers forwarded,
    // trailers back to the client.
    let tcp = TcpStream::connect(("127.0.0.1", f.port)).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri("http://grpc.example.com/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let body = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
    assert_eq!(body, "HTTP/2.0 te=trailers");
    f.app.shutdown().await;
}

#[tokio::test]
async fn wss_app_protocol_is_unsupported() {
    let f = fixture().await;
    let r = TestClient::new(f.port).get("wss.example.com", "/").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&f.app, "/status").await).unwrap();
    let route = status["httpRoutes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "wss")
        .unwrap();
    let resolved = route["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .unwrap();
    assert_eq!(resolved["reason"], "UnsupportedProtocol", "{resolved}");
    f.app.shutdown().await;
}
