//! Retries (HTTPRoute `retry`): the request body is recorded while it
//! streams to the first attempt, up to a cap, so that a later attempt can
//! replay it. A request whose body was larger than the cap, or was not
//! read to the end by the backend, is not retried — the backend's answer
//! is passed on instead.
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{ready, Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};

use super::mirror::UpstreamBody;

/// Largest request body kept for replay.
pub const REPLAY_CAP: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Record {
    chunks: Vec<Bytes>,
    size: usize,
    complete: bool,
    overflow: bool,
}

/// The first attempt's body, recording what passes through.
pub struct Recording {
    inner: UpstreamBody,
    record: Arc<Mutex<Record>>,
}

impl Body for Recording {
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, super::BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        // A sender that knows the length stops polling after the last chunk,
        // so the end is also seen through `is_end_stream`.
        let ended = self.inner.is_end_stream();
        let mut r = self.record.lock().expect("record lock");
        if ended {
            r.complete = true;
        }
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    if r.overflow || r.size + data.len() > REPLAY_CAP {
                        // Too large to keep: give the memory back, no replay.
                        r.overflow = true;
                        r.chunks = Vec::new();
                    } else {
                        r.size += data.len();
                        r.chunks.push(data.clone());
                    }
                }
            }
            Some(Err(_)) => r.overflow = true,
            None => r.complete = true,
        }
        drop(r);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a retry needs to send the request again.
pub struct Replay {
    method: Method,
    version: Version,
    headers: HeaderMap,
    path_and_query: String,
    /// `None`: the body was empty from the start.
    record: Option<Arc<Mutex<Record>>>,
}

impl Replay {
    /// Wraps the first attempt's request; returns it and the means to replay it.
    pub fn record(req: Request<UpstreamBody>) -> (Request<UpstreamBody>, Replay) {
        let (parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let (body, record) = if body.is_end_stream() {
            (body, None)
        } else {
            let record = Arc::new(Mutex::new(Record::default()));
            let body = Recording {
                inner: body,
                record: record.clone(),
            }
            .boxed();
            (body, Some(record))
        };
        let replay = Replay {
            method: parts.method.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            path_and_query,
            record,
        };
        (Request::from_parts(parts, body), replay)
    }

    /// The request again (target in origin form: the upstream pool gives
    /// it the form its connection needs); `None` when the body cannot be
    /// replayed.
    pub fn again(&self) -> Option<Request<UpstreamBody>> {
        let body = match &self.record {
            None => Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
            Some(record) => {
                let r = record.lock().expect("record lock");
                if !r.complete || r.overflow {
                    return None;
                }
                let mut all = BytesMut::with_capacity(r.size);
                for c in &r.chunks {
                    all.extend_from_slice(c);
                }
                Full::new(all.freeze())
                    .map_err(|never| match never {})
                    .boxed()
            }
        };
        let uri = Uri::try_from(self.path_and_query.as_str()).ok()?;
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: UpstreamBody) -> Request<UpstreamBody> {
        let mut req = Request::new(body);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "http://127.0.0.1:1/p?q=1".parse().unwrap();
        req.headers_mut().insert("x-a", "1".parse().unwrap());
        req
    }

    fn full(data: &'static [u8]) -> UpstreamBody {
        Full::new(Bytes::from_static(data))
            .map_err(|never| match never {})
            .boxed()
    }

    #[tokio::test]
    async fn replays_a_small_body_once_it_was_read() {
        let (first, replay) = Replay::record(request(full(b"payload")));
        assert!(replay.again().is_none(), "not read yet: no replay");
        let sent = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], b"payload");
        let again = replay.again().unwrap();
        assert_eq!(again.uri().to_string(), "/p?q=1");
        assert_eq!(again.method(), Method::POST);
        assert_eq!(again.headers()["x-a"], "1");
        let body = again.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"payload");
    }

    #[tokio::test]
    async fn empty_bodies_replay_and_large_ones_do_not() {
        let empty = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed();
        let (_, replay) = Replay::record(request(empty));
        assert!(replay.again().is_some());

        static BIG: [u8; REPLAY_CAP + 1] = [b'x'; REPLAY_CAP + 1];
        let (first, replay) = Replay::record(request(full(&BIG)));
        first.into_body().collect().await.unwrap();
        assert!(replay.again().is_none());
    }
}
