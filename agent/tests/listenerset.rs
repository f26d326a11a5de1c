//! ListenerSets over real traffic: a platform team's shared Gateway, a
//! team's ListenerSet adding a hostname on the Gateway's port, a port of its
//! own and an HTTPS listener with the team's own certificate; another team's
//! set that the Gateway does not admit is not served until its namespace
//! gets the label the Gateway selects. The real app on 127.0.0.1.
mod common;

use std::time::Duration;

use common::{grpc::TestCert, l4::tls_connect, l4::Framing, *};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Gateway of [`gateway_yaml`] admitting ListenerSets from namespaces
/// labelled `shared-gateway: "yes"`.
fn shared_gateway(port: u16) -> String {
    gateway_yaml(port).replace(
        "  listeners:\n",
        "  allowedListeners:\n    namespaces:\n      from: Selector\n      \
         selector: {matchLabels: {shared-gateway: \"yes\"}}\n  listeners:\n",
    )
}

fn namespace(name: &str, labelled: bool) -> String {
    let labels = if labelled {
        "{shared-gateway: \"yes\"}"
    } else {
        "{}"
    };
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n")
}

/// A team's ListenerSet and the route (parentRef: the whole set) to its
/// backend `svc` in its namespace.
fn team(ns: &str, listeners: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {{name: team, namespace: {ns}}}
spec:
  parentRef: {{name: gw, namespace: infra}}
  listeners:
{listeners}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: {ns}}}
spec:
  parentRefs: [{{kind: ListenerSet, name: team}}]
  rules: [{{backendRefs: [{{name: svc, port: 8080}}]}}]
"#
    )
}

const PLATFORM_ROUTE: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: platform, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [platform.example.com]
  rules: [{backendRefs: [{name: svc, port: 8080}]}]
"#;

/// One HTTPS request through the gateway (SNI and Host `host`, trusting
/// only `cert`'s CA); the response as text.
async fn https_get(port: u16, host: &str, cert: &TestCert) -> String {
    let mut tls = tls_connect(port, host, &cert.ca, Framing::Whole)
        .await
        .expect("TLS handshake with the team's certificate");
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(common::l4::WAIT, tls.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("response");
    String::from_utf8_lossy(&out).into_owned()
}

fn condition(conditions: &serde_json::Value, kind: &str) -> String {
    let c = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("{kind} in {conditions}"));
    format!(
        "{}/{}",
        c["status"].as_str().unwrap(),
        c["reason"].as_str().unwrap()
    )
}

async fn set_status(app: &sluice::app::App, ns: &str) -> serde_json::Value {
    let status: serde_json::Value = serde_json::from_str(&admin_get(app, "/status").await).unwrap();
    status["listenerSets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["namespace"] == ns)
        .unwrap_or_else(|| panic!("ListenerSet of {ns} in {status}"))
        .clone()
}

#[tokio::test]
async fn team_listeners_serve_through_the_shared_gateway_when_admitted() {
    let platform = echo_backend("platform").await;
    let a = echo_backend("team-a").await;
    let b = echo_backend("team-b").await;
    let (shared, own, secure, b_port) = (free_port(), free_port(), free_port(), free_port());
    let cert = TestCert::new("secure.a.example.com");
    let dir = config_dir();
    let config = |b_labelled: bool| {
        [
            shared_gateway(shared),
            PLATFORM_ROUTE.to_owned(),
            service_yaml("infra", "svc", platform),
            namespace("team-a", true),
            namespace("team-b", b_labelled),
            team(
                "team-a",
                &format!(
                    "  - {{name: shared-port, port: {shared}, protocol: HTTP, hostname: a.example.com}}\n  \
                     - {{name: own-port, port: {own}, protocol: HTTP}}\n  \
                     - {{name: secure, port: {secure}, protocol: HTTPS, hostname: secure.a.example.com, \
                     tls: {{certificateRefs: [{{name: a-cert}}]}}}}\n"
                ),
            ),
            service_yaml("team-a", "svc", a),
            cert.secret_yaml_in("team-a", "a-cert"),
            team(
                "team-b",
                &format!("  - {{name: web, port: {b_port}, protocol: HTTP, hostname: b.example.com}}\n"),
            ),
            service_yaml("team-b", "svc", b),
        ]
        .concat()
    };
    write_config(&dir, "config.yaml", &config(false));
    let app = start(&dir).await;

    // Team A's hostname on the Gateway's port, next to the platform's route.
    let on_shared = TestClient::new(shared);
    assert_eq!(
        on_shared.get("a.example.com", "/").await.backend(),
        "team-a"
    );
    assert_eq!(
        on_shared.get("platform.example.com", "/").await.backend(),
        "platform"
    );
    // Team A's own port and its HTTPS listener with its own certificate.
    assert_eq!(
        TestClient::new(own).get("any.host", "/").await.backend(),
        "team-a"
    );
    let reply = https_get(secure, "secure.a.example.com", &cert).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"backend\":\"team-a\""), "{reply}");

    // Team B's namespace is not selected: its port is not bound, and its
    // hostname on the shared port reaches no route of its own.
    assert!(
        TestClient::new(b_port)
            .try_send(http::Method::GET, "b.example.com", "/", &[])
            .await
            .is_err(),
        "port of a set the Gateway does not admit must not be served"
    );
    let r = on_shared.get("b.example.com", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let st = set_status(&app, "team-b").await;
    assert_eq!(condition(&st["conditions"], "Accepted"), "False/NotAllowed");
    let st = set_status(&app, "team-a").await;
    assert_eq!(condition(&st["conditions"], "Accepted"), "True/Accepted");
    assert_eq!(
        condition(&st["conditions"], "Programmed"),
        "True/Programmed"
    );
    let attached: Vec<u64> = st["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["attachedRoutes"].as_u64().unwrap())
        .collect();
    assert_eq!(attached, [1, 1, 1]);

    // Labelling team B's namespace admits its set on the next reload.
    write_config(&dir, "config.yaml", &config(true));
    let client = TestClient::new(b_port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match client
            .try_send(http::Method::GET, "b.example.com", "/", &[])
            .await
        {
            Ok(r) if r.backend() == "team-b" => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "team B's listener not served after admission: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let st = set_status(&app, "team-b").await;
    assert_eq!(condition(&st["conditions"], "Accepted"), "True/Accepted");
    app.shutdown().await;
}
