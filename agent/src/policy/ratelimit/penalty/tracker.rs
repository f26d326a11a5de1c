//! Refusal counts per (rule, Gateway, source prefix), bounded: the
//! `after`-th refusal within `within` is a penalty.
use std::hash::{BuildHasher, RandomState};

use super::*;

pub(super) const TRACKER_SHARDS: usize = 16;
/// Sources being counted towards a penalty, agent-wide.
pub const DEFAULT_TRACKER_CAPACITY: usize = 65_536;

/// Refusal counts towards penalties: (rule, Gateway, prefix) → refusals
/// in the current window of `within`. Bounded: a full shard drops the
/// counts whose window is over, then half of the rest (those sources start
/// counting again — a flood of distinct sources is what XDP's SYN budget
/// and the limits themselves are for).
#[allow(clippy::type_complexity)]
pub struct PenaltyTracker {
    hasher: RandomState,
    /// key → (window start, refusals in it).
    shards: Box<[Mutex<HashMap<u64, (u64, u32)>>]>,
    per_shard: usize,
    base: ClockBase,
    metrics: RateLimitMetrics,
}

impl std::fmt::Debug for PenaltyTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PenaltyTracker").finish_non_exhaustive()
    }
}

impl PenaltyTracker {
    pub fn new(capacity: usize, base: ClockBase, metrics: RateLimitMetrics) -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..TRACKER_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            per_shard: capacity.div_ceil(TRACKER_SHARDS).max(2),
            base,
            metrics,
        }
    }

    /// Counts one refusal; true when it is the `after`-th within `within`
    /// (the count then starts over).
    pub fn refused(&self, rule: u64, gateway: &str, ip: IpAddr, spec: &PenaltySpec) -> bool {
        let net = prefix_of(ip, spec);
        let key = self.hasher.hash_one((rule, gateway, net));
        let now = self.base.now().as_nanos() as u64;
        let within = spec.within.as_nanos() as u64;
        let mut map = self.shards[(key as usize) % TRACKER_SHARDS]
            .lock()
            .expect("tracker lock");
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, (start, _)| now.saturating_sub(*start) < within);
            if map.len() >= self.per_shard {
                let drop_n = map.len() / 2;
                let victims: Vec<u64> = map.keys().take(drop_n).copied().collect();
                for v in victims {
                    map.remove(&v);
                }
                self.metrics
                    .evictions
                    .get_or_create(&super::super::metrics::TableLabels {
                        table: "penalty_tracker",
                    })
                    .inc_by(drop_n as u64);
            }
        }
        let e = map.entry(key).or_insert((now, 0));
        if now.saturating_sub(e.0) >= within {
            *e = (now, 0);
        }
        e.1 += 1;
        if e.1 >= spec.after {
            map.remove(&key);
            return true;
        }
        false
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("tracker lock").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
