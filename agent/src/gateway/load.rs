//! Requests in flight per shard (Gateway), capped: past the cap a shard
//! answers `503` with `Retry-After` at once instead of queueing work until
//! memory runs out, and the other shards of the agent are unaffected. One
//! atomic add and subtract per request; the shard's counter is found once
//! per connection.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use crate::snapshot::ShardId;

/// The load of one shard.
#[derive(Debug, Default)]
pub struct ShardLoad {
    in_flight: AtomicUsize,
    shed: AtomicU64,
}

/// A request counted in flight until it is dropped.
pub(super) struct InFlight(Arc<ShardLoad>);

impl ShardLoad {
    /// Counts a request in, or `None` (counted as shed) when `limit` are
    /// already in flight; `limit` 0 is no limit.
    pub(super) fn enter(self: &Arc<Self>, limit: usize) -> Option<InFlight> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        if limit != 0 && before >= limit {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.shed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlight(self.clone()))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests refused since the agent started.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every shard's load, by shard id.
#[derive(Debug, Default)]
pub(super) struct ShardLoads {
    shards: Mutex<HashMap<ShardId, Arc<ShardLoad>, foldhash::fast::RandomState>>,
}

impl ShardLoads {
    /// The load of `shard` (made on first use; per connection, not per request).
    pub(super) fn of(&self, shard: ShardId) -> Arc<ShardLoad> {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(shard)
            .or_default()
            .clone()
    }

    /// Each shard's load, for `/readyz`.
    pub(super) fn all(&self) -> Vec<(ShardId, Arc<ShardLoad>)> {
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards.iter().map(|(id, l)| (*id, l.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_past_the_limit_are_shed_and_places_come_back() {
        let load = Arc::new(ShardLoad::default());
        let a = load.enter(2).unwrap();
        let _b = load.enter(2).unwrap();
        assert!(load.enter(2).is_none());
        assert_eq!((load.in_flight(), load.shed()), (2, 1));
        drop(a);
        assert!(load.enter(2).is_some());
        assert_eq!(load.in_flight(), 1);
        let many: Vec<_> = (0..100).map(|_| load.enter(0).unwrap()).collect();
        assert_eq!(many.len(), 100, "0: no limit");
    }
}
