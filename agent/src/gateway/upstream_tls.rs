//! TLS to backends (BackendTLSPolicy): single HTTP/1.1 TLS connections for
//! protocol upgrades (`wss`) and what the logs say about TLS endpoints.
//! Pooled TLS connections (ALPN h2 or http/1.1) are [`super::pool`]'s;
//! requests to TLS backends carry the request's Host as HTTP/2
//! `:authority`, and the connection is made to the endpoint whatever the
//! Host says.
use std::{net::SocketAddr, sync::Arc};

use crate::snapshot::upstream_tls::UpstreamTls;

/// A TLS connection for an HTTP/1.1 upgrade (ALPN http/1.1 only).
pub async fn connect_for_upgrade(
    tls: &UpstreamTls,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(tls.config_with_alpn(&[b"http/1.1"])));
    connector.connect(tls.server_name.clone(), tcp).await
}

/// An error and its causes on one line: the TLS reason (unknown issuer,
/// wrong name) sits at the bottom of hyper's "client error (Connect)".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// For logs: the endpoint and, for TLS backends, the policy.
pub fn describe(endpoint: SocketAddr, tls: Option<&Arc<UpstreamTls>>) -> String {
    match tls {
        Some(t) => format!(
            "{endpoint} (TLS {}, BackendTLSPolicy {})",
            t.server_name.to_str(),
            t.policy
        ),
        None => endpoint.to_string(),
    }
}
