//! TLS termination: HTTPS listeners with certificates from `kubernetes.io/tls`
//! Secrets, SNI selection among listeners sharing a port, 421 for
//! misdirected requests, TLS 1.2/1.3 only, certificate rotation on reload,
//! listener status for unusable certificate references. Certificates are
//! generated per test with rcgen; traffic stays on 127.0.0.1.
mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

/// A test CA and leaf certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate: PEMs for the Secret, DER to compare with what is served.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn client(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
}

/// A `kubernetes.io/tls` Secret with the leaf in `stringData`.
fn secret_yaml(namespace: &str, name: &str, leaf: &Leaf) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&leaf.cert_pem),
        indent(&leaf.key_pem)
    )
}

/// The same Secret with base64 `data`, as Kubernetes stores it.
fn secret_yaml_b64(namespace: &str, name: &str, leaf: &Leaf) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        base64(leaf.cert_pem.as_bytes()),
        base64(leaf.key_pem.as_bytes())
    )
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= n {
                out.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Gateway `infra/gw` with two HTTPS listeners on `port`: `a` for
/// a.example.com (Secret `cert-a`) and `b` for *.b.example.com (Secret
/// `cert-b`), and a route per listener to backends `a` and `b`.
fn two_listener_config(
    port: u16,
    backend_a: std::net::SocketAddr,
    backend_b: std::net::SocketAddr,
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
  listeners:
  - name: a
    port: {port}
    protocol: HTTPS
    hostname: a.example.com
    tls: {{certificateRefs: [{{name: cert-a}}]}}
  - name: b
    port: {port}
    protocol: HTTPS
    hostname: "*.b.example.com"
    tls: {{mode: Terminate, certificateRefs: [{{kind: Secret, group: "", name: cert-b}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: ra, namespace: infra}}
spec:
  parentRefs: [{{name: gw, sectionName: a}}]
  rules: [{{backendRefs: [{{name: a, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: rb, namespace: infra}}
spec:
  parentRefs: [{{name: gw, sectionName: b}}]
  rules: [{{backendRefs: [{{name: b, port: 8080}}]}}]
{}{}"#,
        service_yaml("infra", "a", backend_a),
        service_yaml("infra", "b", backend_b),
    )
}

async fn connect(
    connector: &TlsConnector,
    port: u16,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    connector.connect(name, tcp).await
}

/// The leaf certificate the server presented.
fn served_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone()
}

/// A request on an established TLS connection (HTTP/2 when ALPN chose h2).
async fn request(stream: TlsStream<TcpStream>, host: &str, path: &str) -> Result<Reply, String> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let req = |version| {
        let mut b = Request::builder().uri(path).version(version);
        if h2 {
            b = b.uri(format!("https://{host}{path}"));
        } else {
            b = b.header("host", host);
        }
        b.body(Empty::<Bytes>::new()).unwrap()
    };
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req(http::Version::HTTP_2))
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req(http::Version::HTTP_11))
            .await
            .map_err(|e| e.to_string())?
    };
    into_reply(resp).await
}

async fn into_reply(resp: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let echo = serde_json::from_str(&body).ok();
    Ok(Reply {
        status,
        headers,
        body,
        echo,
    })
}

struct Fixture {
    app: sluice::app::App,
    port: u16,
    ca: Ca,
    leaf_a: Leaf,
    leaf_b: Leaf,
    dir: std::path::PathBuf,
}

async fn fixture() -> Fixture {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let port = free_port();
    let dir = config_dir();
    let ca = Ca::new();
    let leaf_a = ca.leaf(&["a.example.com"]);
    let leaf_b = ca.leaf(&["*.b.example.com"]);
    write_config(&dir, "gateway.yaml", &two_listener_config(port, a, b));
    write_config(
        &dir,
        "cert-a.yaml",
        &secret_yaml("infra", "cert-a", &leaf_a),
    );
    write_config(
        &dir,
        "cert-b.yaml",
        &secret_yaml_b64("infra", "cert-b", &leaf_b),
    );
    let app = start(&dir).await;
    Fixture {
        app,
        port,
        ca,
        leaf_a,
        leaf_b,
        dir,
    }
}

const TLS_ALL: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn sni_selects_the_listener_certificate_and_routes() {
    let f = fixture().await;
    let http1 = f.ca.client(&[b"http/1.1"], TLS_ALL);

    let s = connect(&http1, f.port, "a.example.com")
        .await
        .expect("TLS to a");
    assert_eq!(served_cert(&s), f.leaf_a.der, "listener a's certificate");
    let r = request(s, "a.example.com", "/x").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.backend(), "a");
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));

    let s = connect(&http1, f.port, "api.b.example.com")
        .await
        .expect("TLS to b");
    assert_eq!(
        served_cert(&s),
        f.leaf_b.der,
        "listener b's certificate (wildcard)"
    );
    let r = request(s, "api.b.example.com", "/y").await.unwrap();
    assert_eq!(r.backend(), "b");

    // No listener covers the name: no certificate, no handshake.
    assert!(connect(&http1, f.port, "c.example.com").await.is_err());

    // ALPN: h2 is offered and negotiated; the request goes over HTTP/2.
    let h2 = f.ca.client(&[b"h2", b"http/1.1"], TLS_ALL);
    let s = connect(&h2, f.port, "a.example.com").await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let r = request(s, "a.example.com", "/h2").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.backend(), "a");

    // TLS 1.2 alone is served too.
    let tls12 = f.ca.client(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let s = connect(&tls12, f.port, "a.example.com")
        .await
        .expect("TLS 1.2");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    let status = admin_get(&f.app, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let listeners = &status["gateways"][0]["listeners"];
    for l in listeners.as_array().unwrap() {
        let programmed = l["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Programmed")
            .unwrap();
        assert_eq!(programmed["status"], "True", "{l}");
    }
    f.app.shutdown().await;
}

#[tokio::test]
async fn host_of_another_listener_is_misdirected() {
    let f = fixture().await;
    let h2 = f.ca.client(&[b"h2"], TLS_ALL);
    let http1 = f.ca.client(&[b"http/1.1"], TLS_ALL);
    for client in [&h2, &http1] {
        // SNI picks listener a; the Host belongs to listener b.
        let s = connect(client, f.port, "a.example.com").await.unwrap();
        let r = request(s, "x.b.example.com", "/").await.unwrap();
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.body);
        // And the other way round: SNI picks b, the Host is a's.
        let s = connect(client, f.port, "x.b.example.com").await.unwrap();
        let r = request(s, "a.example.com", "/").await.unwrap();
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
        // Same listener: served.
        let s = connect(client, f.port, "x.b.example.com").await.unwrap();
        let r = request(s, "y.b.example.com", "/").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.backend(), "b");
    }
    f.app.shutdown().await;
}

/// A ClientHello of the given `legacy_version` without the
/// supported_versions extension: 0x0302 is TLS 1.1, 0x0303 TLS 1.2.
fn client_hello(version: u16, sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let push_ext = |ext: &mut Vec<u8>, kind: u16, body: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
        ext.extend_from_slice(body);
    };
    // server_name
    let mut sn = Vec::new();
    sn.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
    sn.push(0);
    sn.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sn.extend_from_slice(sni.as_bytes());
    push_ext(&mut ext, 0, &sn);
    // supported_groups: x25519, secp256r1
    push_ext(&mut ext, 10, &[0, 4, 0, 0x1d, 0, 0x17]);
    // ec_point_formats: uncompressed
    push_ext(&mut ext, 11, &[1, 0]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    push_ext(&mut ext, 13, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    let mut hello = Vec::new();
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&[7; 32]); // random
    hello.push(0); // session id
                   // ECDHE-ECDSA/RSA AES-128-GCM, plus a TLS 1.1-era CBC suite.
    hello.extend_from_slice(&[0, 6, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x09]);
    hello.extend_from_slice(&[1, 0]); // null compression
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// The first TLS record header byte and (for an alert) its description.
async fn first_record(port: u16, hello: &[u8]) -> (u8, Option<u8>) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut buf = [0u8; 7];
    tcp.read_exact(&mut buf).await.expect("a TLS record back");
    (buf[0], (buf[0] == 0x15).then_some(buf[6]))
}

#[tokio::test]
async fn tls_1_1_is_refused() {
    let f = fixture().await;
    // Control: the same hello as TLS 1.2 gets a ServerHello (handshake record).
    let (kind, _) = first_record(f.port, &client_hello(0x0303, "a.example.com")).await;
    assert_eq!(kind, 0x16, "TLS 1.2 hello answered with a handshake");
    // TLS 1.1: an alert, protocol_version (70).
    let (kind, alert) = first_record(f.port, &client_hello(0x0302, "a.example.com")).await;
    assert_eq!((kind, alert), (0x15, Some(70)));
    f.app.shutdown().await;
}

#[tokio::test]
async fn certificate_rotation_takes_effect_without_failed_requests() {
    let f = fixture().await;
    let client = f.ca.client(&[b"http/1.1"], TLS_ALL);
    // A connection from before the rotation, kept open across it.
    let before = connect(&client, f.port, "a.example.com").await.unwrap();
    assert_eq!(served_cert(&before), f.leaf_a.der);
    let io = TokioIo::new(before);
    let (mut kept, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let get = || {
        Request::builder()
            .uri("/kept")
            .header("host", "a.example.com")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(
        kept.send_request(get()).await.unwrap().status(),
        StatusCode::OK
    );

    // Traffic on new connections throughout the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, ok, failures, client, port) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            client.clone(),
            f.port,
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = match connect(&client, port, "a.example.com").await {
                    Ok(s) => request(s, "a.example.com", "/load").await,
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(r) if r.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status)),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        })
    };
    while ok.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let rotated = f.ca.leaf(&["a.example.com"]);
    write_config(
        &f.dir,
        "cert-a.yaml",
        &secret_yaml("infra", "cert-a", &rotated),
    );
    let mut served_new = false;
    for _ in 0..400 {
        let s = connect(&client, f.port, "a.example.com").await.unwrap();
        if served_cert(&s) == rotated.der {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        served_new,
        "the rotated certificate is served on new connections"
    );
    let seen = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < seen + 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        failures.lock().unwrap().is_empty(),
        "failed requests during rotation: {:?}",
        failures.lock().unwrap()
    );
    // The connection from before the rotation still works: the listening
    // socket and its connections were not touched.
    assert_eq!(
        kept.send_request(get()).await.unwrap().status(),
        StatusCode::OK
    );
    // Listener b kept its certificate.
    let s = connect(&client, f.port, "x.b.example.com").await.unwrap();
    assert_eq!(served_cert(&s), f.leaf_b.der);
    f.app.shutdown().await;
}

fn listener_condition(status: &serde_json::Value, listener: &str, kind: &str) -> (String, String) {
    let l = status["gateways"][0]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == listener)
        .unwrap_or_else(|| panic!("listener {listener} in {status}"));
    let c = l["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap();
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn unusable_certificate_refs_are_reported_and_not_served() {
    let backend = echo_backend("a").await;
    let port = free_port();
    let port_bad = free_port();
    let dir = config_dir();
    let ca = Ca::new();
    let leaf = ca.leaf(&["ok.example.com"]);
    let other = ca.leaf(&["other.example.com"]);
    // Key of another certificate: does not belong to the leaf.
    let mismatched = Leaf {
        cert_pem: leaf.cert_pem.clone(),
        key_pem: other.key_pem.clone(),
        der: leaf.der.clone(),
    };
    let config = format!(
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
  - {{name: ok, port: {port}, protocol: HTTPS, hostname: ok.example.com, tls: {{certificateRefs: [{{name: cert, namespace: certs}}]}}}}
  - {{name: missing, port: {port_bad}, protocol: HTTPS, hostname: m.example.com, tls: {{certificateRefs: [{{name: nope}}]}}}}
  - {{name: foreign, port: {port_bad}, protocol: HTTPS, hostname: f.example.com, tls: {{certificateRefs: [{{name: cert, namespace: other}}]}}}}
  - {{name: mismatch, port: {port_bad}, protocol: HTTPS, hostname: x.example.com, tls: {{certificateRefs: [{{name: mismatched}}]}}}}
  - {{name: kind, port: {port_bad}, protocol: HTTPS, hostname: k.example.com, tls: {{certificateRefs: [{{name: cert, kind: ConfigMap}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: gw-certs, namespace: certs}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}}]
  to: [{{group: "", kind: Secret}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: a, port: 8080}}]}}]
{}{}{}{}"#,
        service_yaml("infra", "a", backend),
        secret_yaml("certs", "cert", &leaf),
        secret_yaml("other", "cert", &leaf),
        secret_yaml("infra", "mismatched", &mismatched),
    );
    write_config(&dir, "all.yaml", &config);
    let app = start(&dir).await;
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        listener_condition(&status, "ok", "ResolvedRefs"),
        pair("True", "ResolvedRefs")
    );
    assert_eq!(
        listener_condition(&status, "ok", "Programmed"),
        pair("True", "Programmed")
    );
    for (name, reason) in [
        ("missing", "InvalidCertificateRef"),
        ("foreign", "RefNotPermitted"),
        ("mismatch", "InvalidCertificateRef"),
        ("kind", "InvalidCertificateRef"),
    ] {
        assert_eq!(
            listener_condition(&status, name, "ResolvedRefs"),
            pair("False", reason),
            "{name}"
        );
        assert_eq!(
            listener_condition(&status, name, "Programmed").0,
            "False",
            "{name}"
        );
    }
    // The granted cross-namespace certificate is served.
    let client = ca.client(&[b"http/1.1"], TLS_ALL);
    let s = connect(&client, port, "ok.example.com").await.unwrap();
    assert_eq!(served_cert(&s), leaf.der);
    assert_eq!(
        request(s, "ok.example.com", "/").await.unwrap().backend(),
        "a"
    );
    // No listener on the other port is served, so nothing listens there.
    assert!(TcpStream::connect(("127.0.0.1", port_bad)).await.is_err());
    app.shutdown().await;
}
