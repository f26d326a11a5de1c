//! X-Forwarded-For/Proto/Host and the trusted-proxies setting: headers from
//! a trusted peer are kept and appended to; from anyone else replaced.
mod common;

use common::*;
use http::Method;
use sluice::app::{self, DatapathMode, Settings};

async fn app_trusting(trusted: &[&str]) -> (sluice::app::App, TestClient) {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let dir = config_dir();
    let route = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
"#;
    let config = format!(
        "{}{}{route}",
        gateway_yaml(port),
        service_yaml("infra", "echo", backend)
    );
    write_config(&dir, "all.yaml", &config);
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    settings.trusted_proxies = trusted.iter().map(|n| n.parse().unwrap()).collect();
    let app = app::build(settings).await.expect("app starts");
    (app, TestClient::new(port))
}

const CLAIMS: [(&str, &str); 4] = [
    ("x-forwarded-for", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "orig.example.com"),
    ("forwarded", "for=203.0.113.7"),
];

#[tokio::test]
async fn untrusted_peers_get_their_forwarded_headers_replaced() {
    // Default: nobody is trusted. A trust list without 127.0.0.1: same.
    for trusted in [&[][..], &["10.0.0.0/8"][..]] {
        let (app, client) = app_trusting(trusted).await;
        let r = client
            .send(Method::GET, "echo.example.com", "/", &CLAIMS)
            .await;
        assert_eq!(
            r.seen_header("x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            r.seen_header("x-forwarded-host").as_deref(),
            Some("echo.example.com")
        );
        assert_eq!(r.seen_header("forwarded"), None);
        app.shutdown().await;
    }
}

#[tokio::test]
async fn trusted_peers_are_appended_to() {
    let (app, client) = app_trusting(&["127.0.0.0/8"]).await;
    let r = client
        .send(Method::GET, "echo.example.com", "/", &CLAIMS)
        .await;
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("orig.example.com")
    );
    assert_eq!(
        r.seen_header("forwarded").as_deref(),
        Some("for=203.0.113.7")
    );
    // Without claims, a trusted peer gets the gateway's own view.
    let r = client.get("echo.example.com", "/").await;
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    app.shutdown().await;
}
