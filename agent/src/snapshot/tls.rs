//! TLS termination state of a shard port: a rustls server config whose
//! certificate is picked by SNI among the HTTPS listeners sharing the port.
//! Built with the snapshot, so a new snapshot (a rotated Secret) is used by
//! the next handshake while the listening socket stays as it is.
use std::{fmt, sync::Arc};

use rustls::{
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ClientHello, ResolvesServerCert,
    },
    sign::CertifiedKey,
    DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::config::Hostname;

/// ALPN protocols offered downstream, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Certificates of the HTTPS listeners on one port.
pub struct SniResolver {
    listeners: Vec<(Option<Hostname>, Arc<CertifiedKey>)>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.listeners.iter().map(|(h, _)| h))
            .finish()
    }
}

impl SniResolver {
    pub fn new(listeners: Vec<(Option<Hostname>, Arc<CertifiedKey>)>) -> Self {
        Self { listeners }
    }

    /// The certificate for a server name (lower-case; `""` without SNI): the
    /// most specific listener hostname covering it, as for request routing.
    pub fn pick(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        self.listeners
            .iter()
            .filter(|(h, _)| h.as_ref().is_none_or(|h| h.matches(server_name)))
            .max_by_key(|(h, _)| listener_specificity(h.as_ref()))
            .map(|(_, k)| k)
    }
}

/// Ordering of listener hostnames by how specific they are (catch-all <
/// wildcard, longer suffix first < exact).
pub fn listener_specificity(h: Option<&Hostname>) -> (u8, usize) {
    match h {
        None => (0, 0),
        Some(Hostname::Wildcard(s)) => (1, s.len()),
        Some(Hostname::Exact(_)) => (2, 0),
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().unwrap_or("").to_ascii_lowercase();
        self.pick(&name).cloned()
    }
}

/// The server config of a TLS port: TLS 1.2 and 1.3 only, ring crypto,
/// certificates by SNI, ALPN h2 and http/1.1 when it serves `http` (none for
/// TLS Terminate listeners, which relay bytes); with `client_auth`, clients
/// are asked for a certificate (frontend client-certificate validation).
pub fn server_config(
    resolver: SniResolver,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
    http: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_auth {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    if http {
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    }
    Ok(Arc::new(config))
}

/// `AllowInsecureFallback`: the client is asked for a certificate, but one
/// that is missing or does not chain to the CAs is let through (the Gateway
/// API mode for migrating clients to mTLS). The handshake signature is
/// still checked, so a presented certificate's key must be held.
#[derive(Debug)]
pub struct InsecureFallback {
    inner: Arc<dyn ClientCertVerifier>,
}

impl InsecureFallback {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for InsecureFallback {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::debug!(error = %e, "client certificate not valid; let through (AllowInsecureFallback)");
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod alpn_tests {
    use super::*;

    #[test]
    fn only_http_ports_offer_alpn() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = server_config(SniResolver::new(Vec::new()), None, true).unwrap();
        assert_eq!(http.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let relay = server_config(SniResolver::new(Vec::new()), None, false).unwrap();
        assert!(relay.alpn_protocols.is_empty());
    }
}
