//! RequestMirror on the data path: the request body is teed as it streams to
//! the primary backend, each mirror gets the same chunks (reference-counted,
//! not copied) through a small channel. Mirrors are best effort: a mirror
//! that falls behind is cut off rather than slowing the primary request, and
//! mirror responses are drained and dropped.
use std::{
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, SizeHint};

use super::BoxError;
use tokio::sync::mpsc;

/// Body type of upstream requests (primary and mirrors).
pub type UpstreamBody = super::Body;

/// Chunks a mirror may lag behind the primary before it is cut off.
const TAP_CAPACITY: usize = 16;
/// Upper bound for one mirrored exchange, so stuck mirrors do not pile up.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// The primary request body, copying each data chunk to the taps.
pub struct Tee {
    inner: UpstreamBody,
    taps: Vec<mpsc::Sender<Bytes>>,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    // A full channel means a slow mirror: drop it (its body ends early).
                    this.taps.retain(|t| t.try_send(data.clone()).is_ok());
                }
            }
            // End or error: dropping the senders ends the mirror bodies.
            _ => this.taps.clear(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A mirror's copy of the request body.
pub struct Tap {
    rx: mpsc::Receiver<Bytes>,
    hint: SizeHint,
}

impl Body for Tap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(ready!(self.rx.poll_recv(cx)).map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// Splits `body` into the primary's body and `n` mirror bodies.
pub fn tee(body: UpstreamBody, n: usize) -> (UpstreamBody, Vec<UpstreamBody>) {
    if n == 0 {
        return (body, Vec::new());
    }
    if body.is_end_stream() {
        // Nothing to copy (GET and friends): mirrors need not wait for the primary.
        let empty = || {
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed()
        };
        return (body, (0..n).map(|_| empty()).collect());
    }
    let hint = body.size_hint();
    let (taps, bodies): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (tx, rx) = mpsc::channel(TAP_CAPACITY);
            (tx, Tap { rx, hint }.boxed())
        })
        .unzip();
    (Tee { inner: body, taps }.boxed(), bodies)
}

/// A copy of an upstream request head with another body and target.
pub fn copy_head(
    req: &Request<UpstreamBody>,
    uri: http::Uri,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut out = Request::new(body);
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = uri;
    // Mirrors go over HTTP/1.1 whatever the primary backend speaks.
    *out.version_mut() = http::Version::HTTP_11;
    *out.headers_mut() = req.headers().clone();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tap_yields_chunks_then_ends() {
        let (tx, rx) = mpsc::channel(4);
        let tap = Tap {
            rx,
            hint: SizeHint::with_exact(6),
        };
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        tx.send(Bytes::from_static(b"def")).await.unwrap();
        drop(tx);
        assert_eq!(tap.size_hint().exact(), Some(6));
        let all = tap.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdef");
    }
}
