//! HTTPRoute delegation over real HTTP: the real app serving
//! examples/delegation (platform → team → sub-team) in front of one echo
//! backend per team, so each answer names the team that served it.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};

const GATEWAY: &str = include_str!("../../examples/delegation/gateway.yaml");
const TEAMS: &str = include_str!("../../examples/delegation/teams.yaml");
const HOST: &str = "api.example.com";

/// The example's routes with the listener on `port` and every backendRef
/// on port 8080 (the port of [`service_yaml`]'s Services).
fn example_file(text: &str, port: u16) -> String {
    text.replace("    port: 8080\n", &format!("    port: {port}\n"))
        .replace("port: 80}", "port: 8080}")
}

/// Starts the example; `teams` replaces teams.yaml.
async fn setup(teams: &str) -> (sluice::app::App, TestClient, std::path::PathBuf) {
    let port = free_port();
    let mut backends = String::new();
    for (ns, name) in [
        ("platform", "status"),
        ("orders", "orders"),
        ("returns", "returns"),
        ("payments", "payments"),
    ] {
        backends.push_str(&service_yaml(ns, name, echo_backend(name).await));
    }
    let dir = config_dir();
    write_config(&dir, "gateway.yaml", &example_file(GATEWAY, port));
    write_config(&dir, "teams.yaml", &example_file(teams, port));
    write_config(&dir, "backends.yaml", &backends);
    let app = start(&dir).await;
    (app, TestClient::new(port), dir)
}

/// The conditions of the first parent of route `ns/name` in `/status`.
async fn conditions(app: &sluice::app::App, ns: &str, name: &str) -> serde_json::Value {
    let status: serde_json::Value = serde_json::from_str(&admin_get(app, "/status").await).unwrap();
    let route = status["httpRoutes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["namespace"] == ns && r["name"] == name)
        .unwrap_or_else(|| panic!("no status for {ns}/{name}: {status}"))
        .clone();
    route["parents"][0].clone()
}

#[tokio::test]
async fn platform_team_and_sub_team_serve_their_prefixes() {
    let (app, c, _dir) = setup(TEAMS).await;
    // The platform's own rule.
    assert_eq!(c.get(HOST, "/healthz").await.backend(), "status");
    // Team level, with the platform's header modifier.
    let r = c.get(HOST, "/orders/42").await;
    assert_eq!(r.backend(), "orders", "{}", r.body);
    assert_eq!(
        r.seen_header("x-platform-tenant").as_deref(),
        Some("orders")
    );
    // Sub-team level: the longest prefix wins as for ordinary routes, and the
    // platform's filter reaches two levels down.
    let r = c.get(HOST, "/orders/returns/7").await;
    assert_eq!(r.backend(), "returns", "{}", r.body);
    assert_eq!(
        r.seen_header("x-platform-tenant").as_deref(),
        Some("orders")
    );
    // The team's rule outside its prefix is not served.
    assert_eq!(c.get(HOST, "/admin").await.status, StatusCode::NOT_FOUND);
    // Wildcard delegation with the parent's header match added.
    let v2 = [("x-api-version", "v2")];
    assert_eq!(
        c.send(Method::GET, HOST, "/payments/1", &v2)
            .await
            .backend(),
        "payments"
    );
    assert_eq!(
        c.get(HOST, "/payments/1").await.status,
        StatusCode::NOT_FOUND
    );
    // Another hostname gets nothing.
    assert_eq!(
        c.get("www.example.com", "/orders/1").await.status,
        StatusCode::NOT_FOUND
    );

    // Status on both sides.
    let team = conditions(&app, "orders", "orders").await;
    assert_eq!(team["parentRef"]["kind"], "HTTPRoute");
    assert_eq!(team["parentRef"]["namespace"], "platform");
    assert_eq!(team["parentRef"]["name"], "api");
    let conds = team["conditions"].as_array().unwrap();
    let find = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap().clone();
    assert_eq!(find("Accepted")["status"], "True");
    assert_eq!(find("PartiallyInvalid")["status"], "True");
    let sub = conditions(&app, "returns", "returns").await;
    assert_eq!(sub["parentRef"]["name"], "orders");
    let platform = conditions(&app, "platform", "api").await;
    assert_eq!(platform["parentRef"]["kind"], "Gateway");
    app.shutdown().await;
}

#[tokio::test]
async fn parent_policy_applies_unless_the_child_has_its_own() {
    let (app, c, _dir) = setup(TEAMS).await;
    let body = |n| Bytes::from(vec![b'x'; n]);
    let post = |path: &'static str, n: usize, headers: &'static [(&'static str, &'static str)]| {
        let c = c.clone();
        async move {
            c.try_send_body(Method::POST, HOST, path, headers, body(n))
                .await
                .expect("request")
                .status
        }
    };
    // The platform's 1 KiB default, on the team and the sub-team.
    assert_eq!(post("/orders/1", 500, &[]).await, StatusCode::OK);
    assert_eq!(
        post("/orders/1", 2000, &[]).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        post("/orders/returns/1", 2000, &[]).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Payments' own 64-byte limit replaces it.
    let v2: &'static [(&str, &str)] = &[("x-api-version", "v2")];
    assert_eq!(post("/payments/1", 32, v2).await, StatusCode::OK);
    assert_eq!(
        post("/payments/1", 100, v2).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    app.shutdown().await;
}

#[tokio::test]
async fn withdrawn_consent_stops_the_sub_team_and_the_rest_keeps_serving() {
    let (app, c, dir) = setup(TEAMS).await;
    assert_eq!(c.get(HOST, "/orders/returns/1").await.backend(), "returns");
    // The returns namespace withdraws its ReferenceGrant.
    let without = TEAMS.replace(
        "name: from-orders\n  namespace: returns",
        "name: from-orders\n  namespace: unrelated",
    );
    assert_ne!(without, TEAMS);
    let port = c.port;
    write_config(&dir, "teams.yaml", &example_file(&without, port));
    let mut last = String::new();
    for _ in 0..100 {
        last = c.get(HOST, "/orders/returns/1").await.backend().to_owned();
        if last == "orders" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The team's /orders rule takes the sub-team's paths back.
    assert_eq!(last, "orders");
    assert_eq!(c.get(HOST, "/orders/1").await.backend(), "orders");
    let team = conditions(&app, "orders", "orders").await;
    let resolved = team["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .unwrap()
        .clone();
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "RefNotPermitted");
    app.shutdown().await;
}
