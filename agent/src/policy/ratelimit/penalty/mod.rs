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

#[cfg(test)]
mod tests;
mod tracker;

pub use tracker::*;

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
