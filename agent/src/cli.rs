//! Command line of the `sluice` binary.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    app::{DatapathMode, Settings},
    kube::KubeSettings,
    sources::{vault::VaultUrl, Secret, SourceUrl, StoreSettings, TlsFiles},
};

/// Sluice: eBPF-accelerated node-level API gateway agent (Gateway API).
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Directory of Gateway API YAML documents (GatewayClass, Gateway, HTTPRoute,
    /// Service, EndpointSlice, Namespace); read recursively, *.yaml and *.yml.
    /// The same as `--config-source file:///DIR`.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present_any = ["kubernetes", "config_source"],
        conflicts_with_all = ["kubernetes", "config_source"]
    )]
    pub config_dir: Option<PathBuf>,

    /// Where the configuration comes from: `file:///PATH` (a directory, as
    /// `--config-dir`), `consul://HOST:PORT/PREFIX` or `etcd://HOST:PORT/PREFIX`
    /// (`consuls://`, `etcds://` for TLS): each key under the prefix holds one
    /// YAML file's documents. Store changes apply whole or not at all; while
    /// the store is down or reads empty, the last good configuration serves.
    #[arg(long, value_name = "URL", conflicts_with = "kubernetes", value_parser = parse_source)]
    pub config_source: Option<SourceUrl>,

    /// Validate the configuration (`--config-dir` or `--config-source`)
    /// exactly as the agent would, print every error, and exit: 0 when it
    /// is valid, 1 when not.
    #[arg(long)]
    pub check: bool,

    /// Consul for `ConsulService` backends (`consul://HOST:PORT`, `consuls://`).
    /// Default: the config source when it is Consul.
    #[arg(long, value_name = "URL", global = true, value_parser = parse_consul, env = "SLUICE_CONSUL_ADDR")]
    pub consul_addr: Option<SourceUrl>,

    /// File holding the Consul ACL token (re-read on every request); default:
    /// the `CONSUL_HTTP_TOKEN` environment variable.
    #[arg(long, value_name = "FILE", global = true)]
    pub consul_token_file: Option<PathBuf>,

    /// etcd user (clusters with authentication); the password comes from
    /// `--etcd-password-file` or `ETCD_PASSWORD`.
    #[arg(long, value_name = "NAME", global = true)]
    pub etcd_user: Option<String>,

    #[arg(long, value_name = "FILE", global = true)]
    pub etcd_password_file: Option<PathBuf>,

    /// CA bundle (PEM) for TLS to Consul or etcd; default: the platform's.
    #[arg(long, value_name = "FILE", global = true)]
    pub store_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for Consul or etcd, with `--store-key-file`.
    #[arg(long, value_name = "FILE", global = true, requires = "store_key_file")]
    pub store_cert_file: Option<PathBuf>,

    #[arg(long, value_name = "FILE", global = true, requires = "store_cert_file")]
    pub store_key_file: Option<PathBuf>,

    /// Secrets (listener certificates, SluicePolicy credentials) from a KV v2
    /// store speaking the Vault HTTP API: `vault://HOST:PORT/MOUNT/PREFIX`
    /// (`vaults://` for TLS). The Secret NAMESPACE/NAME is the entry
    /// PREFIX/NAMESPACE/NAME (`tls.crt` and `tls.key` for certificates).
    #[arg(long, value_name = "URL", value_parser = parse_vault)]
    pub secret_source: Option<VaultUrl>,

    /// File holding the Vault-API token (re-read; renewed before it
    /// expires); default: `VAULT_TOKEN` or `BAO_TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub secret_token_file: Option<PathBuf>,

    /// CA bundle (PEM) for `vaults://`; default: the platform's.
    #[arg(long, value_name = "FILE")]
    pub secret_ca_file: Option<PathBuf>,

    /// How often the versions of held Secrets are checked (KV v2 has no watch).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub secret_poll_seconds: u64,

    /// Read the configuration from the Kubernetes API (KUBECONFIG, ~/.kube/config
    /// or the in-cluster service account) instead of a directory.
    #[arg(long)]
    pub kubernetes: bool,

    /// Kubernetes: watch only this namespace (a control plane per namespace,
    /// namespaced RBAC). Default: cluster-wide.
    #[arg(long, value_name = "NS")]
    pub watch_namespace: Option<String>,

    /// Kubernetes: name of this node: identity in the status-writer Lease;
    /// its Pods give namespace identity, its labels select the Gateways
    /// annotated `sluice.dev/node-selector`.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Kubernetes: label selector of the Gateways this agent serves, e.g.
    /// `sluice.dev/fleet=dmz`, and of the IngressClasses whose Ingresses it
    /// serves. Default: every Gateway of a Sluice GatewayClass (and every
    /// Sluice IngressClass).
    #[arg(long, value_name = "LABELSELECTOR")]
    pub gateway_selector: Option<String>,

    /// Kubernetes: the agent's own namespace, where the status-writer Lease
    /// `sluice-status-writer` lives.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "sluice-system"
    )]
    pub pod_namespace: String,

    /// Kubernetes: name of the status-writer Lease. Fleets that split the
    /// Gateways with `--gateway-selector` need one each, or only one
    /// fleet's Gateways get status.
    #[arg(long, value_name = "NAME", default_value = "sluice-status-writer")]
    pub lease_name: String,

    /// Kubernetes: this agent's pod name, added to the Lease identity.
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Kubernetes: port of the Ingress entry point's plain-HTTP listener
    /// (Ingresses of IngressClasses with controller `sluice.dev/ingress-controller`).
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    pub ingress_http_port: u16,

    /// Kubernetes: port of the Ingress entry point's HTTPS listeners (`spec.tls`).
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    pub ingress_https_port: u16,

    /// Kubernetes: address the Ingress entry point serves on (repeatable).
    /// Default: every local address, the node's addresses in Ingress status.
    #[arg(long, value_name = "IP")]
    pub ingress_address: Vec<std::net::IpAddr>,

    /// When this agent stops without a successor, leave the pinned eBPF
    /// datapath (XDP, sk_lookup, maps) in place for the next agent: new
    /// connections to gateway ports wait for its sockets (their SYNs are
    /// retransmitted) instead of being refused. The systemd unit sets it, so
    /// `systemctl restart` is hitless; `sluice detach` removes the datapath.
    #[arg(long)]
    pub keep_datapath_on_exit: bool,

    /// Datapath: `ebpf` (XDP + sk_lookup; fail if they cannot load), `userspace`
    /// (the agent binds listener addresses itself), or `auto` (eBPF when it
    /// loads, userspace otherwise; the choice is logged and exported as the
    /// `sluice_datapath_mode` metric).
    #[arg(long, value_enum, default_value_t = DatapathArg::Auto)]
    pub datapath: DatapathArg,

    /// Listen address of the admin endpoint (/healthz, /readyz, /metrics,
    /// /config, /status, the status page, POST /reconcile). Clients not on
    /// loopback only get /metrics, /healthz and /readyz from it, whatever
    /// the address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    pub admin_addr: SocketAddr,

    /// An extra listener serving only /metrics, /healthz and /readyz, for
    /// Prometheus and probes on the node's address (e.g. `0.0.0.0:9902`),
    /// while `--admin-addr` stays on loopback.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Interface to attach `xdp_ingress` to (repeatable). Without any, no XDP
    /// program is attached and only sk_lookup steering is used.
    #[arg(long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,

    /// Log level of the eBPF programs' output: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub ebpf_log_level: EbpfLogLevel,

    /// bpf filesystem where the eBPF maps, the shard-socket SockMap and the XDP
    /// links are pinned (under `sluice/<netns inode>/`), so that a restarted
    /// agent takes over without refusing connections. Mounted if needed.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf", global = true)]
    pub bpffs: PathBuf,

    /// XDP attach mode: `auto` (native where the driver supports it, generic
    /// otherwise), `native` (fail without driver support), `generic`.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,

    /// Agent config file (YAML). Today: `namespaces:` — which source CIDRs and
    /// cgroups belong to which namespace, for `sluice.dev/admitted-namespaces`.
    #[arg(long, value_name = "FILE", env = "SLUICE_CONFIG")]
    pub agent_config: Option<PathBuf>,

    /// Capacity of an eBPF map, `NAME=N` (repeatable): LISTENERS, SOURCE_RULES,
    /// SYN_BUDGET, SOURCE_NS, CGROUP_NS, ADMISSION, SOCK_PAIRS.
    #[arg(long = "map-size", value_name = "NAME=N", value_parser = parse_map_size)]
    pub map_sizes: Vec<(String, u32)>,

    /// cgroup v2 directory for the connect4/connect6 hooks (default: the root
    /// of the cgroup v2 hierarchy, wherever it is mounted).
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,

    /// Sockmap fast path (opt-in): TCP payload between two sockets of this
    /// node (loopback, or the same address at both ends) in the agent's network
    /// namespace and under the `--cgroup` directory skips the TCP stack
    /// (`sockops_track` + `msg_redirect`). With `--datapath ebpf` a kernel that
    /// refuses it stops the agent; with `auto` it is left off with a warning.
    #[arg(long)]
    pub sockmap: bool,

    /// Networks of proxies in front of the gateway (comma-separated CIDRs or
    /// addresses). Their X-Forwarded-For is appended to and their
    /// X-Forwarded-Proto/Host kept; from any other peer these headers (and
    /// Forwarded) are replaced. Default: trust no one.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Cluster store of `rateLimit.cluster` rules and quotas:
    /// `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS.
    /// Without it those rules follow their failureMode.
    #[arg(long, value_name = "URL", env = "SLUICE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// File holding the Redis password (AUTH; e.g. a mounted Secret); wins
    /// over a password in the URL.
    #[arg(long, value_name = "FILE", requires = "redis_url")]
    pub redis_password_file: Option<PathBuf>,

    /// Redis user name for AUTH (ACL users; default: the URL's, else none).
    #[arg(long, value_name = "NAME", requires = "redis_url")]
    pub redis_username: Option<String>,

    /// PEM CA bundle the Redis server certificate must chain to (rediss://;
    /// default: the platform's CAs).
    #[arg(long, value_name = "FILE", requires = "redis_url")]
    pub redis_tls_ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with Redis (with --redis-tls-key).
    #[arg(long, value_name = "FILE", requires = "redis_tls_key")]
    pub redis_tls_cert: Option<PathBuf>,

    /// PEM private key of --redis-tls-cert.
    #[arg(long, value_name = "FILE", requires = "redis_tls_cert")]
    pub redis_tls_key: Option<PathBuf>,

    /// Name the Redis server certificate must carry (default: the URL's host).
    #[arg(long, value_name = "NAME", requires = "redis_url")]
    pub redis_tls_server_name: Option<String>,

    /// Prefix of the agent's Redis keys; fleets sharing one Redis need
    /// different ones.
    #[arg(long, value_name = "PREFIX", default_value = "sluice")]
    pub redis_key_prefix: String,

    /// How often cluster counters are synchronised with Redis (in batches,
    /// off the request path): bounds how far the fleet can overshoot a
    /// cluster limit. At most a tenth of the shortest cluster rule unit.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub ratelimit_sync_interval_ms: u64,

    /// Local rate-limit buckets held at most, all rules together (memory
    /// bound: ~34 bytes per bucket at most).
    #[arg(long, value_name = "N", default_value_t = crate::policy::ratelimit::DEFAULT_MAX_KEYS)]
    pub ratelimit_max_keys: usize,

    /// Benchmark baseline only: cluster rules make one Redis call per
    /// request instead of the batched sync.
    #[arg(long, hide = true, requires = "redis_url")]
    pub ratelimit_naive_cluster: bool,

    /// Access log: one line per request to `stdout`, to a file (appended
    /// to; reopened on SIGHUP for log rotation), or `off`.
    #[arg(long, value_name = "stdout|PATH|off", default_value = "off")]
    pub access_log: crate::access_log::Destination,

    /// Access log line format.
    #[arg(long, value_enum, default_value_t = crate::access_log::Format::Json)]
    pub access_log_format: crate::access_log::Format,

    /// What the access log keeps of query strings (`redact`: parameter
    /// names only).
    #[arg(long, value_enum, default_value_t = crate::access_log::QueryMode::Redact)]
    pub access_log_query: crate::access_log::QueryMode,

    /// Log only requests answered with at least this status (e.g. 400).
    #[arg(long, value_name = "STATUS", default_value_t = 0)]
    pub access_log_min_status: u16,

    /// X-Request-Id on every request: `generate` one unless a trusted proxy
    /// sent one (forwarded upstream and returned to the client), or `off`.
    #[arg(long, value_enum, default_value_t = RequestIdMode::Generate)]
    pub request_id: RequestIdMode,

    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Worker threads of the async runtime (the data path and everything
    /// else). Default: the CPUs this process may use — its affinity mask,
    /// lowered to the whole CPUs of its cgroup v2 quota (`cpu.max`), at
    /// least 1; the choice is logged at start-up.
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<std::num::NonZeroUsize>,

    /// Fair sharing of each worker between Gateways: a Gateway using more
    /// than its share of a busy worker waits behind the others
    /// (`gateway::fair`). `off`: one FIFO run queue for all.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub shard_fairness: Switch,

    /// Client timeouts and limits (README: "Limits and timeouts").
    #[command(flatten)]
    pub edge: EdgeArgs,

    /// Trace context and OTLP export (README: "Tracing").
    #[command(flatten)]
    pub tracing: crate::telemetry::TracingArgs,
}

/// Client-side timeouts and limits of the gateway listeners; durations take
/// `ms`, `s` or `m` (plain numbers are seconds).
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Longest wait for a whole request head, from the connection's start or
    /// the end of the previous response (so also the keep-alive idle time).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub client_header_timeout: Duration,

    /// Longest a request body may go without a byte from the client (408).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub client_body_timeout: Duration,

    /// Upstream response-head timeout of routes without `timeouts` (504).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub upstream_response_timeout: Duration,

    /// TLS (Passthrough and Terminate) and TCP listeners: a relayed connection with no byte
    /// in either direction for this long is closed.
    #[arg(long, value_name = "DURATION", default_value = "60m", value_parser = parse_duration)]
    pub l4_idle_timeout: Duration,

    /// UDP listeners: a session (one per client address) with no datagram
    /// in either direction for this long is closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub udp_idle_timeout: Duration,

    /// UDP listeners: most open sessions per listener socket; datagrams of
    /// new clients are dropped while it is full.
    #[arg(long, value_name = "N", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    pub udp_max_sessions: u32,

    /// HTTP/2: PING interval on a connection without frames from the client.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub h2_keepalive_interval: Duration,

    /// HTTP/2: how long the PING acknowledgement may take before the
    /// connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub h2_keepalive_timeout: Duration,

    /// Largest request head (request line and headers; HTTP/2 header list) in
    /// bytes: 431 beyond it. At least 8192 for HTTP/1.1.
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024)]
    pub max_request_head_bytes: usize,

    /// Most header fields in a request: 431 beyond it (HTTP/1.1).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_request_headers: usize,

    /// Longest request target in bytes: 414 beyond it.
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024)]
    pub max_uri_bytes: usize,

    /// HTTP/2: concurrent streams per client connection.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub h2_max_concurrent_streams: u32,

    /// HTTP/2: client resets of streams before their answer (or protocol
    /// errors causing resets) per connection before GOAWAY (ENHANCE_YOUR_CALM).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub h2_max_resets: usize,

    /// Open connections from one client address to one Gateway; more are
    /// closed at accept. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections_per_source: usize,

    /// Requests in flight per Gateway (until their response head); more are
    /// answered 503 with Retry-After. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_requests_in_flight_per_gateway: usize,

    /// Open client connections of the whole agent (all Gateways); more are
    /// closed at accept. 0: half of the descriptor limit after a reserve.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_client_connections: usize,

    /// Merge runs of `/` in request paths into one before routing (like
    /// nginx's merge_slashes); `.` and `..` segments are always removed.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub merge_slashes: Switch,

    /// `%2F` and `%5C` in request paths: keep (forward as sent), reject
    /// (400) or unescape (decode before routing).
    #[arg(long, value_enum, default_value = "keep")]
    pub escaped_slashes: crate::policy::connection::EscapedSlashes,
}

impl EdgeArgs {
    /// The gateway's edge settings.
    pub fn settings(&self) -> crate::gateway::EdgeSettings {
        crate::gateway::EdgeSettings {
            header_timeout: self.client_header_timeout,
            body_idle_timeout: self.client_body_timeout,
            upstream_response_timeout: self.upstream_response_timeout,
            l4_idle_timeout: self.l4_idle_timeout,
            udp_idle_timeout: self.udp_idle_timeout,
            udp_max_sessions: self.udp_max_sessions as usize,
            h2_keepalive_interval: self.h2_keepalive_interval,
            h2_keepalive_timeout: self.h2_keepalive_timeout,
            max_head_bytes: self.max_request_head_bytes,
            max_headers: self.max_request_headers,
            max_uri_bytes: self.max_uri_bytes,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            h2_max_resets: self.h2_max_resets,
            max_connections_per_source: self.max_connections_per_source,
            max_in_flight_per_shard: self.max_requests_in_flight_per_gateway,
            max_client_connections: self.max_client_connections,
            path: crate::path::PathRules {
                merge_slashes: self.merge_slashes == Switch::On,
                escaped_slashes: self.escaped_slashes,
            },
        }
    }
}

/// `500ms`, `30s`, `2m`, or a plain number of seconds; not zero.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (n, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a duration like 30s or 500ms, got {raw:?}"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("unknown unit in {raw:?}: use ms, s or m")),
    };
    if d.is_zero() {
        return Err("a timeout must be longer than zero".into());
    }
    Ok(d)
}

/// Subcommands besides running the agent.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config directory exactly as the agent would; print every
    /// error; exit status 0 when valid, 1 when not (for CI and GitOps).
    CheckConfig {
        /// The directory (or a `file://`, `consul://`, `etcd://` URL).
        dir: String,
    },
    /// Remove the eBPF datapath pinned for this network namespace under
    /// `--bpffs` (what `--keep-datapath-on-exit` leaves when the agent stops):
    /// XDP and sk_lookup detach once no running agent holds them.
    Detach,
    /// Mirror a config directory into Consul KV or etcd, one key per YAML
    /// file (PREFIX/relative/path.yaml), deleting keys no file backs. The
    /// directory is validated first; nothing is pushed when it is invalid.
    Push {
        dir: PathBuf,
        /// `consul[s]://HOST:PORT/PREFIX` or `etcd[s]://HOST:PORT/PREFIX`.
        #[arg(value_parser = parse_source)]
        url: SourceUrl,
    },
}

fn parse_source(raw: &str) -> Result<SourceUrl, String> {
    SourceUrl::parse(raw).map_err(|e| e.to_string())
}

fn parse_consul(raw: &str) -> Result<SourceUrl, String> {
    match SourceUrl::parse(raw).map_err(|e| e.to_string())? {
        u @ SourceUrl::Consul(_) => Ok(u),
        _ => Err("expected consul://HOST:PORT or consuls://HOST:PORT".into()),
    }
}

fn parse_vault(raw: &str) -> Result<VaultUrl, String> {
    VaultUrl::parse(raw).map_err(|e| e.to_string())
}

/// A config location given to `check-config`: a URL, or a plain directory.
pub fn source_arg(raw: &str) -> Result<SourceUrl, String> {
    if raw.contains("://") {
        parse_source(raw)
    } else {
        let path = std::path::absolute(raw).map_err(|e| format!("{raw}: {e}"))?;
        Ok(SourceUrl::File(path))
    }
}

/// A CIDR, or a single address (as /32 or /128).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("not a CIDR or IP address: {s:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatapathArg {
    Auto,
    Ebpf,
    Userspace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EbpfLogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// `--request-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RequestIdMode {
    Generate,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// An on/off command-line switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// Why the command line does not give usable settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Flag(String),
}

impl Cli {
    /// Settings for [`crate::app::build`]; reads the agent config file.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        let mut s = Settings::new(self.config_dir.clone().unwrap_or_default());
        if let Some(path) = &self.agent_config {
            s.identity = crate::config::identity::load_agent_config(path)?;
        }
        if let Some(SourceUrl::File(dir)) = &self.config_source {
            s.config_dir = dir.clone();
        }
        s.config_source = self.config_source.clone();
        s.stores = self.store_settings();
        s.consul_discovery = self.consul_addr.clone();
        s.secret_source = self.secret_source.clone();
        s.secret_token = Secret::from_file_or_env(
            self.secret_token_file.as_ref(),
            &["VAULT_TOKEN", "BAO_TOKEN"],
        );
        s.secret_tls = TlsFiles {
            ca: self.secret_ca_file.clone(),
            ..TlsFiles::default()
        };
        s.secret_poll = Duration::from_secs(self.secret_poll_seconds.max(1));
        s.keep_datapath_on_exit = self.keep_datapath_on_exit;
        s.cgroup = self.cgroup.clone();
        s.sockmap = self.sockmap;
        s.map_sizes = self.map_sizes.iter().cloned().collect();
        if self.kubernetes {
            let node = self
                .node_name
                .clone()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "unknown-node".into());
            let mut k = KubeSettings::new(node.clone());
            k.watch_namespace = self.watch_namespace.clone();
            k.gateway_selector = self.gateway_selector.clone();
            k.lease_namespace = self.pod_namespace.clone();
            k.lease_name = self.lease_name.clone();
            k.ingress = crate::kube::ingress::IngressSettings {
                http_port: self.ingress_http_port,
                https_port: self.ingress_https_port,
                addresses: self.ingress_address.clone(),
            };
            k.lease_identity = Some(match &self.pod_name {
                Some(pod) => format!("{node}/{pod}"),
                None => node,
            });
            s.kubernetes = Some(k);
        }
        s.datapath = match self.datapath {
            DatapathArg::Auto => DatapathMode::Auto,
            DatapathArg::Ebpf => DatapathMode::Ebpf,
            DatapathArg::Userspace => DatapathMode::Userspace,
        };
        s.admin_addr = self.admin_addr;
        s.metrics_addr = self.metrics_addr;
        s.interfaces = self.interfaces.clone();
        s.bpffs = Some(self.bpffs.clone());
        s.xdp_mode = match self.xdp_mode {
            XdpModeArg::Auto => crate::kernel::XdpModePref::Auto,
            XdpModeArg::Native => crate::kernel::XdpModePref::Native,
            XdpModeArg::Generic => crate::kernel::XdpModePref::Generic,
        };
        s.trusted_proxies = self.trusted_proxies.clone();
        s.edge = self.edge.settings();
        s.rate_limits = self.rate_limit_options()?;
        s.access_log = crate::access_log::Settings {
            destination: self.access_log.clone(),
            format: self.access_log_format,
            query: self.access_log_query,
            min_status: self.access_log_min_status,
            ..Default::default()
        };
        s.request_ids = self.request_id == RequestIdMode::Generate;
        s.tracing = self.tracing.settings();
        s.ebpf_log_level = match self.ebpf_log_level {
            EbpfLogLevel::Error => 1,
            EbpfLogLevel::Warn => 2,
            EbpfLogLevel::Info => 3,
            EbpfLogLevel::Debug => 4,
            EbpfLogLevel::Trace => 5,
        };
        Ok(s)
    }
}

impl Cli {
    /// The rate-limit settings: the cluster store from the URL and the
    /// files it names.
    fn rate_limit_options(
        &self,
    ) -> Result<crate::policy::ratelimit::ServiceOptions, SettingsError> {
        use crate::policy::ratelimit::cluster::StoreSettings;
        let mut opts = crate::policy::ratelimit::ServiceOptions {
            max_keys: self.ratelimit_max_keys.max(1),
            ..Default::default()
        };
        let Some(url) = &self.redis_url else {
            return Ok(opts);
        };
        let bad = |e: String| SettingsError::Flag(format!("--redis-url: {e}"));
        let read = |flag: &str, p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| SettingsError::Flag(format!("{flag} {}: {e}", p.display())))
        };
        let mut store = StoreSettings::from_url(url).map_err(|e| bad(e.to_string()))?;
        if let Some(p) = &self.redis_password_file {
            let raw = read("--redis-password-file", p)?;
            let text = String::from_utf8(raw)
                .map_err(|_| SettingsError::Flag("--redis-password-file: not UTF-8".into()))?;
            // Files written with `echo` end in a newline.
            store.password = Some(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        if let Some(u) = &self.redis_username {
            store.username = Some(u.clone());
        }
        let tls_flags = self.redis_tls_ca.is_some()
            || self.redis_tls_cert.is_some()
            || self.redis_tls_server_name.is_some();
        match &mut store.tls {
            Some(tls) => {
                if let Some(p) = &self.redis_tls_ca {
                    tls.ca_pem = Some(read("--redis-tls-ca", p)?);
                }
                if let (Some(c), Some(k)) = (&self.redis_tls_cert, &self.redis_tls_key) {
                    tls.client = Some((read("--redis-tls-cert", c)?, read("--redis-tls-key", k)?));
                }
                tls.server_name = self.redis_tls_server_name.clone();
            }
            None if tls_flags => {
                return Err(bad(
                    "TLS options need a rediss:// URL (redis:// is plain TCP)".into(),
                ))
            }
            None => {}
        }
        store.key_prefix = self.redis_key_prefix.clone();
        store.sync_interval = std::time::Duration::from_millis(self.ratelimit_sync_interval_ms);
        store.naive = self.ratelimit_naive_cluster;
        opts.store = Some(store);
        Ok(opts)
    }

    /// Credentials and TLS for Consul and etcd.
    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            tls: TlsFiles {
                ca: self.store_ca_file.clone(),
                cert: self.store_cert_file.clone(),
                key: self.store_key_file.clone(),
            },
            consul_token_file: self.consul_token_file.clone(),
            etcd_user: self.etcd_user.clone(),
            etcd_password_file: self.etcd_password_file.clone(),
        }
    }

    /// What `--check` validates: `--config-source`, else `--config-dir`.
    pub fn check_target(&self) -> Option<SourceUrl> {
        self.config_source
            .clone()
            .or_else(|| self.config_dir.clone().map(SourceUrl::File))
    }
}

fn parse_map_size(raw: &str) -> Result<(String, u32), String> {
    let (name, n) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N, got {raw:?}"))?;
    let name = name.trim().to_ascii_uppercase();
    if !crate::kernel::SIZABLE_MAPS.contains(&name.as_str()) {
        return Err(format!(
            "unknown map {name:?}; sizable maps: {}",
            crate::kernel::SIZABLE_MAPS.join(", ")
        ));
    }
    match n.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok((name, n)),
        _ => Err(format!("map size must be a positive integer, got {n:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn map_sizes_are_validated() {
        let cli = Cli::parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--map-size",
            "listeners=8192",
        ]);
        assert_eq!(cli.map_sizes, [("LISTENERS".to_owned(), 8192)]);
        for bad in ["NOPE=1", "LISTENERS=0", "LISTENERS"] {
            assert!(
                Cli::try_parse_from(["sluice", "--config-dir", "d", "--map-size", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn cli_is_consistent_and_parses_the_documented_form() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--datapath",
            "ebpf",
            "--admin-addr",
            "127.0.0.1:1",
            "--interface",
            "lo",
            "--interface",
            "eth0",
            "--trusted-proxies",
            "10.0.0.0/8, 192.168.1.1",
        ]);
        let s = cli.settings().unwrap();
        assert_eq!(
            s.trusted_proxies,
            [
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "192.168.1.1/32".parse().unwrap()
            ]
        );
        assert!(
            Cli::try_parse_from(["sluice", "--config-dir", "d", "--trusted-proxies", "x"]).is_err()
        );
        assert_eq!(s.datapath, DatapathMode::Ebpf);
        assert_eq!(s.interfaces, ["lo", "eth0"]);
        assert!(s.kubernetes.is_none());
        assert!(!s.sockmap, "the sockmap fast path is opt-in");
        assert_eq!(cli.worker_threads, None, "default: from the CPU budget");
        assert_eq!(cli.shard_fairness, Switch::On, "fair sharing by default");
        let cli = Cli::parse_from(["sluice", "--config-dir", "d", "--worker-threads", "3"]);
        assert_eq!(cli.worker_threads.map(|n| n.get()), Some(3));
        assert!(
            Cli::try_parse_from(["sluice", "--config-dir", "d", "--worker-threads", "0"]).is_err()
        );
        let cli = Cli::parse_from(["sluice", "--config-dir", "d", "--sockmap"]);
        assert!(cli.settings().unwrap().sockmap);
    }

    #[test]
    fn edge_defaults_match_the_gateway_and_flags_override_them() {
        let cli = Cli::parse_from(["sluice", "--config-dir", "d"]);
        assert_eq!(
            cli.settings().unwrap().edge,
            crate::gateway::EdgeSettings::default(),
            "the flags' defaults are the documented ones"
        );
        let cli = Cli::parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--client-header-timeout",
            "500ms",
            "--upstream-response-timeout",
            "2m",
            "--client-body-timeout",
            "7",
            "--max-connections-per-source",
            "0",
            "--l4-idle-timeout",
            "90s",
            "--udp-idle-timeout",
            "20s",
            "--udp-max-sessions",
            "100",
        ]);
        let e = cli.settings().unwrap().edge;
        assert_eq!(e.l4_idle_timeout, Duration::from_secs(90));
        assert_eq!(e.udp_idle_timeout, Duration::from_secs(20));
        assert_eq!(e.udp_max_sessions, 100);
        assert_eq!(e.header_timeout, Duration::from_millis(500));
        assert_eq!(e.upstream_response_timeout, Duration::from_secs(120));
        assert_eq!(e.body_idle_timeout, Duration::from_secs(7));
        assert_eq!(e.max_connections_per_source, 0);
        for bad in ["0s", "5h", "x", ""] {
            assert!(
                Cli::try_parse_from([
                    "sluice",
                    "--config-dir",
                    "d",
                    "--client-header-timeout",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn redis_flags_build_the_cluster_store_settings() {
        let dir = std::env::temp_dir().join(format!("sluice-cli-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "PEM").unwrap();
        let s = Cli::parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--redis-url",
            "rediss://agent:in-url@redis.internal:6390/1",
            "--redis-password-file",
            pw.to_str().unwrap(),
            "--redis-tls-ca",
            ca.to_str().unwrap(),
            "--redis-key-prefix",
            "fleet-a",
            "--ratelimit-sync-interval-ms",
            "50",
        ])
        .settings()
        .unwrap();
        let store = s.rate_limits.store.unwrap();
        assert_eq!(store.addr(), "redis.internal:6390");
        assert_eq!(store.db, 1);
        assert_eq!(store.username.as_deref(), Some("agent"));
        assert_eq!(store.password.as_deref(), Some("from-file"));
        assert_eq!(store.tls.unwrap().ca_pem.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(store.key_prefix, "fleet-a");
        assert_eq!(store.sync_interval, std::time::Duration::from_millis(50));
        assert!(!store.naive);
        // TLS options need rediss://; files must exist; no store without a URL.
        let e = Cli::parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--redis-url",
            "redis://x",
            "--redis-tls-ca",
            ca.to_str().unwrap(),
        ])
        .settings()
        .unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
        let e = Cli::parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--redis-url",
            "redis://x",
            "--redis-password-file",
            "/nonexistent",
        ])
        .settings()
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent"), "{e}");
        let s = Cli::parse_from(["sluice", "--config-dir", "d"])
            .settings()
            .unwrap();
        assert!(s.rate_limits.store.is_none());
        assert!(
            Cli::try_parse_from(["sluice", "--config-dir", "d", "--redis-password-file", "x"])
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_sources_subcommands_and_check() {
        let cli = Cli::parse_from([
            "sluice",
            "--config-source",
            "consul://127.0.0.1:8500/sluice",
        ]);
        let s = cli.settings().unwrap();
        assert!(matches!(s.config_source, Some(SourceUrl::Consul(_))));
        let cli = Cli::parse_from(["sluice", "--config-source", "file:///etc/sluice"]);
        assert_eq!(
            cli.settings().unwrap().config_dir,
            PathBuf::from("/etc/sluice")
        );
        assert!(Cli::try_parse_from(["sluice", "--config-source", "ftp://x"]).is_err());
        assert!(Cli::try_parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--config-source",
            "file:///d"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["sluice", "--kubernetes", "--config-source", "etcd://h/p"])
                .is_err()
        );
        let cli = Cli::parse_from(["sluice", "check-config", "deploy/examples"]);
        assert!(matches!(cli.command, Some(Command::CheckConfig { .. })));
        let cli = Cli::parse_from([
            "sluice",
            "push",
            "d",
            "etcds://127.0.0.1:2379/sluice",
            "--etcd-user",
            "root",
        ]);
        assert!(matches!(cli.command, Some(Command::Push { .. })));
        assert_eq!(cli.etcd_user.as_deref(), Some("root"));
        let cli = Cli::parse_from(["sluice", "--config-dir", "d", "--check"]);
        assert!(cli.check);
        assert_eq!(cli.check_target(), Some(SourceUrl::File("d".into())));
        let cli = Cli::parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--secret-source",
            "vault://127.0.0.1:8200/secret/sluice",
        ]);
        assert_eq!(
            cli.settings().unwrap().secret_source.unwrap().mount,
            "secret"
        );
        assert_eq!(
            source_arg("consul://h:1/p").unwrap(),
            SourceUrl::parse("consul://h:1/p").unwrap()
        );
        assert!(matches!(source_arg("rel/dir").unwrap(), SourceUrl::File(p) if p.is_absolute()));
    }

    #[test]
    fn kubernetes_mode_excludes_config_dir_and_takes_its_flags() {
        assert!(Cli::try_parse_from(["sluice"]).is_err());
        assert!(Cli::try_parse_from(["sluice", "--kubernetes", "--config-dir", "d"]).is_err());
        let cli = Cli::parse_from([
            "sluice",
            "--kubernetes",
            "--watch-namespace",
            "team-a",
            "--node-name",
            "node-1",
            "--gateway-selector",
            "fleet=dmz",
            "--pod-namespace",
            "sluice",
        ]);
        let k = cli.settings().unwrap().kubernetes.unwrap();
        assert_eq!(k.watch_namespace.as_deref(), Some("team-a"));
        assert_eq!(k.gateway_selector.as_deref(), Some("fleet=dmz"));
        assert_eq!(k.lease_namespace, "sluice");
        assert_eq!(k.lease_name, "sluice-status-writer");
        assert_eq!(k.node_name, "node-1");
        assert_eq!(k.ingress, crate::kube::ingress::IngressSettings::default());
        let cli = Cli::parse_from([
            "sluice",
            "--kubernetes",
            "--ingress-http-port",
            "8080",
            "--ingress-https-port",
            "8443",
            "--ingress-address",
            "10.0.0.1",
            "--ingress-address",
            "::1",
        ]);
        let k = cli.settings().unwrap().kubernetes.unwrap();
        assert_eq!((k.ingress.http_port, k.ingress.https_port), (8080, 8443));
        assert_eq!(
            k.ingress.addresses,
            [
                "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }
}
