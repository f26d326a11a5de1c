//! A scripted origin on loopback for cache tests: each path answers what
//! the test set (status, headers, body, delay, chunked or not), honours
//! `If-None-Match` / `If-Modified-Since` against the script's `etag` /
//! `last-modified` with a 304, counts the requests it receives per path
//! and keeps their headers, and can be taken down (connections refused
//! and dropped).
use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a path answers.
#[derive(Debug, Clone)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
    /// Sent in 16 KiB chunks without Content-Length.
    pub chunked: bool,
}

impl Script {
    /// 200 with `body` and the given headers.
    pub fn ok(body: &str, headers: &[(&str, &str)]) -> Self {
        Self {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Bytes::from(body.to_owned()),
            delay: Duration::ZERO,
            chunked: false,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    scripts: Mutex<HashMap<String, Script>>,
    /// Request headers received, per path and query.
    seen: Mutex<HashMap<String, Vec<HeaderMap>>>,
    down: AtomicBool,
}

/// The running origin.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

type OriginBody = BoxBody<Bytes, Infallible>;

impl Origin {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let s = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move { answer(&s, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            accept: Arc::new(Mutex::new(Some(accept))),
        }
    }

    /// Sets what `path` (with query) answers.
    pub fn script(&self, path: &str, script: Script) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert(path.to_owned(), script);
    }

    /// Requests received for `path` (with query).
    pub fn count(&self, path: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, Vec::len)
    }

    /// Headers of the `i`-th request received for `path`.
    pub fn request(&self, path: &str, i: usize) -> HeaderMap {
        self.state.seen.lock().unwrap()[path][i].clone()
    }

    /// Stops accepting and drops every request from now on.
    pub fn take_down(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.lock().unwrap().take() {
            h.abort();
        }
    }
}

async fn answer(s: &State, req: Request<Incoming>) -> Result<Response<OriginBody>, String> {
    if s.down.load(Ordering::SeqCst) {
        // An error makes hyper drop the connection without an answer.
        return Err("down".into());
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    s.seen
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .push(req.headers().clone());
    let script = s
        .scripts
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_else(|| Script::ok("unscripted", &[]));
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
    let matches = |req_h: &str, script_h: &str| {
        req.headers()
            .get(req_h)
            .zip(script.header(script_h))
            .is_some_and(|(a, b)| a.as_bytes() == b.as_bytes())
    };
    let not_modified = matches("if-none-match", "etag")
        || (!req.headers().contains_key("if-none-match")
            && matches("if-modified-since", "last-modified"));
    let mut resp = if not_modified {
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if script.chunked {
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = script
            .body
            .chunks(16 * 1024)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let mut r = Response::new(StreamBody::new(futures::stream::iter(chunks)).boxed());
        *r.status_mut() = StatusCode::from_u16(script.status).unwrap();
        r
    } else {
        let mut r = Response::new(Full::new(script.body.clone()).boxed());
        *r.status_mut() = StatusCode::from_u16(script.status).unwrap();
        r
    };
    for (n, v) in &script.headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    Ok(resp)
}
