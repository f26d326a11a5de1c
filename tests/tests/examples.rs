//! The runnable examples do what their README says: each documented request
//! is sent to the real app serving a copy of the example directory (ports
//! moved to free ones), with the echo backend the README's command starts.
use std::{net::SocketAddr, path::Path, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sluice::app::{build, App, DatapathMode, Settings};
use sluice_tests::echo::{serve, Echo, Identity};

/// A copy of `examples/<name>` with the gateway port and the echo backend
/// port (8080, 9080 in the files) replaced.
fn copy_example(name: &str, gateway: u16, echo: u16) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let dir = std::env::temp_dir().join(format!("sluice-example-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("port: 8080", &format!("port: {gateway}"))
                .replace("port: 9080", &format!("port: {echo}"));
            std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    dir
}

struct Example {
    app: App,
    gateway: SocketAddr,
}

async fn start(name: &str) -> Example {
    start_with(name, &[]).await
}

/// [`start`] with some files of the copy replaced by `files` (name, text).
async fn start_with(name: &str, files: &[(&str, &str)]) -> Example {
    let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = echo_listener.local_addr().unwrap();
    tokio::spawn(serve(
        echo_listener,
        Identity {
            pod: "echo".into(),
            namespace: "shop".into(),
        },
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = copy_example(name, port, echo.port());
    for (file, text) in files {
        let text = text
            .replace("port: 8080", &format!("port: {port}"))
            .replace("port: 9080", &format!("port: {}", echo.port()));
        std::fs::write(dir.join(file), text).unwrap();
    }
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    settings.watch_config = false;
    let app = build(settings).await.expect("the example config loads");
    Example {
        app,
        gateway: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    echo: Option<Echo>,
}

impl Answer {
    fn seen(&self, header: &str) -> Option<String> {
        let e = self.echo.as_ref()?;
        e.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(header))
            .map(|(_, v)| v.join(","))
    }
}

async fn send(
    gw: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    send_to(gw, "shop.example.com", method, path, headers, body).await
}

/// [`send`] with another `Host`.
async fn send_to(
    gw: SocketAddr,
    host: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{gw}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        client.request(req.body(Full::new(body)).unwrap()),
    )
    .await
    .expect("answer in time")
    .expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        echo: serde_json::from_slice(&body).ok(),
    }
}

const ALICE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImV4YW1wbGUtMSJ9.eyJhdWQiOiJvcmRlcnMiLCJleHAiOjQxMDI0NDQ4MDAsImdyb3VwcyI6WyJvcmRlcnMtYWRtaW4iLCJzdGFmZiJdLCJpYXQiOjE3NjcyMjU2MDAsImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUuY29tIiwic2NvcGUiOiJvcmRlcnM6cmVhZCBvcmRlcnM6d3JpdGUiLCJzdWIiOiJhbGljZSIsInRlbmFudCI6ImFjbWUifQ.6Vc4lgO6Ej9B1sNPTNE8RD3xY6kWRzaPwQTVzm34_ghlEMDO-0zfjOvQOapHndA_0RnlibSUC8OzPM4LNBmRAA";
const BOB: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImV4YW1wbGUtMSJ9.eyJhdWQiOiJvcmRlcnMiLCJleHAiOjQxMDI0NDQ4MDAsImdyb3VwcyI6WyJzdGFmZiJdLCJpYXQiOjE3NjcyMjU2MDAsImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUuY29tIiwic2NvcGUiOiJvcmRlcnM6cmVhZCBvcmRlcnM6d3JpdGUiLCJzdWIiOiJib2IiLCJ0ZW5hbnQiOiJhY21lIn0.kgI6BUfVCyLTUonY3ErRN0MglOc53Be_MIW8CsQUCqBpLEBtpmafHCPSaBocdJD6bUOiKyIjcDm8OZim5wfrDg";

#[tokio::test]
async fn the_policy_example_does_what_its_readme_says() {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy/README.md"),
    )
    .unwrap();
    assert!(
        readme.contains(ALICE) && readme.contains(BOB),
        "README tokens changed"
    );
    let ex = start("policy").await;
    let gw = ex.gateway;
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send(gw, Method::GET, path, &h, Bytes::new()).await
    };
    let with = |method: Method, path: &'static str, headers: Vec<(&'static str, String)>| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send(gw, method, path, &h, Bytes::new()).await
    };
    let bearer = |t: &str| ("authorization", format!("Bearer {t}"));

    // Public catalog: platform defaults and override.
    let r = get(
        "/catalog",
        vec![("origin", "https://shop.example.com".into())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-served-by"], "sluice");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://shop.example.com"
    );

    // Catalog: the response cache answers the second request, and the
    // platform's override header is still applied to the hit.
    let cache_status = |a: &Answer| {
        a.headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let first = get("/catalog/items", vec![]).await;
    assert!(
        cache_status(&first).starts_with("sluice; fwd=uri-miss; stored; ttl="),
        "{}",
        cache_status(&first)
    );
    let second = get("/catalog/items", vec![]).await;
    assert!(
        cache_status(&second).starts_with("sluice; hit; ttl="),
        "{}",
        cache_status(&second)
    );
    assert_eq!(second.headers["x-served-by"], "sluice");

    // Orders: JWT, claims, authorization.
    let r = get("/orders", vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let r = get("/orders/1", vec![bearer(BOB)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen("x-user").as_deref(), Some("bob"));
    assert_eq!(r.seen("x-tenant").as_deref(), Some("acme"));
    assert_eq!(r.seen("authorization"), None);
    assert_eq!(
        with(Method::DELETE, "/orders/1", vec![bearer(BOB)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with(Method::DELETE, "/orders/1", vec![bearer(ALICE)])
            .await
            .status,
        StatusCode::OK
    );

    // Inventory: API keys.
    assert_eq!(
        get("/inventory", vec![]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = with(
        Method::POST,
        "/inventory",
        vec![("x-api-key", "wh-7f3c9a1e".into())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen("x-client-id").as_deref(), Some("warehouse"));
    assert_eq!(r.seen("x-api-key"), None);
    assert_eq!(
        with(
            Method::POST,
            "/inventory",
            vec![("x-api-key", "rp-2b8d4c60".into())]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // Two requests a minute per client, with the RateLimit headers; the
    // refused POST above used none of reporting's budget.
    for left in ["1", "0"] {
        let r = get("/inventory", vec![("x-api-key", "rp-2b8d4c60".into())]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["ratelimit-policy"], "\"per-client\";q=2;w=60");
        assert!(r.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with(&format!("\"per-client\";r={left};")));
    }
    let r = get("/inventory", vec![("x-api-key", "rp-2b8d4c60".into())]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key("retry-after"));

    // Admin: Basic auth.
    let r = get("/admin", vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("shop-admin"));
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:admin-secret")
    );
    let r = get("/admin/stats", vec![("authorization", basic)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen("x-operator").as_deref(), Some("admin"));

    // Partner: external authorization.
    let r = get("/partner", vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"partners\"");
    let r = get("/partner/feed", vec![bearer("letmein")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen("x-auth-user").as_deref(), Some("partner"));

    // Platform limits.
    let r = send(
        gw,
        Method::POST,
        "/catalog",
        &[],
        Bytes::from(vec![0u8; 2_000_000]),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Search: one of two endpoints is down; retries, ejection and health
    // checks keep every request succeeding, and the admin view says why.
    for i in 0..12 {
        let user = format!("u{i}");
        let r = get("/search", vec![("x-user", user)]).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
    }
    let admin = ex.app.admin_addr;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .get(format!("http://{admin}/api/overview").parse().unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let overview: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let search = overview["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "shop/search:80")
        .expect("the search upstream");
    let down = search["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == "127.0.0.1:9")
        .expect("the down endpoint");
    assert!(
        down["state"] == "ejected" || down["state"] == "unhealthy",
        "{search:#}"
    );
    ex.app.shutdown().await;
}

#[tokio::test]
async fn the_l4_example_relays_tcp_to_its_backend() {
    // The TLS listener's port, fixed in the files, moved to a free one too.
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/l4/gateway.yaml");
    // And the UDP listener's.
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = std::fs::read_to_string(src)
        .unwrap()
        .replace("port: 8443", &format!("port: {tls_port}"))
        .replace("port: 5300", &format!("port: {udp_port}"));
    assert!(gateway.contains(&format!("port: {udp_port}")));
    let ex = start_with("l4", &[("gateway.yaml", gateway.as_str())]).await;
    // HTTP through the TCP listener: the bytes reach the echo backend and
    // its answer comes back, whatever the Host (no HTTP routing at L4).
    let a = send(ex.gateway, Method::GET, "/hello", &[], Bytes::new()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.echo.expect("the echo answered").path, "/hello");
    drop(ex.app);
}

#[tokio::test]
async fn the_listenerset_example_serves_the_admitted_team_only() {
    let ex = start("listenerset").await;
    let get = |host: &'static str| send_to(ex.gateway, host, Method::GET, "/", &[], Bytes::new());
    let shop = get("shop.example.com").await;
    assert_eq!(shop.status, StatusCode::OK);
    assert!(shop.echo.is_some(), "answered by the echo backend");
    assert_eq!(
        get("sandbox.example.com").await.status,
        StatusCode::NOT_FOUND
    );
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .get(
            format!("http://{}/status", ex.app.admin_addr)
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let accepted = |ns: &str| {
        let set = status["listenerSets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["namespace"] == ns)
            .unwrap_or_else(|| panic!("{ns} in {status}"));
        let c = &set["conditions"][0];
        format!(
            "{}/{}",
            c["status"].as_str().unwrap(),
            c["reason"].as_str().unwrap()
        )
    };
    assert_eq!(accepted("shop"), "True/Accepted");
    assert_eq!(accepted("sandbox"), "False/NotAllowed");
    assert_eq!(status["gateways"][0]["attachedListenerSets"], 1);
    ex.app.shutdown().await;
}
