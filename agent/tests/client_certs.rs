//! Frontend client-certificate validation (`Gateway.spec.tls.frontend`):
//! AllowValidOnly refuses clients without a certificate of the configured CA,
//! AllowInsecureFallback serves them, per-port settings override the
//! default, and CA references that do not resolve take the listener out with
//! the Gateway API reasons. Certificates are generated per test (rcgen);
//! traffic stays on 127.0.0.1.
mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn leaf(&self, names: &[&str], client: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if client {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn ca_map(name: &str, ca: &Ca) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: infra}}\ndata:\n  ca.crt: |\n{}",
        indent(&ca.cert.pem())
    )
}

/// Gateway with HTTPS listeners on `port` (default validation by CA map
/// `client-ca`) and `port2` (per-port `frontend`), a server certificate
/// and a route to an echo backend.
fn config(
    port: u16,
    port2: u16,
    port2_validation: &str,
    server: &Leaf,
    backend: std::net::SocketAddr,
) -> String {
    format!(
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
  tls:
    frontend:
      default: {{validation: {{caCertificateRefs: [{{group: "", kind: ConfigMap, name: client-ca}}]}}}}
      perPort:
      - port: {port2}
        tls: {{validation: {port2_validation}}}
  listeners:
  - {{name: one, port: {port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
  - {{name: two, port: {port2}, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: echo, port: 8080}}]}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: server, namespace: infra}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}{}"#,
        indent(&server.cert_pem),
        indent(&server.key_pem),
        service_yaml("infra", "echo", backend),
    )
}

/// GET / over TLS to `port`, offering `client` if given; `Err` when the
/// handshake or the exchange fails.
async fn get(port: u16, server_ca: &Ca, client: Option<&Leaf>) -> Result<StatusCode, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("gw.example.com").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/")
        .header("host", "gw.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

fn listener_condition(status: &serde_json::Value, listener: &str, kind: &str) -> String {
    let l = status["gateways"][0]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == listener)
        .unwrap();
    let c = l["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap();
    format!(
        "{}/{}",
        c["status"].as_str().unwrap(),
        c["reason"].as_str().unwrap()
    )
}

#[tokio::test]
async fn valid_only_and_insecure_fallback() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let other_ca = Ca::new("other CA");
    let server = server_ca.leaf(&["gw.example.com"], false);
    let good = client_ca.leaf(&["client.example.com"], true);
    let stranger = other_ca.leaf(&["stranger.example.com"], true);
    let backend = echo_backend("echo").await;
    let (port, port2) = (free_port(), free_port());
    let dir = config_dir();
    let fallback = r#"{caCertificateRefs: [{name: client-ca}], mode: AllowInsecureFallback}"#;
    write_config(
        &dir,
        "all.yaml",
        &format!(
            "{}{}",
            config(port, port2, fallback, &server, backend),
            ca_map("client-ca", &client_ca)
        ),
    );
    let app = start(&dir).await;

    // AllowValidOnly (the default on `port`).
    assert_eq!(get(port, &server_ca, Some(&good)).await, Ok(StatusCode::OK));
    assert!(
        get(port, &server_ca, None).await.is_err(),
        "no client certificate"
    );
    assert!(
        get(port, &server_ca, Some(&stranger)).await.is_err(),
        "wrong CA"
    );

    // AllowInsecureFallback (per port): everyone is served.
    for client in [Some(&good), Some(&stranger), None] {
        assert_eq!(get(port2, &server_ca, client).await, Ok(StatusCode::OK));
    }
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
    let gw = status["gateways"][0]["conditions"].to_string();
    assert!(gw.contains("InsecureFrontendValidationMode"), "{gw}");
    app.shutdown().await;
}

#[tokio::test]
async fn unresolvable_ca_takes_the_listener_out() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = server_ca.leaf(&["gw.example.com"], false);
    let good = client_ca.leaf(&["client.example.com"], true);
    let backend = echo_backend("echo").await;
    let (port, port2) = (free_port(), free_port());
    let cases = [
        (
            "{caCertificateRefs: [{name: missing}]}",
            "InvalidCACertificateRef",
        ),
        (
            "{caCertificateRefs: [{kind: Service, group: \"\", name: echo}]}",
            "InvalidCACertificateKind",
        ),
        (
            "{caCertificateRefs: [{name: client-ca, namespace: elsewhere}]}",
            "RefNotPermitted",
        ),
    ];
    for (validation, reason) in cases {
        let dir = config_dir();
        write_config(
            &dir,
            "all.yaml",
            &format!(
                "{}{}",
                config(port, port2, validation, &server, backend),
                ca_map("client-ca", &client_ca)
            ),
        );
        let app = start(&dir).await;
        let status: serde_json::Value =
            serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
        assert_eq!(
            listener_condition(&status, "two", "ResolvedRefs"),
            format!("False/{reason}")
        );
        assert_eq!(
            listener_condition(&status, "two", "Accepted"),
            "False/NoValidCACertificate"
        );
        assert_eq!(
            listener_condition(&status, "one", "Accepted"),
            "True/Accepted"
        );
        // The other port keeps working; the broken one is not served.
        assert_eq!(get(port, &server_ca, Some(&good)).await, Ok(StatusCode::OK));
        assert!(
            get(port2, &server_ca, Some(&good)).await.is_err(),
            "{reason}"
        );
        app.shutdown().await;
    }
}
