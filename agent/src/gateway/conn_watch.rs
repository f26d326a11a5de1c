//! What a client connection's requests tell the accept loop: whether a
//! request has arrived at all (the first head is on the header timeout's
//! clock), and how many requests the client abandoned before their answer —
//! on HTTP/2 a reset stream, the rapid-reset attack (CVE-2023-44487) when
//! done at scale: each reset stream costs the gateway a forwarded request
//! and the client almost nothing. Past the limit the connection is closed.
use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

use tokio::sync::Notify;

use super::Proxy;
use crate::snapshot::ShardId;

/// Shared by a connection and its requests.
pub(super) struct ConnWatch {
    started: AtomicBool,
    abandoned: AtomicUsize,
    limit: usize,
    /// Woken once when `abandoned` passes `limit`.
    pub(super) calm: Notify,
    /// For counting abandoned requests (rare: a connection is closed soon
    /// after its limit).
    proxy: Arc<Proxy>,
    shard: ShardId,
}

impl ConnWatch {
    pub(super) fn new(proxy: Arc<Proxy>, shard: ShardId) -> Self {
        Self {
            started: AtomicBool::new(false),
            abandoned: AtomicUsize::new(0),
            limit: proxy.edge.h2_max_resets,
            calm: Notify::new(),
            proxy,
            shard,
        }
    }

    /// Whether a request head has arrived on the connection.
    pub(super) fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// A request arrived: its guard counts it as abandoned unless it is
    /// answered.
    pub(super) fn request(self: &Arc<Self>) -> RequestGuard {
        if !self.started.load(Ordering::Relaxed) {
            self.started.store(true, Ordering::Relaxed);
        }
        RequestGuard {
            watch: self.clone(),
            answered: false,
        }
    }
}

/// One request in flight; dropped unanswered (the client reset the stream
/// or closed the connection, so hyper dropped the request's future — and
/// with it the upstream request) it counts as abandoned.
pub(super) struct RequestGuard {
    watch: Arc<ConnWatch>,
    answered: bool,
}

impl RequestGuard {
    /// The response head is ready: whatever happens next is not a reset
    /// before the answer.
    pub(super) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let watch = &self.watch;
        watch.proxy.count_abandoned(watch.shard, 1);
        let n = watch.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        if n == watch.limit + 1 {
            watch.calm.notify_one();
        }
    }
}
