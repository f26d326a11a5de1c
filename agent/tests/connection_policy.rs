//! A Gateway's own connection settings (SluicePolicy `connection`): two
//! Gateways of one agent, one with a policy, serve side by side with their
//! own timeouts and limits; a changed policy applies to new connections;
//! the section is refused on anything but a whole Gateway.
mod common;

use std::time::Duration;

use common::{edge::*, *};
use sluice::app::{self, DatapathMode, Settings};
use tokio::{io::AsyncWriteExt, net::TcpStream};

const WITHIN: Duration = Duration::from_secs(10);

fn config(open_port: u16, strict_port: u16, backend: std::net::SocketAddr, policy: &str) -> String {
    format!(
        r#"{}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: strict, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: http, port: {strict_port}, protocol: HTTP}}]
{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}, {{name: strict}}]
  rules: [{{backendRefs: [{{name: echo, port: 8080}}]}}]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: strict-edge, namespace: infra}}
spec:
  targetRefs: [{{kind: Gateway, name: strict}}]
  connection: {policy}
"#,
        gateway_yaml(open_port),
        service_yaml("infra", "echo", backend)
    )
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: echo.example.com\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn each_gateway_has_its_own_timeouts_and_limits() {
    let backend = echo_backend("echo").await;
    let (open, strict) = (free_port(), free_port());
    let dir = config_dir();
    let policy = "{headerTimeout: 1s, maxUriBytes: 300, maxConnectionsPerSource: 2}";
    write_config(&dir, "all.yaml", &config(open, strict, backend, policy));
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    let app = app::build(settings).await.expect("app starts");

    // The request target limit: 414 on the strict Gateway only.
    let long = format!("/{}", "a".repeat(500));
    let text = raw_exchange(strict, &get(&long), WITHIN).await;
    assert_eq!(status_of(&text), 414, "{text}");
    let text = raw_exchange(open, &get(&long), WITHIN).await;
    assert_eq!(status_of(&text), 200, "{text}");

    // The header timeout: a silent client of the strict Gateway is closed
    // (its 1 s), one of the other Gateway is still open then (the agent's 30 s).
    let mut quiet_open = TcpStream::connect(("127.0.0.1", open)).await.unwrap();
    let mut quiet_strict = TcpStream::connect(("127.0.0.1", strict)).await.unwrap();
    let (text, closed) = read_until_close(&mut quiet_strict, WITHIN).await;
    assert!(
        closed && text.is_empty(),
        "closed without an answer: {text:?}"
    );
    quiet_open.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    quiet_open
        .write_all(b"Host: echo.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (text, _) = read_until_close(&mut quiet_open, WITHIN).await;
    assert_eq!(status_of(&text), 200, "still served: {text}");
    let timeouts = metric(
        &app,
        "sluice_http_timeouts_total",
        &[r#"shard="infra/strict""#, r#"reason="header""#],
    )
    .await;
    assert!(
        timeouts >= 1.0,
        "counted for the strict Gateway: {timeouts}"
    );

    // Connections per source: two on the strict Gateway, the third shed;
    // the other Gateway takes three.
    let mut held = Vec::new();
    for port in [strict, strict, open, open, open] {
        held.push(admitted_connection(port).await);
    }
    let text = raw_exchange(strict, &get("/"), WITHIN).await;
    assert_eq!(
        text, "",
        "the third connection to the strict Gateway is shed"
    );
    drop(held);

    // A changed policy applies to connections accepted after it.
    write_config(
        &dir,
        "all.yaml",
        &config(open, strict, backend, "{maxUriBytes: 1000}"),
    );
    let mut served = false;
    for _ in 0..100 {
        if status_of(&raw_exchange(strict, &get(&long), WITHIN).await) == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the new limit is in effect");
    app.shutdown().await;
}

#[tokio::test]
async fn a_connection_section_is_refused_on_routes_and_listeners() {
    let backend = echo_backend("echo").await;
    for target in [
        "{kind: HTTPRoute, name: r}",
        "{kind: Gateway, name: strict, sectionName: http}",
    ] {
        let dir = config_dir();
        let text = config(free_port(), free_port(), backend, "{headerTimeout: 5s}").replace(
            "targetRefs: [{kind: Gateway, name: strict}]",
            &format!("targetRefs: [{target}]"),
        );
        write_config(&dir, "all.yaml", &text);
        let mut settings = Settings::new(&dir);
        settings.datapath = DatapathMode::Userspace;
        settings.admin_addr = "127.0.0.1:0".parse().unwrap();
        let err = app::build(settings).await.err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("spec.targetRefs[0]") && msg.contains("whole Gateways"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn connection_values_are_checked() {
    let backend = echo_backend("echo").await;
    for (policy, field) in [
        ("{headerTimeout: 0s}", "headerTimeout"),
        ("{headerTimeout: soon}", "headerTimeout"),
        ("{maxUriBytes: 10}", "maxUriBytes"),
        ("{maxRequestHeadBytes: 100000000}", "maxRequestHeadBytes"),
        ("{}", "connection"),
    ] {
        let dir = config_dir();
        write_config(
            &dir,
            "all.yaml",
            &config(free_port(), free_port(), backend, policy),
        );
        let mut settings = Settings::new(&dir);
        settings.datapath = DatapathMode::Userspace;
        settings.admin_addr = "127.0.0.1:0".parse().unwrap();
        let err = app::build(settings).await.err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("spec.connection") && msg.contains(field),
            "{policy}: {msg}"
        );
    }
}
