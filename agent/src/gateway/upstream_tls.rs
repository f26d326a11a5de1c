//! Connections to TLS backends: a connection pool per [`UpstreamTls`] of
//! the current snapshot and endpoint (ALPN h2 and http/1.1), and single
//! HTTP/1.1 TLS connections for protocol upgrades (`wss`).
//!
//! Requests to TLS backends carry the request's Host as URI authority (it
//! becomes HTTP/2's `:authority`); the pool's connector dials its endpoint
//! whatever the URI says.
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::Duration,
};

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::mirror::UpstreamBody;
use crate::snapshot::upstream_tls::UpstreamTls;

/// The pooled client of one TLS backend setting and endpoint.
pub type TlsClient = Client<HttpsConnector<FixedEndpoint>, UpstreamBody>;

/// A TCP connector that dials one endpoint, whatever the URI names.
#[derive(Clone)]
pub struct FixedEndpoint {
    http: HttpConnector,
    target: http::Uri,
}

type Tcp = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
type Connecting = Pin<Box<dyn Future<Output = Result<Tcp, super::BoxError>> + Send>>;

impl tower_service::Service<http::Uri> for FixedEndpoint {
    type Response = Tcp;
    type Error = super::BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<http::Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let connecting = tower_service::Service::call(&mut self.http, self.target.clone());
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// The snapshot's [`UpstreamTls`] (by address) and the endpoint.
type PoolKey = (usize, SocketAddr);

/// Pools keyed by the identity of the snapshot's [`UpstreamTls`] and the endpoint: a new
/// snapshot (a rotated CA or client certificate) gets fresh connections,
/// and pools of snapshots no longer in use are dropped.
#[derive(Default)]
pub struct TlsPools {
    pools: Mutex<HashMap<PoolKey, (Weak<UpstreamTls>, TlsClient)>>,
}

impl TlsPools {
    pub fn client(
        &self,
        tls: &Arc<UpstreamTls>,
        http: &HttpConnector,
        endpoint: SocketAddr,
    ) -> TlsClient {
        let key = (Arc::as_ptr(tls) as usize, endpoint);
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
            .enable_http1()
            .enable_http2()
            .wrap_connector(FixedEndpoint {
                http: http.clone(),
                target: endpoint_uri(endpoint),
            });
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

fn endpoint_uri(endpoint: SocketAddr) -> http::Uri {
    http::Uri::builder()
        .scheme("http")
        .authority(endpoint.to_string())
        .path_and_query("/")
        .build()
        .expect("a socket address is a valid authority")
}

/// `https` for TLS backends, `http` otherwise.
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
