//! A test identity provider for the in-process tests: signing keys
//! (Ed25519 and ECDSA P-256, generated with ring), tokens signed with
//! jsonwebtoken, and a JWKS endpoint over HTTPS on 127.0.0.1 with its own
//! CA that counts its requests. (The library's unit tests have their own
//! in `policy::jwks`, since integration tests cannot reach `cfg(test)` code.)
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use base64::Engine as _;
use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::signature::KeyPair as _;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: jsonwebtoken::Algorithm,
    encoding: jsonwebtoken::EncodingKey,
    pub jwk: serde_json::Value,
}

impl SigningKey {
    pub fn ed25519(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::EdDSA,
            encoding: jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                "x": b64(pair.public_key().as_ref()),
            }),
        }
    }

    pub fn es256(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        Self {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::ES256,
            encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                "x": b64(&point[1..33]), "y": b64(&point[33..65]),
            }),
        }
    }

    /// A token with these claims (`exp` an hour ahead unless given).
    pub fn token(&self, claims: serde_json::Value) -> String {
        let mut claims = claims;
        if claims.get("exp").is_none() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            claims["exp"] = (now + 3600).into();
        }
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// The JWKS endpoint. Dropping it stops it.
pub struct Idp {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the endpoint's certificate.
    pub ca_pem: String,
    jwks: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    /// Serves `jwks` at `https://127.0.0.1:PORT/jwks`.
    pub async fn start(jwks: String) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test IdP CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let jwks = Arc::new(Mutex::new(jwks));
        let hits = Arc::new(AtomicUsize::new(0));
        let (j, h) = (jwks.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, j, h) = (acceptor.clone(), j.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = j.lock().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem: ca.pem(),
            jwks,
            hits,
            task,
        }
    }

    pub fn uri(&self) -> String {
        format!("https://{}/jwks", self.addr)
    }

    pub fn set_jwks(&self, jwks: String) {
        *self.jwks.lock().unwrap() = jwks;
    }

    /// JWKS requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// A ConfigMap document holding the CA under `ca.crt`.
    pub fn ca_config_map(&self, namespace: &str, name: &str) -> String {
        let indented: String = self.ca_pem.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata:\n  ca.crt: |\n{indented}"
        )
    }
}
