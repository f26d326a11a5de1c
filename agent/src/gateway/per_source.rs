//! Open connections per client address and shard, so that one client
//! cannot take a shard's whole connection budget (the bulkhead protects
//! Gateways from each other; this protects a Gateway's clients from each
//! other). Counted per connection at accept, never per request.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use crate::snapshot::ShardId;

type Counts = HashMap<(ShardId, IpAddr), usize, foldhash::fast::RandomState>;

/// The open connections of every (shard, client address) pair.
#[derive(Debug, Default)]
pub(super) struct PerSource {
    counts: Arc<Mutex<Counts>>,
}

/// One open connection; dropping it releases its place.
pub(super) struct SourceSlot {
    counts: Arc<Mutex<Counts>>,
    key: (ShardId, IpAddr),
}

impl PerSource {
    /// A place for a new connection from `ip` to `shard`, or `None` when the
    /// address already has `limit` open (`limit` 0: unlimited, untracked).
    pub(super) fn admit(
        &self,
        shard: ShardId,
        ip: IpAddr,
        limit: usize,
    ) -> Option<Option<SourceSlot>> {
        if limit == 0 {
            return Some(None);
        }
        // IPv4-mapped IPv6 peers count as the IPv4 client they are.
        let key = (shard, ip.to_canonical());
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Some(SourceSlot {
            counts: self.counts.clone(),
            key,
        }))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                // Forgotten at zero: the map holds only addresses with open connections.
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_per_address_and_shard_and_released_on_drop() {
        let p = PerSource::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = p.admit(0, a, 2).unwrap();
        let two = p.admit(0, a, 2).unwrap();
        assert!(p.admit(0, a, 2).is_none(), "third from the same address");
        assert!(p.admit(0, b, 2).is_some(), "another address");
        assert!(p.admit(1, a, 2).is_some(), "another shard");
        drop(one);
        assert!(p.admit(0, a, 2).is_some(), "a place was released");
        drop(two);
        assert!(p.admit(0, a, 0).unwrap().is_none(), "0: untracked");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _x = p.admit(0, a, 1).unwrap();
        assert!(
            p.admit(0, mapped, 1).is_none(),
            "mapped address is the same client"
        );
    }
}
