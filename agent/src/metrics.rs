//! Prometheus metrics: L7 request counters and latency by shard / route / status
//! class, the datapath mode, and the eBPF packet and sockmap fast path counters
//! read from the maps at scrape time.
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    },
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::{kernel::KernelDatapath, snapshot::Snapshot};

/// A label value shared with the snapshot without copying per request.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// Response status class label (`2xx`, `4xx`, ...).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct StatusClass(pub u16);

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let s = match self.0 / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        EncodeLabelValue::encode(&s, encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub shard: Name,
    pub route: Name,
    pub status_class: StatusClass,
    /// `upstream` for the backend's answers; otherwise why the gateway
    /// answered itself (a [`crate::policy::Reason`] label, `redirect`,
    /// `cors_preflight`).
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: Name,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: &'static str,
}

/// Metrics the L7 data path and the control plane update.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ShardLabels, Histogram, fn() -> Histogram>,
    pub datapath_mode: Family<ModeLabels, Gauge>,
    pub config_reloads: Family<ConfigLabels, Counter>,
    pub config_generation: Gauge,
    /// eBPF map entries found different from the applied state (and repaired).
    pub bpf_map_drift: Family<MapLabels, Counter>,
    /// Failed eBPF map reads and writes of the reconciler (each try).
    pub bpf_reconcile_errors: Family<MapLabels, Counter>,
    /// 1 when the sockmap fast path is attached.
    pub sockmap_enabled: Gauge,
    /// Policy decisions per section.
    pub policy: crate::policy::PolicyMetrics,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~13 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            datapath_mode: Family::default(),
            config_reloads: Family::default(),
            config_generation: Gauge::default(),
            bpf_map_drift: Family::default(),
            bpf_reconcile_errors: Family::default(),
            sockmap_enabled: Gauge::default(),
            policy: crate::policy::PolicyMetrics::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_http_requests",
            "HTTP requests handled, by shard (Gateway), route, status class and reason \
             (upstream: the backend answered; otherwise why the gateway answered itself)",
            self.requests.clone(),
        );
        registry.register(
            "sluice_http_request_duration_seconds",
            "Time from request head received to response head sent, by shard",
            self.request_duration.clone(),
        );
        registry.register(
            "sluice_datapath_mode",
            "1 for the datapath mode in use (ebpf or userspace)",
            self.datapath_mode.clone(),
        );
        registry.register(
            "sluice_config_reloads",
            "Configuration loads by result (applied or rejected)",
            self.config_reloads.clone(),
        );
        registry.register(
            "sluice_config_generation",
            "Generation of the snapshot being served",
            self.config_generation.clone(),
        );
        registry.register(
            "sluice_bpf_map_drift",
            "eBPF map entries found different from the applied configuration (missing, \
             changed or extra) by the periodic check, and repaired; by map",
            self.bpf_map_drift.clone(),
        );
        registry.register(
            "sluice_bpf_reconcile_errors",
            "Failed eBPF map operations of the reconciler (every try), by map",
            self.bpf_reconcile_errors.clone(),
        );
        registry.register(
            "sluice_sockmap_enabled",
            "1 when the sockmap fast path between node-local sockets is attached (--sockmap)",
            self.sockmap_enabled.clone(),
        );
        self.policy.register(registry);
    }
}

/// Reads the per-CPU packet counters of `xdp_ingress` at scrape time.
#[derive(Debug)]
pub struct KernelCounters {
    pub kernel: Arc<Mutex<KernelDatapath>>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
}

impl std::fmt::Debug for KernelDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDatapath")
            .field("xdp", self.xdp_interfaces())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct XdpLabels {
    shard: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FastPathLabels {
    event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct XdpIfaceLabels {
    interface: String,
    mode: &'static str,
}

impl Collector for KernelCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.load();
        let ids: Vec<u32> = snapshot.shards.iter().map(|s| s.id).collect();
        let (counters, ifaces, fast_path) = {
            let Ok(kernel) = self.kernel.lock() else {
                return Ok(());
            };
            (
                kernel.counters(&ids),
                kernel.xdp_interfaces().clone(),
                kernel.fast_path_counters(),
            )
        };
        let mut family = encoder.encode_descriptor(
            "sluice_xdp_packets",
            "Packets seen by xdp_ingress, by shard and verdict reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (shard, reason, value) in counters {
            let shard = match snapshot.shard(shard) {
                Some(s) => s.gateway.to_string(),
                None => "none".to_owned(),
            };
            let labels = XdpLabels {
                shard,
                reason: reason.label(),
            };
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "sluice_xdp_attached",
            "1 per interface with xdp_ingress attached, by attach mode",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (iface, mode) in ifaces {
            let labels = XdpIfaceLabels {
                interface: iface,
                mode: mode.label(),
            };
            prometheus_client::metrics::gauge::ConstGauge::new(1i64)
                .encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "sluice_sockmap_events",
            "Sockmap fast path events: sockets tracked, messages redirected to the peer \
             socket or passed to TCP",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (event, value) in fast_path {
            let labels = FastPathLabels {
                event: event.label(),
            };
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
