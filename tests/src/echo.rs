//! An HTTP echo backend that answers the way the Gateway API conformance
//! suite's `echo-basic` does: a JSON description of the request it received.
//!
//! - body: `{"path", "host", "method", "proto", "headers": {Name: [values]},
//!   "namespace", "pod"}` with `Content-Type: application/json`;
//! - `X-Echo-Set-Header: Name1:value1,Name2:value2` sets response headers;
//! - `?delay=<duration>` (e.g. `500ms`, `2s`) delays the answer;
//! - `/echo-body` answers with the request body, byte for byte;
//! - `/retry/...?uuid=U&succeedAfter=N[&responseCode=C]` fails the first N
//!   requests for `U` (status `C`, or the connection is dropped without an
//!   answer when no `responseCode` is given), then echoes;
//! - `/ext-auth/...` is a demo external authorization service: 200 with
//!   `X-Auth-User: partner` when the request has `Authorization: Bearer
//!   letmein`, else 401 with `WWW-Authenticate: Bearer realm="partners"`;
//! - `/ws` with a WebSocket handshake: echoes every text and binary message
//!   (see [`crate::ws`]);
//! - served over TLS ([`serve_tls`]), the body also has `tls: {serverName,
//!   negotiatedProtocol, peerCertificates: [PEM]}` as echo-basic reports it;
//! - one log line per request on stderr: `Echoing back request made to <uri> to client (<peer>)`,
//!   also recorded in an optional [`RequestLog`] (mirror checks read it).
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde::Serialize;
use tokio::net::TcpListener;

/// Who this echo server claims to be (the pod and namespace fields).
#[derive(Debug, Clone)]
pub struct Identity {
    pub pod: String,
    pub namespace: String,
}

/// The JSON body of an echo response.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Echo {
    pub path: String,
    pub host: String,
    pub method: String,
    pub proto: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub namespace: String,
    pub pod: String,
    /// Set when the request came over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EchoTls>,
}

/// The TLS side of an echoed request.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct EchoTls {
    /// SNI sent by the client (`""` without).
    pub server_name: String,
    pub negotiated_protocol: String,
    /// The client's certificates, PEM.
    pub peer_certificates: Vec<String>,
}

impl EchoTls {
    fn of(conn: &rustls::ServerConnection) -> Self {
        Self {
            server_name: conn.server_name().unwrap_or("").to_owned(),
            negotiated_protocol: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            peer_certificates: conn
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| pem("CERTIFICATE", c.as_ref()))
                .collect(),
        }
    }
}

/// PEM armour (base64 in 64-character lines).
fn pem(label: &str, der: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                A[(v >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Go's canonical header form (`x-forwarded-for` → `X-Forwarded-For`), which
/// is how the upstream echo server reports header names.
pub fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

fn proto(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Parses the durations the conformance suite sends (`100ms`, `1s`, `1.5s`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))?;
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "us" | "µs" => n / 1_000_000.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn echo(id: &Identity, req: &Request<Incoming>, tls: Option<&EchoTls>) -> Echo {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        if name == http::header::HOST {
            continue;
        }
        headers
            .entry(canonical_header(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    Echo {
        tls: tls.cloned(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.to_string()),
        host,
        method: req.method().to_string(),
        proto: proto(req.version()).to_owned(),
        headers,
        namespace: id.namespace.clone(),
        pod: id.pod.clone(),
    }
}

/// Request-URIs an echo server received, in order (shared with the caller).
#[derive(Debug, Default)]
pub struct RequestLog(Mutex<Vec<String>>);

impl RequestLog {
    pub fn push(&self, uri: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(uri);
        }
    }

    /// How many requests for exactly `uri` were received so far.
    pub fn count(&self, uri: &str) -> usize {
        self.0
            .lock()
            .map(|v| v.iter().filter(|u| *u == uri).count())
            .unwrap_or(0)
    }

    /// A copy of the request-URIs received so far.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Per-server state: the request log and the `/retry` attempt counters.
#[derive(Default)]
struct State {
    log: Option<Arc<RequestLog>>,
    quiet: bool,
    retries: Mutex<HashMap<String, u32>>,
}

fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v)
        })
    })
}

/// What `/retry` asks for: `None` to echo, `Some(None)` to drop the
/// connection, `Some(Some(code))` to answer with `code`.
fn retry_failure(state: &State, req: &Request<Incoming>) -> Option<Option<u16>> {
    if !req.uri().path().starts_with("/retry") {
        return None;
    }
    let uuid = query_param(req, "uuid")?;
    let succeed_after: u32 = query_param(req, "succeedAfter")?.parse().ok()?;
    let code = query_param(req, "responseCode").and_then(|c| c.parse::<u16>().ok());
    let mut counts = state.retries.lock().ok()?;
    let seen = counts.entry(uuid.to_owned()).or_insert(0);
    *seen += 1;
    (*seen <= succeed_after).then_some(code)
}

async fn handle(
    id: Arc<Identity>,
    state: Arc<State>,
    peer: SocketAddr,
    tls: Option<Arc<EchoTls>>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.to_string());
    if !state.quiet {
        eprintln!("Echoing back request made to {uri} to client ({peer})");
    }
    if let Some(log) = &state.log {
        log.push(uri);
    }
    if req.uri().path() == "/ws" {
        if let Some(resp) = websocket_upgrade(&mut req) {
            return Ok(resp);
        }
    }
    if req.uri().path().starts_with("/ext-auth/") {
        return Ok(ext_auth_decision(&req));
    }
    if req.uri().path() == "/echo-body" {
        use http_body_util::BodyExt as _;
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        return Ok(Response::new(Full::new(body)));
    }
    match retry_failure(&state, &req) {
        None => {}
        Some(Some(code)) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"retry\n")));
            *resp.status_mut() =
                http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(resp);
        }
        // An error from the service makes hyper close the connection unanswered.
        Some(None) => return Err(std::io::Error::other("retry: dropping the connection")),
    }
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay=")))
        .and_then(parse_duration);
    if let Some(d) = delay {
        tokio::time::sleep(d.min(Duration::from_secs(60))).await;
    }
    let body = serde_json::to_vec(&echo(&id, &req, tls.as_deref())).expect("echo serializes");
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(set) = req
        .headers()
        .get("x-echo-set-header")
        .and_then(|v| v.to_str().ok())
    {
        for pair in set.split(',').filter(|p| !p.is_empty()) {
            if let Some((n, v)) = pair.split_once(':') {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(n.trim().as_bytes()),
                    HeaderValue::from_str(v.trim()),
                ) {
                    resp.headers_mut().append(n, v);
                }
            }
        }
    }
    Ok(resp)
}

/// The demo authorization service's answer (see the module doc).
fn ext_auth_decision(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let allowed = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == b"Bearer letmein");
    if allowed {
        let mut resp = Response::new(Full::new(Bytes::new()));
        resp.headers_mut()
            .insert("x-auth-user", HeaderValue::from_static("partner"));
        return resp;
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(b"partner token required\n")));
    *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"partners\""),
    );
    resp
}

/// Answers a WebSocket handshake with 101 and echoes messages on the
/// upgraded connection; `None` when the request is not a handshake.
fn websocket_upgrade(req: &mut Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let header = |name: http::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let wants = header(http::header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let key = header(http::header::SEC_WEBSOCKET_KEY)?;
    if !wants {
        return None;
    }
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        while let Ok(m) = crate::ws::read_message(&mut io).await {
            let (opcode, payload) = match m.opcode {
                crate::ws::TEXT | crate::ws::BINARY => (m.opcode, m.payload),
                crate::ws::PING => (crate::ws::PONG, m.payload),
                crate::ws::CLOSE => {
                    let _ = crate::ws::write_frame(&mut io, crate::ws::CLOSE, &[], None).await;
                    return;
                }
                _ => continue,
            };
            if crate::ws::write_frame(&mut io, opcode, &payload, None)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&crate::ws::accept_key(&key)).ok()?,
    );
    Some(resp)
}

/// Serves echo responses on `listener` until the task is dropped/aborted.
pub async fn serve(listener: TcpListener, id: Identity) {
    serve_with(listener, id, None, false).await
}

/// Like [`serve`], also recording every request-URI in `log`; `quiet` drops
/// the per-request stderr line (the conformance runner has its own log).
pub async fn serve_with(
    listener: TcpListener,
    id: Identity,
    log: Option<Arc<RequestLog>>,
    quiet: bool,
) {
    serve_inner(listener, id, log, quiet, None).await
}

/// Like [`serve_with`] over TLS with `config` (its certificate, ALPN and
/// client-certificate policy); the echo body reports the TLS side.
pub async fn serve_tls(
    listener: TcpListener,
    id: Identity,
    log: Option<Arc<RequestLog>>,
    quiet: bool,
    config: Arc<rustls::ServerConfig>,
) {
    serve_inner(listener, id, log, quiet, Some(config)).await
}

async fn serve_inner(
    listener: TcpListener,
    id: Identity,
    log: Option<Arc<RequestLog>>,
    quiet: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let id = Arc::new(id);
    let state = Arc::new(State {
        log,
        quiet,
        ..State::default()
    });
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let id = id.clone();
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = |tls: Option<Arc<EchoTls>>| {
                service_fn(move |req| {
                    let id = id.clone();
                    let state = state.clone();
                    let tls = tls.clone();
                    async move { handle(id, state, peer, tls, req).await }
                })
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc(None))
                        .await;
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return; // e.g. no or a wrong client certificate
                    };
                    let info = Arc::new(EchoTls::of(stream.get_ref().1));
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc(Some(info)))
                        .await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_and_durations() {
        assert_eq!(canonical_header("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_header("HOST"), "Host");
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("abc"), None);
    }
}
