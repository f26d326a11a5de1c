//! Request paths are normalised before routing, and the normalised path is
//! what the backend gets: a client cannot pick a route with one spelling of
//! a path (`/public/../admin`) and have the backend serve another. On the
//! wire, as a client sends them.
mod common;

use std::{net::SocketAddr, time::Duration};

use common::{edge::*, *};

const WITHIN: Duration = Duration::from_secs(10);

/// Gateway `infra/gw` on `port` (and `strict` on `strict_port`, whose
/// `connection` policy is `policy`): `/public` to `public`, `/admin` to
/// `admin` behind an allow list no client is on.
fn config(
    port: u16,
    strict_port: u16,
    public: SocketAddr,
    admin: SocketAddr,
    policy: &str,
) -> String {
    format!(
        r#"{}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: strict, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: http, port: {strict_port}, protocol: HTTP}}]
{}{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: public, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}, {{name: strict}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /public}}}}]
    backendRefs: [{{name: public, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: admin, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}, {{name: strict}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
    backendRefs: [{{name: admin, port: 8080}}]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: admin-only-from-ops, namespace: infra}}
spec:
  targetRefs: [{{kind: HTTPRoute, name: admin}}]
  ipAllow: [192.0.2.0/24]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: strict-paths, namespace: infra}}
spec:
  targetRefs: [{{kind: Gateway, name: strict}}]
  connection: {policy}
"#,
        gateway_yaml(port),
        service_yaml("infra", "public", public),
        service_yaml("infra", "admin", admin),
    )
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: echo.example.com\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn paths_are_matched_and_forwarded_in_one_canonical_form() {
    let (public, public_seen) = recording_backend("public").await;
    let (admin, admin_seen) = recording_backend("admin").await;
    let (port, strict) = (free_port(), free_port());
    let dir = config_dir();
    let policy = "{mergeSlashes: false, escapedSlashes: Reject}";
    write_config(
        &dir,
        "all.yaml",
        &config(port, strict, public, admin, policy),
    );
    let app = start(&dir).await;
    let send = |port: u16, path: &'static str| async move {
        let text = raw_exchange(port, &get(path), WITHIN).await;
        (status_of(&text), text)
    };

    // The attack: matched as /admin, so the admin route's allow list
    // decides; the public backend never sees it.
    for attack in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin/x",
        "//admin",
        "/public/./../admin",
    ] {
        let (status, text) = send(port, attack).await;
        assert_eq!(status, 403, "{attack} → {text}");
    }
    assert!(public_seen.lock().unwrap().is_empty(), "{public_seen:?}");
    assert!(admin_seen.lock().unwrap().is_empty(), "{admin_seen:?}");

    // Harmless spellings reach the backend in their canonical form, the
    // query untouched.
    for (sent, forwarded) in [
        ("/public/./a//b?q=/../x", "GET /public/a/b?q=/../x"),
        ("//public/%61pi/", "GET /public/api/"),
        ("/admin/../public/c", "GET /public/c"),
        // An encoded slash is kept (the default): part of its segment.
        ("/public/..%2Fadmin", "GET /public/..%2Fadmin"),
    ] {
        let (status, text) = send(port, sent).await;
        assert_eq!(status, 200, "{sent} → {text}");
        let seen = public_seen.lock().unwrap().pop();
        assert_eq!(seen.as_deref().map(str::trim), Some(forwarded), "{sent}");
    }

    // The strict Gateway: encoded slashes refused, `//` kept as sent.
    let (status, text) = send(strict, "/public/..%2Fadmin").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("encoded slash"), "{text}");
    let (status, _) = send(strict, "/public/a//b").await;
    assert_eq!(status, 200);
    let seen = public_seen.lock().unwrap().pop();
    assert_eq!(seen.as_deref().map(str::trim), Some("GET /public/a//b"));
    // Not a prefix match for /public once `//` is kept.
    let (status, _) = send(strict, "//public/a").await;
    assert_eq!(status, 404);
    // Dot segments are removed whatever the policy.
    let (status, _) = send(strict, "/public/../admin").await;
    assert_eq!(status, 403);
    assert!(admin_seen.lock().unwrap().is_empty(), "{admin_seen:?}");

    let refused = metric(
        &app,
        "sluice_http_requests_total",
        &[r#"reason="bad_request""#],
    )
    .await;
    assert_eq!(refused, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn the_agent_wide_flags_set_the_default() {
    let (public, public_seen) = recording_backend("public").await;
    let (admin, _) = recording_backend("admin").await;
    let (port, strict) = (free_port(), free_port());
    let dir = config_dir();
    write_config(
        &dir,
        "all.yaml",
        &config(port, strict, public, admin, "{maxUriBytes: 4096}"),
    );
    let mut settings = sluice::app::Settings::new(&dir);
    settings.datapath = sluice::app::DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    settings.edge.path.escaped_slashes = sluice::policy::connection::EscapedSlashes::Unescape;
    let app = sluice::app::build(settings).await.expect("app starts");
    // Decoded before routing: now it is /admin, and refused there.
    let text = raw_exchange(port, &get("/public/..%2Fadmin"), WITHIN).await;
    assert_eq!(status_of(&text), 403, "{text}");
    let text = raw_exchange(port, &get("/public/a%2Fb"), WITHIN).await;
    assert_eq!(status_of(&text), 200, "{text}");
    let seen = public_seen.lock().unwrap().pop();
    assert_eq!(seen.as_deref().map(str::trim), Some("GET /public/a/b"));
    app.shutdown().await;
}
