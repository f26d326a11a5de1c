//! A bounded cache of verified credentials (JWTs, Basic credentials), so a
//! credential seen again costs a hash and a comparison instead of a
//! signature check or a bcrypt round.
//!
//! Entries are found by a 64-bit SipHash of the credential under a random
//! per-process key and hold the credential itself, compared in full on a
//! hit: a hash collision can never authenticate a different credential,
//! and the secret key keeps collisions out of an attacker's reach. Entries
//! expire (a JWT no later than its `exp`); when the cache is full, a shard
//! drops its expired entries, then, if still full, all of them — the cost
//! of a flood of distinct credentials is bounded memory and re-verification,
//! never growth.
use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
    time::Instant,
};

const SHARDS: usize = 16;

/// The cache. `V` is what a hit yields (claims, a user name).
pub struct VerifiedCache<V> {
    hasher: RandomState,
    shards: [Mutex<HashMap<u64, Entry<V>>>; SHARDS],
    per_shard: usize,
}

struct Entry<V> {
    credential: Box<str>,
    value: V,
    expires: Instant,
}

impl<V: Clone> VerifiedCache<V> {
    /// A cache of at most `capacity` entries (rounded up to a multiple of the shard count).
    pub fn new(capacity: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn slot(&self, credential: &str) -> (u64, &Mutex<HashMap<u64, Entry<V>>>) {
        let h = self.hasher.hash_one(credential);
        (h, &self.shards[(h as usize) % SHARDS])
    }

    /// The value of an unexpired entry for exactly this credential.
    pub fn get(&self, credential: &str, now: Instant) -> Option<V> {
        let (h, shard) = self.slot(credential);
        let map = shard.lock().expect("cache shard lock");
        let e = map.get(&h)?;
        (now < e.expires && *e.credential == *credential).then(|| e.value.clone())
    }

    /// Remembers a verified credential until `expires`.
    pub fn insert(&self, credential: &str, value: V, expires: Instant, now: Instant) {
        if expires <= now {
            return;
        }
        let (h, shard) = self.slot(credential);
        let mut map = shard.lock().expect("cache shard lock");
        if map.len() >= self.per_shard && !map.contains_key(&h) {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.per_shard {
                map.clear();
            }
        }
        map.insert(
            h,
            Entry {
                credential: credential.into(),
                value,
                expires,
            },
        );
    }

    /// Entries held (tests, admin).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("cache shard lock").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> std::fmt::Debug for VerifiedCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn hits_need_the_same_credential_and_expire() {
        let c = VerifiedCache::new(100);
        let now = Instant::now();
        c.insert("token-a", 1, now + Duration::from_secs(10), now);
        assert_eq!(c.get("token-a", now), Some(1));
        assert_eq!(c.get("token-b", now), None);
        assert_eq!(c.get("token-a", now + Duration::from_secs(10)), None);
        c.insert("expired", 2, now, now);
        assert_eq!(c.get("expired", now), None);
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_distinct_credentials() {
        let c = VerifiedCache::new(1_000);
        let now = Instant::now();
        for i in 0..100_000 {
            c.insert(&format!("t{i}"), i, now + Duration::from_secs(60), now);
            assert!(c.len() <= 1_000 + SHARDS);
        }
        // The latest ones are still served.
        assert_eq!(c.get("t99999", now), Some(99_999));
    }
}
