//! HTTPRoute semantics over real HTTP: the real app on loopback in front of
//! in-test echo backends.
mod common;

use common::*;
use http::{Method, StatusCode};

/// Starts echo backends v1 (in `infra`) and v2 (in `infra`) plus `other/v3`,
/// the Gateway, and the given routes; returns the app and a client.
async fn setup(routes: &str) -> (sluice::app::App, TestClient) {
    let v1 = echo_backend("v1").await;
    let v2 = echo_backend("v2").await;
    let v3 = echo_backend("v3").await;
    let port = free_port();
    let dir = config_dir();
    let text = format!(
        "{}{}{}{}---\n{routes}",
        gateway_yaml(port),
        service_yaml("infra", "v1", v1),
        service_yaml("infra", "v2", v2),
        service_yaml("other", "v3", v3),
    );
    write_config(&dir, "config.yaml", &text);
    let app = start(&dir).await;
    (app, TestClient::new(port))
}

const MATCHING: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [match.example.com]
  rules:
  - matches: [{headers: [{name: Version, value: two}]}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{method: POST, path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{headers: [{name: x-id, type: RegularExpression, value: "a+b"}]}]
    backendRefs: [{name: v2, port: 8080}]
  - backendRefs: [{name: v1, port: 8080}]
"#;

#[tokio::test]
async fn header_query_method_and_regex_matches_select_the_rule() {
    let (app, c) = setup(MATCHING).await;
    let h = "match.example.com";
    assert_eq!(c.get(h, "/").await.backend(), "v1");
    assert_eq!(
        c.send(Method::GET, h, "/", &[("version", "two")])
            .await
            .backend(),
        "v2"
    );
    assert_eq!(
        c.send(Method::GET, h, "/", &[("VERSION", "two")])
            .await
            .backend(),
        "v2"
    );
    assert_eq!(
        c.send(Method::GET, h, "/", &[("version", "Two")])
            .await
            .backend(),
        "v1"
    );
    assert_eq!(c.get(h, "/?animal=whale").await.backend(), "v2");
    assert_eq!(c.get(h, "/?animal=dolphin").await.backend(), "v1");
    assert_eq!(c.send(Method::POST, h, "/api/x", &[]).await.backend(), "v2");
    assert_eq!(c.send(Method::GET, h, "/api/x", &[]).await.backend(), "v1");
    assert_eq!(c.get(h, "/items/42").await.backend(), "v2");
    assert_eq!(c.get(h, "/items/42x").await.backend(), "v1");
    assert_eq!(
        c.send(Method::GET, h, "/", &[("x-id", "aab")])
            .await
            .backend(),
        "v2"
    );
    assert_eq!(
        c.send(Method::GET, h, "/", &[("x-id", "aabc")])
            .await
            .backend(),
        "v1"
    );
    app.shutdown().await;
}

const ACROSS_ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-newer, namespace: infra, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /p}, headers: [{name: a, value: "1"}]}]
    backendRefs: [{name: v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: z-older, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /p}, method: GET}]
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /p/longer}}]
    backendRefs: [{name: v1, port: 8080}]
"#;

#[tokio::test]
async fn precedence_across_routes() {
    let (app, c) = setup(ACROSS_ROUTES).await;
    // Same match in two routes: the older route wins although its name sorts later.
    assert_eq!(c.get("x", "/tie").await.backend(), "v1");
    // A method match beats a header match.
    assert_eq!(
        c.send(Method::GET, "x", "/p", &[("a", "1")])
            .await
            .backend(),
        "v1"
    );
    assert_eq!(
        c.send(Method::POST, "x", "/p", &[("a", "1")])
            .await
            .backend(),
        "v2"
    );
    // A longer prefix beats both.
    assert_eq!(
        c.send(Method::GET, "x", "/p/longer", &[("a", "1")])
            .await
            .backend(),
        "v1"
    );
    assert_eq!(
        c.send(Method::POST, "x", "/nothing", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    app.shutdown().await;
}

const FILTERS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: X-Resp-Add, value: added}]
        remove: [X-Backend-Original]
    backendRefs:
    - name: v1
      port: 8080
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {add: [{name: X-Backend-Filter, value: v1}]}
  - matches: [{path: {type: PathPrefix, value: /redirect-prefix}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /redirect-https}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https}
  - matches: [{path: {type: PathPrefix, value: /redirect-port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443, statusCode: 308}
  - matches: [{path: {type: PathPrefix, value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend-rewrite}}]
    backendRefs:
    - name: v2
      port: 8080
      filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}
    backendRefs: [{name: v2, port: 8080}]
"#;

#[tokio::test]
async fn header_modifiers_on_request_response_and_backend() {
    let (app, c) = setup(FILTERS).await;
    let r = c
        .send(
            Method::GET,
            "x",
            "/headers",
            &[
                ("X-Header-Remove", "remove-val"),
                ("X-Header-Add-Append", "append-val-1"),
                ("X-Header-Set", "set-val"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.seen_header("x-header-set").as_deref(),
        Some("set-overwrites-values")
    );
    assert_eq!(
        r.seen_header("x-header-add").as_deref(),
        Some("header-val-1")
    );
    assert_eq!(
        r.seen_header("x-header-add-append").as_deref(),
        Some("append-val-1,header-val-2")
    );
    assert_eq!(r.seen_header("x-header-remove"), None);
    assert_eq!(r.seen_header("x-backend-filter").as_deref(), Some("v1"));
    assert_eq!(r.headers.get("x-resp-add").unwrap(), "added");
    assert!(r.headers.get("x-backend-original").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn redirects_build_location_per_spec() {
    let (app, c) = setup(FILTERS).await;
    let port = c.port;
    let r = c.get("gw.example.com", "/redirect-prefix/lemon?x=1").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.headers.get("location").unwrap(),
        &format!("http://example.org:{port}/new/lemon?x=1")
    );
    let r = c.get("gw.example.com", "/redirect-https").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "https://gw.example.com/redirect-https"
    );
    let r = c
        .get(&format!("gw.example.com:{port}"), "/redirect-port")
        .await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "http://gw.example.com:8443/redirect-port"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn url_rewrite_changes_path_and_host_seen_by_backend() {
    let (app, c) = setup(FILTERS).await;
    let r = c.get("gw.example.com", "/rewrite/users?q=1").await;
    assert_eq!(r.backend(), "v2");
    assert_eq!(r.path(), "/v2/users?q=1");
    assert_eq!(r.echo.as_ref().unwrap()["host"], "rewritten.example.org");
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("gw.example.com")
    );
    let r = c.get("gw.example.com", "/backend-rewrite/x").await;
    assert_eq!(r.path(), "/b/x", "backendRef-level URLRewrite");
    let r = c.get("gw.example.com", "/full/one/two").await;
    assert_eq!(r.path(), "/one");
    assert_eq!(r.echo.as_ref().unwrap()["host"], "gw.example.com");
    app.shutdown().await;
}

const CROSS_NS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [cross.example.com]
  rules: [{backendRefs: [{name: v3, namespace: other, port: 8080}]}]
"#;

const GRANT: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-infra, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service, name: v3}]
"#;

#[tokio::test]
async fn cross_namespace_backend_requires_reference_grant() {
    let (app, c) = setup(CROSS_NS).await;
    let r = c.get("cross.example.com", "/").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    app.shutdown().await;
    let (app, c) = setup(&format!("{CROSS_NS}{GRANT}")).await;
    let r = c.get("cross.example.com", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.backend(), "v3");
    app.shutdown().await;
}

const TIMEOUTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: timeouts, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /request}}]
    timeouts: {request: 200ms}
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    timeouts: {backendRequest: 200ms}
    backendRefs: [{name: v1, port: 8080}]
"#;

#[tokio::test]
async fn timeouts_answer_504() {
    let (app, c) = setup(TIMEOUTS).await;
    // The backend holds the answer far longer than the timeout.
    assert_eq!(
        c.get("x", "/request?delay_ms=10000").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(
        c.get("x", "/backend?delay_ms=10000").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(c.get("x", "/request").await.status, StatusCode::OK);
    // The head arrives in time but the body stalls: the request timeout still
    // ends the exchange (the client sees the body fail, not a hang).
    let r = c
        .try_send(Method::GET, "x", "/request?body_delay_ms=10000", &[])
        .await;
    assert!(r.is_err(), "{r:?}");
    // So does the backend request timeout (it covers the full response).
    let r = c
        .try_send(Method::GET, "x", "/backend?body_delay_ms=10000", &[])
        .await;
    assert!(r.is_err(), "{r:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn request_mirror_copies_requests_with_body_and_samples_fractions() {
    let v1 = echo_backend("v1").await;
    let (m1, seen1) = recording_backend("mirror-1").await;
    let (m2, seen2) = recording_backend("mirror-2").await;
    let port = free_port();
    let dir = config_dir();
    let routes = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Set, value: "1"}]}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: m1, port: 8080}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: m2, port: 8080}}}
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: m2, port: 8080}, fraction: {numerator: 1, denominator: 2}}}
    backendRefs: [{name: v1, port: 8080}]
"#;
    let text = format!(
        "{}{}{}{}---\n{routes}",
        gateway_yaml(port),
        service_yaml("infra", "v1", v1),
        service_yaml("infra", "m1", m1),
        service_yaml("infra", "m2", m2),
    );
    write_config(&dir, "config.yaml", &text);
    let app = start(&dir).await;
    let c = TestClient::new(port);
    let r = c
        .send_body(Method::POST, "x", "/mirror?id=1", "payload")
        .await;
    assert_eq!(r.backend(), "v1");
    assert_eq!(r.echo.as_ref().unwrap()["body"], "payload");
    assert_eq!(c.get("x", "/mirror?id=2").await.backend(), "v1");
    // Mirrors are asynchronous: wait (bounded) until both copies arrived.
    let want = ["POST /mirror?id=1 payload", "GET /mirror?id=2 "];
    for seen in [&seen1, &seen2] {
        for _ in 0..200 {
            if seen.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want);
    }
    seen2.lock().unwrap().clear();
    for i in 0..10 {
        assert_eq!(c.get("x", &format!("/half?i={i}")).await.backend(), "v1");
    }
    for _ in 0..200 {
        if seen2.lock().unwrap().len() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Give stray extra copies a chance to show up before counting.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        seen2.lock().unwrap().len(),
        5,
        "1/2 of 10 requests mirrored"
    );
    app.shutdown().await;
}

const PARTLY_INVALID: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: partly-invalid, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: v2, kind: Mystery, group: example.com, port: 8080}]
  - backendRefs: [{name: v1, port: 8080}]
"#;

#[tokio::test]
async fn unknown_backend_kind_answers_500_and_shows_in_status() {
    let (app, c) = setup(PARTLY_INVALID).await;
    assert_eq!(
        c.get("x", "/v2").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(c.get("x", "/").await.backend(), "v1");
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
    let route = status["httpRoutes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "partly-invalid")
        .unwrap();
    let conds = route["parents"][0]["conditions"].as_array().unwrap();
    let resolved = conds.iter().find(|c| c["type"] == "ResolvedRefs").unwrap();
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "InvalidKind");
    let accepted = conds.iter().find(|c| c["type"] == "Accepted").unwrap();
    assert_eq!(accepted["status"], "True");
    assert_eq!(status["gateways"][0]["listeners"][0]["attachedRoutes"], 1);
    app.shutdown().await;
}

const CORS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: v1, port: 8080}]
"#;

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway_and_actual_requests_annotated() {
    let (app, c) = setup(CORS).await;
    let preflight = [
        ("origin", "https://xpto.www.bar.com"),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "x-header-1"),
    ];
    let r = c.send(Method::OPTIONS, "x", "/cors", &preflight).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.echo.is_none(), "a preflight must not reach the backend");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://xpto.www.bar.com"
    );
    assert_eq!(r.headers["access-control-allow-methods"], "GET, OPTIONS");
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "x-header-1, x-header-2"
    );
    assert_eq!(r.headers["access-control-max-age"], "3600");
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    let denied = [
        ("origin", "https://foobar.com"),
        ("access-control-request-method", "GET"),
    ];
    let r = c.send(Method::OPTIONS, "x", "/cors", &denied).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());

    let r = c
        .send(
            Method::GET,
            "x",
            "/cors",
            &[("origin", "https://www.foo.com")],
        )
        .await;
    assert_eq!(r.backend(), "v1");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://www.foo.com"
    );
    assert_eq!(r.headers["access-control-expose-headers"], "x-header-3");
    let r = c
        .send(
            Method::GET,
            "x",
            "/cors",
            &[("origin", "https://foobar.com")],
        )
        .await;
    assert_eq!(r.backend(), "v1");
    assert!(r.headers.get("access-control-allow-origin").is_none());
    // OPTIONS without the preflight headers is an ordinary request.
    assert_eq!(
        c.send(Method::OPTIONS, "x", "/cors", &[]).await.backend(),
        "v1"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn retries_replay_the_request_for_configured_codes_only() {
    let (v1, seen) = recording_backend("v1").await;
    let port = free_port();
    let dir = config_dir();
    let routes = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retry, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /retry}}]
    retry: {codes: [500, 502], attempts: 3, backoff: 1ms}
    backendRefs: [{name: v1, port: 8080}]
"#;
    let text = format!(
        "{}{}---\n{routes}",
        gateway_yaml(port),
        service_yaml("infra", "v1", v1)
    );
    write_config(&dir, "config.yaml", &text);
    let app = start(&dir).await;
    let c = TestClient::new(port);

    // Fails twice, then answers: the third attempt (second retry) succeeds.
    let r = c
        .send_body(Method::POST, "x", "/retry?fail_first=2&id=a", "payload")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.echo.as_ref().unwrap()["body"],
        "payload",
        "the body is replayed"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(
        seen.lock().unwrap()[1].ends_with("payload"),
        "{:?}",
        seen.lock().unwrap()
    );

    // Fails more often than 1 + 3 attempts: the last failure is returned.
    seen.lock().unwrap().clear();
    let r = c.get("x", "/retry?fail_first=9&id=b&code=502").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "one attempt plus three retries"
    );

    // A code that is not configured is not retried.
    seen.lock().unwrap().clear();
    let r = c.get("x", "/retry?fail_first=1&id=c&code=503").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().len(), 1);
    app.shutdown().await;
}
