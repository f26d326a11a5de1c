//! TLS to backends: BackendTLSPolicy (CA from a ConfigMap, hostname as SNI
//! and certificate name, subjectAltNames), the Gateway's backend client
//! certificate, refusals (wrong CA, wrong name) and policy status. The TLS
//! echo backend and every certificate are generated per test (rcgen);
//! traffic stays on 127.0.0.1.
mod common;

use std::{net::SocketAddr, sync::Arc};

use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore,
};
use tokio::net::TcpListener;

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf: PEMs for Secrets and the backend.
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

    fn leaf(&self, names: &[&str], uri: Option<&str>, cn: &str) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some(u) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(rcgen::Ia5String::try_from(u).unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// A TLS backend with the `server` certificate; with `client_ca`, it
/// requires a client certificate signed by it. It answers
/// `sni=<server name> client=<yes|no> alpn=<protocol> host=<authority or Host>`.
async fn tls_backend(server: &Leaf, client_ca: Option<&Ca>) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let info = format!(
                    "sni={} client={} alpn={}",
                    conn.server_name().unwrap_or("-"),
                    if conn.peer_certificates().is_some_and(|c| !c.is_empty()) {
                        "yes"
                    } else {
                        "no"
                    },
                    conn.alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_else(|| "-".into())
                );
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let host = req
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .or_else(|| {
                            req.headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    let info = format!("{info} host={host}");
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            bytes::Bytes::from(info),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// Service `infra/name` (port 443 named `https`) with one endpoint, and a
/// route for `host` to it.
fn service_and_route(name: &str, host: &str, backend: SocketAddr, app_protocol: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: infra}}
spec: {{ports: [{{name: https, port: 443{app_protocol}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: infra, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"]}}]
ports: [{{name: https, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules: [{{backendRefs: [{{name: {name}, port: 443}}]}}]
"#,
        port = backend.port()
    )
}

fn policy(name: &str, service: &str, ca_map: &str, hostname: &str, extra: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: infra}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {service}, sectionName: https}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: {ca_map}}}]
    hostname: {hostname}
{extra}"#
    )
}

fn ca_config_map(name: &str, ca: &Ca) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: infra}}\ndata:\n  ca.crt: |\n{}",
        indent(&ca.pem())
    )
}

fn tls_secret(name: &str, leaf: &Leaf) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: infra}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&leaf.cert_pem),
        indent(&leaf.key_pem)
    )
}

/// The Gateway with `spec.tls.backend.clientCertificateRef`.
fn gateway_with_client_cert(port: u16, secret: &str) -> String {
    format!(
        "{}  tls:\n    backend:\n      clientCertificateRef: {{group: \"\", kind: Secret, name: {secret}}}\n",
        gateway_yaml(port)
    )
}

async fn status(app: &sluice::app::App) -> serde_json::Value {
    serde_json::from_str(&admin_get(app, "/status").await).unwrap()
}

/// The conditions of a policy's first ancestor as `type=status/reason`.
fn policy_conditions(status: &serde_json::Value, name: &str) -> Vec<String> {
    let policy = status["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no status for policy {name}: {status}"));
    assert_eq!(policy["ancestors"][0]["ancestorRef"]["name"], "gw");
    policy["ancestors"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}={}/{}",
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap()
            )
        })
        .collect()
}

/// `status/reason` of a condition of the first Gateway.
fn gateway_condition(status: &serde_json::Value, kind: &str) -> String {
    let c = status["gateways"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {status}"));
    format!(
        "{}/{}",
        c["status"].as_str().unwrap(),
        c["reason"].as_str().unwrap()
    )
}

#[tokio::test]
async fn policy_routes_over_tls_and_refuses_wrong_ca_or_name() {
    let ca = Ca::new("backend CA");
    let other_ca = Ca::new("unrelated CA");
    let server = ca.leaf(
        &["backend.internal"],
        Some("spiffe://internal/backend"),
        "backend",
    );
    let backend = tls_backend(&server, None).await;
    let port = free_port();
    let dir = config_dir();
    let config = [
        gateway_yaml(port),
        ca_config_map("backend-ca", &ca),
        ca_config_map("other-ca", &other_ca),
        service_and_route("good", "good.example.com", backend, ", appProtocol: https"),
        policy("good", "good", "backend-ca", "backend.internal", ""),
        service_and_route("wrong-ca", "wrong-ca.example.com", backend, ""),
        policy("wrong-ca", "wrong-ca", "other-ca", "backend.internal", ""),
        service_and_route("wrong-name", "wrong-name.example.com", backend, ""),
        policy(
            "wrong-name",
            "wrong-name",
            "backend-ca",
            "other.internal",
            "",
        ),
        service_and_route("by-uri", "by-uri.example.com", backend, ""),
        policy(
            "by-uri",
            "by-uri",
            "backend-ca",
            "other.internal",
            "    subjectAltNames: [{type: URI, uri: \"spiffe://internal/backend\"}]\n",
        ),
        service_and_route("missing-ca", "missing-ca.example.com", backend, ""),
        policy(
            "missing-ca",
            "missing-ca",
            "no-such-map",
            "backend.internal",
            "",
        ),
        service_and_route("plain", "plain.example.com", backend, ""),
    ]
    .concat();
    write_config(&dir, "all.yaml", &config);
    let app = start(&dir).await;
    let client = TestClient::new(port);

    let r = client.get("good.example.com", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // HTTP/2 by ALPN, with the request's Host as :authority.
    assert_eq!(
        r.body, "sni=backend.internal client=no alpn=h2 host=good.example.com",
        "{}",
        r.body
    );
    // Pooled: a second request works the same.
    let r = client.get("good.example.com", "/again").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = client.get("wrong-ca.example.com", "/").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "unknown issuer: {}",
        r.body
    );
    let r = client.get("wrong-name.example.com", "/").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "name mismatch: {}",
        r.body
    );

    // subjectAltNames replace the hostname check; SNI is still the hostname.
    let r = client.get("by-uri.example.com", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.starts_with("sni=other.internal "), "{}", r.body);

    // No usable CA: never sent (neither unverified nor in plain text).
    let r = client.get("missing-ca.example.com", "/").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    // Without a policy the backend is spoken to in plain HTTP, which a TLS
    // server does not answer.
    let r = client.get("plain.example.com", "/").await;
    assert!(r.status.is_server_error(), "{}", r.status);

    let config = admin_get(&app, "/config").await;
    assert!(
        config.contains("TLS backends not served") && config.contains("infra/missing-ca"),
        "{config}"
    );
    let s = status(&app).await;
    assert_eq!(
        policy_conditions(&s, "good"),
        ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]
    );
    assert_eq!(
        policy_conditions(&s, "missing-ca"),
        [
            "Accepted=False/NoValidCACertificate",
            "ResolvedRefs=False/InvalidCACertificateRef"
        ]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn https_app_protocol_without_policy_does_not_resolve() {
    let ca = Ca::new("backend CA");
    let backend = tls_backend(&ca.leaf(&["backend.internal"], None, "b"), None).await;
    let port = free_port();
    let dir = config_dir();
    let config = [
        gateway_yaml(port),
        service_and_route("nopolicy", "x.example.com", backend, ", appProtocol: https"),
    ]
    .concat();
    write_config(&dir, "all.yaml", &config);
    let app = start(&dir).await;
    let r = TestClient::new(port).get("x.example.com", "/").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let s = status(&app).await;
    let conditions = s["httpRoutes"][0]["parents"][0]["conditions"].to_string();
    assert!(conditions.contains("UnsupportedProtocol"), "{conditions}");
    assert!(conditions.contains("BackendTLSPolicy"), "{conditions}");
    app.shutdown().await;
}

#[tokio::test]
async fn gateway_presents_its_backend_client_certificate() {
    let ca = Ca::new("backend CA");
    let client_ca = Ca::new("client CA");
    let server = ca.leaf(&["backend.internal"], None, "backend");
    let client_leaf = client_ca.leaf(&["gateway.internal"], None, "gateway");
    let backend = tls_backend(&server, Some(&client_ca)).await;
    let port = free_port();
    let dir = config_dir();
    let rest = [
        ca_config_map("backend-ca", &ca),
        tls_secret("client-cert", &client_leaf),
        service_and_route("mtls", "mtls.example.com", backend, ""),
        policy("mtls", "mtls", "backend-ca", "backend.internal", ""),
    ]
    .concat();
    write_config(
        &dir,
        "all.yaml",
        &format!("{}{rest}", gateway_with_client_cert(port, "client-cert")),
    );
    let app = start(&dir).await;
    let r = TestClient::new(port).get("mtls.example.com", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.starts_with("sni=backend.internal client=yes"),
        "{}",
        r.body
    );
    let s = status(&app).await;
    assert_eq!(gateway_condition(&s, "ResolvedRefs"), "True/ResolvedRefs");
    app.shutdown().await;

    // A missing Secret: Gateway ResolvedRefs=False, and the backend, which
    // requires a client certificate, refuses the connection.
    let dir = config_dir();
    write_config(
        &dir,
        "all.yaml",
        &format!("{}{rest}", gateway_with_client_cert(port, "no-such-secret")),
    );
    let app = start(&dir).await;
    let r = TestClient::new(port).get("mtls.example.com", "/").await;
    assert!(r.status.is_server_error(), "{}", r.status);
    let s = status(&app).await;
    assert_eq!(
        gateway_condition(&s, "ResolvedRefs"),
        "False/InvalidClientCertificateRef"
    );
    assert_eq!(gateway_condition(&s, "Accepted"), "True/Accepted");
    app.shutdown().await;
}

/// A WebSocket server behind TLS answering `echo:<text>`; it reports the SNI
/// it saw in its first reply.
async fn wss_backend(server: &Leaf) -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let reply = format!("echo:{} sni={sni}", t.as_str());
                    if ws.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_to_a_tls_backend() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ca = Ca::new("backend CA");
    let backend = wss_backend(&ca.leaf(&["ws.internal"], None, "ws")).await;
    let port = free_port();
    let dir = config_dir();
    let config = [
        gateway_yaml(port),
        ca_config_map("backend-ca", &ca),
        service_and_route(
            "wss",
            "wss.example.com",
            backend,
            ", appProtocol: kubernetes.io/wss",
        ),
        policy("wss", "wss", "backend-ca", "ws.internal", ""),
    ]
    .concat();
    write_config(&dir, "all.yaml", &config);
    let app = start(&dir).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://wss.example.com/chat", tcp)
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("hi")).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "echo:hi sni=ws.internal"),
        other => panic!("expected a text reply, got {other:?}"),
    }
    ws.close(None).await.unwrap();
    app.shutdown().await;
}
