//! Trace context and OTLP export through the real app, against an OTLP/HTTP
//! receiver in the test that decodes what it is sent: the spans, how they
//! link to the caller and to the backend, sampling, policy events, and a
//! collector that fails without the requests noticing.
mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value,
    trace::v1::{span::SpanKind, status::StatusCode as SpanStatus, Span},
};
use prost::Message;
use sluice::{
    app::{self, DatapathMode, Settings},
    telemetry::TraceParent,
};
use tokio::net::TcpListener;

/// An OTLP/HTTP traces receiver: decodes every export, keeps the spans and
/// the resources' `service.name`, answers with `status` (200 unless set).
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    posts: Arc<Mutex<Vec<(String, String)>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> (SocketAddr, Self) {
        let r = Receiver::default();
        r.status.store(200, Ordering::Relaxed);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = r.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.receive(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, r)
    }

    async fn receive(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let content_type = req
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let key = req
            .headers()
            .get("x-collector-key")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        self.posts.lock().unwrap().push((content_type, key));
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let status = self.status.load(Ordering::Relaxed);
        if status == 200 && path == "/v1/traces" {
            let export = ExportTraceServiceRequest::decode(body).expect("a valid OTLP protobuf");
            for rs in export.resource_spans {
                for kv in rs.resource.unwrap().attributes {
                    if kv.key == "service.name" {
                        if let Some(Value::StringValue(s)) = kv.value.unwrap().value {
                            self.services.lock().unwrap().push(s);
                        }
                    }
                }
                for ss in rs.scope_spans {
                    self.spans.lock().unwrap().extend(ss.spans);
                }
            }
        }
        let mut resp = Response::new(Full::new(Bytes::from(
            ExportTraceServiceResponse::default().encode_to_vec(),
        )));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        resp
    }

    /// Waits (bounded) until spans of `trace` have arrived, and returns them.
    async fn trace(&self, trace: &[u8; 16], at_least: usize) -> Vec<Span> {
        for _ in 0..200 {
            let found: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace)
                .cloned()
                .collect();
            if found.len() >= at_least {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no {at_least} spans of trace {trace:02x?} within 5 s");
    }
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    match attr(s, key)? {
        Value::StringValue(v) => Some(v),
        _ => None,
    }
}

fn int_attr(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key)? {
        Value::IntValue(v) => Some(*v),
        _ => None,
    }
}

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct Setup {
    app: app::App,
    client: TestClient,
    receiver: Receiver,
}

async fn start(ratio: f64, tweak: impl FnOnce(&mut Settings)) -> Setup {
    let backend = echo_backend("echo").await;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (collector, receiver) = Receiver::start().await;
    let port = free_port();
    let dir = config_dir();
    let routes = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: team}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [shop.example.com]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: team}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [broken.example.com]
  rules: [{backendRefs: [{name: dead, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: closed, namespace: team}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [closed.example.com]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: no-local, namespace: team}
spec:
  targetRefs: [{kind: HTTPRoute, name: closed}]
  ipDeny: [127.0.0.0/8]
"#;
    let config = format!(
        "{}{}{}{routes}",
        gateway_yaml(port),
        service_yaml("team", "echo", backend),
        service_yaml("team", "dead", dead)
    );
    write_config(&dir, "all.yaml", &config);
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    settings.tracing.endpoint = Some(format!("http://{collector}/v1/traces").parse().unwrap());
    settings.tracing.sample_ratio = ratio;
    settings.tracing.flush_interval = Duration::from_millis(20);
    tweak(&mut settings);
    let app = app::build(settings).await.expect("app starts");
    Setup {
        app,
        client: TestClient::new(port),
        receiver,
    }
}

fn seen_traceparent(r: &Reply) -> TraceParent {
    let v = r
        .seen_header("traceparent")
        .expect("the backend got a traceparent");
    TraceParent::parse(&v.parse().unwrap()).expect("a valid traceparent")
}

#[tokio::test]
async fn a_sampled_caller_gets_a_server_and_a_client_span_linked_to_the_backend() {
    let s = start(0.0, |st| {
        st.tracing.service_name = "edge-gw".into();
        st.tracing.headers = vec![("x-collector-key".parse().unwrap(), "k1".parse().unwrap())];
    })
    .await;
    let caller = TraceParent::parse(&CALLER.parse().unwrap()).unwrap();
    let r = s
        .client
        .send(
            Method::GET,
            "shop.example.com",
            "/cart?id=1",
            &[("traceparent", CALLER), ("tracestate", "vendor=1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let forwarded = seen_traceparent(&r);
    assert_eq!(
        forwarded.trace_id, caller.trace_id,
        "the caller's trace goes on"
    );
    assert!(forwarded.sampled());
    assert_ne!(
        forwarded.parent_id, caller.parent_id,
        "the gateway is a hop of its own"
    );
    assert_eq!(r.seen_header("tracestate").as_deref(), Some("vendor=1"));

    let spans = s.receiver.trace(&caller.trace_id, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(server.parent_span_id, caller.parent_id.to_vec());
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(
        client.span_id,
        forwarded.parent_id.to_vec(),
        "the backend's parent is the attempt's span"
    );
    assert_eq!(server.name, "GET team/shop");
    assert_eq!(int_attr(server, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(server, "http.route"), Some("team/shop"));
    assert_eq!(str_attr(server, "url.path"), Some("/cart"));
    assert_eq!(str_attr(server, "server.address"), Some("shop.example.com"));
    assert_eq!(str_attr(server, "sluice.gateway"), Some("infra/gw"));
    assert_eq!(int_attr(client, "http.response.status_code"), Some(200));
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    assert!(s
        .receiver
        .services
        .lock()
        .unwrap()
        .iter()
        .all(|n| n == "edge-gw"));
    let posts = s.receiver.posts.lock().unwrap().clone();
    assert!(posts
        .iter()
        .all(|(ct, key)| ct == "application/x-protobuf" && key == "k1"));
    let metrics = admin_get(&s.app, "/metrics").await;
    assert!(metrics.contains("sluice_trace_spans_total"), "{metrics}");
    s.app.shutdown().await;
}

#[tokio::test]
async fn the_last_spans_are_exported_before_shutdown_returns() {
    // An interval far longer than the test: only the flush at shutdown
    // can post these spans.
    let s = start(1.0, |st| {
        st.tracing.flush_interval = Duration::from_secs(600)
    })
    .await;
    let r = s
        .client
        .send(
            Method::GET,
            "shop.example.com",
            "/last",
            &[("traceparent", CALLER)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        s.receiver.spans.lock().unwrap().is_empty(),
        "nothing is posted before the interval"
    );
    s.app.shutdown().await;
    // Looked at once: the agent posted them as it stopped.
    let caller = TraceParent::parse(&CALLER.parse().unwrap()).unwrap();
    let spans = s.receiver.spans.lock().unwrap().clone();
    let ours = spans
        .iter()
        .filter(|s| s.trace_id == caller.trace_id)
        .count();
    assert_eq!(ours, 2, "a server and a client span: {spans:#?}");
}

#[tokio::test]
async fn an_unsampled_caller_is_followed_and_nothing_is_exported() {
    let s = start(1.0, |_| {}).await;
    let unsampled = CALLER.replace("-01", "-00");
    let r = s
        .client
        .send(
            Method::GET,
            "shop.example.com",
            "/",
            &[("traceparent", unsampled.as_str())],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let forwarded = seen_traceparent(&r);
    assert!(!forwarded.sampled(), "the caller's decision is kept");
    // A sampled request afterwards is exported; the unsampled one never is.
    let r = s.client.get("shop.example.com", "/after").await;
    let after = seen_traceparent(&r);
    s.receiver.trace(&after.trace_id, 2).await;
    assert!(s
        .receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .all(|sp| sp.trace_id != forwarded.trace_id.to_vec()));
    s.app.shutdown().await;
}

#[tokio::test]
async fn new_traces_follow_the_ratio_and_the_backend_is_told() {
    let s = start(0.0, |_| {}).await;
    let r = s.client.get("shop.example.com", "/").await;
    let tp = seen_traceparent(&r);
    assert!(
        !tp.sampled(),
        "ratio 0: a new trace is not recorded, and says so"
    );
    s.app.shutdown().await;

    let s = start(1.0, |_| {}).await;
    let r = s.client.get("shop.example.com", "/").await;
    let tp = seen_traceparent(&r);
    assert!(tp.sampled());
    let spans = s.receiver.trace(&tp.trace_id, 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert!(server.parent_span_id.is_empty(), "a root span");
    s.app.shutdown().await;
}

#[tokio::test]
async fn failures_and_policy_decisions_are_in_the_spans() {
    let s = start(1.0, |_| {}).await;
    let caller = TraceParent::parse(&CALLER.parse().unwrap()).unwrap();
    // A backend that refuses connections: the attempt's span is an error.
    let r = s
        .client
        .send(
            Method::GET,
            "broken.example.com",
            "/",
            &[("traceparent", CALLER)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let spans = s.receiver.trace(&caller.trace_id, 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(
        server.status.as_ref().unwrap().code,
        SpanStatus::Error as i32
    );
    assert_eq!(
        client.status.as_ref().unwrap().code,
        SpanStatus::Error as i32
    );
    assert_eq!(str_attr(client, "error.type"), Some("connect"));
    assert_eq!(str_attr(server, "sluice.response_flag"), Some("UF"));

    // A policy rejection: no attempt, an event naming the policy.
    let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = s
        .client
        .send(
            Method::GET,
            "closed.example.com",
            "/",
            &[("traceparent", other)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let id = TraceParent::parse(&other.parse().unwrap())
        .unwrap()
        .trace_id;
    let spans = s.receiver.trace(&id, 1).await;
    assert_eq!(spans.len(), 1, "no upstream attempt: {spans:#?}");
    let ev = &spans[0].events[0];
    assert_eq!(ev.name, "sluice.policy.rejected");
    let policy = ev
        .attributes
        .iter()
        .find(|a| a.key == "sluice.policy")
        .unwrap();
    assert_eq!(
        policy.value.as_ref().unwrap().value,
        Some(Value::StringValue("SluicePolicy team/no-local".into()))
    );
    // 4xx is the client's fault: the server span is not an error.
    assert_ne!(
        spans[0].status.as_ref().unwrap().code,
        SpanStatus::Error as i32
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn a_failing_collector_is_counted_and_requests_do_not_notice() {
    let s = start(1.0, |_| {}).await;
    s.receiver.status.store(503, Ordering::Relaxed);
    for i in 0..50 {
        let r = s.client.get("shop.example.com", &format!("/{i}")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let mut failures = 0;
    for _ in 0..200 {
        let metrics = admin_get(&s.app, "/metrics").await;
        failures = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sluice_trace_export_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if failures > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(failures > 0, "export failures are counted");
    assert!(s.receiver.spans.lock().unwrap().is_empty());
    // The collector comes back: export resumes.
    s.receiver.status.store(200, Ordering::Relaxed);
    let r = s.client.get("shop.example.com", "/back").await;
    s.receiver.trace(&seen_traceparent(&r).trace_id, 2).await;
    s.app.shutdown().await;
}

#[tokio::test]
async fn tracing_off_forwards_a_traceparent_untouched() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let dir = config_dir();
    let route = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: team}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
"#;
    write_config(
        &dir,
        "all.yaml",
        &format!(
            "{}{}{route}",
            gateway_yaml(port),
            service_yaml("team", "echo", backend)
        ),
    );
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    let app = app::build(settings).await.unwrap();
    let c = TestClient::new(port);
    let r = c
        .send(
            Method::GET,
            "x.example.com",
            "/",
            &[("traceparent", CALLER)],
        )
        .await;
    assert_eq!(r.seen_header("traceparent").as_deref(), Some(CALLER));
    let r = c.get("x.example.com", "/").await;
    assert_eq!(r.seen_header("traceparent"), None, "off: none is made up");
    app.shutdown().await;
}

#[tokio::test]
async fn a_bad_endpoint_is_refused_at_start() {
    let dir = config_dir();
    write_config(&dir, "all.yaml", &gateway_yaml(free_port()));
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    settings.tracing.endpoint = Some("ftp://collector/v1/traces".parse().unwrap());
    let err = app::build(settings).await.err().expect("refused");
    assert!(err.to_string().contains("--otlp-endpoint"), "{err}");
}
