//! A gRPC echo backend and a minimal gRPC client, both over cleartext
//! HTTP/2 (h2c, prior knowledge), speaking the upstream conformance echo
//! service `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`.
//!
//! The backend behaves like upstream `echo-basic` with `GRPC_ECHO_SERVER=1`:
//! `Echo` and `EchoTwo` answer an `EchoResponse` whose `assertions` carry
//! the fully qualified method, the request headers, the `:authority` and
//! the pod name and namespace; `EchoThree` (and any other path) answers
//! `UNIMPLEMENTED`. The few protobuf fields are encoded by hand (field
//! numbers from upstream's `grpcecho.proto`), so no codegen is needed.
use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use crate::echo::Identity;

/// The echo service's fully qualified name.
pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// gRPC status codes by their upstream (`codes.Code.String()`) names.
pub const CODES: &[(&str, u32)] = &[
    ("OK", 0),
    ("Canceled", 1),
    ("Unknown", 2),
    ("InvalidArgument", 3),
    ("DeadlineExceeded", 4),
    ("NotFound", 5),
    ("AlreadyExists", 6),
    ("PermissionDenied", 7),
    ("ResourceExhausted", 8),
    ("FailedPrecondition", 9),
    ("Aborted", 10),
    ("OutOfRange", 11),
    ("Unimplemented", 12),
    ("Internal", 13),
    ("Unavailable", 14),
    ("DataLoss", 15),
    ("Unauthenticated", 16),
];

/// The code of a status name (`Unimplemented`), or of a number.
pub fn code_of(name: &str) -> Option<u32> {
    CODES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
        .or_else(|| name.parse().ok())
}

/// The name of a status code (`Code(99)` when unknown).
pub fn code_name(code: u32) -> String {
    CODES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("Code({code})"), |(n, _)| (*n).to_owned())
}

// ---------------------------------------------------------------------------
// Protobuf, by hand: only varints and length-delimited fields occur.

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_bytes(buf: &mut BytesMut, field: u32, value: &[u8]) {
    put_varint(buf, (u64::from(field) << 3) | 2);
    put_varint(buf, value.len() as u64);
    buf.put_slice(value);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.first()?;
        buf.advance(1);
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message: `(field number, bytes)` for length-delimited
/// fields; varint and fixed fields are skipped.
fn fields(mut buf: &[u8]) -> Result<Vec<(u32, &[u8])>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = get_varint(&mut buf).ok_or("truncated protobuf key")?;
        let field = (key >> 3) as u32;
        match key & 7 {
            0 => {
                get_varint(&mut buf).ok_or("truncated protobuf varint")?;
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Err("truncated protobuf fixed field".into());
                }
                buf.advance(n);
            }
            2 => {
                let len = get_varint(&mut buf).ok_or("truncated protobuf length")? as usize;
                if buf.len() < len {
                    return Err("truncated protobuf field".into());
                }
                out.push((field, &buf[..len]));
                buf.advance(len);
            }
            w => return Err(format!("unexpected protobuf wire type {w}")),
        }
    }
    Ok(out)
}

/// What the echo backend reports (`EchoResponse.assertions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assertions {
    pub fully_qualified_method: String,
    /// Request headers (`Header{key, value}`), in the order seen.
    pub headers: Vec<(String, String)>,
    pub authority: String,
    /// `Context.namespace`.
    pub namespace: String,
    /// `Context.pod`.
    pub pod: String,
}

impl Assertions {
    /// The encoded `EchoResponse{assertions: self}`.
    pub fn encode_response(&self) -> Bytes {
        let mut context = BytesMut::new();
        put_bytes(&mut context, 1, self.namespace.as_bytes());
        put_bytes(&mut context, 4, self.pod.as_bytes());
        let mut a = BytesMut::new();
        put_bytes(&mut a, 1, self.fully_qualified_method.as_bytes());
        for (k, v) in &self.headers {
            let mut h = BytesMut::new();
            put_bytes(&mut h, 1, k.as_bytes());
            put_bytes(&mut h, 2, v.as_bytes());
            put_bytes(&mut a, 2, &h);
        }
        put_bytes(&mut a, 3, self.authority.as_bytes());
        put_bytes(&mut a, 4, &context);
        let mut out = BytesMut::new();
        put_bytes(&mut out, 1, &a);
        out.freeze()
    }

    /// Parses an encoded `EchoResponse`.
    pub fn decode_response(buf: &[u8]) -> Result<Self, String> {
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| "protobuf string is not UTF-8".to_owned())
        };
        let mut a = Assertions::default();
        for (f, v) in fields(buf)? {
            if f != 1 {
                continue;
            }
            for (f, v) in fields(v)? {
                match f {
                    1 => a.fully_qualified_method = text(v)?,
                    2 => {
                        let (mut k, mut val) = (String::new(), String::new());
                        for (f, v) in fields(v)? {
                            match f {
                                1 => k = text(v)?,
                                2 => val = text(v)?,
                                _ => {}
                            }
                        }
                        a.headers.push((k, val));
                    }
                    3 => a.authority = text(v)?,
                    4 => {
                        for (f, v) in fields(v)? {
                            match f {
                                1 => a.namespace = text(v)?,
                                4 => a.pod = text(v)?,
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(a)
    }
}

/// One gRPC length-prefixed message (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The first message of a gRPC body.
fn unframe(body: &[u8]) -> Result<&[u8], String> {
    if body.len() < 5 {
        return Err(format!("gRPC body of {} bytes has no message", body.len()));
    }
    if body[0] != 0 {
        return Err("compressed gRPC message (not requested)".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.get(5..5 + len)
        .ok_or_else(|| format!("gRPC message of {len} bytes is truncated"))
}

// ---------------------------------------------------------------------------
// The backend.

/// A response body of fixed frames (data, then trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn grpc_headers(status: Option<u32>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Some(code) = status {
        h.insert("grpc-status", HeaderValue::from(code));
    }
    h
}

fn answer(id: &Identity, req: &Request<Incoming>) -> Response<Frames> {
    let path = req.uri().path();
    let method = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE))
        .and_then(|p| p.strip_prefix('/'));
    let mut resp = Response::new(Frames(VecDeque::new()));
    if !matches!(method, Some("Echo" | "EchoTwo")) {
        // Trailers-only response, as gRPC servers answer unknown methods.
        *resp.headers_mut() = grpc_headers(Some(code_of("Unimplemented").unwrap_or(12)));
        resp.headers_mut().insert(
            "grpc-message",
            HeaderValue::from_static("method not implemented"),
        );
        return resp;
    }
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let a = Assertions {
        fully_qualified_method: path.to_owned(),
        headers,
        authority,
        namespace: id.namespace.clone(),
        pod: id.pod.clone(),
    };
    *resp.headers_mut() = grpc_headers(None);
    resp.body_mut()
        .0
        .push_back(Frame::data(frame(&a.encode_response())));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(0u32));
    resp.body_mut().0.push_back(Frame::trailers(trailers));
    resp
}

/// Serves the gRPC echo service over h2c on `listener` until the task is
/// dropped/aborted.
pub async fn serve_echo(listener: TcpListener, id: Identity) {
    let id = std::sync::Arc::new(id);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let id = id.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let id = id.clone();
                async move {
                    let resp = answer(&id, &req);
                    // Read the request to its end so the stream closes cleanly.
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------
// The client.

/// One unary call of the echo service.
#[derive(Debug, Clone)]
pub struct Call {
    pub dial: SocketAddr,
    /// `:authority`.
    pub authority: String,
    /// `Echo`, `EchoTwo` or `EchoThree`.
    pub method: String,
    /// Request metadata (keys lower-cased as gRPC clients send them).
    pub metadata: BTreeMap<String, String>,
}

impl Call {
    /// `/<service>/<method>`.
    pub fn path(&self) -> String {
        format!("/{SERVICE}/{}", self.method)
    }
}

/// What came back: the gRPC status and, for OK, the decoded response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u32,
    pub message: String,
    pub assertions: Option<Assertions>,
}

/// The gRPC code for a non-200 HTTP status (gRPC's HTTP-to-gRPC mapping).
fn code_of_http(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Makes one unary call on a fresh h2c connection. `Err` is a transport
/// failure (no gRPC status at all).
pub async fn call(c: &Call, timeout: Duration) -> Result<Reply, String> {
    tokio::time::timeout(timeout, call_inner(c))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn call_inner(c: &Call) -> Result<Reply, String> {
    let tcp = TcpStream::connect(c.dial)
        .await
        .map_err(|e| format!("connecting to {}: {e}", c.dial))?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Full<Bytes>,
    >(TokioExecutor::new(), TokioIo::new(tcp))
    .await
    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let uri = format!("http://{}{}", c.authority, c.path());
    let mut req = Request::post(uri)
        .version(http::Version::HTTP_2)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(http_body_util::Full::new(frame(&[])))
        .map_err(|e| format!("building the request: {e}"))?;
    for (k, v) in &c.metadata {
        let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|e| format!("metadata key {k:?}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("metadata {k:?}: {e}"))?;
        req.headers_mut().append(name, value);
    }
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("sending the call: {e}"))?;
        let (parts, body) = resp.into_parts();
        let collected = body
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let body = collected.to_bytes();
        // Trailers-only answers carry the status in the headers.
        let status_in = |h: &HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        let message = trailers
            .get("grpc-message")
            .or_else(|| parts.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if parts.status != http::StatusCode::OK {
            return Ok(Reply {
                code: code_of_http(parts.status.as_u16()),
                message: format!("HTTP {}", parts.status),
                assertions: None,
            });
        }
        let Some(code) = status_in(&trailers).or_else(|| status_in(&parts.headers)) else {
            return Ok(Reply {
                code: 13,
                message: "no grpc-status in the answer".into(),
                assertions: None,
            });
        };
        let assertions = if code == 0 {
            Some(Assertions::decode_response(unframe(&body)?)?)
        } else {
            None
        };
        Ok(Reply {
            code,
            message,
            assertions,
        })
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_round_trips_through_the_encoding() {
        let a = Assertions {
            fully_qualified_method: format!("/{SERVICE}/Echo"),
            headers: vec![
                ("version".into(), "one".into()),
                ("te".into(), "trailers".into()),
            ],
            authority: "bar.com".into(),
            namespace: "ns".into(),
            pod: "grpc-infra-backend-v1-abc-def".into(),
        };
        let bytes = a.encode_response();
        assert_eq!(Assertions::decode_response(&bytes).unwrap(), a);
        assert_eq!(unframe(&frame(&bytes)).unwrap(), &bytes[..]);
        assert!(Assertions::decode_response(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn status_names() {
        assert_eq!(code_of("Unimplemented"), Some(12));
        assert_eq!(code_of("14"), Some(14));
        assert_eq!(code_name(12), "Unimplemented");
        assert_eq!(code_of("nonsense"), None);
    }

    #[tokio::test]
    async fn backend_answers_echo_and_unimplemented() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_echo(
            listener,
            Identity {
                pod: "grpc-infra-backend-v2-x-y".into(),
                namespace: "infra".into(),
            },
        ));
        let mut c = Call {
            dial: addr,
            authority: "foo.example".into(),
            method: "EchoTwo".into(),
            metadata: BTreeMap::from([("Version".into(), "two".into())]),
        };
        let r = call(&c, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.code, 0, "{r:?}");
        let a = r.assertions.unwrap();
        assert_eq!(a.fully_qualified_method, c.path());
        assert_eq!(a.pod, "grpc-infra-backend-v2-x-y");
        assert_eq!(a.namespace, "infra");
        assert_eq!(a.authority, "foo.example");
        assert!(a.headers.contains(&("version".into(), "two".into())));
        c.method = "EchoThree".into();
        let r = call(&c, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.code, 12);
        server.abort();
    }
}
