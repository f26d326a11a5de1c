//! `sluice_cache_*`: occupancy and counters of every response cache,
//! read from the stores at scrape time (the request path only bumps the
//! stores' own atomics).
use std::sync::Weak;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use super::store::{Stats, Store};
use crate::{metrics::Name, policy::state::PolicyState};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    namespace: Name,
    policy: Name,
}

/// Collects the metrics of the stores held by a policy state.
#[derive(Debug)]
pub struct CacheCollector(pub Weak<PolicyState>);

type Field = fn(&Stats) -> u64;

const COUNTERS: [(&str, &str, Field); 3] = [
    (
        "sluice_cache_hits",
        "Requests answered from the response cache without a request upstream of their own",
        |s| s.hits,
    ),
    (
        "sluice_cache_misses",
        "Requests of cached routes that went upstream (miss, stale, revalidation)",
        |s| s.misses,
    ),
    (
        "sluice_cache_evictions",
        "Entries evicted to keep a response cache within maxBytes",
        |s| s.evictions,
    ),
];

const GAUGES: [(&str, &str, Field); 3] = [
    (
        "sluice_cache_stored_bytes",
        "Bytes held by a response cache (bodies, headers, keys)",
        |s| s.bytes,
    ),
    (
        "sluice_cache_max_bytes",
        "The maxBytes bound of a response cache",
        |s| s.max_bytes,
    ),
    (
        "sluice_cache_entries",
        "Entries held by a response cache",
        |s| s.entries as u64,
    ),
];

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(state) = self.0.upgrade() else {
            return Ok(());
        };
        let stores: Vec<(CacheLabels, Stats)> = state
            .all::<Store>()
            .into_iter()
            .map(|(_, s)| {
                (
                    CacheLabels {
                        namespace: Name(s.policy.namespace.clone()),
                        policy: Name(s.policy.name.clone()),
                    },
                    s.stats(),
                )
            })
            .collect();
        for (name, help, field) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, stats) in &stores {
                ConstCounter::new(field(stats)).encode(family.encode_family(labels)?)?;
            }
        }
        for (name, help, field) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, stats) in &stores {
                ConstGauge::new(field(stats) as i64).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
