//! Prometheus metrics: L7 request counters and latency by shard / route / status
//! class, the datapath mode, config reloads, shard connections, process
//! stats, and the eBPF packet and sockmap fast path counters and map
//! occupancy read at scrape time.
//!
//! Naming follows the Prometheus conventions (checked by `promtool check
//! metrics` and by tests): base units in the name (`_seconds`, `_bytes`),
//! counters end in `_total` (prometheus-client appends it), and labels take
//! values from the configuration or from enums only — never from request
//! data (paths, hosts, client addresses), so series stay bounded.
use std::sync::{atomic::AtomicU64, Arc, Mutex, OnceLock, Weak};

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

use crate::{
    kernel::{KernelDatapath, KernelDesired},
    reload::Runtime,
    snapshot::Snapshot,
};

/// `sluice_xdp_packets_total{shard,reason}` (eBPF datapath only).
pub const XDP_PACKETS: &str = "sluice_xdp_packets";
/// `sluice_xdp_attached{interface,mode}` (eBPF datapath only).
pub const XDP_ATTACHED: &str = "sluice_xdp_attached";
/// `sluice_sockmap_events_total{event}` (eBPF datapath only).
pub const SOCKMAP_EVENTS: &str = "sluice_sockmap_events";
/// `sluice_bpf_map_entries{map}` (eBPF datapath only).
pub const BPF_MAP_ENTRIES: &str = "sluice_bpf_map_entries";
/// `sluice_bpf_map_entries_limit{map}` (eBPF datapath only).
pub const BPF_MAP_ENTRIES_LIMIT: &str = "sluice_bpf_map_entries_limit";

/// A metric family only an agent with the eBPF datapath exposes.
#[derive(Debug, Clone, Copy)]
pub struct KernelFamily {
    /// The family name (a counter's samples add `_total`).
    pub name: &'static str,
    pub kind: prometheus_client::metrics::MetricType,
    pub labels: &'static [&'static str],
}

impl KernelFamily {
    /// The name its samples (and its text-format `# TYPE`) carry.
    pub fn sample_name(&self) -> String {
        match self.kind {
            prometheus_client::metrics::MetricType::Counter => format!("{}_total", self.name),
            _ => self.name.to_owned(),
        }
    }

    /// Its type as the exposition writes it.
    pub fn type_name(&self) -> &str {
        self.kind.as_str()
    }
}

/// The families the [`KernelCounters`] collector encodes (exactly these), so
/// dashboards and tests can tell them from the metrics every agent has.
pub const KERNEL_FAMILIES: [KernelFamily; 5] = {
    use prometheus_client::metrics::MetricType::{Counter, Gauge};
    [
        KernelFamily {
            name: XDP_PACKETS,
            kind: Counter,
            labels: &["shard", "reason"],
        },
        KernelFamily {
            name: XDP_ATTACHED,
            kind: Gauge,
            labels: &["interface", "mode"],
        },
        KernelFamily {
            name: SOCKMAP_EVENTS,
            kind: Counter,
            labels: &["event"],
        },
        KernelFamily {
            name: BPF_MAP_ENTRIES,
            kind: Gauge,
            labels: &["map"],
        },
        KernelFamily {
            name: BPF_MAP_ENTRIES_LIMIT,
            kind: Gauge,
            labels: &["map"],
        },
    ]
};

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

impl StatusClass {
    /// Position of the class among `1xx`..`5xx` (anything else counts as `5xx`).
    fn index(self) -> usize {
        match self.0 / 100 {
            1 => 0,
            2 => 1,
            3 => 2,
            4 => 3,
            _ => 4,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: Name,
}

/// A shard and why something happened to one of its connections or
/// requests (a timeout's or a shed's kind: a fixed set of names).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardReasonLabels {
    pub shard: Name,
    pub reason: &'static str,
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
    /// 1 when the last configuration change was applied, 0 when rejected.
    pub config_last_reload_successful: Gauge,
    /// When a configuration was last applied (Unix seconds).
    pub config_last_success_timestamp: Gauge<f64, AtomicU64>,
    /// eBPF map entries found different from the applied state (and repaired).
    pub bpf_map_drift: Family<MapLabels, Counter>,
    /// Failed eBPF map reads and writes of the reconciler (each try).
    pub bpf_reconcile_errors: Family<MapLabels, Counter>,
    /// 1 when the sockmap fast path is attached.
    pub sockmap_enabled: Gauge,
    /// Policy decisions per section.
    pub policy: crate::policy::PolicyMetrics,
    /// Client-side and upstream timeouts that expired, by shard and kind
    /// (`header`, `request_body`, `upstream_response`).
    pub http_timeouts: Family<ShardReasonLabels, Counter>,
    /// Connections closed by the gateway before or instead of serving them,
    /// by shard and reason (`per_source_limit`, `h2_resets`).
    pub connections_shed: Family<ShardReasonLabels, Counter>,
    /// Requests the client abandoned before their response head (HTTP/2
    /// stream reset, connection closed), by shard.
    pub requests_abandoned: Family<ShardLabels, Counter>,
    /// Connections of TLS Passthrough and TCP listeners, by shard, route and
    /// result (`relayed` or why not).
    pub l4_connections: Family<L4ConnectionLabels, Counter>,
    /// Bytes relayed by TLS Passthrough and TCP listeners, by shard, route
    /// and direction.
    pub l4_bytes: Family<L4BytesLabels, Counter>,
    /// Sessions of UDP listeners, by shard, route and result (`relayed`: a
    /// session was opened; else why a new client's datagram was dropped).
    pub udp_sessions: Family<L4ConnectionLabels, Counter>,
    /// Open UDP sessions, by shard.
    pub udp_sessions_active: Family<ShardLabels, Gauge>,
    /// Datagrams relayed by UDP listeners, by shard, route and direction.
    pub udp_datagrams: Family<L4BytesLabels, Counter>,
    /// Payload bytes relayed by UDP listeners, by shard, route and direction.
    pub udp_bytes: Family<L4BytesLabels, Counter>,
}

/// Labels of `sluice_l4_connections_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L4ConnectionLabels {
    pub shard: Name,
    /// `namespace/name` of the route; empty when none was found.
    pub route: Name,
    /// `relayed`, `no_route`, `not_tls`, `client_hello_timeout`,
    /// `client_hello_too_large`, `no_backend`, `connect_failure`.
    pub result: &'static str,
}

/// Labels of `sluice_l4_bytes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L4BytesLabels {
    pub shard: Name,
    pub route: Name,
    /// `upstream` (client to backend, the ClientHello included) or
    /// `downstream` (backend to client).
    pub direction: &'static str,
}

/// The request metrics of one route rule through one listener (so of one
/// shard and one route), resolved from the families on first use: the data
/// path then bumps an atomic instead of hashing four labels and taking the
/// family's lock on every request. The handles share the families' series,
/// so what they count shows in `/metrics` as before and survives reloads;
/// a series appears only once a request has used it, as before.
///
/// The handles are boxed on first use: most rules of a large config see no
/// traffic between reloads, and six unset handles in every rule action
/// (96 bytes) cost more than the pointer (16 with its lock).
#[derive(Debug, Default)]
pub struct RuleMetrics {
    handles: OnceLock<Box<RuleHandles>>,
}

#[derive(Debug, Default)]
struct RuleHandles {
    /// `reason="upstream"` (the backend answered), by status class.
    upstream: [OnceLock<Counter>; 5],
    duration: OnceLock<Histogram>,
}

impl RuleMetrics {
    /// The counter of a request the backend answered with `status`.
    pub fn upstream(
        &self,
        metrics: &Metrics,
        shard: &Arc<str>,
        route: &Arc<str>,
        status: u16,
    ) -> &Counter {
        let class = StatusClass(status);
        self.handles().upstream[class.index()].get_or_init(|| {
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    shard: Name(shard.clone()),
                    route: Name(route.clone()),
                    status_class: class,
                    reason: "upstream",
                })
                .clone()
        })
    }

    fn handles(&self) -> &RuleHandles {
        self.handles.get_or_init(Box::default)
    }

    /// The shard's latency histogram.
    pub fn duration(&self, metrics: &Metrics, shard: &Arc<str>) -> &Histogram {
        self.handles().duration.get_or_init(|| {
            metrics
                .request_duration
                .get_or_create(&ShardLabels {
                    shard: Name(shard.clone()),
                })
                .clone()
        })
    }
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
            config_last_reload_successful: Gauge::default(),
            config_last_success_timestamp: Gauge::default(),
            bpf_map_drift: Family::default(),
            bpf_reconcile_errors: Family::default(),
            sockmap_enabled: Gauge::default(),
            policy: crate::policy::PolicyMetrics::default(),
            http_timeouts: Family::default(),
            connections_shed: Family::default(),
            requests_abandoned: Family::default(),
            l4_connections: Family::default(),
            l4_bytes: Family::default(),
            udp_sessions: Family::default(),
            udp_sessions_active: Family::default(),
            udp_datagrams: Family::default(),
            udp_bytes: Family::default(),
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
            "sluice_config_last_reload_successful",
            "1 when the last configuration change was applied, 0 when it was rejected \
             (the previous configuration keeps serving) or none was applied yet",
            self.config_last_reload_successful.clone(),
        );
        registry.register(
            "sluice_config_last_reload_success_timestamp_seconds",
            "When a configuration was last applied, in seconds since the Unix epoch",
            self.config_last_success_timestamp.clone(),
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
        registry.register(
            "sluice_http_timeouts",
            "Timeouts that expired, by shard and kind: header (request head not complete \
             in time, including an idle keep-alive connection), request_body (client body \
             idle), upstream_response (the backend did not answer in time)",
            self.http_timeouts.clone(),
        );
        registry.register(
            "sluice_connections_shed",
            "Client connections the gateway closed to protect itself, by shard and reason: \
             per_source_limit (too many from one address, closed at accept), h2_resets \
             (HTTP/2 client resetting forwarded streams past the limit: GOAWAY)",
            self.connections_shed.clone(),
        );
        registry.register(
            "sluice_http_requests_abandoned",
            "Requests the client gave up on before the response head (HTTP/2 stream \
             reset, connection closed); their upstream requests are cancelled. By shard",
            self.requests_abandoned.clone(),
        );
        registry.register(
            "sluice_l4_connections",
            "Connections of TLS Passthrough and TCP listeners, by shard, route and result: \
             relayed, or why not (no_route, not_tls, client_hello_timeout, \
             client_hello_too_large, no_backend, connect_failure)",
            self.l4_connections.clone(),
        );
        registry.register(
            "sluice_l4_bytes",
            "Bytes relayed by TLS Passthrough and TCP listeners, by shard, route and \
             direction (upstream: client to backend; downstream: backend to client)",
            self.l4_bytes.clone(),
        );
        registry.register(
            "sluice_udp_sessions",
            "Sessions of UDP listeners (one per client address), by shard, route and \
             result: relayed (a session was opened), or why a new client's datagram was \
             dropped (no_route, no_backend, connect_failure, session_limit)",
            self.udp_sessions.clone(),
        );
        registry.register(
            "sluice_udp_sessions_active",
            "Open sessions of UDP listeners, by shard",
            self.udp_sessions_active.clone(),
        );
        registry.register(
            "sluice_udp_datagrams",
            "Datagrams relayed by UDP listeners, by shard, route and direction \
             (upstream: client to backend; downstream: backend to client)",
            self.udp_datagrams.clone(),
        );
        registry.register(
            "sluice_udp_bytes",
            "Payload bytes relayed by UDP listeners, by shard, route and direction",
            self.udp_bytes.clone(),
        );
        self.policy.register(registry);
    }

    /// Counts a connection of an L4 listener.
    pub fn l4_connection(&self, shard: &Arc<str>, route: &Arc<str>, result: &'static str) {
        self.l4_connections
            .get_or_create(&L4ConnectionLabels {
                shard: Name(shard.clone()),
                route: Name(route.clone()),
                result,
            })
            .inc();
    }

    /// Counts a new client of a UDP listener: a session opened, or why not.
    pub fn udp_session(&self, shard: &Arc<str>, route: &Arc<str>, result: &'static str) {
        self.udp_sessions
            .get_or_create(&L4ConnectionLabels {
                shard: Name(shard.clone()),
                route: Name(route.clone()),
                result,
            })
            .inc();
    }

    /// Counts bytes relayed by an L4 listener.
    pub fn l4_bytes(&self, shard: &Arc<str>, route: &Arc<str>, direction: &'static str, n: u64) {
        self.l4_bytes
            .get_or_create(&L4BytesLabels {
                shard: Name(shard.clone()),
                route: Name(route.clone()),
                direction,
            })
            .inc_by(n);
    }

    /// Counts requests a client abandoned.
    pub fn abandoned(&self, shard: &Arc<str>, n: u64) {
        self.requests_abandoned
            .get_or_create(&ShardLabels {
                shard: Name(shard.clone()),
            })
            .inc_by(n);
    }

    /// Counts an expired timeout of a shard.
    pub fn timeout(&self, shard: &Arc<str>, reason: &'static str) {
        self.http_timeouts
            .get_or_create(&ShardReasonLabels {
                shard: Name(shard.clone()),
                reason,
            })
            .inc();
    }

    /// Counts a connection closed to protect the shard.
    pub fn shed(&self, shard: &Arc<str>, reason: &'static str) {
        self.connections_shed
            .get_or_create(&ShardReasonLabels {
                shard: Name(shard.clone()),
                reason,
            })
            .inc();
    }
}

/// Reads the per-CPU packet counters of `xdp_ingress`, the fast path
/// counters and map occupancy at scrape time.
#[derive(Debug)]
pub struct KernelCounters {
    pub kernel: Arc<Mutex<KernelDatapath>>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Map contents of the served configuration (see [`Runtime::kernel_applied`]).
    pub desired: Arc<Mutex<KernelDesired>>,
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
struct BpfMapLabels {
    map: &'static str,
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
        let (counters, ifaces, fast_path, limits) = {
            let Ok(kernel) = self.kernel.lock() else {
                return Ok(());
            };
            (
                kernel.counters(&ids),
                kernel.xdp_interfaces().clone(),
                kernel.fast_path_counters(),
                kernel.map_limits().clone(),
            )
        };
        let entries = match self.desired.lock() {
            Ok(d) => d.entries_by_map(),
            Err(_) => return Ok(()),
        };
        let mut family = encoder.encode_descriptor(
            XDP_PACKETS,
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
            XDP_ATTACHED,
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
            SOCKMAP_EVENTS,
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
        let mut family = encoder.encode_descriptor(
            BPF_MAP_ENTRIES,
            "Entries the agent programmed into each eBPF map it reconciles (the maps hold \
             exactly these; the drift check repairs differences)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (map, n) in entries {
            prometheus_client::metrics::gauge::ConstGauge::new(n as i64)
                .encode(family.encode_family(&BpfMapLabels { map })?)?;
        }
        let mut family = encoder.encode_descriptor(
            BPF_MAP_ENTRIES_LIMIT,
            "Capacity (max_entries) of each sizable eBPF map (--map-size); SYN_BUDGET and \
             SOCK_PAIRS are filled by the kernel programs (LRU / socket hash)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (map, n) in limits {
            prometheus_client::metrics::gauge::ConstGauge::new(i64::from(n))
                .encode(family.encode_family(&BpfMapLabels { map })?)?;
        }
        Ok(())
    }
}

/// Per-shard connection use, read from the running shards at scrape time.
/// Holds the runtime weakly: metrics must not keep a stopped agent alive.
#[derive(Debug)]
pub struct ShardCollector {
    pub runtime: Weak<Runtime>,
}

impl Collector for ShardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(runtime) = self.runtime.upgrade() else {
            return Ok(());
        };
        let snapshot = runtime.snapshot.load();
        let connections = runtime.shard_connections();
        let named = || {
            connections.iter().filter_map(|(id, c)| {
                let shard = snapshot.shard(*id)?;
                Some((
                    ShardLabels {
                        shard: Name(shard.name.clone()),
                    },
                    *c,
                ))
            })
        };
        let mut family = encoder.encode_descriptor(
            "sluice_shard_connections",
            "Open downstream connections of each shard (Gateway); at the limit it may read \
             up to one per listening socket low",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, c) in named() {
            prometheus_client::metrics::gauge::ConstGauge::new(c.open as i64)
                .encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "sluice_shard_connections_limit",
            "Connection limit of each shard (its bulkhead): connections beyond it wait \
             in the listen backlog",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, c) in named() {
            prometheus_client::metrics::gauge::ConstGauge::new(c.limit as i64)
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Resource use of this process, from procfs.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// Unix time the process started.
    pub start_time_seconds: f64,
    pub threads: u64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/stat` (boot time) and `/proc/self/fd`;
    /// `None` where procfs is not mounted.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may contain spaces: fields
        // are counted from the last ')'. `rest[0]` is field 3 of proc(5).
        let rest: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
        let page = u64::try_from(page).unwrap_or(4096);
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)?,
            start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
            virtual_memory_bytes: field(23)?,
            resident_memory_bytes: field(24)? * page,
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
            max_fds,
        })
    }
}

/// The standard `process_*` metrics (the names every Prometheus client
/// library uses, so existing dashboards and alerts work), read at scrape time.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::{gauge::ConstGauge, MetricType};
        // Kept by the workers themselves (thread-local schedulers).
        ConstCounter::new(crate::gateway::fair::deferred_total()).encode(
            encoder.encode_descriptor(
                "sluice_fair_deferred_polls",
                "Polls of a Gateway's tasks deferred because it used more than its fair share of a busy worker",
                None,
                MetricType::Counter,
            )?,
        )?;
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        ConstCounter::new(p.cpu_seconds).encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_memory_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_memory_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                p.start_time_seconds,
            ),
            ("process_threads", "Number of OS threads", p.threads as f64),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Limit of open file descriptors",
                p.max_fds as f64,
            ),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}
