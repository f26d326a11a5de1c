//! The byte-bounded store of one cache policy: entries by [`Key`], least
//! recently used first out. Everything an entry holds is counted (body,
//! headers, key, vary values, a fixed overhead), the total never exceeds
//! `maxBytes`, and an entry larger than `maxEntryBytes` is never admitted
//! (the response streamed through uncached). Lives in the policy state,
//! outside the snapshot, so a reload that leaves the policy unchanged keeps
//! it warm.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};

use super::{
    coalesce::Flights,
    key::{variant, vary_values, BaseKey, Key, VaryValues},
    rules::CacheControl,
};
use crate::policy::PolicyId;

/// Fixed cost counted per entry besides what it holds.
const ENTRY_OVERHEAD: usize = 256;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    pub status: StatusCode,
    /// As received, less connection-specific fields.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The request's values of the `Vary` fields it was stored for.
    pub vary: VaryValues,
    /// When it was received (or last validated).
    pub stored: Instant,
    /// Its age then (§4.2.3).
    pub initial_age: Duration,
    /// Freshness lifetime.
    pub lifetime: Duration,
    /// The response's directives.
    pub cc: CacheControl,
}

impl Entry {
    /// Current age (§4.2.3).
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored)
    }

    /// Seconds of freshness left; negative once stale (`Cache-Status` `ttl`).
    pub fn ttl(&self, now: Instant) -> i64 {
        self.lifetime.as_secs() as i64 - self.age(now).as_secs() as i64
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.lifetime
    }

    /// Whether a stale entry may be served while it is refreshed in the
    /// background (RFC 5861 §3).
    pub fn within_stale_while_revalidate(&self, now: Instant) -> bool {
        self.stale_within(self.cc.stale_while_revalidate, now)
    }

    /// Whether a stale entry may stand in for an upstream error (RFC 5861 §4).
    pub fn within_stale_if_error(&self, now: Instant) -> bool {
        self.stale_within(self.cc.stale_if_error, now)
    }

    fn stale_within(&self, window: Option<u64>, now: Instant) -> bool {
        // must-revalidate and no-cache forbid serving stale (§4.2.4, §5.2.2).
        match window {
            Some(w) if !self.cc.must_revalidate && !self.cc.no_cache => {
                self.age(now) < self.lifetime + Duration::from_secs(w)
            }
            _ => false,
        }
    }

    /// Whether the request's values of the entry's `Vary` fields are the
    /// ones it was stored for.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(n, v)| headers.get_all(n).iter().eq(v.iter()))
    }

    fn bytes(&self, key: &BaseKey) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(n, v)| n.as_str().len() + v.iter().map(|v| v.len() + 16).sum::<usize>())
            .sum();
        ENTRY_OVERHEAD + key.bytes() + headers + vary + self.body.len()
    }
}

/// What the store has for a request.
#[derive(Debug)]
pub enum Found {
    /// An entry for this variant.
    Entry(Arc<Entry>),
    /// Entries for the resource, none for the request's variant.
    VaryMiss,
    /// Nothing for the resource.
    UriMiss,
}

/// Occupancy and counters of one store (admin, metrics).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub entries: usize,
    pub bytes: u64,
    pub max_bytes: u64,
    pub max_entry_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

struct Slot {
    entry: Arc<Entry>,
    tick: u64,
    bytes: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Slot>,
    /// Use order: oldest first.
    lru: BTreeMap<u64, Key>,
    /// The `Vary` fields last stored for a resource, and how many entries
    /// of it there are.
    vary: HashMap<BaseKey, (Arc<[HeaderName]>, usize)>,
    bytes: u64,
    tick: u64,
}

impl Inner {
    fn remove(&mut self, key: &Key) -> Option<Slot> {
        let slot = self.entries.remove(key)?;
        self.lru.remove(&slot.tick);
        self.bytes -= slot.bytes;
        if let Some((_, n)) = self.vary.get_mut(&key.base) {
            *n -= 1;
            if *n == 0 {
                self.vary.remove(&key.base);
            }
        }
        Some(slot)
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

/// The store of one cache policy.
pub struct Store {
    pub policy: PolicyId,
    pub max_bytes: u64,
    pub max_entry_bytes: u64,
    inner: Mutex<Inner>,
    /// Misses in the air (coalescing).
    pub flights: Arc<Flights>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("policy", &self.policy)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Store {
    pub fn new(policy: PolicyId, max_bytes: u64, max_entry_bytes: u64) -> Self {
        Self {
            policy,
            max_bytes,
            max_entry_bytes,
            inner: Mutex::default(),
            flights: Arc::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("response cache lock")
    }

    /// The key of a request for `base`: with the `Vary` fields the
    /// resource was last stored with (none when it is not stored).
    pub fn key(&self, base: &BaseKey, headers: &HeaderMap) -> Key {
        let names = self.lock().vary.get(base).map(|(n, _)| n.clone());
        let variant = names.map_or(0, |n| variant(&vary_values(&n, headers)));
        Key {
            base: base.clone(),
            variant,
        }
    }

    /// The entry for a request, marked as used.
    pub fn lookup(&self, base: &BaseKey, headers: &HeaderMap) -> Found {
        let mut inner = self.lock();
        let Some((names, _)) = inner.vary.get(base) else {
            return Found::UriMiss;
        };
        let key = Key {
            base: base.clone(),
            variant: variant(&vary_values(names, headers)),
        };
        let tick = inner.next_tick();
        let Some(slot) = inner.entries.get_mut(&key) else {
            return Found::VaryMiss;
        };
        if !slot.entry.matches(headers) {
            return Found::VaryMiss;
        }
        let old = std::mem::replace(&mut slot.tick, tick);
        let entry = slot.entry.clone();
        inner.lru.remove(&old);
        inner.lru.insert(tick, key);
        Found::Entry(entry)
    }

    /// Stores `entry` for `base` and the request `headers` (whose values of
    /// the response's `Vary` fields `names` select the variant). Evicts the
    /// least recently used entries to stay within `maxBytes`; an entry over
    /// `maxEntryBytes` is not stored. Whether it was.
    pub fn insert(&self, base: BaseKey, names: Vec<HeaderName>, entry: Entry) -> bool {
        let bytes = entry.bytes(&base) as u64;
        if bytes > self.max_entry_bytes.max(1).min(self.max_bytes) {
            return false;
        }
        let key = Key {
            variant: variant(&entry.vary),
            base,
        };
        let mut inner = self.lock();
        inner.remove(&key);
        // A resource whose Vary changed: its other variants were keyed by
        // the old fields and can no longer be found.
        let names: Arc<[HeaderName]> = names.into();
        let stale_variants: Vec<Key> = match inner.vary.get(&key.base) {
            Some((old, _)) if **old != *names => inner
                .entries
                .keys()
                .filter(|k| k.base == key.base)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        for k in stale_variants {
            inner.remove(&k);
        }
        let mut evicted = 0;
        while inner.bytes + bytes > self.max_bytes {
            let Some(oldest) = inner.lru.values().next().cloned() else {
                break;
            };
            inner.remove(&oldest);
            evicted += 1;
        }
        let tick = inner.next_tick();
        inner.bytes += bytes;
        inner.lru.insert(tick, key.clone());
        inner
            .vary
            .entry(key.base.clone())
            .and_modify(|(n, count)| {
                *n = names.clone();
                *count += 1;
            })
            .or_insert((names, 1));
        inner.entries.insert(
            key,
            Slot {
                entry: Arc::new(entry),
                tick,
                bytes,
            },
        );
        drop(inner);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        true
    }

    /// Removes every variant of a resource (an unsafe method changed it,
    /// RFC 9111 §4.4). How many there were.
    pub fn invalidate(&self, base: &BaseKey) -> usize {
        self.purge(|k| k == base)
    }

    /// Removes the entries whose primary key `which` selects; how many.
    pub fn purge(&self, which: impl Fn(&BaseKey) -> bool) -> usize {
        let mut inner = self.lock();
        let keys: Vec<Key> = inner
            .entries
            .keys()
            .filter(|k| which(&k.base))
            .cloned()
            .collect();
        for k in &keys {
            inner.remove(k);
        }
        keys.len()
    }

    pub fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        let (entries, bytes) = {
            let inner = self.lock();
            (inner.entries.len(), inner.bytes)
        };
        Stats {
            entries,
            bytes,
            max_bytes: self.max_bytes,
            max_entry_bytes: self.max_entry_bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(path: &str) -> BaseKey {
        BaseKey::new(&Arc::from("ns/r"), 0, "http", "h", &path.parse().unwrap())
    }

    fn entry(body: usize, vary: VaryValues) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            vary,
            stored: Instant::now(),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(60),
            cc: CacheControl::default(),
        }
    }

    fn store(max: u64, entry_max: u64) -> Store {
        Store::new(PolicyId::new("SluicePolicy", "ns", "p"), max, entry_max)
    }

    #[test]
    fn bytes_stay_within_the_bound_and_the_least_recently_used_goes_first() {
        let s = store(4 * 1300, 2000);
        for p in ["/a", "/b", "/c", "/d"] {
            assert!(s.insert(base(p), vec![], entry(1000, vec![])));
        }
        assert_eq!(s.stats().entries, 4);
        // Use /a, so /b is the least recently used.
        assert!(matches!(
            s.lookup(&base("/a"), &HeaderMap::new()),
            Found::Entry(_)
        ));
        assert!(s.insert(base("/e"), vec![], entry(1000, vec![])));
        let st = s.stats();
        assert!(st.bytes <= st.max_bytes, "{st:?}");
        assert_eq!(st.evictions, 1);
        assert!(matches!(
            s.lookup(&base("/b"), &HeaderMap::new()),
            Found::UriMiss
        ));
        assert!(matches!(
            s.lookup(&base("/a"), &HeaderMap::new()),
            Found::Entry(_)
        ));
        assert!(
            !s.insert(base("/big"), vec![], entry(2000, vec![])),
            "over the entry limit"
        );
        assert!(matches!(
            s.lookup(&base("/big"), &HeaderMap::new()),
            Found::UriMiss
        ));
    }

    #[test]
    fn variants_are_kept_apart_and_purged_together() {
        let s = store(1 << 20, 1 << 20);
        let names = vec![HeaderName::from_static("accept-language")];
        let mut de = HeaderMap::new();
        de.insert("accept-language", "de".parse().unwrap());
        let mut fr = HeaderMap::new();
        fr.insert("accept-language", "fr".parse().unwrap());
        s.insert(
            base("/a"),
            names.clone(),
            entry(1, vary_values(&names, &de)),
        );
        assert!(matches!(s.lookup(&base("/a"), &de), Found::Entry(_)));
        assert!(matches!(s.lookup(&base("/a"), &fr), Found::VaryMiss));
        s.insert(
            base("/a"),
            names.clone(),
            entry(2, vary_values(&names, &fr)),
        );
        let Found::Entry(e) = s.lookup(&base("/a"), &fr) else {
            panic!("fr stored")
        };
        assert_eq!(e.body.len(), 2);
        s.insert(base("/b"), vec![], entry(1, vec![]));
        assert_eq!(s.invalidate(&base("/a")), 2);
        assert!(matches!(s.lookup(&base("/a"), &de), Found::UriMiss));
        assert_eq!(s.purge(|k| k.target.starts_with("/b")), 1);
        assert_eq!(s.stats().entries, 0);
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn freshness_and_stale_windows() {
        let now = Instant::now();
        let mut e = entry(1, vec![]);
        e.lifetime = Duration::from_secs(10);
        e.initial_age = Duration::from_secs(12);
        e.cc.stale_while_revalidate = Some(5);
        e.cc.stale_if_error = Some(1);
        assert!(!e.is_fresh(now));
        assert_eq!(e.ttl(now), -2);
        assert!(e.within_stale_while_revalidate(now));
        assert!(!e.within_stale_if_error(now));
        e.cc.must_revalidate = true;
        assert!(
            !e.within_stale_while_revalidate(now),
            "must-revalidate forbids stale"
        );
    }
}
