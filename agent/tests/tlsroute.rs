//! TLSRoute on a TLS Passthrough listener, through the real app on
//! loopback: the gateway reads the SNI of the ClientHello and relays the
//! connection, unterminated, to a backend that terminates TLS itself. The
//! clients trust only the backend's own CA, so every successful handshake
//! proves the certificate came from the backend, not from the gateway.
mod common;

use std::time::Duration;

use common::{edge::metric, l4::*, *};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    app: sluice::app::App,
    /// The listener without hostname (routes a, b, wild).
    port: u16,
    /// The listener whose one route has no hostnames (catch-all).
    any_port: u16,
    a: TestCert,
    b: TestCert,
    wild: TestCert,
    ip: TestCert,
}

use common::grpc::TestCert;

async fn fixture() -> Fixture {
    let (port, any_port) = (free_port(), free_port());
    let dir = config_dir();
    let (a_addr, a) = tls_echo_backend("a", "a.example.com").await;
    let (b_addr, b) = tls_echo_backend("b", "b.example.com").await;
    let (w_addr, wild) = tls_echo_backend("wild", "*.wild.example.com").await;
    let (ip_addr, ip) = tls_echo_backend("ip", "127.0.0.1").await;
    let mut text = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners:
  - name: tls
    port: {port}
    protocol: TLS
    tls: {{mode: Passthrough}}
  - name: tls-any
    port: {any_port}
    protocol: TLS
    tls: {{mode: Passthrough}}
"#
    );
    for (name, addr) in [
        ("a", a_addr),
        ("b", b_addr),
        ("wild", w_addr),
        ("ip", ip_addr),
    ] {
        text.push_str(&service_yaml("infra", name, addr));
    }
    text.push_str(&service_yaml("apps", "a2", a_addr));
    text.push_str(&service_yaml("apps", "granted", a_addr));
    text.push_str(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: a, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: [a.example.com]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: b, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: [b.example.com]
  rules: [{backendRefs: [{name: b, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: wild, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: ['*.wild.example.com']
  rules: [{backendRefs: [{name: wild, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: any, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls-any}]
  rules: [{backendRefs: [{name: ip, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-on-tls, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: refs-denied, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: [denied.example.com]
  rules: [{backendRefs: [{name: a2, namespace: apps, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: refs-granted, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: [granted.example.com]
  rules: [{backendRefs: [{name: granted, namespace: apps, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: tls-routes, namespace: apps}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: infra}]
  to: [{group: "", kind: Service, name: granted}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: cross, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: tls}]
  hostnames: [cross.example.com]
  rules: [{backendRefs: [{name: a, namespace: infra, port: 8080}]}]
"#,
    );
    write_config(&dir, "config.yaml", &text);
    Fixture {
        app: start(&dir).await,
        port,
        any_port,
        a,
        b,
        wild,
        ip,
    }
}

/// Handshake through the gateway, then the backend's greeting and an echo.
async fn exchange(port: u16, sni: &str, cert: &TestCert, framing: Framing) -> String {
    let mut s = tls_connect(port, sni, &cert.ca, framing)
        .await
        .unwrap_or_else(|e| panic!("TLS to {sni} through the gateway: {e}"));
    let name = read_line(&mut s).await.expect("greeting");
    s.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "ping", "echo of {sni}");
    name
}

#[tokio::test]
async fn sni_picks_the_backend_which_terminates_tls_itself() {
    let f = fixture().await;
    assert_eq!(
        exchange(f.port, "a.example.com", &f.a, Framing::Whole).await,
        "a"
    );
    assert_eq!(
        exchange(f.port, "b.example.com", &f.b, Framing::Whole).await,
        "b"
    );
    assert_eq!(
        exchange(f.port, "x.wild.example.com", &f.wild, Framing::Whole).await,
        "wild"
    );
    // The wildcard covers labels in front of its suffix, not the suffix.
    assert!(
        tls_connect(f.port, "wild.example.com", &f.wild.ca, Framing::Whole)
            .await
            .is_err()
    );
    // A client trusting only a's CA cannot be answered by b: the
    // certificate it verified is the backend's own.
    assert!(
        tls_connect(f.port, "b.example.com", &f.a.ca, Framing::Whole)
            .await
            .is_err()
    );

    // Half-close passes through TLS: after close_notify and FIN the
    // backend still answers.
    let mut s = tls_connect(f.port, "a.example.com", &f.a.ca, Framing::Whole)
        .await
        .unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
    s.write_all(b"last\n").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "last");
    assert_eq!(read_line(&mut s).await.unwrap(), "bye");

    let relayed = metric(
        &f.app,
        "sluice_l4_connections_total",
        &["route=\"infra/a\"", "result=\"relayed\""],
    )
    .await;
    assert!(relayed >= 2.0, "relayed connections of route a: {relayed}");
    // Bytes are counted when a connection ends; the half-closed one has.
    let mut bytes = 0.0;
    for _ in 0..50 {
        bytes = metric(
            &f.app,
            "sluice_l4_bytes_total",
            &["route=\"infra/a\"", "direction=\"downstream\""],
        )
        .await;
        if bytes > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bytes > 0.0, "downstream bytes of route a");
}

#[tokio::test]
async fn a_client_hello_over_many_records_is_reassembled_and_relayed_as_sent() {
    let f = fixture().await;
    // The backend's TLS stack joins the records again: the gateway sent
    // every one of them on.
    for size in [1, 16, 100] {
        assert_eq!(
            exchange(f.port, "b.example.com", &f.b, Framing::SmallRecords(size)).await,
            "b",
            "records of {size} bytes"
        );
    }
}

#[tokio::test]
async fn a_client_hello_in_one_byte_writes_is_reassembled() {
    let f = fixture().await;
    assert_eq!(
        exchange(f.port, "a.example.com", &f.a, Framing::OneByteWrites).await,
        "a"
    );
    assert_eq!(
        exchange(
            f.port,
            "y.wild.example.com",
            &f.wild,
            Framing::OneByteWrites
        )
        .await,
        "wild"
    );
}

#[tokio::test]
async fn unknown_or_missing_sni_is_refused_unless_a_route_takes_every_name() {
    let f = fixture().await;
    assert!(
        tls_connect(f.port, "c.example.com", &f.a.ca, Framing::Whole)
            .await
            .is_err()
    );
    // An IP address as server name: rustls sends no SNI. The listener with
    // named routes only refuses it; the catch-all route takes it.
    assert!(tls_connect(f.port, "127.0.0.1", &f.ip.ca, Framing::Whole)
        .await
        .is_err());
    assert_eq!(
        exchange(f.any_port, "127.0.0.1", &f.ip, Framing::Whole).await,
        "ip"
    );
    // A route without hostnames takes any SNI too; the backend's
    // certificate is for 127.0.0.1 only, so the client verifies it as such.
    let mut s = tls_connect(f.any_port, "127.0.0.1", &f.ip.ca, Framing::OneByteWrites)
        .await
        .unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "ip");
    let refused = metric(
        &f.app,
        "sluice_l4_connections_total",
        &["result=\"no_route\""],
    )
    .await;
    assert!(refused >= 2.0, "no_route refusals: {refused}");
}

#[tokio::test]
async fn non_tls_and_silent_clients_are_closed_within_a_bound() {
    let f = fixture().await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", f.port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_without_data(&mut s, Duration::from_secs(5)).await,
        "plain HTTP on a TLS listener is closed"
    );
    // A client that never sends its ClientHello is closed after the
    // ClientHello timeout (10 s), not held forever.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", f.port))
        .await
        .unwrap();
    assert!(closed_without_data(&mut silent, Duration::from_secs(30)).await);
    assert!(
        metric(
            &f.app,
            "sluice_l4_connections_total",
            &["result=\"client_hello_timeout\""]
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &f.app,
            "sluice_l4_connections_total",
            &["result=\"not_tls\""]
        )
        .await
            >= 1.0
    );
    let _ = s.read(&mut [0u8; 1]).await;
}

#[tokio::test]
async fn status_reports_kinds_attachments_and_refusals() {
    let f = fixture().await;
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&f.app, "/status").await).unwrap();
    let listener = |name: &str| {
        status["gateways"][0]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let tls = listener("tls");
    assert_eq!(tls["supportedKinds"][0]["kind"], "TLSRoute");
    assert_eq!(tls["supportedKinds"].as_array().unwrap().len(), 1);
    // a, b, wild, refs-denied, refs-granted; not the HTTPRoute, not the
    // route from another namespace (the listener admits only its own).
    assert_eq!(tls["attachedRoutes"], 5);
    assert_eq!(listener("tls-any")["attachedRoutes"], 1);
    let a = route_status(&status, "TLSRoute", "a");
    assert_eq!(parent_condition(a, "Accepted"), "True/Accepted");
    assert_eq!(parent_condition(a, "ResolvedRefs"), "True/ResolvedRefs");
    let http = route_status(&status, "HTTPRoute", "http-on-tls");
    assert_eq!(
        parent_condition(http, "Accepted"),
        "False/NotAllowedByListeners"
    );
    let denied = route_status(&status, "TLSRoute", "refs-denied");
    assert_eq!(parent_condition(denied, "Accepted"), "True/Accepted");
    assert_eq!(
        parent_condition(denied, "ResolvedRefs"),
        "False/RefNotPermitted"
    );
    let granted = route_status(&status, "TLSRoute", "refs-granted");
    assert_eq!(
        parent_condition(granted, "ResolvedRefs"),
        "True/ResolvedRefs"
    );
    // The backend a reference without grant would reach is never dialled.
    assert!(
        tls_connect(f.port, "denied.example.com", &f.a.ca, Framing::Whole)
            .await
            .is_err()
    );
    assert!(
        metric(
            &f.app,
            "sluice_l4_connections_total",
            &["route=\"infra/refs-denied\"", "result=\"no_backend\""]
        )
        .await
            >= 1.0
    );
    let config: serde_json::Value =
        serde_json::from_str(&admin_get(&f.app, "/config").await).unwrap();
    let served = config["shards"][0]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "tls")
        .unwrap()
        .clone();
    assert_eq!(served["relay"], "TLS Passthrough");
    let cross = route_status(&status, "TLSRoute", "cross");
    assert_eq!(
        parent_condition(cross, "Accepted"),
        "False/NotAllowedByListeners"
    );
}

/// A `protocol: TLS` listener with `mode: Terminate`: the gateway completes
/// the handshake with the listener's certificate, routes by the server name
/// and relays the decrypted bytes to a plain TCP backend. The client trusts
/// only the gateway's CA.
#[tokio::test]
async fn a_terminate_listener_relays_the_decrypted_bytes_by_server_name() {
    let (port, other) = (free_port(), free_port());
    let dir = config_dir();
    let gateway_cert = TestCert::new("*.example.com");
    let backend = tcp_echo_backend("db").await;
    let config = |extra_listener: &str| {
        let mut text = format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners:
  - name: tls
    port: {port}
    protocol: TLS
    tls: {{mode: Terminate, certificateRefs: [{{name: db-cert}}]}}
{extra_listener}"#
        );
        text.push_str(&gateway_cert.secret_yaml("db-cert"));
        text.push_str(&service_yaml("infra", "db", backend));
        text.push_str(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\n\
             metadata: {name: db, namespace: infra}\nspec:\n  \
             parentRefs: [{name: gw, sectionName: tls}]\n  hostnames: [db.example.com]\n  \
             rules: [{backendRefs: [{name: db, port: 8080}]}]\n",
        );
        text
    };
    // A Terminate listener needs certificates: the config is refused whole.
    let without_cert = format!("  - {{name: no-cert, port: {other}, protocol: TLS}}\n");
    write_config(&dir, "config.yaml", &config(&without_cert));
    let mut settings = sluice::app::Settings::new(&dir);
    settings.datapath = sluice::app::DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    let err = match sluice::app::build(settings).await {
        Ok(_) => panic!("a Terminate listener without certificateRefs is refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("certificateRefs"), "{err}");

    write_config(&dir, "config.yaml", &config(""));
    let app = start(&dir).await;
    let mut s = tls_connect(port, "db.example.com", &gateway_cert.ca, Framing::Whole)
        .await
        .expect("the gateway's certificate is trusted");
    assert_eq!(
        read_line(&mut s).await.unwrap(),
        "db",
        "decrypted bytes reach the backend"
    );
    s.write_all(b"select 1;\n").await.unwrap();
    let mut back = [0u8; 10];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&back, b"select 1;\n");
    drop(s);
    // A name no route takes: closed once the handshake is done, counted.
    let mut s = tls_connect(port, "other.example.com", &gateway_cert.ca, Framing::Whole)
        .await
        .expect("the handshake completes before routing");
    assert!(closed_without_data(&mut s, WAIT).await, "no route: closed");
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = metric(
            &app,
            "sluice_l4_connections_total",
            &["result=\"no_route\""],
        )
        .await;
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 1.0);
}
