//! Fleet-wide counters (`rateLimit.cluster` and `rateLimit.quotas`) in a
//! Redis the agents share, **without a Redis round trip per request**.
//!
//! Each counter is a fixed window (a rule's unit, or a UTC day or month for
//! quotas) identified by a SHA-256 of the policy, rule, route scope and
//! request key, so every agent names the same Redis key for the same
//! client. A request only touches the agent's local copy of the counter:
//!
//! - `known`: the fleet's total for the window, as of the last sync;
//! - `pending` (+ `inflight`): what this agent admitted since.
//!
//! A background task syncs every counter in use every `sync_interval`
//! (default 100 ms) in one pipeline: `INCRBY key pending` (which returns
//! the fleet total, our share included), and the set of agents that
//! admitted requests in this window (`SADD`/`SCARD`). Between two syncs an
//! agent admits at most `⌈(limit − known) / (2·A)⌉` requests, where `A` is
//! the number of agents with demand for the counter in this window; before
//! its first sync of a window it admits at most `⌈limit · interval / window
//! / A⌉` (at least 1).
//!
//! **Overshoot bound.** Each round hands out at most half of what the
//! fleet believed was left, so the rounds converge on the limit instead of
//! crossing it; what crosses it is rounding (each share is at least one
//! request) and stale reads (an agent's total can miss another agent's
//! last push). Per counter and window the fleet admits at most
//! `limit + 2·A` requests, plus `⌈limit · interval / window⌉` for each agent
//! that joins in the window's last interval. The benchmark and the tests
//! measure it (docs/policy.md has the figures).
//!
//! **Store unreachable.** The counter's `failureMode` decides: `Open` —
//! each agent enforces the limit against its own view (the last fleet total
//! plus its own admissions since), so one agent never exceeds the limit
//! and the fleet at most `A ×` the limit while the outage lasts; `Closed` —
//! 503. Admissions made meanwhile stay pending and are pushed when the
//! store is back (a quota keeps counting through an outage). The task
//! reconnects with jittered exponential backoff (100 ms … 5 s); the state
//! shows in `/readyz`, `/ratelimit`, `sluice_ratelimit_store_up` and the
//! `rate_limit_unavailable` reason of the decision metric.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use redis::aio::MultiplexedConnection;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::Notify,
};

use super::{metrics::RateLimitMetrics, spec::FailureMode};

/// Errors of the cluster store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Redis URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("reading {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Redis TLS settings: {0}")]
    Tls(String),
    #[error("connecting to Redis at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Redis at {addr}: {source}")]
    Redis {
        addr: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis at {addr}: no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("Redis at {addr}: unexpected reply: {what}")]
    Reply { addr: String, what: String },
    #[error("no cluster store configured (--redis-url)")]
    NotConfigured,
}

mod connect;
mod settings;
#[cfg(test)]
mod tests;
mod window;

use connect::open as connect;
pub use settings::*;
pub use window::*;

/// What a counter is, for the admin view.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterLabel {
    /// `cluster` or `quota`.
    pub kind: &'static str,
    /// `namespace/policy`.
    pub policy: String,
    pub rule: String,
    /// The request key, readable (`client=ci`, `source=10.0.0.0/24`).
    pub key: String,
}

#[derive(Debug, Default)]
struct CounterState {
    window: u64,
    /// Fleet total of `window` at the last sync (our pushes included).
    known: u64,
    /// Admitted here since the last sync started.
    pending: u64,
    /// Admitted here and being pushed by the sync in flight.
    inflight: u64,
    /// Agents with demand in this window (at least 1 once known).
    agents: u32,
    /// Whether `known` is from this window.
    synced: bool,
    /// Admissions of a window that ended before they were pushed.
    carry: Option<(u64, u64)>,
    last_used_ms: u64,
    /// The limit of the last request (a reload may change it).
    limit: u64,
}

/// One fleet-wide counter, as this agent sees it.
#[derive(Debug)]
pub struct Counter {
    /// `{prefix}:{c|q}:{id}:{window tag}`; `:{window id}` is appended.
    key: String,
    window: Window,
    pub label: CounterLabel,
    st: Mutex<CounterState>,
}

/// The outcome of one request against a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        remaining: u64,
        reset_ms: u64,
    },
    Limited {
        retry_after_ms: u64,
        reset_ms: u64,
    },
    /// The store is unreachable and the failure mode is `Closed`.
    Unavailable,
}

/// A counter as the admin endpoint shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterView {
    #[serde(flatten)]
    pub label: CounterLabel,
    pub limit: u64,
    /// Fleet total at the last sync plus what this agent admitted since.
    pub used: u64,
    pub remaining: u64,
    pub resets_in_seconds: f64,
    /// Whether `used` includes a sync of the current window.
    pub synced: bool,
}

/// Health of the store for `/readyz` and `/ratelimit`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreHealth {
    pub configured: bool,
    pub address: Option<String>,
    pub up: bool,
    pub down_for_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub counters: usize,
    pub sync_interval_ms: u64,
}

const SHARDS: usize = 16;
/// Counters held per agent (cluster rules and quotas together).
pub const DEFAULT_MAX_COUNTERS: usize = 100_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Counters per pipeline (bounds one reply's size).
const BATCH: usize = 1000;

type CounterMap = HashMap<[u8; 16], Arc<Counter>>;

/// The agent's side of the cluster store.
pub struct ClusterStore {
    settings: Option<StoreSettings>,
    agent_id: String,
    wall: WallClock,
    counters: Box<[Mutex<CounterMap>]>,
    per_shard: usize,
    up: AtomicBool,
    down: Mutex<(Option<Instant>, Option<String>)>,
    wake: Notify,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    metrics: RateLimitMetrics,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("settings", &self.settings)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// One counter's part of a sync.
struct Work {
    counter: Arc<Counter>,
    window: u64,
    push: u64,
    carry: Option<(u64, u64)>,
}

impl ClusterStore {
    /// A store (not yet syncing: see [`ClusterStore::run`]). Without
    /// settings it is never reachable and every counter follows its
    /// failure mode.
    pub fn new(
        settings: Option<StoreSettings>,
        max_counters: usize,
        wall: WallClock,
        metrics: RateLimitMetrics,
    ) -> Self {
        let agent_id = format!(
            "{}-{}-{:x}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            std::process::id(),
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), Instant::now())
        );
        if settings.is_some() {
            metrics
                .store_up
                .get_or_create(&super::metrics::REDIS)
                .set(0);
        }
        Self {
            settings,
            agent_id,
            wall,
            counters: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_counters.div_ceil(SHARDS).max(2),
            up: AtomicBool::new(false),
            down: Mutex::new((Some(Instant::now()), None)),
            wake: Notify::new(),
            conn: tokio::sync::Mutex::new(None),
            metrics,
        }
    }

    pub fn is_configured(&self) -> bool {
        self.settings.is_some()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn is_naive(&self) -> bool {
        self.settings.as_ref().is_some_and(|s| s.naive)
    }

    fn interval(&self) -> Duration {
        self.settings
            .as_ref()
            .map_or(DEFAULT_SYNC_INTERVAL, |s| s.sync_interval)
    }

    pub fn wall(&self) -> &WallClock {
        &self.wall
    }

    /// The counter `id`, created by `make` (kind, key tag, label) when new.
    /// Bounded: a full shard drops its idle counters, then the least
    /// recently used half (their unpushed admissions are lost).
    pub fn counter(
        &self,
        id: [u8; 16],
        window: Window,
        make: impl FnOnce() -> CounterLabel,
    ) -> Arc<Counter> {
        let shard = &self.counters[id[0] as usize % SHARDS];
        let mut map = shard.lock().expect("counter shard");
        if let Some(c) = map.get(&id) {
            return c.clone();
        }
        if map.len() >= self.per_shard {
            let now = self.wall.unix_ms();
            let before = map.len();
            map.retain(|_, c| !c.idle(now));
            if map.len() >= self.per_shard {
                let mut used: Vec<u64> = map
                    .values()
                    .map(|c| c.st.lock().expect("counter").last_used_ms)
                    .collect();
                let mid = used.len() / 2;
                let (_, m, _) = used.select_nth_unstable(mid);
                let m = *m;
                map.retain(|_, c| c.st.lock().expect("counter").last_used_ms > m);
                self.metrics
                    .evictions
                    .get_or_create(&super::metrics::TableLabels { table: "cluster" })
                    .inc_by((before - map.len()) as u64);
            }
        }
        let label = make();
        let prefix = self
            .settings
            .as_ref()
            .map_or("sluice", |s| s.key_prefix.as_str());
        let kind = if label.kind == "quota" { "q" } else { "c" };
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let c = Arc::new(Counter {
            key: format!("{prefix}:{kind}:{hex}:{}", window.tag()),
            window,
            label,
            st: Mutex::new(CounterState::default()),
        });
        map.insert(id, c.clone());
        c
    }

    /// Counters held.
    pub fn len(&self) -> usize {
        self.counters
            .iter()
            .map(|s| s.lock().expect("counter shard").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One request against `counter` with `limit` per window: decided from
    /// local state only (no I/O).
    pub fn acquire(&self, counter: &Counter, limit: u64, mode: FailureMode) -> Decision {
        let now = self.wall.unix_ms();
        let w = counter.window.id(now);
        let end = counter.window.end_ms(w);
        let reset_ms = end.saturating_sub(now);
        let mut st = counter.st.lock().expect("counter");
        st.limit = limit;
        st.last_used_ms = now;
        // A new counter, or a new window: the sync task should read the
        // fleet's total soon rather than a full interval later.
        let wake = st.window != w;
        if wake {
            if st.pending > 0 && st.window < w {
                st.carry = Some((st.window, st.pending));
            }
            st.window = w;
            st.known = 0;
            st.pending = 0;
            st.synced = false;
        }
        let used = st.known + st.pending + st.inflight;
        let decision = if !self.is_up() {
            match mode {
                FailureMode::Closed => Decision::Unavailable,
                // On its own: the last fleet total plus our admissions since.
                FailureMode::Open if used < limit => {
                    st.pending += 1;
                    Decision::Allowed {
                        remaining: limit - used - 1,
                        reset_ms,
                    }
                }
                FailureMode::Open => Decision::Limited {
                    retry_after_ms: reset_ms,
                    reset_ms,
                },
            }
        } else {
            let since = st.pending + st.inflight;
            let agents = u64::from(st.agents.max(1));
            let allowance = if st.synced {
                ceil_div(limit.saturating_sub(st.known), 2 * agents)
            } else {
                let len = counter.window.end_ms(w) - counter.window.start_ms(w);
                ceil_div(
                    limit.saturating_mul(self.interval().as_millis() as u64),
                    len.saturating_mul(agents),
                )
                .max(1)
                .min(limit)
            };
            if since < allowance {
                st.pending += 1;
                Decision::Allowed {
                    remaining: limit.saturating_sub(used + 1),
                    reset_ms,
                }
            } else if used >= limit {
                Decision::Limited {
                    retry_after_ms: reset_ms,
                    reset_ms,
                }
            } else {
                // Our share of this round is spent; the next sync hands out more.
                Decision::Limited {
                    retry_after_ms: self.interval().as_millis() as u64,
                    reset_ms,
                }
            }
        };
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        decision
    }

    /// One request counted in Redis right away (`--ratelimit-naive-cluster`,
    /// the benchmark's baseline): `INCR` and compare, a round trip each.
    pub async fn acquire_naive(&self, counter: &Counter, limit: u64) -> Decision {
        let now = self.wall.unix_ms();
        let w = counter.window.id(now);
        let reset_ms = counter.window.end_ms(w).saturating_sub(now);
        let key = format!("{}:{w}", counter.key);
        let mut conn = match self.connection().await {
            Ok(c) => c,
            Err(_) => return Decision::Unavailable,
        };
        let mut p = redis::pipe();
        p.cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(counter.window.ttl_ms())
            .ignore();
        match p.query_async::<Vec<u64>>(&mut conn).await {
            Ok(v) if v.first().is_some_and(|n| *n <= limit) => Decision::Allowed {
                remaining: limit - v[0],
                reset_ms,
            },
            Ok(_) => Decision::Limited {
                retry_after_ms: reset_ms,
                reset_ms,
            },
            Err(e) => {
                self.mark_down(&format!("naive call: {e}"));
                *self.conn.lock().await = None;
                Decision::Unavailable
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let settings = self.settings.as_ref().ok_or(StoreError::NotConfigured)?;
        let mut guard = self.conn.lock().await;
        if let Some(c) = &*guard {
            return Ok(c.clone());
        }
        let c = connect(settings).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    fn mark_down(&self, why: &str) {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        let mut d = self.down.lock().expect("down lock");
        if was_up {
            d.0 = Some(Instant::now());
            tracing::warn!(
                error = why,
                "rate-limit cluster store unreachable: cluster rules and quotas follow their \
                 failureMode until it is back"
            );
        }
        d.1 = Some(why.to_owned());
        if self.settings.is_some() {
            self.metrics
                .store_up
                .get_or_create(&super::metrics::REDIS)
                .set(0);
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            let mut d = self.down.lock().expect("down lock");
            let was = d.0.take();
            tracing::info!(
                down_for_s = was.map(|t| t.elapsed().as_secs_f64()),
                "rate-limit cluster store reachable; counters resynchronised"
            );
            d.1 = None;
            self.metrics
                .store_up
                .get_or_create(&super::metrics::REDIS)
                .set(1);
        }
    }

    /// One sync of every counter in use: pushes what was admitted here,
    /// reads the fleet totals and agent counts back. A failure leaves
    /// everything pending for the next one and marks the store down.
    pub async fn sync_once(&self) -> Result<(), StoreError> {
        let settings = self.settings.as_ref().ok_or(StoreError::NotConfigured)?;
        let addr = settings.addr();
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.mark_down(&e.to_string());
                self.metrics
                    .store_syncs
                    .get_or_create(&super::metrics::SyncLabels { result: "error" })
                    .inc();
                return Err(e);
            }
        };
        let work = self.collect();
        let mut result = Ok(());
        for chunk in work.chunks(BATCH) {
            if let Err(e) = self
                .push(conn.clone(), &addr, chunk, settings.timeout)
                .await
            {
                result = Err(e);
                break;
            }
        }
        match &result {
            Ok(()) => {
                self.mark_up();
                self.metrics
                    .store_syncs
                    .get_or_create(&super::metrics::SyncLabels { result: "ok" })
                    .inc();
            }
            Err(e) => {
                // Everything not applied goes back to pending.
                for w in &work {
                    w.counter.restore(w);
                }
                *self.conn.lock().await = None;
                self.mark_down(&e.to_string());
                self.metrics
                    .store_syncs
                    .get_or_create(&super::metrics::SyncLabels { result: "error" })
                    .inc();
            }
        }
        self.metrics
            .keys
            .get_or_create(&super::metrics::TableLabels { table: "cluster" })
            .set(self.len() as i64);
        result
    }

    /// What to sync: counters used in their current window, with their
    /// pending admissions moved to in flight. Idle counters are dropped.
    fn collect(&self) -> Vec<Work> {
        let now = self.wall.unix_ms();
        let mut out = Vec::new();
        for shard in self.counters.iter() {
            let mut map = shard.lock().expect("counter shard");
            map.retain(|_, c| !c.idle(now));
            for c in map.values() {
                let mut st = c.st.lock().expect("counter");
                let current = c.window.id(now);
                if st.window != current {
                    // Not used in this window yet: only an unpushed rest to send.
                    if st.pending > 0 && st.window < current {
                        st.carry = Some((st.window, st.pending));
                        st.pending = 0;
                    }
                    if st.carry.is_none() {
                        continue;
                    }
                }
                let push = if st.window == current { st.pending } else { 0 };
                st.pending -= push;
                st.inflight += push;
                out.push(Work {
                    counter: c.clone(),
                    window: st.window,
                    push,
                    carry: st.carry.take(),
                });
            }
        }
        out
    }

    async fn push(
        &self,
        mut conn: MultiplexedConnection,
        addr: &str,
        work: &[Work],
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let mut p = redis::pipe();
        for w in work {
            let c = &w.counter;
            let ttl = c.window.ttl_ms();
            let key = format!("{}:{}", c.key, w.window);
            let agents = format!("{key}:agents");
            p.cmd("INCRBY").arg(&key).arg(w.push);
            p.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
            if w.push > 0 {
                p.cmd("SADD").arg(&agents).arg(&self.agent_id).ignore();
                p.cmd("PEXPIRE").arg(&agents).arg(ttl).ignore();
            }
            p.cmd("SCARD").arg(&agents);
            if let Some((old, n)) = w.carry {
                let okey = format!("{}:{old}", c.key);
                p.cmd("INCRBY").arg(&okey).arg(n).ignore();
                p.cmd("PEXPIRE").arg(&okey).arg(ttl).ignore();
            }
        }
        let replies: Vec<u64> = tokio::time::timeout(timeout, p.query_async(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout {
                addr: addr.to_owned(),
                timeout,
            })?
            .map_err(|source| StoreError::Redis {
                addr: addr.to_owned(),
                source,
            })?;
        if replies.len() != 2 * work.len() {
            return Err(StoreError::Reply {
                addr: addr.to_owned(),
                what: format!("{} replies for {} counters", replies.len(), work.len()),
            });
        }
        for (w, r) in work.iter().zip(replies.chunks(2)) {
            w.counter.applied(w, r[0], r[1] as u32);
        }
        Ok(())
    }

    /// Syncs until `stop`: every interval, sooner when a counter needs its
    /// first sync of a window; reconnects with jittered exponential backoff
    /// while the store is unreachable.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(settings) = self.settings.clone() else {
            return;
        };
        if settings.naive {
            return;
        }
        let interval = settings.sync_interval;
        let mut backoff = BACKOFF_MIN;
        let mut last_warn = Instant::now();
        let mut first = true;
        loop {
            let wait = if first {
                // Connect at once: until the first sync the store counts as down.
                Duration::ZERO
            } else if self.is_up() {
                interval
            } else {
                backoff
            };
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // A new counter or window: sync soon, not a full interval later.
                _ = self.wake.notified(), if self.is_up() => {
                    tokio::time::sleep(interval / 10).await;
                }
                _ = stop.changed() => return,
            }
            match self.sync_once().await {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(e) => {
                    if last_warn.elapsed() > Duration::from_secs(30) {
                        tracing::warn!(error = %e, "rate-limit cluster store still unreachable");
                        last_warn = Instant::now();
                    } else {
                        tracing::debug!(error = %e, "rate-limit cluster store sync failed");
                    }
                    // Jitter: agents of a fleet do not reconnect in lockstep.
                    let jitter = 0.5
                        + (std::hash::BuildHasher::hash_one(
                            &std::hash::RandomState::new(),
                            Instant::now(),
                        ) % 1000) as f64
                            / 1000.0;
                    backoff = (backoff.mul_f64(2.0 * jitter)).clamp(BACKOFF_MIN, BACKOFF_MAX);
                }
            }
        }
    }

    pub fn health(&self) -> StoreHealth {
        let d = self.down.lock().expect("down lock");
        let up = self.is_up();
        StoreHealth {
            configured: self.settings.is_some(),
            address: self.settings.as_ref().map(StoreSettings::addr),
            up,
            down_for_seconds: (!up).then(|| d.0.map_or(0.0, |t| t.elapsed().as_secs_f64())),
            last_error: d.1.clone(),
            counters: self.len(),
            sync_interval_ms: self.interval().as_millis() as u64,
        }
    }

    /// Counters in use (the admin view), most used first, at most `max`.
    pub fn views(&self, max: usize) -> Vec<CounterView> {
        let now = self.wall.unix_ms();
        let mut out: Vec<CounterView> = Vec::new();
        for shard in self.counters.iter() {
            for c in shard.lock().expect("counter shard").values() {
                let st = c.st.lock().expect("counter");
                let w = c.window.id(now);
                let current = st.window == w;
                let used = if current {
                    st.known + st.pending + st.inflight
                } else {
                    0
                };
                out.push(CounterView {
                    label: c.label.clone(),
                    limit: st.limit,
                    used,
                    remaining: st.limit.saturating_sub(used),
                    resets_in_seconds: c.window.end_ms(w).saturating_sub(now) as f64 / 1000.0,
                    synced: current && st.synced,
                });
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.used));
        out.truncate(max);
        out
    }
}

impl Counter {
    /// Not used in this window or the last, and nothing left to push.
    fn idle(&self, now_ms: u64) -> bool {
        let st = self.st.lock().expect("counter");
        let cur = self.window.id(now_ms);
        st.pending == 0 && st.inflight == 0 && st.carry.is_none() && st.window + 1 < cur
    }

    fn applied(&self, w: &Work, total: u64, agents: u32) {
        let mut st = self.st.lock().expect("counter");
        st.inflight = st.inflight.saturating_sub(w.push);
        if st.window == w.window {
            st.known = total;
            st.agents = agents.max(1);
            st.synced = true;
        }
    }

    fn restore(&self, w: &Work) {
        let mut st = self.st.lock().expect("counter");
        if st.inflight >= w.push {
            st.inflight -= w.push;
            if st.window == w.window {
                st.pending += w.push;
            } else if st.carry.is_none() && w.push > 0 {
                st.carry = Some((w.window, w.push));
            }
        }
        if let Some(c) = w.carry {
            if st.carry.is_none() {
                st.carry = Some(c);
            }
        }
    }

    /// The fleet total and agents as last synced (tests).
    pub fn known(&self) -> (u64, u32) {
        let st = self.st.lock().expect("counter");
        (st.known, st.agents)
    }
}
