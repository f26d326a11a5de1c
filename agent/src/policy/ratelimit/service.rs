//! The agent's rate-limit state that outlives reloads: the bucket store,
//! the cluster store and its sync task, the penalty tracker and box.
use super::*;

/// Default capacity of the local bucket store (entries, all rules together).
pub const DEFAULT_MAX_KEYS: usize = 200_000;

/// Agent-wide settings of the rate-limit machinery (agent flags).
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Local buckets held at most (`--ratelimit-max-keys`).
    pub max_keys: usize,
    /// Penalties held at most (also the kernel map's size).
    pub penalty_capacity: usize,
    /// The cluster store (`--redis-url` ...); `None`: cluster rules and
    /// quotas follow their failure mode.
    pub store: Option<StoreSettings>,
    pub max_counters: usize,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            max_keys: DEFAULT_MAX_KEYS,
            penalty_capacity: penalty::DEFAULT_PENALTY_CAPACITY,
            store: None,
            max_counters: cluster::DEFAULT_MAX_COUNTERS,
        }
    }
}

/// The rate-limit state of one agent, outside any snapshot.
pub struct RateLimitService {
    pub(super) base: ClockBase,
    pub(super) store: Arc<GcraStore>,
    /// Keys the local bucket hashes (secret: clients cannot aim collisions).
    pub(super) hasher: RandomState,
    pub penalties: Arc<PenaltyBox>,
    pub(super) tracker: PenaltyTracker,
    pub cluster: Arc<ClusterStore>,
    metrics: RateLimitMetrics,
    stop: tokio::sync::watch::Sender<bool>,
    started: AtomicBool,
}

impl std::fmt::Debug for RateLimitService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("store", &self.store)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Drop for RateLimitService {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl RateLimitService {
    /// A service on the real clocks.
    pub fn new(opts: ServiceOptions, metrics: RateLimitMetrics) -> Self {
        Self::with_clocks(opts, metrics, ClockBase::real(), WallClock::Real)
    }

    /// A service on given clocks (tests move them by hand).
    pub fn with_clocks(
        opts: ServiceOptions,
        metrics: RateLimitMetrics,
        base: ClockBase,
        wall: WallClock,
    ) -> Self {
        Self {
            store: Arc::new(GcraStore::new(opts.max_keys, base.clone())),
            hasher: RandomState::new(),
            penalties: Arc::new(PenaltyBox::new(
                opts.penalty_capacity,
                base.clone(),
                metrics.clone(),
            )),
            tracker: PenaltyTracker::new(
                penalty::DEFAULT_TRACKER_CAPACITY,
                base.clone(),
                metrics.clone(),
            ),
            cluster: Arc::new(ClusterStore::new(
                opts.store,
                opts.max_counters,
                wall,
                metrics.clone(),
            )),
            base,
            metrics,
            stop: tokio::sync::watch::channel(false).0,
            started: AtomicBool::new(false),
        }
    }

    /// Starts the background work (cluster sync, penalty sweep, table
    /// gauges) on the current tokio runtime; once.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(self.cluster.clone().run(self.stop.subscribe()));
        let weak = Arc::downgrade(self);
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            let mut evicted = 0u64;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                let Some(s) = weak.upgrade() else { return };
                s.penalties.sweep();
                s.metrics
                    .keys
                    .get_or_create(&TableLabels { table: "local" })
                    .set(s.store.len() as i64);
                s.metrics
                    .keys
                    .get_or_create(&TableLabels {
                        table: "penalty_tracker",
                    })
                    .set(s.tracker.len() as i64);
                let now = s.store.evictions();
                s.metrics
                    .evictions
                    .get_or_create(&TableLabels { table: "local" })
                    .inc_by(now - evicted);
                evicted = now;
            }
        });
    }

    /// Waits (at most `within`) for the first sync with the cluster store,
    /// if one is configured; true when it answered.
    pub async fn wait_for_store(&self, within: Duration) -> bool {
        if !self.cluster.is_configured() || self.cluster.is_naive() {
            return true;
        }
        let until = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < until {
            if self.cluster.is_up() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.cluster.is_up()
    }

    pub fn clock(&self) -> &ClockBase {
        &self.base
    }

    pub fn store(&self) -> &GcraStore {
        &self.store
    }

    /// What `/readyz` says about rate limiting, when something is wrong.
    pub fn readiness_note(&self) -> Option<String> {
        let h = self.cluster.health();
        (h.configured && !h.up && !self.cluster.is_naive()).then(|| {
            format!(
                "rate-limit cluster store {} unreachable for {:.0}s ({}); cluster rules and \
                 quotas follow their failureMode",
                h.address.unwrap_or_default(),
                h.down_for_seconds.unwrap_or(0.0),
                h.last_error.unwrap_or_default()
            )
        })
    }

    /// The admin view (`/ratelimit`).
    pub fn admin_view(&self) -> serde_json::Value {
        serde_json::json!({
            "store": self.cluster.health(),
            "penalties": self.penalties.list(),
            "counters": self.cluster.views(1000),
            "localBuckets": {
                "entries": self.store.len(),
                "capacity": self.store.capacity(),
                "evictions": self.store.evictions(),
            },
        })
    }
}
