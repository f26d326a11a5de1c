//! The HTTP client side: one round trip to a Gateway listener on loopback.
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::{cases::Request, certs::SuiteCerts, compare::Observed};

/// HTTP/1.1 (Go-style title-case header names) and h2c prior-knowledge
/// (a connection per request) clients.
#[derive(Clone)]
pub struct Clients {
    http1: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    certs: Option<Arc<SuiteCerts>>,
}

/// The error of a case with `client_cert_secret` when the gateway did not
/// ask for a client certificate (the case notes require that it does).
pub const NO_CLIENT_CERT_REQUEST: &str =
    "the gateway did not request a client certificate during the TLS handshake";

/// TLS parameters of an `https` case.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsRequest {
    /// Server name sent (SNI) and verified.
    pub sni: String,
    /// HTTP/2 (ALPN `h2`) instead of HTTP/1.1 (ALPN `http/1.1`).
    pub h2: bool,
    /// Secret whose CA the client trusts (every generated CA when unset).
    pub ca_secret: Option<serde_yaml::Value>,
    /// Secret offered as client certificate when the server asks.
    pub client_cert_secret: Option<serde_yaml::Value>,
}

/// Whether a case goes over TLS and with what: `scheme: https` or
/// `protocol: H2` (HTTP/2 over TLS). SNI is the case's `sni`, else the
/// request host without its port.
pub fn tls_request(req: &Request, host: &str) -> Option<TlsRequest> {
    let h2 = req.protocol.as_deref() == Some("H2");
    if req.scheme() != "https" && !h2 {
        return None;
    }
    let sni = req.sni.clone().unwrap_or_else(|| host_without_port(host));
    Some(TlsRequest {
        sni,
        h2,
        ca_secret: req.ca_secret.clone(),
        client_cert_secret: req.client_cert_secret.clone(),
    })
}

fn host_without_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
        _ => host.to_owned(),
    }
}

/// One request as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub dial: SocketAddr,
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub h2c: bool,
    /// `Some` for HTTPS.
    pub tls: Option<TlsRequest>,
}

impl Clients {
    pub fn new(timeout: Duration) -> Self {
        let mut http1 = Client::builder(TokioExecutor::new());
        http1
            .http1_title_case_headers(true)
            .pool_idle_timeout(Duration::from_secs(5));
        Self {
            http1: http1.build_http(),
            timeout,
            certs: None,
        }
    }

    /// With the suite's certificates, for HTTPS cases.
    pub fn with_certs(mut self, certs: Arc<SuiteCerts>) -> Self {
        self.certs = Some(certs);
        self
    }

    /// One HTTPS round trip on a fresh connection.
    async fn tls_round_trip(
        &self,
        req: &Outgoing,
        tls: &TlsRequest,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let certs = self
            .certs
            .as_ref()
            .ok_or("HTTPS case but the runner has no certificates")?;
        let trusted = tls
            .ca_secret
            .as_ref()
            .map(|r| certs.secret_ref(r))
            .transpose()?;
        let client_cert = tls
            .client_cert_secret
            .as_ref()
            .map(|r| certs.secret_ref(r))
            .transpose()?;
        let alpn: &[&[u8]] = if tls.h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let (config, asked) = certs.client_config(trusted, client_cert, alpn)?;
        let name = rustls::pki_types::ServerName::try_from(tls.sni.clone())
            .map_err(|e| format!("SNI {:?}: {e}", tls.sni))?;
        let tcp = tokio::net::TcpStream::connect(req.dial)
            .await
            .map_err(|e| format!("connecting to {}: {e}", req.dial))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {} (SNI {}): {e}", req.dial, tls.sni))?;
        if client_cert.is_some() && !asked.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(NO_CLIENT_CERT_REQUEST.into());
        }
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = hyper_util::rt::TokioIo::new(stream);
        let mut b = http::Request::builder().method(req.method.as_str());
        if tls.h2 {
            if alpn.as_deref() != Some(b"h2") {
                return Err(format!(
                    "server did not negotiate h2 (ALPN {:?})",
                    alpn.map(|a| String::from_utf8_lossy(&a).into_owned())
                ));
            }
            // :authority carries the host.
            b = b.uri(format!("https://{}{}", req.host, req.path));
        } else {
            b = b
                .uri(req.path.as_str())
                .header(http::header::HOST, &req.host);
        }
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let request = b
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot build request {}: {e}", req.path))?;
        let resp = if tls.h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2 handshake: {}", chain(&e)))?;
            tokio::spawn(conn);
            send.send_request(request).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::Builder::new()
                .title_case_headers(true)
                .handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {}", chain(&e)))?;
            tokio::spawn(conn);
            send.send_request(request).await
        };
        resp.map_err(|e| format!("request to {} failed: {}", req.dial, chain(&e)))
    }

    /// h2c with prior knowledge as Go's client sends it (what upstream's
    /// runner uses): the host travels as `:authority`, with no `Host`
    /// header — a server may refuse a request whose `Host` names another
    /// authority than `:authority` (RFC 9113 §8.3.1), and Sluice does.
    async fn h2c_round_trip(
        &self,
        req: &Outgoing,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let tcp = tokio::net::TcpStream::connect(req.dial)
            .await
            .map_err(|e| format!("connecting to {}: {e}", req.dial))?;
        let mut b = http::Request::builder()
            .method(req.method.as_str())
            .uri(format!("http://{}{}", req.host, req.path));
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let request = b
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot build request {}: {e}", req.path))?;
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .map_err(|e| format!("HTTP/2 handshake: {}", chain(&e)))?;
        tokio::spawn(conn);
        send.send_request(request)
            .await
            .map_err(|e| format!("request to {} failed: {}", req.dial, chain(&e)))
    }

    pub async fn round_trip(&self, req: &Outgoing) -> Result<Observed, String> {
        if let Some(tls) = &req.tls {
            let fut = async {
                let resp = self.tls_round_trip(req, tls).await?;
                observe(resp).await
            };
            return match tokio::time::timeout(self.timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "request to {} timed out after {:?}",
                    req.dial, self.timeout
                )),
            };
        }
        if req.h2c {
            let fut = async {
                let resp = self.h2c_round_trip(req).await?;
                observe(resp).await
            };
            return match tokio::time::timeout(self.timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "request to {} timed out after {:?}",
                    req.dial, self.timeout
                )),
            };
        }
        let uri = format!("http://{}{}", req.dial, req.path);
        let mut b = http::Request::builder()
            .method(req.method.as_str())
            .uri(&uri)
            .header(http::header::HOST, &req.host);
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let request = b
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot build request {uri}: {e}"))?;
        let client = &self.http1;
        let fut = async {
            let resp = client
                .request(request)
                .await
                .map_err(|e| format!("request to {} failed: {}", req.dial, chain(&e)))?;
            observe(resp).await
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "request to {} timed out after {:?}",
                req.dial, self.timeout
            )),
        }
    }
}

/// An error with its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

async fn observe<B>(resp: http::Response<B>) -> Result<Observed, String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let status = resp.status().as_u16();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in resp.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the response body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Observed {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(yaml: &str) -> Request {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn plain_http_has_no_tls() {
        assert_eq!(tls_request(&req("{path: /}"), "example.org"), None);
        assert_eq!(
            tls_request(&req("{path: /, protocol: H2C_PRIOR_KNOWLEDGE}"), "x"),
            None
        );
    }

    #[test]
    fn sni_is_the_case_field_or_the_host_without_port() {
        let t = tls_request(&req("{scheme: https, host: example.org}"), "example.org").unwrap();
        assert_eq!(t.sni, "example.org");
        assert!(!t.h2);
        let t = tls_request(&req("{scheme: https}"), "127.0.10.1:8443").unwrap();
        assert_eq!(t.sni, "127.0.10.1");
        let t = tls_request(
            &req("{scheme: https, host: second-example.org, sni: example.org, protocol: H2}"),
            "second-example.org",
        )
        .unwrap();
        assert_eq!(t.sni, "example.org");
        assert!(t.h2);
        assert_eq!(host_without_port("[::1]:443"), "::1");
        assert_eq!(host_without_port("a.example:80"), "a.example");
    }

    #[test]
    fn h2_implies_tls_and_secrets_are_passed_on() {
        let t = tls_request(
            &req("{protocol: H2, ca_secret: {namespace: ns, name: c}, client_cert_secret: {name: k}}"),
            "h",
        )
        .unwrap();
        assert!(t.h2);
        assert_eq!(t.ca_secret.unwrap()["name"].as_str(), Some("c"));
        assert_eq!(t.client_cert_secret.unwrap()["name"].as_str(), Some("k"));
    }
}
