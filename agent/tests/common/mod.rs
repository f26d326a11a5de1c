//! In-process harness: echo backends, a config directory, the real app on
//! loopback, and a small HTTP client. Traffic never leaves 127.0.0.1.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod edge;
pub mod grpc;
pub mod idp;
pub mod l4;
pub mod origin;
pub mod redis;
pub mod upstreams;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use sluice::app::{self, App, DatapathMode, Settings};
use tokio::net::TcpListener;

/// A port that was free a moment ago and that nothing else in this process
/// will be handed: taken from below the kernel's ephemeral range (where the
/// `:0` binds of backends and clients land) and never twice per process.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Spread concurrent test processes over the range.
    let base = 20_000 + (std::process::id() as usize % 400) * 25;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + n % 10_000) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts an echo backend named `name` on 127.0.0.1: it answers every request
/// with JSON `{backend, method, path, host, headers}`; `?delay_ms=N` delays
/// the answer.
pub async fn echo_backend(name: &'static str) -> SocketAddr {
    recording_backend(name).await.0
}

/// Requests a backend received, as `METHOD path-and-query body`.
pub type Recorded = Arc<Mutex<Vec<String>>>;

/// Like [`echo_backend`], also recording every request it receives.
pub async fn recording_backend(name: &'static str) -> (SocketAddr, Recorded) {
    let seen: Recorded = Arc::default();
    let log = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, std::convert::Infallible>(echo(name, req, &log).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A body that yields its bytes only after a delay (a backend that sends
/// its head at once and then stalls).
struct DelayedBody {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    data: Option<Bytes>,
}

impl hyper::body::Body for DelayedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::future::Future;
        std::task::ready!(self.sleep.as_mut().poll(cx));
        std::task::Poll::Ready(self.data.take().map(|d| Ok(hyper::body::Frame::data(d))))
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn echo(name: &str, req: Request<Incoming>, log: &Recorded) -> http::Response<EchoBody> {
    let query_ms = |key: &str| {
        req.uri()
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix(key)))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let body_delay = query_ms("body_delay_ms=");
    // `?fail_first=N&id=U&code=C`: the first N requests with id U get status C.
    if let Some(n) = query_ms("fail_first=") {
        static SEEN: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
        let id = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("id=")))
            .unwrap_or("")
            .to_owned();
        let code = query_ms("code=").unwrap_or(500) as u16;
        let seen = {
            let mut m = SEEN.lock().unwrap();
            let c = m.entry(id).or_default();
            *c += 1;
            *c
        };
        if seen <= n {
            let received = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            log.lock().unwrap().push(format!(
                "failed {code} {}",
                String::from_utf8_lossy(&received)
            ));
            let mut resp = http::Response::new(Full::new(Bytes::new()).boxed());
            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
            return resp;
        }
    }
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("delay_ms=")))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(v.to_str().unwrap_or("").to_owned());
    }
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let received = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let received = String::from_utf8_lossy(&received).into_owned();
    log.lock()
        .unwrap()
        .push(format!("{method} {path} {received}"));
    let body = serde_json::json!({
        "backend": name,
        "method": method,
        "path": path,
        "host": host,
        "headers": headers,
        "body": received,
    });
    let body = Bytes::from(body.to_string());
    let body = match body_delay {
        Some(ms) => DelayedBody {
            sleep: Box::pin(tokio::time::sleep(Duration::from_millis(ms))),
            data: Some(body),
        }
        .boxed(),
        None => Full::new(body).boxed(),
    };
    let mut resp = http::Response::new(body);
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("x-backend-original", "kept".parse().unwrap());
    resp
}

/// A fresh, empty config directory under the system temp dir.
pub fn config_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    static PARENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let parent = PARENT.get_or_init(|| {
        // Leftovers of test processes that are gone (killed, crashed) go
        // first; this process's own directory goes when it exits.
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix("sluice-tests-") else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        extern "C" fn remove_parent() {
            if let Some(p) = PARENT.get() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
        // SAFETY: registers a plain function, run once at process exit.
        unsafe { libc::atexit(remove_parent) };
        tmp.join(format!("sluice-tests-{}", std::process::id()))
    });
    let dir = parent.join(N.fetch_add(1, Ordering::Relaxed).to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create config dir");
    dir
}

/// GatewayClass + Gateway `infra/gw` on 127.0.0.1:`port` accepting routes
/// from all namespaces.
pub fn gateway_yaml(port: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: All}}}}
"#
    )
}

/// Service `namespace/name` on port 8080 with one endpoint at `backend`.
pub fn service_yaml(namespace: &str, name: &str, backend: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{ports: [{{name: http, port: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{{addresses: ["{ip}"]}}]
ports: [{{name: http, port: {port}}}]
"#,
        ip = backend.ip(),
        port = backend.port()
    )
}

/// Writes `text` atomically (temp file + rename), as GitOps tools do, so a
/// watcher never sees half a file.
pub fn write_config(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, dir.join(file)).expect("rename config");
}

/// Starts the real app (userspace datapath, admin on an ephemeral port).
pub async fn start(dir: &Path) -> App {
    let mut settings = Settings::new(dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    app::build(settings).await.expect("app starts")
}

/// A response, with the echo body parsed when there is one.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub echo: Option<serde_json::Value>,
}

impl Reply {
    pub fn backend(&self) -> &str {
        self.echo
            .as_ref()
            .and_then(|e| e["backend"].as_str())
            .unwrap_or("")
    }

    pub fn path(&self) -> &str {
        self.echo
            .as_ref()
            .and_then(|e| e["path"].as_str())
            .unwrap_or("")
    }

    /// Values the backend saw for a (lower-case) request header, joined with `,`.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        let values = self.echo.as_ref()?["headers"].get(name)?.as_array()?;
        Some(
            values
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// A client for the gateway under test.
#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
    pub port: u16,
}

impl TestClient {
    pub fn new(port: u16) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            port,
        }
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(Method::GET, host, path, &[]).await
    }

    pub async fn send(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_send(method, host, path, headers)
            .await
            .expect("request to the gateway")
    }

    /// A request with a body.
    pub async fn send_body(&self, method: Method, host: &str, path: &str, body: &str) -> Reply {
        self.try_send_body(method, host, path, &[], Bytes::from(body.to_owned()))
            .await
            .expect("request to the gateway")
    }

    pub async fn try_send(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        self.try_send_body(method, host, path, headers, Bytes::new())
            .await
    }

    pub async fn try_send_body(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        let echo = (headers.get("content-type").map(|v| v.as_bytes()) == Some(b"application/json"))
            .then(|| serde_json::from_str(&body).ok())
            .flatten();
        Ok(Reply {
            status,
            headers,
            body,
            echo,
        })
    }
}

/// GET on the admin endpoint, body as text.
pub async fn admin_get(app: &App, path: &str) -> String {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("http://{}{path}", app.admin_addr);
    let resp = client
        .get(uri.parse().unwrap())
        .await
        .expect("admin request");
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("admin body")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// A request with `method` on the admin endpoint: status and body as text.
pub async fn admin_send(app: &App, method: Method, path: &str) -> (StatusCode, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", app.admin_addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.expect("admin request");
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("admin body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
