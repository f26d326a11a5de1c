//! The HTTP client side: one round trip to a Gateway listener on loopback.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::compare::Observed;

/// HTTP/1.1 (Go-style title-case header names) and h2c prior-knowledge clients.
#[derive(Clone)]
pub struct Clients {
    http1: Client<HttpConnector, Full<Bytes>>,
    h2c: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
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
}

impl Clients {
    pub fn new(timeout: Duration) -> Self {
        let mut http1 = Client::builder(TokioExecutor::new());
        http1
            .http1_title_case_headers(true)
            .pool_idle_timeout(Duration::from_secs(5));
        let mut h2c = Client::builder(TokioExecutor::new());
        h2c.http2_only(true);
        Self {
            http1: http1.build_http(),
            h2c: h2c.build_http(),
            timeout,
        }
    }

    pub async fn round_trip(&self, req: &Outgoing) -> Result<Observed, String> {
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
        let client = if req.h2c { &self.h2c } else { &self.http1 };
        let fut = async {
            let resp = client.request(request).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                format!("request to {} failed: {msg}", req.dial)
            })?;
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
