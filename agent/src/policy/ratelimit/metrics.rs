//! Metrics of the rate-limit machinery that are not per-request decisions
//! (those are `sluice_policy_decisions_total{section="rateLimit"}`): the
//! cluster store's health, the tables' sizes and evictions, the penalty box.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::metrics::Name;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// `local` (GCRA buckets), `cluster` (cluster counters and quotas),
    /// `penalty_tracker` (refusal counts towards a penalty).
    pub table: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: Name,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `redis`.
    pub store: &'static str,
}

/// The labels of the one cluster store there is.
pub const REDIS: StoreLabels = StoreLabels { store: "redis" };

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The families; cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct RateLimitMetrics {
    /// 1 while the cluster store answers, 0 while it does not (only with `--redis-url`).
    pub store_up: Family<StoreLabels, Gauge>,
    pub store_syncs: Family<SyncLabels, Counter>,
    pub keys: Family<TableLabels, Gauge>,
    pub evictions: Family<TableLabels, Counter>,
    pub penalties: Gauge,
    pub penalties_added: Counter,
    pub penalty_refused: Family<ShardLabels, Counter>,
}

impl RateLimitMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_ratelimit_store_up",
            "1 while the rate-limit cluster store (Redis) answers, 0 while it is unreachable \
             (cluster rules and quotas then follow their failureMode)",
            self.store_up.clone(),
        );
        registry.register(
            "sluice_ratelimit_store_syncs",
            "Batched synchronisations of cluster counters with the store, by result",
            self.store_syncs.clone(),
        );
        registry.register(
            "sluice_ratelimit_keys",
            "Entries held per rate-limit table (bounded)",
            self.keys.clone(),
        );
        registry.register(
            "sluice_ratelimit_evictions",
            "Live rate-limit entries dropped because a table was full of active keys",
            self.evictions.clone(),
        );
        registry.register(
            "sluice_penalty_box_entries",
            "Source prefixes in the penalty box now",
            self.penalties.clone(),
        );
        registry.register(
            "sluice_penalty_box_added",
            "Source prefixes put into the penalty box",
            self.penalties_added.clone(),
        );
        registry.register(
            "sluice_penalty_box_refused_connections",
            "Connections closed at accept because their source is in the penalty box \
             (userspace datapath; with eBPF, XDP drops them: sluice_xdp_packets_total{reason=\"penalty\"})",
            self.penalty_refused.clone(),
        );
    }
}
