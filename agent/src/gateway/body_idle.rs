//! A request body that fails when the client stops sending it: a client
//! that announces a body and then sends nothing (or a byte a minute) would
//! otherwise hold its connection, its shard's connection slot and an
//! upstream connection for as long as it likes.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::{Body, BoxError};

/// Error of a request body the client stopped sending.
#[derive(Debug, thiserror::Error)]
#[error("client sent no request body data for {0:?}")]
pub struct BodyIdle(pub Duration);

/// `inner`, failing with [`BodyIdle`] once it has been pending for `idle`
/// without yielding a frame.
pub struct IdleBody {
    inner: Body,
    idle: Duration,
    /// Made the first time the body is pending (a body that is read as fast
    /// as it arrives, or has nothing to wait for, never allocates one) and
    /// pushed back whenever a frame arrives.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last armed: re-arm before waiting.
    progressed: bool,
    /// Set when the body has been read to its end (the upstream response
    /// timeout waits for that).
    sent: Arc<AtomicBool>,
}

impl IdleBody {
    pub fn new(inner: Body, idle: Duration, sent: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            idle,
            sleep: None,
            progressed: false,
            sent,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.progressed = true;
            if frame.is_none() || this.inner.is_end_stream() {
                this.sent.store(true, Ordering::Relaxed);
            }
            return Poll::Ready(frame);
        }
        let idle = this.idle;
        let sleep = match &mut this.sleep {
            Some(s) => {
                if this.progressed {
                    s.as_mut().reset(Instant::now() + idle);
                }
                s
            }
            None => this.sleep.insert(Box::pin(tokio::time::sleep(idle))),
        };
        this.progressed = false;
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdle(idle))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error`, or one of its sources, is a [`BodyIdle`].
pub(super) fn is_body_idle(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = Some(error);
    while let Some(err) = e {
        if err.is::<BodyIdle>() {
            return true;
        }
        e = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_passes_and_a_stalled_one_fails() {
        let idle = Duration::from_secs(10);
        // A frame every 6 s: never idle for 10 s, though 30 s in all.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
        });
        let body = StreamBody::new(tokio_stream_from(rx)).boxed();
        let sent = Arc::new(AtomicBool::new(false));
        let got = IdleBody::new(body, idle, sent.clone())
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&got[..], b"xxxxx");
        assert!(sent.load(Ordering::Relaxed), "read to its end");
        // One frame, then silence.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        let body = StreamBody::new(tokio_stream_from(rx)).boxed();
        let sent = Arc::new(AtomicBool::new(false));
        let err = IdleBody::new(body, idle, sent.clone())
            .collect()
            .await
            .err()
            .unwrap();
        assert!(!sent.load(Ordering::Relaxed), "not read to its end");
        assert!(is_body_idle(&*err), "{err}");
        drop(tx);
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send + Sync {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
