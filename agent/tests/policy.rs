//! SluicePolicy end to end, in process: the real app on loopback, a config
//! directory, echo backends and a real HTTP client. One test per behaviour:
//! each section's answers, fail-closed, precedence (defaults, overrides,
//! conflicts), namespace isolation, status and metrics.
mod common;

use common::*;
use http::{Method, StatusCode};

/// Gateway `infra/gw` (listener `http`), routes `team-a/orders` (with a
/// named rule `admin` on /admin) and `team-b/orders` on other hosts.
async fn setup(policies: &str) -> (sluice::app::App, TestClient, std::path::PathBuf) {
    let backend = echo_backend("orders").await;
    let port = free_port();
    let dir = config_dir();
    let text = format!(
        r#"{gw}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: orders, namespace: team-a, creationTimestamp: "2024-01-01T00:00:00Z"}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [a.example.com]
  rules:
  - name: admin
    matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
    backendRefs: [{{name: orders, port: 8080}}]
  - backendRefs: [{{name: orders, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: orders, namespace: team-b}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [b.example.com]
  rules:
  - backendRefs: [{{name: orders, port: 8080}}]
{svc_a}{svc_b}
{policies}
"#,
        gw = gateway_yaml(port),
        svc_a = service_yaml("team-a", "orders", backend),
        svc_b = service_yaml("team-b", "orders", backend),
    );
    write_config(&dir, "all.yaml", &text);
    let app = start(&dir).await;
    (app, TestClient::new(port), dir)
}

const API_KEYS: &str = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: team-a}
stringData: {ci: key-ci-1, web: key-web-2}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: keys, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  apiKeys:
    secretRefs: [{name: keys}]
    clientIdHeader: x-client-id
"#;

#[tokio::test]
async fn api_keys_authenticate_strip_and_name_the_client() {
    let (app, c, _dir) = setup(API_KEYS).await;
    let r = c.get("a.example.com", "/orders").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.headers["www-authenticate"], "ApiKey header=\"x-api-key\"");
    let r = c
        .send(
            Method::GET,
            "a.example.com",
            "/orders",
            &[("x-api-key", "nope")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = c
        .send(
            Method::GET,
            "a.example.com",
            "/orders",
            &[("x-api-key", "key-ci-1"), ("x-client-id", "forged")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.seen_header("x-client-id").as_deref(), Some("ci"));
    assert_eq!(
        r.seen_header("x-api-key"),
        None,
        "the key never reaches the backend"
    );
    // team-b's route of the same name is not touched by team-a's policy.
    let r = c.get("b.example.com", "/orders").await;
    assert_eq!(r.status, StatusCode::OK);

    let metrics = admin_get(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"sluice_policy_decisions_total{namespace="team-a",policy="keys",section="apiKeys",decision="deny",reason="api_key_missing"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"decision="deny",reason="api_key_invalid"} 1"#));
    assert!(metrics.contains(r#"section="apiKeys",decision="allow",reason="ok"} 1"#));
    assert!(
        metrics.contains(r#"route="team-a/orders",status_class="4xx",reason="api_key_missing"} 1"#),
        "a 401 is labelled with its reason, never as an upstream answer: {metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn basic_auth_with_htpasswd_from_a_secret() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let policy = format!(
        r#"
---
apiVersion: v1
kind: Secret
metadata: {{name: users, namespace: team-a}}
stringData:
  auth: "alice:{hash}"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: basic, namespace: team-a}}
spec:
  targetRefs: [{{kind: HTTPRoute, name: orders}}]
  basicAuth:
    secretRef: {{name: users}}
    realm: orders
    usernameHeader: x-user
"#
    );
    let (app, c, _dir) = setup(&policy).await;
    let r = c.get("a.example.com", "/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"],
        "Basic realm=\"orders\", charset=\"UTF-8\""
    );
    use base64::Engine as _;
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:wrong")
    );
    let r = c
        .send(
            Method::GET,
            "a.example.com",
            "/",
            &[("authorization", &bad)],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for _ in 0..2 {
        let r = c
            .send(
                Method::GET,
                "a.example.com",
                "/",
                &[("authorization", &good)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.seen_header("x-user").as_deref(), Some("alice"));
        assert_eq!(r.seen_header("authorization"), None);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn authorization_rules_by_client_method_path_and_source() {
    let policy = format!(
        r#"{API_KEYS}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: authz, namespace: team-a}}
spec:
  targetRefs: [{{kind: HTTPRoute, name: orders}}]
  authorization:
    defaultAction: Deny
    rules:
    - {{name: ci-reads, action: Allow, apiKeyClients: [ci], methods: [GET]}}
    - {{name: web-from-loopback, action: Allow, apiKeyClients: [web], sourceCIDRs: [127.0.0.0/8], paths: [{{type: PathPrefix, value: /orders}}]}}
"#
    );
    let (app, c, _dir) = setup(&policy).await;
    let send = |m: Method, path: &'static str, key: &'static str| {
        let c = c.clone();
        async move {
            c.send(m, "a.example.com", path, &[("x-api-key", key)])
                .await
                .status
        }
    };
    assert_eq!(send(Method::GET, "/x", "key-ci-1").await, StatusCode::OK);
    assert_eq!(
        send(Method::POST, "/x", "key-ci-1").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(Method::POST, "/orders/1", "key-web-2").await,
        StatusCode::OK
    );
    assert_eq!(
        send(Method::POST, "/other", "key-web-2").await,
        StatusCode::FORBIDDEN
    );
    let r = c
        .send(
            Method::DELETE,
            "a.example.com",
            "/x",
            &[("x-api-key", "key-ci-1")],
        )
        .await;
    assert!(
        r.body.contains("no authorization rule allows"),
        "{}",
        r.body
    );
    app.shutdown().await;
}

#[tokio::test]
async fn limits_ip_filters_transform_and_cors() {
    let policy = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: edge, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  limits: {maxRequestBodyBytes: 16, maxRequestHeadersBytes: 300}
  transform:
    request:
      set: [{name: x-route-host, value: "${request.host}"}, {name: x-src, value: "${source.address}"}]
      remove: [x-internal]
    response:
      set: [{name: x-served-path, value: "${request.path}"}]
  cors:
    allowOrigins: ["https://shop.example.com"]
    allowMethods: [GET, POST]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: deny-b, namespace: team-b}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  ipDeny: [127.0.0.0/8]
"#;
    let (app, c, _dir) = setup(policy).await;
    // Body: declared too large → 413 at once; within the limit passes.
    let r = c
        .send_body(Method::POST, "a.example.com", "/p", "0123456789abcdefXYZ")
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    let r = c
        .send_body(Method::POST, "a.example.com", "/p", "small")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Header block size.
    let big = "x".repeat(400);
    let r = c
        .send(Method::GET, "a.example.com", "/p", &[("x-big", &big)])
        .await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Transform: templated request headers, removed header, response header.
    let r = c
        .send(
            Method::GET,
            "a.example.com",
            "/p/q",
            &[("x-internal", "secret"), ("x-route-host", "forged")],
        )
        .await;
    assert_eq!(
        r.seen_header("x-route-host").as_deref(),
        Some("a.example.com")
    );
    assert_eq!(r.seen_header("x-src").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.seen_header("x-internal"), None);
    assert_eq!(r.headers["x-served-path"], "/p/q");
    // CORS: the preflight is answered by the gateway; actual requests annotated.
    let r = c
        .send(
            Method::OPTIONS,
            "a.example.com",
            "/p",
            &[
                ("origin", "https://shop.example.com"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let r = c
        .send(
            Method::GET,
            "a.example.com",
            "/p",
            &[("origin", "https://shop.example.com")],
        )
        .await;
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://shop.example.com"
    );
    // ipDeny on team-b's route only.
    let r = c.get("b.example.com", "/").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get("a.example.com", "/").await.status, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_gets_413_without_buffering() {
    let policy = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: small, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  limits: {maxRequestBodyBytes: 1000}
"#;
    let (app, c, _dir) = setup(policy).await;
    // A chunked body (no Content-Length) of 64 KiB.
    let port = c.port;
    let chunk = "y".repeat(4096);
    let mut raw = String::from(
        "POST /upload HTTP/1.1\r\nhost: a.example.com\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    );
    for _ in 0..16 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // The gateway may answer (and close) before it has read everything.
    let _ = s.write_all(raw.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn defaults_overrides_and_rule_level_precedence() {
    // Gateway default: deny DELETE; Gateway override: header limit.
    // Route default: allow everything (more specific default wins).
    // Rule `admin`: its own authorization (most specific).
    let policy = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: platform, namespace: infra}
spec:
  targetRefs: [{kind: Gateway, name: gw}]
  authorization:
    defaultAction: Allow
    rules: [{name: no-deletes, action: Deny, methods: [DELETE]}]
  override:
    transform:
      request:
        set: [{name: x-platform, value: "yes"}]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: team, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  authorization:
    defaultAction: Allow
    rules: [{name: no-deletes, action: Allow, methods: [DELETE]}]
  transform:
    request:
      set: [{name: x-platform, value: "team says no"}]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: admin-only, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders, sectionName: admin}]
  authorization:
    defaultAction: Deny
"#;
    let (app, c, _dir) = setup(policy).await;
    // team-a replaced the Gateway's `no-deletes` rule by name.
    let r = c.send(Method::DELETE, "a.example.com", "/x", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    // The Gateway's override wins over the route's default.
    assert_eq!(r.seen_header("x-platform").as_deref(), Some("yes"));
    // team-b inherits the Gateway default.
    let r = c.send(Method::DELETE, "b.example.com", "/x", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.get("b.example.com", "/x")
            .await
            .seen_header("x-platform")
            .as_deref(),
        Some("yes")
    );
    // The rule-level policy on `admin` is the most specific.
    assert_eq!(
        c.get("a.example.com", "/admin/x").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.get("a.example.com", "/other").await.status,
        StatusCode::OK
    );

    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
    let policies = status["policies"].as_array().unwrap();
    let find = |name: &str| {
        policies
            .iter()
            .find(|p| p["kind"] == "SluicePolicy" && p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {policies:?}"))
    };
    for name in ["platform", "team", "admin-only"] {
        let a = &find(name)["ancestors"][0];
        assert_eq!(a["ancestorRef"]["name"], "gw");
        assert_eq!(a["conditions"][0]["reason"], "Accepted", "{name}: {a}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn an_unresolvable_security_policy_fails_closed_and_says_why() {
    let policy = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: keys, namespace: team-a, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}, {kind: HTTPRoute, name: missing}]
  apiKeys:
    secretRefs: [{name: no-such-secret}]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: conflicting, namespace: team-a, creationTimestamp: "2024-06-01T00:00:00Z"}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  apiKeys:
    secretRefs: [{name: other}]
"#;
    let (app, c, _dir) = setup(policy).await;
    let r = c.get("a.example.com", "/").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.body.contains("Secret team-a/no-such-secret not found"),
        "{}",
        r.body
    );
    assert_eq!(c.get("b.example.com", "/").await.status, StatusCode::OK);
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
    let keys = status["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "keys")
        .unwrap();
    let conds: Vec<_> = keys["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["conditions"][0]["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(conds.contains(&"Invalid".to_owned()), "{conds:?}");
    let conflicting = status["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "conflicting")
        .unwrap();
    assert_eq!(
        conflicting["ancestors"][0]["conditions"][0]["reason"], "Conflicted",
        "{conflicting}"
    );
    let config = admin_get(&app, "/config").await;
    assert!(config.contains("fail closed"), "{config}");
    app.shutdown().await;
}

#[tokio::test]
async fn target_not_found_and_listener_policy_answers_before_no_route() {
    let policy = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: gw-deny, namespace: infra}
spec:
  targetRefs: [{kind: Gateway, name: gw, sectionName: http}, {kind: Gateway, name: gw, sectionName: nope}]
  ipDeny: [127.0.0.1/32]
"#;
    let (app, c, _dir) = setup(policy).await;
    // Denied before routing: no route leaks through a 404.
    assert_eq!(
        c.get("unknown.example.com", "/").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.get("a.example.com", "/").await.status,
        StatusCode::FORBIDDEN
    );
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
    let p = status["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "gw-deny")
        .unwrap();
    let reasons: Vec<_> = p["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["conditions"][0]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"Accepted") && reasons.contains(&"TargetNotFound"),
        "{p}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_policy_change_takes_effect_on_reload_and_an_invalid_one_is_rejected() {
    let (app, c, dir) = setup("").await;
    assert_eq!(c.get("a.example.com", "/").await.status, StatusCode::OK);
    write_config(
        &dir,
        "policy.yaml",
        r#"apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: deny, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  authorization: {defaultAction: Deny}
"#,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.get("a.example.com", "/").await.status != StatusCode::FORBIDDEN {
        assert!(std::time::Instant::now() < deadline, "policy not applied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // An invalid document is rejected whole; the last good config keeps serving.
    write_config(
        &dir,
        "policy.yaml",
        r#"apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: deny, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  authorization: {defaultAction: Maybe}
"#,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let config = admin_get(&app, "/config").await;
        if config.contains("spec.authorization.defaultAction") {
            assert!(config.contains("must be Allow or Deny"), "{config}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rejection not reported: {config}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.get("a.example.com", "/").await.status,
        StatusCode::FORBIDDEN
    );
    app.shutdown().await;
}
