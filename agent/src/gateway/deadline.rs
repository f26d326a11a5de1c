//! A response body bounded by the rule's request timeout: the timeout covers
//! the whole exchange, so a backend that sends its head in time but then
//! stalls the body is cut off at the deadline too.
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::{Body, BoxError};

/// Error of a body cut off at its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request timeout exceeded while streaming the response body")]
pub struct DeadlineExceeded;

/// `inner`, failing with [`DeadlineExceeded`] once `deadline` has passed.
pub struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
}

impl Deadline {
    pub fn new(inner: Body, deadline: Instant) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(DeadlineExceeded)))),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;
    use crate::gateway::full;

    /// A body that never yields.
    struct Stalled;

    impl HttpBody for Stalled {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_body_fails_at_the_deadline_and_ready_body_passes() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let err = Deadline::new(Stalled.boxed(), deadline)
            .collect()
            .await
            .err()
            .unwrap();
        assert!(err.is::<DeadlineExceeded>(), "{err}");
        let ok = Deadline::new(full("abc"), Instant::now() + Duration::from_secs(1))
            .collect()
            .await
            .unwrap();
        assert_eq!(&ok.to_bytes()[..], b"abc");
    }
}
