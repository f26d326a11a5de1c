//! The state of every local (GCRA) rule of the agent, in one bounded store.
//!
//! An entry is a 64-bit key (a keyed hash of rule, route and request key)
//! and the key's theoretical arrival time (TAT) in the agent-wide time frame
//! of [`super::clock`]: 16 bytes of payload, whatever the key was made of.
//!
//! **Memory bound.** The store holds at most `capacity` entries (split over
//! shards, each with its own lock). When a shard is full and a new key
//! arrives, it first drops every entry whose TAT has passed: GCRA treats a
//! key whose TAT is in the past exactly like a key it has never seen, so
//! that loses nothing. Only if the shard is still full — more distinct keys
//! are being limited *right now* than the store holds — does it drop the
//! half of the entries closest to being refilled, and those keys get a fresh
//! bucket early (counted in `sluice_ratelimit_evictions_total`). A flood of
//! distinct keys therefore costs bounded memory and, at worst, lets some of
//! its keys through sooner; it never grows the store.
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use governor::{nanos::Nanos, state::StateStore};

use super::clock::ClockBase;

const SHARDS: usize = 64;

/// Keys are keyed SipHash values already: the map need not hash them again.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, u64, BuildHasherDefault<IdentityHasher>>;

/// The bounded, sharded TAT store shared by every local rule.
pub struct GcraStore {
    shards: Box<[Mutex<Map>]>,
    per_shard: usize,
    base: ClockBase,
    /// Live entries dropped to make room (keys that got a fresh bucket early).
    evictions: AtomicU64,
}

impl std::fmt::Debug for GcraStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcraStore")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl GcraStore {
    /// A store of at most `capacity` entries (rounded up to a multiple of
    /// the shard count).
    pub fn new(capacity: usize, base: ClockBase) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(2),
            base,
            evictions: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("gcra shard").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the tables have allocated (buckets of key, value and control
    /// byte), for the memory-bound test and the admin view.
    pub fn allocated_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let cap = s.lock().expect("gcra shard").capacity();
                // hashbrown keeps 1/8 of the buckets free; a bucket is the
                // 16-byte entry plus one control byte.
                if cap == 0 {
                    0
                } else {
                    (cap * 8 / 7).next_power_of_two() * (16 + 1)
                }
            })
            .sum()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn shard(&self, key: u64) -> &Mutex<Map> {
        // The top bits pick the shard, the table uses the low ones.
        &self.shards[(key >> 58) as usize % SHARDS]
    }

    /// Frees room in a full shard: expired entries first (lossless), then
    /// the half closest to refilled.
    fn make_room(&self, map: &mut Map) {
        let now = self.base.now().as_nanos() as u64;
        let mut keep: Vec<(u64, u64)> = map.drain().filter(|(_, tat)| *tat > now).collect();
        if keep.len() >= self.per_shard {
            let mid = keep.len() / 2;
            let (_, &mut (_, median), _) = keep.select_nth_unstable_by_key(mid, |(_, t)| *t);
            let before = keep.len();
            keep.retain(|(_, tat)| *tat > median);
            self.evictions
                .fetch_add((before - keep.len()) as u64, Ordering::Relaxed);
        }
        // A fresh table of the shard's size: erasing in place would leave
        // tombstones that make the next inserts double the table.
        let mut fresh = Map::with_capacity_and_hasher(self.per_shard, Default::default());
        fresh.extend(keep);
        *map = fresh;
    }
}

/// A rule's handle on the shared store (governor owns its store by value).
#[derive(Debug, Clone)]
pub struct SharedStore(pub Arc<GcraStore>);

impl StateStore for SharedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let store = &*self.0;
        let mut map = store.shard(*key).lock().expect("gcra shard");
        let old = map.get(key).copied();
        let (out, tat) = f(old.map(Nanos::new))?;
        if old.is_none() && map.len() >= store.per_shard {
            store.make_room(&mut map);
        }
        map.insert(*key, tat.as_u64());
        Ok(out)
    }
}
