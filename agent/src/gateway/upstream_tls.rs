//! Connections to TLS backends: a connection pool per [`UpstreamTls`] of
//! the current snapshot (HTTP/1.1), and single HTTP/1.1 TLS connections for
//! protocol upgrades (`wss`).
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::mirror::UpstreamBody;
use crate::snapshot::upstream_tls::UpstreamTls;

/// The pooled client of one TLS backend setting.
pub type TlsClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Pools keyed by the identity of the snapshot's [`UpstreamTls`]: a new
/// snapshot (a rotated CA or client certificate) gets fresh connections,
/// and pools of snapshots no longer in use are dropped.
#[derive(Default)]
pub struct TlsPools {
    pools: Mutex<HashMap<usize, (Weak<UpstreamTls>, TlsClient)>>,
}

impl TlsPools {
    pub fn client(&self, tls: &Arc<UpstreamTls>, http: &HttpConnector) -> TlsClient {
        let key = Arc::as_ptr(tls) as usize;
        let mut pools = self.pools.lock().expect("tls pools lock");
        if let Some((weak, client)) = pools.get(&key) {
            if weak.upgrade().is_some_and(|t| Arc::ptr_eq(&t, tls)) {
                return client.clone();
            }
        }
        pools.retain(|_, (weak, _)| weak.strong_count() > 0);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.config_with_alpn(&[]))
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(tls.server_name.clone()))
            // HTTP/1.1 only: the pooled client dials the URI authority (the
            // endpoint), which HTTP/2 would also send as :authority instead
            // of the request's Host.
            .enable_http1()
            .wrap_connector(http.clone());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        pools.insert(key, (Arc::downgrade(tls), client.clone()));
        client
    }
}

/// A TLS connection for an HTTP/1.1 upgrade (ALPN http/1.1 only).
pub async fn connect_for_upgrade(
    tls: &UpstreamTls,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(tls.config_with_alpn(&[b"http/1.1"])));
    connector.connect(tls.server_name.clone(), tcp).await
}

/// `https://endpoint` for TLS backends, `http://endpoint` otherwise.
pub fn scheme(tls: Option<&Arc<UpstreamTls>>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
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
