//! Bodies that count for the access log: the request body's bytes as the
//! upstream reads them, and the response body, which sends the request's
//! access log entry when it is finished or dropped — so the entry has the
//! real bytes sent and the whole duration, including a slow download, and
//! a client that goes away mid-body is logged as incomplete.
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::{Buf, Bytes};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{Body, BoxError};
use crate::{
    access_log::{AccessLog, Entry},
    telemetry::Tracer,
};

/// The request body, counting the bytes read from the client.
pub(super) struct CountedRequest {
    inner: Body,
    read: Arc<AtomicU64>,
}

impl CountedRequest {
    pub(super) fn new(inner: Body, read: Arc<AtomicU64>) -> Self {
        Self { inner, read }
    }
}

impl HttpBody for CountedRequest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.read
                    .fetch_add(data.remaining() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body; sends `entry` to the access log and, when the
/// request is recorded, to the trace exporter when it ends or is dropped.
pub(super) struct LoggedResponse {
    inner: Body,
    entry: Option<Box<Entry>>,
    log: AccessLog,
    tracer: Tracer,
    start: Instant,
    /// The request body's bytes read so far; `None` for a request without
    /// a body.
    request_read: Option<Arc<AtomicU64>>,
    sent: u64,
    finished: bool,
}

impl LoggedResponse {
    pub(super) fn new(
        inner: Body,
        entry: Box<Entry>,
        log: AccessLog,
        tracer: Tracer,
        start: Instant,
        request_read: Option<Arc<AtomicU64>>,
    ) -> Self {
        Self {
            inner,
            entry: Some(entry),
            log,
            tracer,
            start,
            request_read,
            sent: 0,
            finished: false,
        }
    }

    fn emit(&mut self) {
        let Some(mut e) = self.entry.take() else {
            return;
        };
        e.duration = self.start.elapsed();
        e.bytes_out = self.sent;
        e.bytes_in = self
            .request_read
            .as_ref()
            .map_or(0, |r| r.load(Ordering::Relaxed));
        e.incomplete = !(self.finished || self.inner.is_end_stream());
        self.log.send(&e);
        if e.trace.is_some() && self.tracer.enabled() {
            self.tracer.send(e);
        }
    }
}

impl HttpBody for LoggedResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.remaining() as u64;
                }
            }
            Poll::Ready(None) => {
                self.finished = true;
                self.emit();
            }
            Poll::Ready(Some(Err(_))) => self.emit(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedResponse {
    fn drop(&mut self) {
        self.emit();
    }
}
