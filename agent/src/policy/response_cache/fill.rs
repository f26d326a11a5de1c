//! Storing a response while it streams to the client: the body passes
//! through frame by frame (the first bytes are never held back) and a copy
//! is kept until the end, when the entry is stored. A body that outgrows
//! the entry limit, ends in an error or trailers, or is dropped before its
//! end is simply not stored — the copy is let go at once, so nothing
//! unbounded is ever buffered. The flight guard (coalescing) goes with the
//! copy: waiting requests are released when the entry is stored or given up.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::HeaderName;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{
    coalesce::FlightGuard,
    key::BaseKey,
    store::{Entry, Store},
};
use crate::policy::{Body, BoxError};

/// The response head of an entry in the making (its body still streams).
#[derive(Debug)]
pub struct Pending {
    pub base: BaseKey,
    /// The response's `Vary` fields.
    pub names: Vec<HeaderName>,
    /// Everything but the body.
    pub head: Entry,
}

struct Filling {
    store: Arc<Store>,
    pending: Pending,
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
    /// Released after the entry is stored (or given up).
    _guard: Option<FlightGuard>,
}

/// A response body that stores what passes through.
pub struct Fill {
    inner: Body,
    filling: Option<Filling>,
}

impl Fill {
    /// Wraps `inner`; the entry is stored when it ends within `limit` bytes.
    pub fn new(
        inner: Body,
        store: Arc<Store>,
        pending: Pending,
        limit: usize,
        guard: Option<FlightGuard>,
    ) -> Self {
        let mut fill = Self {
            inner,
            filling: Some(Filling {
                store,
                pending,
                chunks: Vec::new(),
                len: 0,
                limit,
                _guard: guard,
            }),
        };
        // An empty body may never be polled.
        if fill.inner.is_end_stream() {
            fill.finish();
        }
        fill
    }

    fn finish(&mut self) {
        let Some(f) = self.filling.take() else { return };
        let mut body = BytesMut::with_capacity(f.len);
        for c in &f.chunks {
            body.extend_from_slice(c);
        }
        let Pending {
            base,
            names,
            mut head,
        } = f.pending;
        head.body = body.freeze();
        f.store.insert(base, names, head);
        // `f._guard` drops here, after the entry is in the store.
    }
}

impl HttpBody for Fill {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match (frame.data_ref(), &mut this.filling) {
                (Some(data), Some(f)) => {
                    if f.len + data.len() > f.limit {
                        this.filling = None;
                    } else {
                        f.len += data.len();
                        f.chunks.push(data.clone());
                    }
                }
                // Trailers are not stored: neither is the response.
                (None, _) => this.filling = None,
                (Some(_), None) => {}
            },
            Poll::Ready(Some(Err(_))) => this.filling = None,
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        if this.filling.is_some() && this.inner.is_end_stream() {
            this.finish();
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

impl Drop for Fill {
    fn drop(&mut self) {
        // Read to the end without the last poll that says so.
        if self.filling.is_some() && self.inner.is_end_stream() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::{HeaderMap, StatusCode};
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::policy::{
        response_cache::{coalesce::Join, rules::CacheControl, store::Found},
        PolicyId,
    };

    fn pending(path: &str) -> Pending {
        Pending {
            base: BaseKey::new(&Arc::from("ns/r"), 0, "http", "h", &path.parse().unwrap()),
            names: vec![],
            head: Entry {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                vary: vec![],
                stored: Instant::now(),
                initial_age: Duration::ZERO,
                lifetime: Duration::from_secs(60),
                cc: CacheControl::default(),
            },
        }
    }

    fn chunks(n: usize, size: usize) -> Body {
        let frames =
            (0..n).map(move |_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'a'; size]))));
        StreamBody::new(futures::stream::iter(frames)).boxed()
    }

    fn store() -> Arc<Store> {
        Arc::new(Store::new(
            PolicyId::new("SluicePolicy", "ns", "p"),
            1 << 20,
            1 << 20,
        ))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_stored_when_it_ends() {
        let s = store();
        let body = Fill::new(chunks(4, 100), s.clone(), pending("/a"), 1000, None);
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out.len(), 400);
        let Found::Entry(e) = s.lookup(&pending("/a").base, &HeaderMap::new()) else {
            panic!("stored")
        };
        assert_eq!(e.body, out);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_passes_whole_and_is_not_stored() {
        let s = store();
        let flights = s.flights.clone();
        let key = s.key(&pending("/a").base, &HeaderMap::new());
        let Join::Leader(guard) = flights.join(&key) else {
            panic!()
        };
        let mut body = Fill::new(chunks(10, 100), s.clone(), pending("/a"), 250, Some(guard));
        // The first frame comes through at once.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), 100);
        body.frame().await.unwrap().unwrap();
        body.frame().await.unwrap().unwrap();
        assert!(
            flights.is_empty(),
            "given up at the limit: waiters released"
        );
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(300 + rest.len(), 1000, "the client gets every byte");
        assert!(matches!(
            s.lookup(&pending("/a").base, &HeaderMap::new()),
            Found::UriMiss
        ));
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_not_stored() {
        let s = store();
        let mut body = Fill::new(chunks(3, 10), s.clone(), pending("/a"), 1000, None);
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(s.stats().entries, 0);
    }
}
