//! The small HTTP client the stores share (Consul, the etcd v3 JSON gateway,
//! the Vault API): plain HTTP or TLS (rustls, a CA file or the platform
//! roots, an optional client certificate), whole-body requests with a
//! deadline, and streamed responses for etcd watches.
use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::{SourceError, StoreAddr};

/// Files for TLS to a store (`consuls://`, `etcds://`, `vaults://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle (PEM) the server certificate must chain to; `None`: the
    /// platform's CA bundle.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM) for stores that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as text, for error messages (cut short).
    pub fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        let s = s.trim();
        let short: String = s.chars().take(300).collect();
        if short.len() < s.len() {
            format!("{short}…")
        } else {
            short
        }
    }
}

/// A client for one store's base address.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .finish()
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|source| SourceError::File {
        path: path.clone(),
        source,
    })
}

fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, SourceError> {
    let tls_err = |m: String| SourceError::Tls(m);
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(path) => {
            let pem = read(path)?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(tls_err(format!(
                    "{}: no PEM CERTIFICATE block",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots);
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| tls_err(format!("{}: {e}", cert.display())))?;
            let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| tls_err(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls_err(e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(tls_err(
            "a client certificate needs both a certificate and a key file".into(),
        )),
    }
}

impl HttpClient {
    /// A client for `addr` (TLS when the address says so).
    pub fn new(addr: &StoreAddr, tls: &TlsFiles) -> Result<Self, SourceError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(3)));
        http.set_nodelay(true);
        // Stores are long-lived peers; keepalive notices a dead one under a
        // long-poll sooner than the poll's deadline.
        http.set_keepalive(Some(Duration::from_secs(15)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(tls)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            base: format!(
                "{}://{}",
                if addr.tls { "https" } else { "http" },
                addr.authority()
            ),
            client,
        })
    }

    /// `scheme://host:port` of the store.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, SourceError> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if !body.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        req.body(Full::new(body))
            .map_err(|e| SourceError::Request(format!("{path}: {e}")))
    }

    /// Sends a request and reads the whole response within `deadline`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        deadline: Duration,
    ) -> Result<Reply, SourceError> {
        let req = self.build(method, path, headers, body)?;
        let what = format!("{}{}", self.base, strip_query(path));
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| SourceError::Unreachable(format!("{what}: {}", chain(&e))))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| SourceError::Unreachable(format!("{what}: {}", chain(&e))))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(deadline, fut).await.map_err(|_| {
            SourceError::Unreachable(format!("{what}: no answer within {deadline:?}"))
        })?
    }

    /// Sends a request and returns the response with its body unread (a
    /// stream: etcd watches).
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        deadline: Duration,
    ) -> Result<http::Response<Incoming>, SourceError> {
        let req = self.build(method, path, headers, body)?;
        let what = format!("{}{path}", self.base);
        tokio::time::timeout(deadline, self.client.request(req))
            .await
            .map_err(|_| {
                SourceError::Unreachable(format!("{what}: no answer within {deadline:?}"))
            })?
            .map_err(|e| SourceError::Unreachable(format!("{what}: {}", chain(&e))))
    }
}

/// Tokens travel in query strings nowhere, but keep logs short.
fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// An error with its causes (hyper's errors say little on their own).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved
/// characters stay; `/` stays when `keep_slash`, for Consul keys).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_and_optionally_slashes() {
        assert_eq!(encode("sluice/a b.yaml", true), "sluice/a%20b.yaml");
        assert_eq!(encode("a/b?c", false), "a%2Fb%3Fc");
    }
}
