//! Backends a resilience test steers: answer status and delay set at run
//! time, requests counted, killed on demand; Services with several
//! endpoints; metrics and reload helpers on the admin endpoint.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::AbortHandle};

/// A loopback backend whose answers the test controls.
pub struct Controlled {
    pub name: &'static str,
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    hits: Arc<AtomicUsize>,
    /// The accept loop and every connection task, aborted by `kill`.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Controlled {
    /// Starts answering `200` with `{"backend": name}`.
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (s, d, h, t) = (
            status.clone(),
            delay_ms.clone(),
            hits.clone(),
            tasks.clone(),
        );
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, d, h) = (s.clone(), d.clone(), h.clone());
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        let (s, d, h) = (s.clone(), d.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let ms = d.load(Ordering::SeqCst);
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let body = serde_json::json!({ "backend": name }).to_string();
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() =
                                http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                            resp.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                t.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Self {
            name,
            addr,
            status,
            delay_ms,
            hits,
            tasks,
        }
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests it received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every connection: connects are refused.
    pub fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Service `namespace/name` on port 8080 with one EndpointSlice per
/// endpoint (loopback backends differ by port).
pub fn service_with_endpoints(namespace: &str, name: &str, endpoints: &[SocketAddr]) -> String {
    let mut out = format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{ports: [{{name: http, port: 8080}}]}}
"#
    );
    for (i, e) in endpoints.iter().enumerate() {
        out.push_str(&format!(
            r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-{i}, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{{addresses: ["{ip}"]}}]
ports: [{{name: http, port: {port}}}]
"#,
            ip = e.ip(),
            port = e.port()
        ));
    }
    out
}

/// Polls `/config` until the served generation is at least `generation`
/// (bounded: 10 s).
pub async fn wait_generation(app: &sluice::app::App, generation: u64) {
    let mut last = serde_json::Value::Null;
    for _ in 0..400 {
        last = serde_json::from_str(&super::admin_get(app, "/config").await).unwrap();
        if last["generation"].as_u64() >= Some(generation) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("generation {generation} never served; last /config: {last:#}");
}

/// The generation being served.
pub async fn generation(app: &sluice::app::App) -> u64 {
    let c: serde_json::Value =
        serde_json::from_str(&super::admin_get(app, "/config").await).unwrap();
    c["generation"].as_u64().unwrap()
}

/// The sum of the samples of `/metrics` whose line starts with `prefix`
/// (a metric name, with `{` and some labels to narrow it).
pub async fn metric_sum(app: &sluice::app::App, prefix: &str) -> f64 {
    let text = super::admin_get(app, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `/api/overview` view of upstream `name` (`namespace/service:port`).
pub async fn upstream_view(app: &sluice::app::App, name: &str) -> serde_json::Value {
    let o: serde_json::Value =
        serde_json::from_str(&super::admin_get(app, "/api/overview").await).unwrap();
    o["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no upstream {name} in {o:#}"))
}
