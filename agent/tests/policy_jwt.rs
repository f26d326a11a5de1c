//! JWT policies end to end, in process: a local HTTPS JWKS endpoint with its
//! own CA (given to the policy as a ConfigMap), tokens signed by test keys,
//! the real app and a real HTTP client.
mod common;

use common::{idp::*, *};
use http::{Method, StatusCode};

struct Setup {
    app: sluice::app::App,
    client: TestClient,
    dir: std::path::PathBuf,
    idp: Idp,
    key: SigningKey,
}

fn policy(idp: &Idp, extra: &str) -> String {
    format!(
        r#"{ca}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: jwt, namespace: team-a}}
spec:
  targetRefs: [{{kind: HTTPRoute, name: api}}]
  jwt:
    providers:
    - name: corp
      issuer: https://idp.example.com
      audiences: [orders]
      jwks:
        remote:
          uri: {uri}
          caCertificateRefs: [{{name: idp-ca}}]
      claimToHeaders: [{{claim: sub, header: x-user-id}}, {{claim: org.id, header: x-org}}]
{extra}"#,
        ca = idp.ca_config_map("team-a", "idp-ca"),
        uri = idp.uri(),
    )
}

async fn setup(extra: &str) -> Setup {
    let key = SigningKey::es256("k1");
    let idp = Idp::start(jwks(&[&key])).await;
    let backend = echo_backend("api").await;
    let port = free_port();
    let dir = config_dir();
    let routes = format!(
        r#"{gw}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: team-a}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [api.example.com]
  rules: [{{backendRefs: [{{name: api, port: 8080}}]}}]
{svc}"#,
        gw = gateway_yaml(port),
        svc = service_yaml("team-a", "api", backend),
    );
    write_config(&dir, "routes.yaml", &routes);
    write_config(&dir, "policy.yaml", &policy(&idp, extra));
    let app = start(&dir).await;
    Setup {
        app,
        client: TestClient::new(port),
        dir,
        idp,
        key,
    }
}

fn claims() -> serde_json::Value {
    serde_json::json!({
        "iss": "https://idp.example.com", "aud": ["orders", "other"], "sub": "alice",
        "org": {"id": "o-42"}, "groups": ["staff"],
    })
}

async fn get(c: &TestClient, token: Option<&str>, extra: &[(&str, &str)]) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    c.send(Method::GET, "api.example.com", "/orders", &headers)
        .await
}

#[tokio::test]
async fn tokens_are_verified_against_a_remote_https_jwks() {
    let s = setup("").await;
    let c = &s.client;
    let r = get(c, None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let challenge = r.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        !challenge.contains("error="),
        "no error for a missing token: {challenge}"
    );

    let good = s.key.token(claims());
    let r = get(c, Some(&good), &[("x-user-id", "mallory")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.seen_header("x-user-id").as_deref(),
        Some("alice"),
        "replaced, not appended"
    );
    assert_eq!(r.seen_header("x-org").as_deref(), Some("o-42"));
    assert_eq!(
        r.seen_header("authorization"),
        None,
        "the token is not forwarded"
    );

    let mut expired = claims();
    expired["exp"] = 1_000_000.into();
    let r = get(c, Some(&s.key.token(expired)), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let mut wrong_aud = claims();
    wrong_aud["aud"] = "billing".into();
    assert_eq!(
        get(c, Some(&s.key.token(wrong_aud)), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let foreign = SigningKey::es256("k1");
    assert_eq!(
        get(c, Some(&foreign.token(claims())), &[]).await.status,
        StatusCode::UNAUTHORIZED,
        "a foreign key reusing a known kid"
    );
    let metrics = admin_get(&s.app, "/metrics").await;
    assert!(
        metrics.contains(r#"section="jwt",decision="deny",reason="jwt_expired"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"section="jwt",decision="deny",reason="jwt_missing"} 1"#));
    s.app.shutdown().await;
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_restart() {
    let s = setup("").await;
    let before = s.idp.hits();
    assert!(before >= 1, "fetched at start");
    let next = SigningKey::ed25519("k2");
    s.idp.set_jwks(jwks(&[&s.key, &next]));
    let r = get(&s.client, Some(&next.token(claims())), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(s.idp.hits(), before + 1, "one refetch for the unknown kid");
    // Repeat tokens are served from the verified-token cache.
    for _ in 0..5 {
        assert_eq!(
            get(&s.client, Some(&next.token(claims())), &[])
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(s.idp.hits(), before + 1);
    s.app.shutdown().await;
}

#[tokio::test]
async fn a_large_reload_that_leaves_the_policy_alone_does_not_refetch_its_jwks() {
    let s = setup("").await;
    assert_eq!(
        get(&s.client, Some(&s.key.token(claims())), &[])
            .await
            .status,
        StatusCode::OK
    );
    let hits = s.idp.hits();
    // 5,000 more routes in another file.
    let mut many = String::new();
    for i in 0..5000 {
        many.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: team-b}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [h{i}.example.com]\n  rules: [{{backendRefs: [{{name: api, port: 8080}}]}}]\n"
        ));
    }
    write_config(&s.dir, "many.yaml", &many);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.client.get("h4999.example.com", "/").await.status == StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "5,000 routes not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.idp.hits(),
        hits,
        "the unchanged policy kept its fetched JWKS"
    );
    // Its verified-token cache survived too; a changed JWKS spec gets fresh state.
    write_config(
        &s.dir,
        "policy.yaml",
        &policy(&s.idp, "").replace("/jwks\n", "/jwks?v=2\n"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.idp.hits() == hits {
        assert!(
            std::time::Instant::now() < deadline,
            "changed JWKS spec not fetched"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&s.client, Some(&s.key.token(claims())), &[])
            .await
            .status,
        StatusCode::OK
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn claims_authorize_and_optional_mode_lets_anonymous_requests_through() {
    let extra = r#"  authorization:
    defaultAction: Deny
    rules:
    - {name: staff, action: Allow, claims: [{name: groups, values: [staff]}]}
    - {name: public-reads, action: Allow, methods: [GET], paths: [{type: PathPrefix, value: /public}]}
"#;
    let s = setup(&format!("  # optional\n{extra}")).await;
    // Strict by default: missing → 401.
    assert_eq!(
        get(&s.client, None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&s.client, Some(&s.key.token(claims())), &[])
            .await
            .status,
        StatusCode::OK
    );
    let mut outsider = claims();
    outsider["groups"] = serde_json::json!(["guests"]);
    assert_eq!(
        get(&s.client, Some(&s.key.token(outsider)), &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Optional: anonymous requests reach authorization, which decides.
    write_config(
        &s.dir,
        "policy.yaml",
        &policy(&s.idp, extra).replace("  jwt:\n", "  jwt:\n    mode: Optional\n"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = s
            .client
            .send(Method::GET, "api.example.com", "/public/x", &[])
            .await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mode change not applied: {}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&s.client, None, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    // A present but invalid token is still 401.
    let r = get(&s.client, Some("not.a.jwt"), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.app.shutdown().await;
}

#[tokio::test]
async fn require_any_accepts_either_a_token_or_an_api_key() {
    let extra = r#"  apiKeys:
    secretRefs: [{name: keys}]
  authentication: {require: Any}
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: team-a}
stringData: {ci: ci-key}
"#;
    let s = setup(extra).await;
    assert_eq!(
        get(&s.client, Some(&s.key.token(claims())), &[])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&s.client, None, &[("x-api-key", "ci-key")])
            .await
            .status,
        StatusCode::OK
    );
    let r = get(&s.client, None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let challenges: Vec<_> = r.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(
        challenges.len(),
        2,
        "both schemes are offered: {challenges:?}"
    );
    // A wrong credential is rejected even though the other would pass.
    assert_eq!(
        get(&s.client, None, &[("x-api-key", "wrong")]).await.status,
        StatusCode::UNAUTHORIZED
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_jwks_answers_503_and_says_so_in_status() {
    let backend = echo_backend("api").await;
    let port = free_port();
    let dir = config_dir();
    // Nothing listens there: the JWKS can never load.
    let dead = free_port();
    let text = format!(
        r#"{gw}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: team-a}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [api.example.com]
  rules: [{{backendRefs: [{{name: api, port: 8080}}]}}]
{svc}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: jwt, namespace: team-a}}
spec:
  targetRefs: [{{kind: HTTPRoute, name: api}}]
  jwt:
    providers:
    - name: corp
      issuer: https://idp.example.com
      jwks: {{remote: {{uri: "http://127.0.0.1:{dead}/jwks", timeout: 1s}}}}
"#,
        gw = gateway_yaml(port),
        svc = service_yaml("team-a", "api", backend),
    );
    write_config(&dir, "all.yaml", &text);
    let app = start(&dir).await;
    let c = TestClient::new(port);
    let key = SigningKey::es256("k1");
    let r = get(&c, Some(&key.token(claims())), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "never 500, never served: {}",
        r.body
    );
    assert!(
        r.body.contains("signing keys are not available"),
        "{}",
        r.body
    );
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
    let p = status["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "jwt")
        .unwrap();
    let conds = p["ancestors"][0]["conditions"].as_array().unwrap();
    let resolved = conds.iter().find(|c| c["type"] == "ResolvedRefs").unwrap();
    assert_eq!(resolved["status"], "False", "{p}");
    assert_eq!(resolved["reason"], "JWKSUnavailable");
    assert!(resolved["message"]
        .as_str()
        .unwrap()
        .contains(&dead.to_string()));
    app.shutdown().await;
}
