//! TLS towards backends (BackendTLSPolicy): the rustls client config of a
//! backend — trusted CAs, the names its certificate must carry, the
//! Gateway's client certificate — built by the control plane once per
//! (Gateway, policy) and used by the data path for every connection.
use std::{fmt, sync::Arc};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        ResolvesClientCert, WebPkiServerVerifier,
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
    sign::CertifiedKey,
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::{ObjectRef, SubjectAltName};

/// How connections to one TLS backend are made.
pub struct UpstreamTls {
    /// The BackendTLSPolicy this comes from (for logs).
    pub policy: ObjectRef,
    /// SNI (`validation.hostname`).
    pub server_name: ServerName<'static>,
    /// Without ALPN: the connection pool sets the protocols it speaks.
    pub config: Arc<ClientConfig>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("policy", &self.policy)
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Errors building an upstream TLS config.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("no usable CA certificate")]
    NoRoots,
    #[error("invalid hostname {0:?}")]
    Hostname(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

impl UpstreamTls {
    /// TLS 1.2/1.3 with ring; the certificate must chain to `roots` and carry
    /// `hostname` — or, when `subject_alt_names` are given, one of them.
    pub fn new(
        policy: ObjectRef,
        roots: RootCertStore,
        hostname: &str,
        subject_alt_names: Vec<SubjectAltName>,
        client_cert: Option<Arc<CertifiedKey>>,
    ) -> Result<Self, UpstreamTlsError> {
        if roots.is_empty() {
            return Err(UpstreamTlsError::NoRoots);
        }
        let server_name = ServerName::try_from(hostname.to_owned())
            .map_err(|_| UpstreamTlsError::Hostname(hostname.to_owned()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()?;
        let verifier = Arc::new(NameVerifier {
            webpki,
            subject_alt_names,
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match client_cert {
            Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(key))),
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            policy,
            server_name,
            config: Arc::new(config),
        })
    }

    /// The config with an ALPN list (the pool sets its own; `http/1.1` for
    /// upgrades).
    pub fn config_with_alpn(&self, alpn: &[&[u8]]) -> ClientConfig {
        let mut c = (*self.config).clone();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        c
    }
}

/// Always offers the Gateway's client certificate.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// webpki chain verification; the name check is against the SNI hostname,
/// or against `subjectAltNames` when the policy lists some (the Gateway API
/// says they replace the hostname check).
#[derive(Debug)]
struct NameVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    subject_alt_names: Vec<SubjectAltName>,
}

fn wrong_name(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

impl ServerCertVerifier for NameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |name: &ServerName<'_>| {
            self.webpki
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        };
        if self.subject_alt_names.is_empty() {
            return verify(server_name);
        }
        // The chain is checked before the name: a wrong-name error means the
        // chain is trusted and only the name is left to decide.
        match verify(server_name) {
            Ok(v) => return Ok(v),
            Err(e) if wrong_name(&e) => {}
            Err(e) => return Err(e),
        }
        for san in &self.subject_alt_names {
            match san {
                SubjectAltName::Hostname(h) => {
                    let Ok(name) = ServerName::try_from(h.as_str()) else {
                        continue;
                    };
                    match verify(&name) {
                        Ok(v) => return Ok(v),
                        Err(e) if wrong_name(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
                SubjectAltName::Uri(u) => {
                    if san_uris(end_entity.as_ref()).contains(&u.as_bytes()) {
                        return Ok(ServerCertVerified::assertion());
                    }
                }
            }
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// One DER TLV: (tag, contents, rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The URI entries of a certificate's subjectAltName extension (webpki
/// only checks DNS names and IP addresses).
fn san_uris(cert: &[u8]) -> Vec<&[u8]> {
    const SAN_OID: [u8; 3] = [0x55, 0x1d, 0x11];
    let walk = || -> Option<Vec<&[u8]>> {
        let (_, cert, _) = tlv(cert)?; // Certificate
        let (_, mut tbs, _) = tlv(cert)?; // TBSCertificate
        while !tbs.is_empty() {
            let (tag, content, rest) = tlv(tbs)?;
            tbs = rest;
            if tag != 0xa3 {
                continue; // [3] extensions
            }
            let (_, mut exts, _) = tlv(content)?;
            while !exts.is_empty() {
                let (_, ext, rest) = tlv(exts)?;
                exts = rest;
                let (_, oid, fields) = tlv(ext)?;
                if oid != SAN_OID {
                    continue;
                }
                let (mut tag, mut value, rest) = tlv(fields)?;
                if tag == 0x01 {
                    // The optional critical flag comes first.
                    (tag, value, _) = tlv(rest)?;
                }
                if tag != 0x04 {
                    return None;
                }
                let (_, mut names, _) = tlv(value)?;
                let mut out = Vec::new();
                while !names.is_empty() {
                    let (tag, name, rest) = tlv(names)?;
                    names = rest;
                    if tag == 0x86 {
                        out.push(name); // [6] uniformResourceIdentifier
                    }
                }
                return Some(out);
            }
        }
        Some(Vec::new())
    };
    walk().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_uri_sans_only() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::Ia5String::try_from("spiffe://a.example.com/id").unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let uris = san_uris(cert.der());
        assert_eq!(uris, vec![b"spiffe://a.example.com/id".as_slice()]);
        assert!(
            san_uris(b"\x30\x03\x02\x01").is_empty(),
            "garbage is no URI"
        );
    }
}
