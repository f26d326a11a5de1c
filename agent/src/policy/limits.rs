//! `limits`: the request header block size (431) checked on the head, and
//! the body size (413) checked as the body streams — never by buffering it.
//! A declared `Content-Length` over the limit is refused at once; a body
//! that grows past the limit while streaming ends in an error the data path
//! turns into 413 (when no response has started yet).
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{header, request::Parts};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{Body, BoxError, Reason, Rejection, SectionMeta};

/// Compiled limits.
#[derive(Debug)]
pub struct Limits {
    pub max_body: Option<u64>,
    pub max_headers: Option<u32>,
    pub meta: Arc<SectionMeta>,
}

/// Per-header overhead counted besides name and value: `": "` and CRLF,
/// as the header block is sent in HTTP/1.1 (HTTP/2 has a similar 32-byte
/// overhead per entry in its own accounting; this keeps one rule for both).
const HEADER_OVERHEAD: usize = 4;

impl Limits {
    /// The header-block and declared-length checks on the request head.
    pub fn check_head(&self, parts: &Parts) -> Result<(), Rejection> {
        if let Some(max) = self.max_headers {
            let size: usize = parts
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD)
                .sum();
            if size > max as usize {
                self.meta.denied(Reason::HeadersTooLarge);
                return Err(Rejection::new(
                    Reason::HeadersTooLarge,
                    format!("request headers are {size} bytes, more than the {max} allowed"),
                )
                .by(&self.meta));
            }
        }
        if let Some(max) = self.max_body {
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max) {
                return Err(self.body_rejection(max));
            }
        }
        self.meta.allowed();
        Ok(())
    }

    fn body_rejection(&self, max: u64) -> Rejection {
        self.meta.denied(Reason::BodyTooLarge);
        Rejection::new(
            Reason::BodyTooLarge,
            format!("request body larger than the {max} bytes allowed"),
        )
        .by(&self.meta)
    }

    /// The rejection for a body that outgrew the limit while streaming.
    pub fn streamed_rejection(&self) -> Rejection {
        self.body_rejection(self.max_body.unwrap_or(0))
    }
}

/// Tells whether a limited body ran over its limit.
#[derive(Debug, Clone, Default)]
pub struct BodyLimitHit(Arc<AtomicBool>);

impl BodyLimitHit {
    pub fn hit(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The error a limited body ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Wraps `body` so that it fails once more than `max` bytes have passed.
pub fn limit(body: Body, max: u64) -> (Body, BodyLimitHit) {
    let hit = BodyLimitHit::default();
    let limited = Limited {
        inner: body,
        seen: 0,
        max,
        hit: hit.clone(),
    };
    (limited.boxed(), hit)
}

struct Limited {
    inner: Body,
    seen: u64,
    max: u64,
    hit: BodyLimitHit,
}

impl HttpBody for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(d) = f.data_ref() {
                self.seen += d.len() as u64;
                if self.seen > self.max {
                    self.hit.0.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge(self.max)))));
                }
            }
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

#[cfg(test)]
mod tests {
    use http::Request;
    use http_body_util::StreamBody;

    use super::*;
    use crate::policy::{full, PolicyId};

    fn limits(body: Option<u64>, headers: Option<u32>) -> Limits {
        Limits {
            max_body: body,
            max_headers: headers,
            meta: Arc::new(SectionMeta::detached(
                PolicyId::new("SluicePolicy", "ns", "p"),
                "limits",
            )),
        }
    }

    fn head(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder();
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_block_size() {
        let l = limits(None, Some(20));
        // "x-a: 123456789\r\n" = 3 + 9 + 4 = 16
        assert!(l.check_head(&head(&[("x-a", "123456789")])).is_ok());
        let r = l
            .check_head(&head(&[("x-a", "123456789"), ("x-b", "1")]))
            .unwrap_err();
        assert_eq!(r.status, http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn declared_length_over_the_limit_is_refused_at_once() {
        let l = limits(Some(10), None);
        assert!(l.check_head(&head(&[("content-length", "10")])).is_ok());
        let r = l
            .check_head(&head(&[("content-length", "11")]))
            .unwrap_err();
        assert_eq!(r.status, http::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn streamed_body_fails_past_the_limit_without_buffering() {
        let chunks = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"12345"))),
            Ok(Frame::data(Bytes::from_static(b"67890"))),
            Ok(Frame::data(Bytes::from_static(b"x"))),
        ];
        let body = StreamBody::new(futures::stream::iter(chunks)).boxed();
        let (mut limited, hit) = limit(body, 10);
        let mut got = 0;
        let mut failed = false;
        while let Some(f) = limited.frame().await {
            match f {
                Ok(f) => got += f.into_data().map(|d| d.len()).unwrap_or(0),
                Err(e) => {
                    assert!(e.to_string().contains("larger than 10"));
                    failed = true;
                    break;
                }
            }
        }
        assert_eq!(got, 10, "chunks up to the limit pass through as they come");
        assert!(failed && hit.hit());

        let (limited, hit) = limit(full("0123456789"), 10);
        assert_eq!(limited.collect().await.unwrap().to_bytes().len(), 10);
        assert!(!hit.hit());
    }
}
