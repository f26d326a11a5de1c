//! Policy state that must outlive reloads — fetched JWKS, verified-token
//! caches, and in part 2 token buckets, breakers and response caches. It is
//! held here, outside the route snapshot, keyed by the policy's identity
//! (policy, section, item) plus a fingerprint of what the state was built
//! from. A compile that meets the same key gets the same `Arc` back, so a
//! reload that leaves a policy unchanged keeps its caches warm (and never
//! refetches its JWKS); a changed spec gets fresh state; state no published
//! snapshot uses any more is dropped when the next snapshot is committed.
//!
//! The snapshot holds `Arc`s to the state it uses, so requests still running
//! on an old snapshot keep their state alive after it left the store.
use std::{
    any::Any,
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, OnceLock},
};

use super::PolicyId;

/// Identity of one piece of state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    pub policy: PolicyId,
    /// The section (`jwt`, ...).
    pub section: &'static str,
    /// What within the section (a provider name, `tokens`, ...).
    pub item: String,
    /// Digest of everything the state depends on (spec and key material):
    /// a different digest is different state.
    pub fingerprint: u64,
}

/// A digest of anything hashable, stable within the process.
pub fn fingerprint<T: Hash + ?Sized>(value: &T) -> u64 {
    // Fixed keys: the same input gives the same digest on every compile.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    /// The last compile that used it.
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<StateKey, Entry>,
    /// Compiles started so far.
    compiles: u64,
}

/// The store. One per agent (in [`crate::reload::Runtime`]).
#[derive(Default)]
pub struct PolicyState {
    inner: Mutex<Inner>,
    /// Runtime for background work of state (JWKS refreshes); `None` in
    /// pure compile tests, where nothing is fetched.
    runtime: Option<tokio::runtime::Handle>,
    /// Rate-limit buckets, cluster counters and the penalty box: one per
    /// agent, set by the app (a local-only one otherwise).
    rate_limits: OnceLock<Arc<super::ratelimit::RateLimitService>>,
}

impl std::fmt::Debug for PolicyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().expect("policy state lock");
        f.debug_struct("PolicyState")
            .field("entries", &inner.entries.len())
            .field("compiles", &inner.compiles)
            .finish()
    }
}

/// One compile's view of the store: what it gets is marked as used by it.
pub struct Compile<'a> {
    state: &'a PolicyState,
    id: u64,
}

impl PolicyState {
    /// A store whose state may run background tasks on `runtime`.
    pub fn with_runtime(runtime: tokio::runtime::Handle) -> Self {
        Self {
            inner: Mutex::default(),
            runtime: Some(runtime),
            rate_limits: OnceLock::new(),
        }
    }

    /// Uses `service` for every rate-limit section; fails when the store
    /// already has one (set it before the first compile).
    pub fn set_rate_limits(
        &self,
        service: Arc<super::ratelimit::RateLimitService>,
    ) -> Result<(), Arc<super::ratelimit::RateLimitService>> {
        self.rate_limits.set(service)
    }

    /// The agent's rate-limit service (a local-only one, without a cluster
    /// store or background work, when none was set: pure compiles and tests).
    pub fn rate_limits(&self) -> &Arc<super::ratelimit::RateLimitService> {
        self.rate_limits.get_or_init(|| {
            Arc::new(super::ratelimit::RateLimitService::new(
                Default::default(),
                Default::default(),
            ))
        })
    }

    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref()
    }

    /// Starts a compile.
    pub fn compile(&self) -> Compile<'_> {
        let mut inner = self.inner.lock().expect("policy state lock");
        inner.compiles += 1;
        Compile {
            state: self,
            id: inner.compiles,
        }
    }

    /// Drops the state the committed compile did not use. Called once its
    /// snapshot is published; a compile that was never published leaves
    /// its new state to be dropped by the next commit.
    pub fn commit(&self, compile: u64) {
        let mut inner = self.inner.lock().expect("policy state lock");
        inner.entries.retain(|_, e| e.used >= compile);
    }

    /// Number of pieces of state held (tests, admin).
    pub fn len(&self) -> usize {
        self.inner.lock().expect("policy state lock").entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every held value of type `T` (admin views, warm-up after a compile).
    pub fn all<T: Any + Send + Sync>(&self) -> Vec<(StateKey, Arc<T>)> {
        let inner = self.inner.lock().expect("policy state lock");
        inner
            .entries
            .iter()
            .filter_map(|(k, e)| e.value.clone().downcast::<T>().ok().map(|v| (k.clone(), v)))
            .collect()
    }
}

impl Compile<'_> {
    /// This compile's number (for [`PolicyState::commit`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn state(&self) -> &PolicyState {
        self.state
    }

    /// The state under `key`, made by `make` when there is none (or when
    /// what is there has another type).
    pub fn get_or_insert<T: Any + Send + Sync>(
        &self,
        key: StateKey,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut inner = self.state.inner.lock().expect("policy state lock");
        if let Some(e) = inner.entries.get_mut(&key) {
            if let Ok(v) = e.value.clone().downcast::<T>() {
                e.used = e.used.max(self.id);
                return v;
            }
        }
        let v = Arc::new(make());
        inner.entries.insert(
            key,
            Entry {
                value: v.clone(),
                used: self.id,
            },
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, fp: u64) -> StateKey {
        StateKey {
            policy: PolicyId::new("SluicePolicy", "ns", name),
            section: "jwt",
            item: "idp".into(),
            fingerprint: fp,
        }
    }

    #[test]
    fn unchanged_keys_reuse_state_and_unused_state_is_dropped_on_commit() {
        let store = PolicyState::default();
        let c1 = store.compile();
        let a = c1.get_or_insert(key("a", 1), || 1u32);
        let b = c1.get_or_insert(key("b", 1), || 2u32);
        store.commit(c1.id());
        assert_eq!(store.len(), 2);

        // Next compile: `a` unchanged, `b` changed its spec, `c` is gone.
        let c2 = store.compile();
        let a2 = c2.get_or_insert(key("a", 1), || 10u32);
        let b2 = c2.get_or_insert(key("b", 2), || 20u32);
        assert!(
            Arc::ptr_eq(&a, &a2),
            "same identity and fingerprint: same state"
        );
        assert!(!Arc::ptr_eq(&b, &b2));
        assert_eq!(*b2, 20);
        store.commit(c2.id());
        assert_eq!(store.len(), 2, "b's old state is dropped");
        assert_eq!(*b, 2, "but requests on the old snapshot keep it alive");
    }

    #[test]
    fn a_rejected_compile_does_not_drop_served_state() {
        let store = PolicyState::default();
        let c1 = store.compile();
        let a = c1.get_or_insert(key("a", 1), || 1u32);
        store.commit(c1.id());
        // A compile that is never published creates something...
        let c2 = store.compile();
        c2.get_or_insert(key("x", 1), || 5u32);
        // ...and the next published one still finds the served state.
        let c3 = store.compile();
        let a3 = c3.get_or_insert(key("a", 1), || 9u32);
        assert!(Arc::ptr_eq(&a, &a3));
        store.commit(c3.id());
        assert_eq!(store.len(), 1);
        assert_eq!(store.all::<u32>().len(), 1);
    }
}
