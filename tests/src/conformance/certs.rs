//! The certificates the upstream suite creates in code (not in any
//! manifest; see "Objects the suite creates in code" in
//! `tests/conformance/cases/README.md`), generated with `rcgen` at runner
//! start, and the TLS client configuration that trusts them.
//!
//! Upstream makes `certificate` and `tls-validity-checks-certificate`
//! self-signed. Here every server certificate is signed by a CA the runner
//! keeps instead ("CA S" for those two), because webpki does not accept a
//! leaf as its own trust anchor; the client trusts the CA that signed the
//! Secret named by a case's `ca_secret`, which amounts to the same thing.
//!
//! Upstream's Go client matches host names with Go's rules, where `*.org`
//! matches `example.org` and `*` matches any one-label name; webpki refuses
//! both. The verifier below checks the chain with webpki and the name with
//! Go's rules ([`go_hostname_matches`]) against the SANs the runner put into
//! the certificate.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::ParsedCertificate,
    DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use serde_yaml::Value;

pub const INFRA: &str = "gateway-conformance-infra";
pub const WEB_BACKEND: &str = "gateway-conformance-web-backend";
pub const APP_BACKEND: &str = "gateway-conformance-app-backend";

/// A generated `kubernetes.io/tls` Secret.
#[derive(Debug, Clone)]
pub struct GeneratedSecret {
    pub namespace: String,
    pub name: String,
    /// DNS (and URI) SANs as put into the certificate.
    pub sans: Vec<String>,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
    /// DER of the CA that signed it.
    pub ca_der: Vec<u8>,
}

/// A generated CA ConfigMap (`ca.crt`), written to the agent's config
/// directory next to the Secrets.
#[derive(Debug, Clone)]
pub struct GeneratedCa {
    pub namespace: String,
    pub name: String,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct SuiteCerts {
    pub secrets: Vec<GeneratedSecret>,
    pub config_maps: Vec<GeneratedCa>,
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(common_name: &str) -> Result<Ca> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Sluice conformance runner");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca { cert, key })
}

/// A leaf signed by `ca`: DNS SANs, `spiffe://` entries as URI SANs.
fn leaf(ca: &Ca, ns: &str, name: &str, sans: &[&str], client: bool) -> Result<GeneratedSecret> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for s in sans {
        let ia5 = (*s)
            .try_into()
            .with_context(|| format!("SAN {s:?} is not IA5"))?;
        params.subject_alt_names.push(if s.contains("://") {
            SanType::URI(ia5)
        } else {
            SanType::DnsName(ia5)
        });
    }
    params
        .distinguished_name
        .push(DnType::CommonName, sans.first().copied().unwrap_or(name));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Sluice conformance runner");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    Ok(GeneratedSecret {
        namespace: ns.into(),
        name: name.into(),
        sans: sans.iter().map(|s| (*s).to_owned()).collect(),
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
        ca_der: ca.cert.der().to_vec(),
    })
}

fn ca_map(ca: &Ca, ns: &str, name: &str) -> GeneratedCa {
    GeneratedCa {
        namespace: ns.into(),
        name: name.into(),
        cert_pem: ca.cert.pem(),
        cert_der: ca.cert.der().to_vec(),
    }
}

impl SuiteCerts {
    /// Generates every object of the README's table.
    pub fn generate() -> Result<Self> {
        let s = ca("conformance CA S (upstream: self-signed)")?;
        let a = ca("conformance CA A (tls-validity-checks)")?;
        let b = ca("conformance CA B (tls-validity-checks per port)")?;
        let c = ca("conformance CA C (tls-checks)")?;
        let m = ca("conformance CA (mismatch)")?;
        let secrets = vec![
            leaf(&s, WEB_BACKEND, "certificate", &["*"], false)?,
            leaf(
                &s,
                INFRA,
                "tls-validity-checks-certificate",
                &["*", "*.org", "*.wildcard.org"],
                false,
            )?,
            leaf(
                &a,
                INFRA,
                "tls-validity-checks-client-certificate",
                &["client.example.org"],
                true,
            )?,
            leaf(
                &b,
                INFRA,
                "tls-validity-checks-per-port-client-certificate",
                &["per-port-client.example.org"],
                true,
            )?,
            leaf(
                &c,
                INFRA,
                "tls-checks-certificate",
                &[
                    "abc.example.com",
                    "spiffe://abc.example.com/test-identity",
                    "other.example.com",
                ],
                false,
            )?,
            leaf(
                &c,
                INFRA,
                "tls-checks-client-certificate",
                &["client.example.com"],
                true,
            )?,
            leaf(
                &c,
                INFRA,
                "tls-passthrough-checks-certificate",
                &["abc.example.com"],
                false,
            )?,
            leaf(
                &c,
                APP_BACKEND,
                "tls-passthrough-checks-certificate",
                &["abc.example.com"],
                false,
            )?,
            leaf(
                &c,
                INFRA,
                "tls-terminate-checks-certificate",
                &["tls.example.com"],
                false,
            )?,
        ];
        let config_maps = vec![
            ca_map(&s, WEB_BACKEND, "web-backend-cm"),
            ca_map(&a, INFRA, "tls-validity-checks-ca-certificate"),
            ca_map(&b, INFRA, "tls-validity-checks-per-port-ca-certificate"),
            ca_map(&c, INFRA, "tls-checks-ca-certificate"),
            ca_map(&m, INFRA, "mismatch-ca-certificate"),
        ];
        Ok(Self {
            secrets,
            config_maps,
        })
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&GeneratedSecret> {
        self.secrets
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// The `{namespace, name}` reference of a case (`ca_secret`, ...).
    pub fn secret_ref(&self, r: &Value) -> Result<&GeneratedSecret, String> {
        let ns = r.get("namespace").and_then(Value::as_str).unwrap_or(INFRA);
        let name = r
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("secret reference without a name: {r:?}"))?;
        self.secret(ns, name)
            .ok_or_else(|| format!("Secret {ns}/{name} is not generated by the runner"))
    }

    /// The Secrets as `kubernetes.io/tls` documents for the agent.
    pub fn secret_docs(&self) -> Vec<Value> {
        self.secrets
            .iter()
            .map(|s| {
                let mut data = serde_yaml::Mapping::new();
                data.insert("tls.crt".into(), s.cert_pem.clone().into());
                data.insert("tls.key".into(), s.key_pem.clone().into());
                let mut meta = serde_yaml::Mapping::new();
                meta.insert("name".into(), s.name.clone().into());
                meta.insert("namespace".into(), s.namespace.clone().into());
                let mut doc = serde_yaml::Mapping::new();
                doc.insert("apiVersion".into(), "v1".into());
                doc.insert("kind".into(), "Secret".into());
                doc.insert("metadata".into(), Value::Mapping(meta));
                doc.insert("type".into(), "kubernetes.io/tls".into());
                doc.insert("stringData".into(), Value::Mapping(data));
                Value::Mapping(doc)
            })
            .collect()
    }

    /// The CA ConfigMaps as documents for the agent.
    pub fn config_map_docs(&self) -> Vec<Value> {
        self.config_maps
            .iter()
            .map(|c| {
                let mut data = serde_yaml::Mapping::new();
                data.insert("ca.crt".into(), c.cert_pem.clone().into());
                let mut meta = serde_yaml::Mapping::new();
                meta.insert("name".into(), c.name.clone().into());
                meta.insert("namespace".into(), c.namespace.clone().into());
                let mut doc = serde_yaml::Mapping::new();
                doc.insert("apiVersion".into(), "v1".into());
                doc.insert("kind".into(), "ConfigMap".into());
                doc.insert("metadata".into(), Value::Mapping(meta));
                doc.insert("data".into(), Value::Mapping(data));
                Value::Mapping(doc)
            })
            .collect()
    }

    /// Trusts the CA of `trusted` (every generated CA when `None`).
    fn verifier(
        &self,
        trusted: Option<&GeneratedSecret>,
        provider: Arc<CryptoProvider>,
    ) -> Result<SuiteVerifier, String> {
        let mut roots = RootCertStore::empty();
        let cas: Vec<&Vec<u8>> = match trusted {
            Some(s) => vec![&s.ca_der],
            None => self.secrets.iter().map(|s| &s.ca_der).collect(),
        };
        for ca in cas {
            roots
                .add(CertificateDer::from(ca.clone()))
                .map_err(|e| format!("adding a CA: {e}"))?;
        }
        let names = self
            .secrets
            .iter()
            .map(|s| (s.cert_der.clone(), s.sans.clone()))
            .collect();
        Ok(SuiteVerifier {
            roots: Arc::new(roots),
            names: Arc::new(names),
            provider,
        })
    }

    /// A client configuration that trusts the CA of `trusted` (every
    /// generated CA when `None`), offers `client_cert` when asked, and
    /// announces `alpn`. The flag turns true when the server asks for the
    /// client certificate (only with `client_cert`).
    pub fn client_config(
        &self,
        trusted: Option<&GeneratedSecret>,
        client_cert: Option<&GeneratedSecret>,
        alpn: &[&[u8]],
    ) -> Result<(rustls::ClientConfig, Arc<AtomicBool>), String> {
        let asked = Arc::new(AtomicBool::new(false));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(self.verifier(trusted, provider.clone())?);
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match client_cert {
            Some(c) => {
                let key = rustls::sign::CertifiedKey::from_der(
                    vec![CertificateDer::from(c.cert_der.clone())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_der.clone())),
                    &rustls::crypto::ring::default_provider(),
                )
                .map_err(|e| format!("client certificate {}/{}: {e}", c.namespace, c.name))?;
                builder.with_client_cert_resolver(Arc::new(RecordingClientCert {
                    key: Arc::new(key),
                    asked: asked.clone(),
                }))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok((config, asked))
    }
}

/// Offers one client certificate and records that the server asked for it.
#[derive(Debug)]
struct RecordingClientCert {
    key: Arc<rustls::sign::CertifiedKey>,
    asked: Arc<AtomicBool>,
}

impl rustls::client::ResolvesClientCert for RecordingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Go's `crypto/x509` host name matching (`matchHostnames`): same number of
/// labels, compared case-insensitively, and a `*` first label of the pattern
/// matches any one label.
pub fn go_hostname_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let pattern = pattern.trim_end_matches('.');
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .enumerate()
            .all(|(i, (p, h))| (i == 0 && *p == "*") || p.eq_ignore_ascii_case(h))
}

/// webpki chain verification plus Go's name rules.
#[derive(Debug)]
struct SuiteVerifier {
    roots: Arc<RootCertStore>,
    /// Leaf DER → the SANs the runner gave it.
    names: Arc<BTreeMap<Vec<u8>, Vec<String>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SuiteVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let Some(sans) = self.names.get(end_entity.as_ref()) else {
            rustls::client::verify_server_name(&cert, server_name)?;
            return Ok(ServerCertVerified::assertion());
        };
        let host = server_name.to_str();
        if sans.iter().any(|p| go_hostname_matches(p, &host)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn verify(certs: &SuiteCerts, trusted: &str, host: &str) -> Result<(), rustls::Error> {
        let leaf = certs.secret(INFRA, trusted).unwrap();
        certs
            .verifier(Some(leaf), provider())
            .unwrap()
            .verify_server_cert(
                &CertificateDer::from(leaf.cert_der.clone()),
                &[],
                &ServerName::try_from(host.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn generated_certificates_have_the_sans_and_verify() {
        let certs = SuiteCerts::generate().unwrap();
        assert_eq!(certs.secrets.len(), 9);
        let v = certs
            .secret(INFRA, "tls-validity-checks-certificate")
            .unwrap();
        assert_eq!(v.sans, ["*", "*.org", "*.wildcard.org"]);
        let parsed = CertificateDer::from(v.cert_der.clone());
        let text = String::from_utf8_lossy(parsed.as_ref());
        assert!(text.contains("*.wildcard.org"), "SAN in the DER");
        // Chain to the kept CA and Go-style names.
        for host in [
            "example.org",
            "second-example.org",
            "third-example.wildcard.org",
        ] {
            verify(&certs, "tls-validity-checks-certificate", host).unwrap();
        }
        assert!(verify(&certs, "tls-validity-checks-certificate", "a.b.example.org").is_err());
        let t = certs.secret(INFRA, "tls-checks-certificate").unwrap();
        assert!(
            String::from_utf8_lossy(&t.cert_der).contains("spiffe://abc.example.com/test-identity")
        );
        verify(&certs, "tls-checks-certificate", "other.example.com").unwrap();
        assert!(verify(&certs, "tls-checks-certificate", "example.org").is_err());

        // A chain to a different CA does not verify.
        let (config, _) = certs
            .client_config(
                certs.secret(INFRA, "tls-checks-certificate"),
                None,
                &[b"h2"],
            )
            .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        let err = certs
            .verifier(certs.secret(INFRA, "tls-checks-certificate"), provider())
            .unwrap()
            .verify_server_cert(
                &CertificateDer::from(v.cert_der.clone()),
                &[],
                &ServerName::try_from("example.org").unwrap(),
                &[],
                UnixTime::now(),
            );
        assert!(err.is_err());

        // The Secret documents carry PEM the agent can parse.
        let docs = certs.secret_docs();
        assert_eq!(docs.len(), 9);
        let doc = &docs[1];
        assert_eq!(doc["type"].as_str(), Some("kubernetes.io/tls"));
        assert!(doc["stringData"]["tls.crt"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(doc["stringData"]["tls.key"]
            .as_str()
            .unwrap()
            .contains("PRIVATE KEY"));
        // Client certificates load into a client config, which records that
        // the server asked for one.
        let (config, asked) = certs
            .client_config(
                Some(v),
                certs.secret(INFRA, "tls-validity-checks-client-certificate"),
                &[],
            )
            .unwrap();
        assert!(!asked.load(Ordering::SeqCst));
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(config.client_auth_cert_resolver.resolve(&[], &[]).is_some());
        assert!(asked.load(Ordering::SeqCst));
    }

    #[test]
    fn go_hostname_rules() {
        assert!(go_hostname_matches("*.org", "example.org"));
        assert!(go_hostname_matches("*", "localhost"));
        assert!(!go_hostname_matches("*", "example.org"));
        assert!(go_hostname_matches("*.wildcard.org", "X.Wildcard.org"));
        assert!(!go_hostname_matches("*.wildcard.org", "wildcard.org"));
        assert!(go_hostname_matches("abc.example.com", "ABC.example.com."));
        assert!(!go_hostname_matches("a*.example.com", "ab.example.com"));
    }
}
