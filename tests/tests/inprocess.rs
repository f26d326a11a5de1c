//! The real app, in-process, userspace datapath on loopback: no privileges needed.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sluice::app::{build, DatapathMode, Settings};
use sluice_tests::echo::{serve, Echo, Identity};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Env {
    dir: PathBuf,
    gateway: u16,
    echo: SocketAddr,
}

async fn env(name: &str, extra: &str) -> Env {
    let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = echo_listener.local_addr().unwrap();
    tokio::spawn(serve(
        echo_listener,
        Identity {
            pod: "echo-v1-x-y".into(),
            namespace: "apps".into(),
        },
    ));
    let gateway = free_port();
    let dir = std::env::temp_dir().join(format!("sluice-inproc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: http, port: {gateway}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: apps}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [api.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
    backendRefs: [{{name: echo, port: 80}}]
  - matches: [{{path: {{type: Exact, value: /broken}}}}]
    backendRefs: [{{name: missing, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: apps}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo, namespace: apps, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {port}}}]
{extra}"#,
            port = echo.port()
        ),
    )
    .unwrap();
    Env { dir, gateway, echo }
}

fn settings(env: &Env) -> Settings {
    let mut s = Settings::new(&env.dir);
    s.datapath = DatapathMode::Userspace;
    s.admin_addr = "127.0.0.1:0".parse().unwrap();
    s
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
    host: &str,
) -> (u16, Bytes) {
    let req = http::Request::get(url)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn routes_http1_and_http2_and_reports_errors_per_spec() {
    let env = env("routes", "").await;
    let app = build(settings(&env)).await.unwrap();
    assert!(app.is_ready());
    let base = format!("http://127.0.0.1:{}", env.gateway);

    let h1: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let (status, body) = get(&h1, &format!("{base}/v1/users?id=7"), "api.example.com").await;
    assert_eq!(status, 200);
    let echo: Echo = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo.path, "/v1/users?id=7");
    assert_eq!(echo.host, "api.example.com");
    assert_eq!(echo.namespace, "apps");
    assert_eq!(echo.headers["X-Forwarded-For"], ["127.0.0.1"]);
    assert_eq!(echo.headers["X-Forwarded-Proto"], ["http"]);

    // HTTP/2 with prior knowledge (curl, a real h2 client): the authority routes.
    let port = env.gateway;
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(["--resolve", &format!("api.example.com:{port}:127.0.0.1")])
        .arg(format!("http://api.example.com:{port}/v1/h2"))
        .output()
        .await
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with("2 200"),
        "h2 via curl: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: Echo = serde_json::from_str(stdout.rsplit_once('\n').unwrap().0).unwrap();
    assert_eq!(echo.path, "/v1/h2");
    assert_eq!(echo.host, format!("api.example.com:{port}"));

    // Element-wise prefix: /v10 is not under /v1.
    assert_eq!(
        get(&h1, &format!("{base}/v10"), "api.example.com").await.0,
        404
    );
    // Unknown host.
    assert_eq!(
        get(&h1, &format!("{base}/v1"), "other.example.com").await.0,
        404
    );
    // Unresolvable backendRef: 500, per the Gateway API.
    assert_eq!(
        get(&h1, &format!("{base}/broken"), "api.example.com")
            .await
            .0,
        500
    );

    // Metrics count requests by route, status class and reason: the 500 is
    // the gateway's own answer, never counted as an upstream error.
    let (status, metrics) = get(&h1, &format!("http://{}/metrics", app.admin_addr), "admin").await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            r#"sluice_http_requests_total{shard="apps/gw",route="apps/api",status_class="2xx",reason="upstream"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"sluice_http_requests_total{shard="apps/gw",route="apps/api",status_class="5xx",reason="backend_not_resolvable"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_datapath_mode{mode="userspace"} 1"#),
        "{metrics}"
    );
    let _ = env.echo;
    app.shutdown().await;
}

#[tokio::test]
async fn unreachable_backend_is_a_clear_5xx_not_a_hang() {
    let env = env("unreachable", "").await;
    // Point the endpoint at a port nobody listens on.
    let cfg = std::fs::read_to_string(env.dir.join("config.yaml")).unwrap();
    let dead = free_port();
    std::fs::write(
        env.dir.join("config.yaml"),
        cfg.replace(
            &format!("ports: [{{port: {}}}]", env.echo.port()),
            &format!("ports: [{{port: {dead}}}]"),
        ),
    )
    .unwrap();
    let app = build(settings(&env)).await.unwrap();
    let h1: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let (status, body) = get(
        &h1,
        &format!("http://127.0.0.1:{}/v1", env.gateway),
        "api.example.com",
    )
    .await;
    assert_eq!(status, 503, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("upstream unavailable"));
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_config_is_refused_with_file_document_and_field() {
    let env = env("invalid", "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad, namespace: apps}\nspec:\n  rules:\n  - matches: [{path: {type: Regexy, value: /x}}]\n").await;
    let err = match build(settings(&env)).await {
        Ok(_) => panic!("invalid config accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("config.yaml: document 6 (HTTPRoute apps/bad)"),
        "{err}"
    );
    assert!(err.contains("spec.rules[0].matches[0].path.type"), "{err}");
    // Nothing was left listening.
    assert!(std::net::TcpListener::bind(("127.0.0.1", env.gateway)).is_ok());
}
