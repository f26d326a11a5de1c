//! Reading the first bytes of a request body without taking them from the
//! upstream: the frames read are kept and replayed, in order and unchanged,
//! before the rest of the original stream. Used by `extAuth` to send
//! `forwardBody.maxSize` bytes to the authorization service.
//!
//! Never more than needed is held: reading stops at the first frame that
//! reaches the wanted size (that frame is kept whole for the upstream, only
//! the peek is cut). A body that fails while being read keeps its error:
//! the replay yields the frames read so far, then the error, so the data
//! path sees the same failure (e.g. a body-limit error that becomes 413) it
//! would have seen without the peek.
use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{Body, BoxError};

/// Reads up to `max` bytes of `body` and returns them; `*body` is replaced
/// by a body that yields everything the original would have, starting with
/// what was read here. A body that is already at its end is left alone.
pub async fn peek(body: &mut Body, max: usize) -> Bytes {
    if max == 0 || body.is_end_stream() {
        return Bytes::new();
    }
    let mut frames = VecDeque::new();
    let mut data: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    let mut error = None;
    let mut ended = false;
    while len < max {
        match body.frame().await {
            None => {
                ended = true;
                break;
            }
            Some(Err(e)) => {
                error = Some(e);
                break;
            }
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    if !d.is_empty() {
                        len += d.len();
                        // A clone of `Bytes` shares the buffer: no copy.
                        data.push(d.clone());
                    }
                }
                frames.push_back(frame);
            }
        }
    }
    // Neither a polled-out nor a failed body is polled again.
    let rest = if ended || error.is_some() {
        None
    } else {
        // The placeholder is zero-sized: swapping it in does not allocate.
        Some(std::mem::replace(body, empty()))
    };
    *body = Replay {
        buffered: len as u64,
        frames,
        error,
        rest,
    }
    .boxed();
    concat(data, max.min(len))
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The first `n` bytes of `chunks` as one buffer; a single chunk is sliced,
/// never copied.
fn concat(chunks: Vec<Bytes>, n: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default().slice(..n),
        _ => {
            let mut out = BytesMut::with_capacity(n);
            for c in chunks {
                let take = (n - out.len()).min(c.len());
                out.extend_from_slice(&c[..take]);
                if out.len() == n {
                    break;
                }
            }
            out.freeze()
        }
    }
}

/// The frames read by [`peek`], then what they were read from.
struct Replay {
    /// Data bytes among `frames` (for the size hint).
    buffered: u64,
    frames: VecDeque<Frame<Bytes>>,
    /// The error the original body ended with while it was being read.
    error: Option<BoxError>,
    /// The unread rest; `None` once the original has ended.
    rest: Option<Body>,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.frames.pop_front() {
            if let Some(d) = f.data_ref() {
                self.buffered -= d.len() as u64;
            }
            return Poll::Ready(Some(Ok(f)));
        }
        if let Some(e) = self.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = match &self.rest {
            Some(rest) if self.error.is_none() => rest.size_hint(),
            _ => SizeHint::with_exact(0),
        };
        // Upper before lower: a fresh hint has no upper bound to violate.
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(self.buffered));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(self.buffered));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use http::HeaderMap;
    use http_body_util::StreamBody;

    use super::*;
    use crate::policy::full;

    fn chunks(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames)).boxed()
    }

    async fn drain(body: Body) -> (Vec<u8>, Option<HeaderMap>, Option<String>) {
        let mut body = body;
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Err(e) => return (data, trailers, Some(e.to_string())),
            }
        }
        (data, trailers, None)
    }

    #[tokio::test]
    async fn peek_cuts_at_max_and_the_replay_is_the_whole_body() {
        let mut body = chunks(&["abcd", "efgh", "ijkl", "mnop"]);
        let head = peek(&mut body, 6).await;
        assert_eq!(&head[..], b"abcdef");
        assert_eq!(body.size_hint().lower(), 8, "two frames held");
        let (data, _, err) = drain(body).await;
        assert_eq!(&data[..], b"abcdefghijklmnop");
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn short_body_is_read_to_its_end() {
        let mut body = full("tiny");
        let head = peek(&mut body, 100).await;
        assert_eq!(&head[..], b"tiny");
        assert_eq!(body.size_hint().exact(), Some(4));
        assert!(!body.is_end_stream());
        let (data, _, _) = drain(body).await;
        assert_eq!(&data[..], b"tiny");

        let mut body = full("");
        assert!(peek(&mut body, 100).await.is_empty());
        assert!(body.is_end_stream());
    }

    /// Frames are pulled only until the wanted size is reached: a stream
    /// that has more, not yet sent, is not waited for.
    #[tokio::test]
    async fn reads_no_further_than_needed() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let p = pulled.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let stream = futures::stream::unfold(rx, move |mut rx| {
            let p = p.clone();
            async move {
                let b = rx.recv().await?;
                p.fetch_add(1, Ordering::SeqCst);
                Some((Ok::<_, BoxError>(Frame::data(b)), rx))
            }
        });
        let mut body: Body = StreamBody::new(stream).boxed();
        tx.send(Bytes::from_static(b"0123")).await.unwrap();
        tx.send(Bytes::from_static(b"4567")).await.unwrap();
        // Without the cut-off this would wait for a third chunk forever
        // (the generous bound turns that into a failure).
        let head = tokio::time::timeout(std::time::Duration::from_secs(30), peek(&mut body, 5))
            .await
            .expect("peek returned");
        assert_eq!(&head[..], b"01234");
        assert_eq!(pulled.load(Ordering::SeqCst), 2);
        tx.send(Bytes::from_static(b"89")).await.unwrap();
        drop(tx);
        let (data, _, _) = drain(body).await;
        assert_eq!(&data[..], b"0123456789");
    }

    #[tokio::test]
    async fn trailers_and_errors_are_replayed() {
        let mut t = HeaderMap::new();
        t.insert("x-sum", "1".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::trailers(t)),
        ];
        let mut body: Body = StreamBody::new(futures::stream::iter(frames)).boxed();
        assert_eq!(&peek(&mut body, 10).await[..], b"ab");
        let (data, trailers, err) = drain(body).await;
        assert_eq!(&data[..], b"ab");
        assert_eq!(trailers.unwrap()["x-sum"], "1");
        assert!(err.is_none());

        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err("client went away".into()),
            Ok(Frame::data(Bytes::from_static(b"never"))),
        ];
        let mut body: Body = StreamBody::new(futures::stream::iter(frames)).boxed();
        assert_eq!(&peek(&mut body, 10).await[..], b"ab");
        let (data, _, err) = drain(body).await;
        assert_eq!(&data[..], b"ab");
        assert_eq!(err.as_deref(), Some("client went away"));
    }

    #[test]
    fn concat_slices_one_chunk_and_copies_several() {
        let one = Bytes::from_static(b"abcdef");
        let c = concat(vec![one.clone()], 3);
        assert_eq!(&c[..], b"abc");
        assert_eq!(c.as_ptr(), one.as_ptr(), "sliced, not copied");
        let c = concat(
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
            3,
        );
        assert_eq!(&c[..], b"abc");
    }
}
