//! The penalty box: source prefixes that were refused too often are dropped
//! for a while — by `xdp_ingress` at the NIC in eBPF mode (an LPM map of
//! (shard, prefix) → expiry that the program compares with
//! `bpf_ktime_get_ns`, so nothing sweeps on the data path), and at accept
//! in userspace mode ([`PenaltyBox::admits`], called by the accept loop).
//!
//! [`PenaltyTracker`] counts refusals per (rule, Gateway, source prefix) in
//! a bounded table; the box holds the active penalties (bounded too: when
//! full, the one closest to expiry makes room). A background sweep removes
//! expired entries from the box and the kernel map, and the admin endpoint
//! lists and removes them.
use std::{
    collections::{BTreeSet, HashMap},
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::SystemTime,
};

use ipnet::IpNet;

use super::{clock::ClockBase, key::mask, metrics::RateLimitMetrics, spec::PenaltySpec};
use crate::metrics::Name;

/// Why a source was penalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PenaltyCause {
    RateLimit,
    AuthFailure,
}

/// Finds a Gateway's shard id (`namespace/name` → id) in the served config.
pub type ShardResolver = Arc<dyn Fn(&str) -> Option<u32> + Send + Sync>;

/// The kernel side of the box (the `PENALTY` map), programmed off the
/// request path by a task.
pub trait PenaltyMap: Send {
    /// Adds or replaces an entry expiring at `expires_ns` (CLOCK_MONOTONIC).
    fn put(&mut self, shard: u32, net: IpNet, expires_ns: u64) -> Result<(), String>;
    /// Removes an entry; a missing one is not an error.
    fn delete(&mut self, shard: u32, net: IpNet) -> Result<(), String>;
    /// Every entry (a restarted agent adopts the pinned map's entries).
    fn dump(&self) -> Result<Vec<(u32, IpNet, u64)>, String>;
}

#[derive(Debug)]
enum KernelOp {
    Put(u32, IpNet, u64),
    Delete(u32, IpNet),
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One active penalty.
#[derive(Debug, Clone)]
struct Entry {
    /// CLOCK_MONOTONIC nanoseconds (the kernel's frame).
    expires_ns: u64,
    gateway: String,
    by: String,
    cause: PenaltyCause,
    since: SystemTime,
}

/// A penalty as the admin endpoint shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PenaltyView {
    pub gateway: String,
    pub shard: u32,
    pub prefix: String,
    pub expires_in_seconds: f64,
    /// `namespace/policy rule`.
    pub by: String,
    pub cause: PenaltyCause,
    /// Unix seconds.
    pub since: f64,
}

#[derive(Default)]
struct Table {
    entries: HashMap<(u32, IpNet), Entry>,
    /// Prefix lengths in use (IPv4, IPv6 separately), so a lookup masks the
    /// address once per length instead of scanning entries.
    lens_v4: BTreeSet<u8>,
    lens_v6: BTreeSet<u8>,
}

impl Table {
    fn relens(&mut self) {
        self.lens_v4 = self
            .entries
            .keys()
            .filter(|(_, n)| n.addr().is_ipv4())
            .map(|(_, n)| n.prefix_len())
            .collect();
        self.lens_v6 = self
            .entries
            .keys()
            .filter(|(_, n)| n.addr().is_ipv6())
            .map(|(_, n)| n.prefix_len())
            .collect();
    }
}

/// Default capacity of the box (and of the kernel `PENALTY` map).
pub const DEFAULT_PENALTY_CAPACITY: usize = 16_384;

/// The active penalties of the agent.
pub struct PenaltyBox {
    table: Mutex<Table>,
    /// Entries held: the accept check skips the lock while it is 0.
    active: AtomicUsize,
    capacity: usize,
    base: ClockBase,
    /// CLOCK_MONOTONIC minus the base's reading, taken once.
    offset_ns: u64,
    resolver: RwLock<Option<ShardResolver>>,
    kernel: Mutex<Option<tokio::sync::mpsc::UnboundedSender<KernelOp>>>,
    metrics: RateLimitMetrics,
}

impl std::fmt::Debug for PenaltyBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PenaltyBox")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn prefix_of(ip: IpAddr, spec: &PenaltySpec) -> IpNet {
    let ip = ip.to_canonical();
    let len = if ip.is_ipv4() {
        spec.prefix_v4
    } else {
        spec.prefix_v6
    };
    IpNet::new(mask(ip, spec.prefix_v4, spec.prefix_v6), len).expect("length checked")
}

impl PenaltyBox {
    pub fn new(capacity: usize, base: ClockBase, metrics: RateLimitMetrics) -> Self {
        let offset_ns = monotonic_ns().saturating_sub(base.now().as_nanos() as u64);
        Self {
            table: Mutex::default(),
            active: AtomicUsize::new(0),
            capacity: capacity.max(1),
            base,
            offset_ns,
            resolver: RwLock::new(None),
            kernel: Mutex::new(None),
            metrics,
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.now().as_nanos() as u64 + self.offset_ns
    }

    /// How Gateways are found in the served config (set by the app).
    pub fn set_resolver(&self, resolver: ShardResolver) {
        *self.resolver.write().expect("resolver lock") = Some(resolver);
    }

    fn shard_of(&self, gateway: &str) -> Option<u32> {
        let r = self.resolver.read().expect("resolver lock").clone()?;
        r(gateway)
    }

    /// Programs `map` with the box from now on, after adopting the entries
    /// it already holds (a pinned map left by a previous agent). Must be
    /// called inside a tokio runtime.
    pub fn attach_kernel(self: &Arc<Self>, mut map: Box<dyn PenaltyMap>) {
        let now = self.now_ns();
        match map.dump() {
            Ok(entries) => {
                let mut t = self.table.lock().expect("penalty lock");
                for (shard, net, expires_ns) in entries {
                    if expires_ns > now {
                        t.entries.insert(
                            (shard, net),
                            Entry {
                                expires_ns,
                                gateway: format!("shard {shard}"),
                                by: "adopted from a previous agent".into(),
                                cause: PenaltyCause::RateLimit,
                                since: SystemTime::now(),
                            },
                        );
                    } else if let Err(e) = map.delete(shard, net) {
                        tracing::warn!(error = %e, "removing an expired penalty");
                    }
                }
                t.relens();
                self.active.store(t.entries.len(), Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "reading the pinned penalty map"),
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<KernelOp>();
        *self.kernel.lock().expect("kernel lock") = Some(tx);
        // Map updates are syscalls under the datapath lock: never on the
        // request path.
        tokio::task::spawn_blocking(move || {
            while let Some(op) = rx.blocking_recv() {
                let r = match op {
                    KernelOp::Put(shard, net, exp) => map.put(shard, net, exp),
                    KernelOp::Delete(shard, net) => map.delete(shard, net),
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "programming the eBPF penalty map");
                }
            }
        });
    }

    fn to_kernel(&self, op: KernelOp) {
        if let Some(tx) = &*self.kernel.lock().expect("kernel lock") {
            let _ = tx.send(op);
        }
    }

    /// Puts the prefix of `ip` into the box for `spec.block` on the shard
    /// of `gateway`; an existing entry is extended, never shortened.
    pub fn penalize(
        &self,
        gateway: &str,
        ip: IpAddr,
        spec: &PenaltySpec,
        by: &str,
        cause: PenaltyCause,
    ) {
        let Some(shard) = self.shard_of(gateway) else {
            tracing::debug!(%gateway, "penalty for a Gateway that is not served; ignored");
            return;
        };
        let net = prefix_of(ip, spec);
        let expires_ns = self.now_ns() + spec.block.as_nanos() as u64;
        let mut t = self.table.lock().expect("penalty lock");
        if t.entries
            .get(&(shard, net))
            .is_some_and(|e| e.expires_ns >= expires_ns)
        {
            return;
        }
        if t.entries.len() >= self.capacity && !t.entries.contains_key(&(shard, net)) {
            // Full: the entry closest to its end makes room.
            if let Some(k) = t
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires_ns)
                .map(|(k, _)| *k)
            {
                t.entries.remove(&k);
                self.to_kernel(KernelOp::Delete(k.0, k.1));
            }
        }
        t.entries.insert(
            (shard, net),
            Entry {
                expires_ns,
                gateway: gateway.to_owned(),
                by: by.to_owned(),
                cause,
                since: SystemTime::now(),
            },
        );
        t.relens();
        self.active.store(t.entries.len(), Ordering::Release);
        drop(t);
        self.metrics.penalties_added.inc();
        self.metrics
            .penalties
            .set(self.active.load(Ordering::Acquire) as i64);
        self.to_kernel(KernelOp::Put(shard, net, expires_ns));
        tracing::warn!(
            source = %net, %gateway, by, ?cause, block_s = spec.block.as_secs_f64(),
            "source put into the penalty box"
        );
    }

    /// Whether a connection from `ip` to `shard` may be served (the accept
    /// check of the userspace datapath). Expired entries no longer count,
    /// whether or not the sweep removed them yet.
    pub fn admits(&self, shard: u32, ip: IpAddr) -> bool {
        if self.active.load(Ordering::Acquire) == 0 {
            return true;
        }
        let ip = ip.to_canonical();
        let now = self.now_ns();
        let t = self.table.lock().expect("penalty lock");
        let lens = if ip.is_ipv4() { &t.lens_v4 } else { &t.lens_v6 };
        for &len in lens {
            let net = IpNet::new(mask(ip, len, len), len).expect("valid length");
            if t.entries
                .get(&(shard, net))
                .is_some_and(|e| e.expires_ns > now)
            {
                return false;
            }
        }
        true
    }

    /// Counts a connection refused at accept.
    pub fn refused(&self, shard_name: &std::sync::Arc<str>) {
        self.metrics
            .penalty_refused
            .get_or_create(&super::metrics::ShardLabels {
                shard: Name(shard_name.clone()),
            })
            .inc();
    }

    /// Removes expired entries (off the data path: the kernel compares
    /// expiry times itself).
    pub fn sweep(&self) {
        let now = self.now_ns();
        let mut t = self.table.lock().expect("penalty lock");
        let expired: Vec<(u32, IpNet)> = t
            .entries
            .iter()
            .filter(|(_, e)| e.expires_ns <= now)
            .map(|(k, _)| *k)
            .collect();
        if expired.is_empty() {
            return;
        }
        for k in &expired {
            t.entries.remove(k);
        }
        t.relens();
        self.active.store(t.entries.len(), Ordering::Release);
        self.metrics.penalties.set(t.entries.len() as i64);
        drop(t);
        for (shard, net) in expired {
            tracing::info!(source = %net, shard, "penalty expired");
            self.to_kernel(KernelOp::Delete(shard, net));
        }
    }

    /// Removes the penalties of `net` (on every shard, or only on
    /// `gateway`'s); returns how many were removed.
    pub fn remove(&self, net: IpNet, gateway: Option<&str>) -> usize {
        let shard = gateway.and_then(|g| self.shard_of(g));
        if gateway.is_some() && shard.is_none() {
            return 0;
        }
        let net = net.trunc();
        let mut t = self.table.lock().expect("penalty lock");
        let gone: Vec<(u32, IpNet)> = t
            .entries
            .keys()
            .filter(|(s, n)| *n == net && shard.is_none_or(|x| x == *s))
            .copied()
            .collect();
        for k in &gone {
            t.entries.remove(k);
        }
        t.relens();
        self.active.store(t.entries.len(), Ordering::Release);
        self.metrics.penalties.set(t.entries.len() as i64);
        drop(t);
        for (shard, net) in &gone {
            tracing::info!(source = %net, shard, "penalty removed by an admin call");
            self.to_kernel(KernelOp::Delete(*shard, *net));
        }
        gone.len()
    }

    /// The active penalties, soonest expiry first.
    pub fn list(&self) -> Vec<PenaltyView> {
        let now = self.now_ns();
        let t = self.table.lock().expect("penalty lock");
        let mut v: Vec<PenaltyView> = t
            .entries
            .iter()
            .filter(|(_, e)| e.expires_ns > now)
            .map(|((shard, net), e)| PenaltyView {
                gateway: e.gateway.clone(),
                shard: *shard,
                prefix: net.to_string(),
                expires_in_seconds: (e.expires_ns - now) as f64 / 1e9,
                by: e.by.clone(),
                cause: e.cause,
                since: e
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            })
            .collect();
        v.sort_by(|a, b| a.expires_in_seconds.total_cmp(&b.expires_in_seconds));
        v
    }

    pub fn len(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const TRACKER_SHARDS: usize = 16;
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
                    .get_or_create(&super::metrics::TableLabels {
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

/// A penalty spec for tests and examples.
#[cfg(test)]
pub fn spec(after: u32, within: std::time::Duration, block: std::time::Duration) -> PenaltySpec {
    PenaltySpec {
        after,
        within,
        block,
        prefix_v4: 32,
        prefix_v6: 64,
        on_auth_failure: false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn boxed() -> (Arc<PenaltyBox>, ClockBase) {
        let base = ClockBase::fake();
        let b = Arc::new(PenaltyBox::new(
            4,
            base.clone(),
            RateLimitMetrics::default(),
        ));
        b.set_resolver(Arc::new(|g: &str| match g {
            "ns/gw" => Some(3),
            "ns/other" => Some(4),
            _ => None,
        }));
        (b, base)
    }

    #[test]
    fn tracker_penalizes_after_n_within_the_window() {
        let base = ClockBase::fake();
        let t = PenaltyTracker::new(1000, base.clone(), RateLimitMetrics::default());
        let s = spec(3, Duration::from_secs(10), Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert!(!t.refused(1, "ns/gw", ip, &s));
        assert!(!t.refused(1, "ns/gw", ip, &s));
        // Another rule, Gateway or source counts on its own.
        assert!(!t.refused(2, "ns/gw", ip, &s));
        assert!(!t.refused(1, "ns/other", ip, &s));
        assert!(!t.refused(1, "ns/gw", "10.0.0.8".parse().unwrap(), &s));
        assert!(t.refused(1, "ns/gw", ip, &s), "third within 10 s");
        // The window passes: counting starts over.
        assert!(!t.refused(1, "ns/gw", ip, &s));
        base.advance(Duration::from_secs(11));
        assert!(!t.refused(1, "ns/gw", ip, &s));
        assert!(!t.refused(1, "ns/gw", ip, &s));
        assert!(t.refused(1, "ns/gw", ip, &s));
    }

    #[test]
    fn tracker_memory_is_bounded() {
        let t = PenaltyTracker::new(1024, ClockBase::fake(), RateLimitMetrics::default());
        let s = spec(5, Duration::from_secs(10), Duration::from_secs(60));
        for i in 0..100_000u32 {
            t.refused(1, "ns/gw", IpAddr::V4(i.into()), &s);
        }
        assert!(t.len() <= 1024 + TRACKER_SHARDS, "{}", t.len());
    }

    #[test]
    fn box_blocks_the_prefix_on_its_shard_until_expiry() {
        let (b, base) = boxed();
        let s = PenaltySpec {
            prefix_v4: 24,
            ..spec(1, Duration::from_secs(1), Duration::from_secs(30))
        };
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(b.admits(3, ip));
        b.penalize("ns/gw", ip, &s, "ns/p rule", PenaltyCause::RateLimit);
        assert!(!b.admits(3, ip));
        assert!(!b.admits(3, "10.1.2.200".parse().unwrap()), "same /24");
        assert!(!b.admits(3, "::ffff:10.1.2.9".parse().unwrap()), "mapped");
        assert!(b.admits(3, "10.1.3.1".parse().unwrap()));
        assert!(b.admits(4, ip), "another Gateway's shard");
        let l = b.list();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].prefix, "10.1.2.0/24");
        assert_eq!(l[0].gateway, "ns/gw");
        base.advance(Duration::from_secs(29));
        assert!(!b.admits(3, ip));
        base.advance(Duration::from_secs(2));
        assert!(b.admits(3, ip), "expired, before any sweep");
        assert_eq!(b.len(), 1);
        b.sweep();
        assert_eq!(b.len(), 0);
        // Unknown Gateways are not penalized.
        b.penalize("ns/none", ip, &s, "x", PenaltyCause::RateLimit);
        assert!(b.is_empty());
    }

    #[test]
    fn box_removal_capacity_and_extension() {
        let (b, base) = boxed();
        let s = spec(1, Duration::from_secs(1), Duration::from_secs(30));
        for i in 1..=4u8 {
            b.penalize(
                "ns/gw",
                IpAddr::from([10, 0, 0, i]),
                &s,
                "r",
                PenaltyCause::AuthFailure,
            );
            base.advance(Duration::from_secs(1));
        }
        assert_eq!(b.len(), 4);
        // Full: the oldest (soonest to expire) makes room.
        b.penalize(
            "ns/gw",
            "10.0.0.5".parse().unwrap(),
            &s,
            "r",
            PenaltyCause::RateLimit,
        );
        assert_eq!(b.len(), 4);
        assert!(b.admits(3, "10.0.0.1".parse().unwrap()));
        assert!(!b.admits(3, "10.0.0.5".parse().unwrap()));
        // A shorter penalty never shortens a longer one.
        let short = spec(1, Duration::from_secs(1), Duration::from_secs(1));
        b.penalize(
            "ns/gw",
            "10.0.0.5".parse().unwrap(),
            &short,
            "r",
            PenaltyCause::RateLimit,
        );
        base.advance(Duration::from_secs(2));
        assert!(!b.admits(3, "10.0.0.5".parse().unwrap()));
        assert_eq!(b.remove("10.0.0.5/32".parse().unwrap(), None), 1);
        assert!(b.admits(3, "10.0.0.5".parse().unwrap()));
        assert_eq!(
            b.remove("10.0.0.2/32".parse().unwrap(), Some("ns/other")),
            0
        );
        assert_eq!(b.remove("10.0.0.2/32".parse().unwrap(), Some("ns/gw")), 1);
    }

    /// What the kernel map was told, and what it held at attach.
    #[derive(Clone, Default)]
    struct FakeMap {
        held: Vec<(u32, IpNet, u64)>,
        ops: Arc<Mutex<Vec<String>>>,
    }

    impl PenaltyMap for FakeMap {
        fn put(&mut self, shard: u32, net: IpNet, expires_ns: u64) -> Result<(), String> {
            self.ops
                .lock()
                .unwrap()
                .push(format!("put {shard} {net} {expires_ns}"));
            Ok(())
        }
        fn delete(&mut self, shard: u32, net: IpNet) -> Result<(), String> {
            self.ops
                .lock()
                .unwrap()
                .push(format!("delete {shard} {net}"));
            Ok(())
        }
        fn dump(&self) -> Result<Vec<(u32, IpNet, u64)>, String> {
            Ok(self.held.clone())
        }
    }

    #[tokio::test]
    async fn the_kernel_map_adopts_live_entries_and_follows_the_box() {
        let (b, _base) = boxed();
        let now = b.now_ns();
        let live: IpNet = "10.9.0.1/32".parse().unwrap();
        let stale: IpNet = "10.9.0.2/32".parse().unwrap();
        let fake = FakeMap {
            held: vec![(3, live, now + 60_000_000_000), (3, stale, now - 1)],
            ..Default::default()
        };
        let ops = fake.ops.clone();
        b.attach_kernel(Box::new(fake));
        // A previous agent's live entry is enforced at accept too.
        assert!(!b.admits(3, "10.9.0.1".parse().unwrap()));
        assert!(b.admits(3, "10.9.0.2".parse().unwrap()));
        let s = spec(1, Duration::from_secs(1), Duration::from_secs(30));
        b.penalize(
            "ns/gw",
            "10.1.1.1".parse().unwrap(),
            &s,
            "r",
            PenaltyCause::RateLimit,
        );
        assert_eq!(b.remove("10.1.1.1/32".parse().unwrap(), None), 1);
        let want = [
            format!("delete 3 {stale}"),
            format!("put 3 10.1.1.1/32 {}", now + 30_000_000_000),
            "delete 3 10.1.1.1/32".to_owned(),
        ];
        // Programmed by a blocking task, in order.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while ops.lock().unwrap().len() < want.len() {
            assert!(
                std::time::Instant::now() < until,
                "{:?}",
                ops.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*ops.lock().unwrap(), want);
    }
}
