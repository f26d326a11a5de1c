//! `cargo xtask bench proxy`: Sluice next to nginx and HAProxy as an L7
//! reverse proxy, configured equivalently and measured in the same run.
//!
//! Layout (all on loopback):
//!
//! ```text
//!   CPU 0: wrk / h2load ──▶ CPU 1: sluice | nginx | haproxy ──▶ CPU 0: backend (nginx `return 200 "ok"`)
//!          wrk ────────────────────────── direct baseline ─────────▶ backend
//! ```
//!
//! Every proxy runs one worker (Sluice `--worker-threads 1`, nginx
//! `worker_processes 1`, HAProxy `nbthread 1`) pinned to CPU 1 with
//! `taskset` (`--proxy-cpu`); load generators and the backend share CPU 0
//! (`--load-cpus`; one generator thread per CPU). Each proxy routes
//! Host `bench.example.com` + path prefix `/bench` (segment semantics: `/bench`
//! and `/bench/...`, not `/benchmark`) to the backend, answers 404 otherwise,
//! forwards `Host`, `X-Forwarded-For/Proto/Host` as Sluice does (replacing
//! what the client sent, dropping `Forwarded`), keeps upstream connections
//! alive and writes no access log. Before any load a capture server stands in
//! for the backend and records the request head each proxy forwards, over
//! HTTP/1.1, h2c, HTTPS and h2 over TLS; they must be identical (header order
//! and name case aside), and a wrong host or path must be a 404 everywhere.
//!
//! Rounds are interleaved (round r runs every load against every target, the
//! order of the targets rotated by r); each table row is the median round (by
//! req/s) of its target. Proxy CPU is utime+stime of the proxy's processes
//! from /proc before and after each run; RSS is their VmRSS after it.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::plot::{BarSeries, Figure, Panel};

/// The measured route.
const HOST: &str = "bench.example.com";
/// The path the load requests (under the route's prefix `/bench`).
const PATH: &str = "/bench/hello";
/// Ports: the backend on BASE_PORT, instance k on BASE_PORT + 10 (k + 1) + {0,1,2,3}.
const BASE_PORT: u16 = 18400;

/// Options of the benchmark.
pub struct Options {
    pub seconds: u32,
    pub rounds: u32,
    pub connections: u32,
    pub streams: u32,
    pub only: Vec<Load>,
    pub routes: u32,
    pub sluice_bin: Option<PathBuf>,
    /// The CPU every proxy is pinned to.
    pub proxy_cpu: u32,
    /// The CPUs of the load generators (one thread each) and the backend.
    pub load_cpus: Vec<u32>,
    /// After the loads: open this many idle keep-alive connections to each
    /// proxy and report its memory growth per connection (0: skip).
    pub idle_connections: u32,
    /// Also run Sluice with its access log (JSON to a file) and request ids
    /// on, and print the cost against the same Sluice without.
    pub access_log: bool,
    /// Also run Sluice exporting spans to an OTLP sink in the bench, at
    /// sample ratio 1.0 and at the default 0.01, and print the cost.
    pub tracing: bool,
    /// Write the figures (`target/bench/proxy.json`) and a chart of them.
    pub plot: bool,
}

impl Options {
    fn load_cpu_list(&self) -> String {
        self.load_cpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One kind of load.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, clap::ValueEnum)]
pub enum Load {
    /// HTTP/1.1, one connection (wrk): latency without queueing.
    H1Single,
    /// HTTP/1.1, `--connections` connections (wrk).
    H1,
    /// h2c with prior knowledge, `--connections` × `--streams` (h2load).
    H2c,
    /// HTTP/1.1 over TLS 1.3, `--connections` keep-alive connections (wrk).
    Https,
    /// HTTP/2 over TLS 1.3 (ALPN h2), `--connections` × `--streams` (h2load).
    HttpsH2,
    /// HTTP/1.1 over TLS 1.3 with `Connection: close`: a full TLS handshake per
    /// request (wrk); req/s = handshakes/s.
    Handshakes,
}

impl Load {
    pub const ALL: [Load; 6] = [
        Load::H1Single,
        Load::H1,
        Load::H2c,
        Load::Https,
        Load::HttpsH2,
        Load::Handshakes,
    ];

    fn name(self) -> &'static str {
        match self {
            Load::H1Single => "h1-single",
            Load::H1 => "h1",
            Load::H2c => "h2c",
            Load::Https => "https",
            Load::HttpsH2 => "https-h2",
            Load::Handshakes => "handshakes",
        }
    }

    fn h2load(self) -> bool {
        matches!(self, Load::H2c | Load::HttpsH2)
    }

    fn tls(self) -> bool {
        matches!(self, Load::Https | Load::HttpsH2 | Load::Handshakes)
    }

    /// The backend speaks plain HTTP/1.1 only: the direct baseline exists
    /// for the HTTP/1.1 loads.
    fn has_direct(self) -> bool {
        matches!(self, Load::H1Single | Load::H1)
    }

    fn connections(self, opts: &Options) -> u32 {
        match self {
            Load::H1Single => 1,
            _ => opts.connections,
        }
    }

    fn describe(self, opts: &Options) -> String {
        let c = self.connections(opts);
        let s = opts.streams;
        match self {
            Load::H1Single => "HTTP/1.1, 1 connection (wrk)".into(),
            Load::H1 => format!("HTTP/1.1, {c} connections (wrk)"),
            Load::H2c => format!("h2c prior knowledge, {c} connections × {s} streams (h2load)"),
            Load::Https => format!("HTTPS (TLS 1.3) HTTP/1.1, {c} connections (wrk)"),
            Load::HttpsH2 => {
                format!("HTTPS (TLS 1.3) h2 by ALPN, {c} connections × {s} streams (h2load)")
            }
            Load::Handshakes => format!(
                "HTTPS (TLS 1.3), new connection per request, {c} concurrent (wrk); req/s = handshakes/s"
            ),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proxy {
    Sluice,
    Nginx,
    Haproxy,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::Sluice => "sluice",
            Proxy::Nginx => "nginx",
            Proxy::Haproxy => "haproxy",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Ports {
    h1: u16,
    h2c: u16,
    tls: u16,
    admin: u16,
}

impl Ports {
    fn of_instance(k: u16) -> Self {
        let b = BASE_PORT + 10 * (k + 1);
        Self {
            h1: b,
            h2c: b + 1,
            tls: b + 2,
            admin: b + 3,
        }
    }

    fn for_load(&self, load: Load) -> u16 {
        match load {
            Load::H1Single | Load::H1 => self.h1,
            Load::H2c => self.h2c,
            Load::Https | Load::HttpsH2 | Load::Handshakes => self.tls,
        }
    }
}

impl Target {
    /// Sluice with an observability feature on: compared with plain Sluice,
    /// left out of the equivalence check (it adds headers by design).
    fn is_variant(&self) -> bool {
        self.access_log || self.request_ids || self.trace_ratio.is_some()
    }
}

/// A load target: the backend itself (direct) or a proxy with its routes.
struct Target {
    label: String,
    proxy: Option<Proxy>,
    /// Routes configured besides the measured one.
    extra_routes: u32,
    /// Sluice with its access log on (`--access-log`).
    access_log: bool,
    /// Sluice generating request ids (the agent's default; off for plain
    /// Sluice, as nginx and HAProxy add none).
    request_ids: bool,
    /// Sluice exporting spans at this sample ratio (`--tracing`).
    trace_ratio: Option<f64>,
    ports: Ports,
    process: Option<Proc>,
}

// ---------------------------------------------------------------- processes

/// Set by SIGINT/SIGTERM: the bench stops at the next check and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(crate) fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// (pid, start time in ticks since boot): a pid with its start time names
/// one process even if the pid is reused later.
pub(crate) type ProcId = (u32, u64);

fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    // Fields from the 3rd (state) on; index i here is field i + 3 of proc(5).
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn start_time(pid: u32) -> Option<u64> {
    proc_stat_fields(pid)?.get(19)?.parse().ok()
}

/// A process this bench started (a server), in its own process group so that
/// a Ctrl-C on the terminal reaches only the bench, which then stops it. On
/// drop: SIGINT to the process, SIGKILL after 10 s, then SIGKILL to any of its
/// descendants (nginx workers) still alive — each by pid and start time.
pub(crate) struct Proc {
    pub(crate) child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
            log: log.to_owned(),
        })
    }

    /// The process and all its descendants.
    pub(crate) fn tree(&self) -> Vec<ProcId> {
        let root = self.child.id();
        let mut all: Vec<(u32, u32, u64)> = Vec::new(); // pid, ppid, start
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if let Some(f) = proc_stat_fields(pid) {
                    if let (Some(ppid), Some(start)) = (
                        f.get(1).and_then(|v| v.parse().ok()),
                        f.get(19).and_then(|v| v.parse().ok()),
                    ) {
                        all.push((pid, ppid, start));
                    }
                }
            }
        }
        let mut tree: Vec<ProcId> = Vec::new();
        if let Some(start) = start_time(root) {
            tree.push((root, start));
        }
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i].0;
            for (pid, ppid, start) in &all {
                if *ppid == parent && !tree.iter().any(|t| t.0 == *pid) {
                    tree.push((*pid, *start));
                }
            }
            i += 1;
        }
        tree
    }

    pub(crate) fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }
}

fn signal(id: ProcId, sig: libc::c_int) {
    if start_time(id.0) == Some(id.1) {
        // SAFETY: plain syscall on a pid this bench started (start time checked).
        unsafe {
            libc::kill(id.0 as libc::pid_t, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let tree = self.tree();
        if let Ok(None) = self.child.try_wait() {
            if let Some(root) = tree.first() {
                signal(*root, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = self.child.try_wait() {
                eprintln!("{} did not stop on SIGINT; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // Descendants (nginx workers) normally leave with their master.
        std::thread::sleep(Duration::from_millis(50));
        for id in tree.iter().skip(1) {
            signal(*id, libc::SIGKILL);
        }
    }
}

/// Proportional set size (kB) of a process: its shared pages divided among
/// the processes sharing them (nginx's master and worker share most).
fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// RSS and PSS (kB) of a set of processes.
fn memory(ids: &[ProcId]) -> (u64, u64) {
    let (_, rss) = usage(ids, 1.0);
    (rss, ids.iter().map(|(pid, _)| pss_kb(*pid)).sum())
}

/// CPU seconds (utime + stime) and RSS (kB) of a set of processes.
pub(crate) fn usage(ids: &[ProcId], tick: f64) -> (f64, u64) {
    let mut cpu = 0.0;
    let mut rss = 0;
    for (pid, start) in ids {
        let Some(f) = proc_stat_fields(*pid) else {
            continue;
        };
        if f.get(19).and_then(|v| v.parse::<u64>().ok()) != Some(*start) {
            continue;
        }
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        cpu += (t(11) + t(12)) as f64 / tick;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        rss += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (cpu, rss)
}

/// (idle, total) ticks of some CPUs from /proc/stat.
fn cpu_ticks(cpus: &[u32]) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut sum = (0, 0);
    for cpu in cpus {
        let prefix = format!("cpu{cpu} ");
        if let Some(l) = stat.lines().find(|l| l.starts_with(&prefix)) {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            sum.0 += v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            sum.1 += v.iter().take(8).sum::<u64>();
        }
    }
    sum
}

/// Parses a kernel/taskset CPU list such as `0-3,8`.
pub fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------- installs

/// (command, Debian package, why).
const TOOLS: &[(&str, &str, &str)] = &[
    ("nginx", "nginx", "a peer proxy, and the shared backend"),
    ("haproxy", "haproxy", "a peer proxy"),
    (
        "wrk",
        "wrk",
        "HTTP/1.1 load generator (with Lua for percentiles)",
    ),
    (
        "h2load",
        "nghttp2-client",
        "HTTP/2 load generator (h2c and h2 over TLS)",
    ),
    (
        "openssl",
        "openssl",
        "makes the benchmark's TLS certificate",
    ),
    ("curl", "curl", "the equivalence check's client"),
    (
        "taskset",
        "util-linux",
        "pins proxies and load generators to CPUs",
    ),
];

// ---------------------------------------------------------------- configs

/// Hostnames of the extra routes.
fn extra_host(i: u32) -> String {
    format!("r{i}.routes.example.com")
}

/// Hostnames in config order: the extra routes with the measured one in the
/// middle (no proxy gets it first or last by luck).
fn hosts(extra: u32) -> Vec<String> {
    let mut v: Vec<String> = (0..extra).map(extra_host).collect();
    v.insert(v.len() / 2, HOST.to_owned());
    v
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

fn sluice_config(ports: Ports, backend: u16, extra: u32, cert: &str, key: &str) -> String {
    let mut s = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: bench}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: "127.0.0.1"}}]
  listeners:
  - {{name: http, port: {h1}, protocol: HTTP}}
  - {{name: h2c, port: {h2c}, protocol: HTTP}}
  - name: https
    port: {tls}
    protocol: HTTPS
    tls: {{mode: Terminate, certificateRefs: [{{name: bench-tls}}]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bench-tls, namespace: bench}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{cert}  tls.key: |
{key}---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: bench}}
spec: {{ports: [{{port: 80, targetPort: {backend}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: backend-1, namespace: bench, labels: {{kubernetes.io/service-name: backend}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"]}}]
ports: [{{port: {backend}}}]
"#,
        h1 = ports.h1,
        h2c = ports.h2c,
        tls = ports.tls,
        cert = indent(cert),
        key = indent(key),
    );
    for (i, host) in hosts(extra).iter().enumerate() {
        s.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: route-{i}, namespace: bench}}\n\
             spec:\n  parentRefs: [{{name: edge}}]\n  hostnames: [{host}]\n  \
             rules:\n  - matches: [{{path: {{type: PathPrefix, value: /bench}}}}]\n    \
             backendRefs: [{{name: backend, port: 80}}]\n"
        ));
    }
    s
}

/// Connections each proxy must accept: the loads', or the idle-connection
/// test's when it asks for more (a higher limit is set only then: nginx
/// preallocates its connection table, which would inflate its RSS).
fn conn_limit(idle_connections: u32) -> u32 {
    8192.max(idle_connections.saturating_add(512))
}

pub(crate) fn nginx_common(dir: &Path, name: &str) -> String {
    nginx_common_with(dir, name, conn_limit(0))
}

/// [`nginx_common`] with room for `max_conns` connections.
fn nginx_common_with(dir: &Path, name: &str, max_conns: u32) -> String {
    let d = dir.display();
    let user = if crate::is_root() { "user root;\n" } else { "" };
    format!(
        "{user}worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/{name}.pid;\n\
         error_log {d}/{name}-error.log warn;\nworker_rlimit_nofile {nofile};\n\
         events {{ worker_connections {max_conns}; }}\n",
        nofile = 2 * max_conns
    )
}

pub(crate) fn nginx_temp_paths(dir: &Path, name: &str) -> String {
    let d = dir.display();
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {d}/{name}-tmp/{t};\n"))
        .collect()
}

/// The shared backend: nginx answering `200 ok` from memory. Chosen because
/// it is about the cheapest keep-alive HTTP/1.1 responder Debian has (C,
/// event loop, no body read, no file), so the backend's cost on the load CPUs stays
/// small and identical behind every proxy; the repo's echo server builds a
/// JSON body per request and would cost more than the proxies it serves.
/// Starts the backend nginx with `config` in `dir` (making its temporary
/// directories), pinned to `cpus` when given, and waits until `ready`.
pub(crate) fn start_backend(
    dir: &Path,
    config: &str,
    cpus: Option<&str>,
    ready: impl Fn() -> bool,
) -> Result<Proc> {
    for tmp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(format!("backend-tmp/{tmp}")))?;
    }
    std::fs::write(dir.join("backend.conf"), config)?;
    let mut cmd = match cpus {
        Some(cpus) => pinned(cpus, &which("nginx")),
        None => Command::new(which("nginx")),
    };
    cmd.arg("-c")
        .arg(dir.join("backend.conf"))
        .arg("-p")
        .arg(dir);
    let mut backend = Proc::spawn("backend nginx", cmd, &dir.join("backend.log"))?;
    wait_until(
        "backend nginx",
        &mut backend,
        Duration::from_secs(20),
        ready,
    )?;
    Ok(backend)
}

pub(crate) fn backend_config(dir: &Path, port: u16) -> String {
    format!(
        "{}http {{\n  access_log off;\n{}  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
         server {{\n    listen 127.0.0.1:{port} default_server;\n    \
         location / {{ default_type text/plain; return 200 \"ok\"; }}\n  }}\n}}\n",
        nginx_common(dir, "backend"),
        nginx_temp_paths(dir, "backend"),
    )
}

fn nginx_config(
    dir: &Path,
    name: &str,
    ports: Ports,
    backend: u16,
    extra: u32,
    max_conns: u32,
) -> String {
    let d = dir.display();
    let listen = |default: &str| {
        format!(
            "    listen 127.0.0.1:{}{default};\n    listen 127.0.0.1:{} http2{default};\n    \
             listen 127.0.0.1:{} ssl http2{default};\n",
            ports.h1, ports.h2c, ports.tls
        )
    };
    let mut s = nginx_common_with(dir, name, max_conns);
    s.push_str("http {\n  access_log off;\n");
    s.push_str(&nginx_temp_paths(dir, name));
    s.push_str(&format!(
        "  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
         server_names_hash_max_size 65536;\n  server_names_hash_bucket_size 128;\n\
         ssl_protocols TLSv1.3;\n  ssl_certificate {d}/cert.pem;\n  ssl_certificate_key {d}/key.pem;\n\
         # Upstream keep-alive: HTTP/1.1 without `Connection: close`, a pool larger than\n\
         # the clients' concurrency, and no recycling after 1,000 requests.\n\
         upstream backend {{\n    server 127.0.0.1:{backend};\n    keepalive 1024;\n    \
         keepalive_requests 100000000;\n    keepalive_timeout 300s;\n  }}\n\
         proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n\
         # What Sluice forwards (`upstream_request` in agent/src/gateway/): the\n\
         # client's Host, X-Forwarded-* replaced (not appended), Forwarded dropped.\n\
         proxy_set_header Host $http_host;\n  proxy_set_header X-Forwarded-For $remote_addr;\n  \
         proxy_set_header X-Forwarded-Proto $scheme;\n  proxy_set_header X-Forwarded-Host $http_host;\n  \
         proxy_set_header Forwarded \"\";\n"
    ));
    s.push_str(&format!(
        "  server {{\n{}    server_name _;\n    return 404;\n  }}\n",
        listen(" default_server")
    ));
    for host in hosts(extra) {
        // PathPrefix /bench with segment semantics: /bench and /bench/...
        s.push_str(&format!(
            "  server {{\n{}    server_name {host};\n    \
             location = /bench {{ proxy_pass http://backend; }}\n    \
             location /bench/ {{ proxy_pass http://backend; }}\n    \
             location / {{ return 404; }}\n  }}\n",
            listen("")
        ));
    }
    s.push_str("}\n");
    s
}

fn haproxy_config(dir: &Path, name: &str, ports: Ports, backend: u16, max_conns: u32) -> String {
    let d = dir.display();
    format!(
        r#"global
  nbthread 1
  maxconn {max_conns}
  # Like nginx's and rustls's defaults, follow the client's cipher order, so
  # all three negotiate the same suite (HAProxy prefers its own by default).
  ssl-default-bind-options ssl-min-ver TLSv1.3 prefer-client-ciphers

defaults
  mode http
  # Frontends default to fewer connections than the global maxconn.
  maxconn {max_conns}
  option http-keep-alive
  # Share idle backend connections between clients, as nginx's upstream
  # keepalive pool and Sluice's client pool do.
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s

frontend bench
  bind 127.0.0.1:{h1}
  bind 127.0.0.1:{h2c} proto h2
  bind 127.0.0.1:{tls} ssl crt {d}/cert-and-key.pem alpn h2,http/1.1
  # PathPrefix /bench with segment semantics.
  acl route_path path /bench
  acl route_path path_beg /bench/
  # Host without port, exact match against the route hostnames (an indexed tree).
  acl route_host req.hdr(host),field(1,:),lower -f {d}/{name}-hosts.lst
  http-request return status 404 content-type text/plain string "no route" if !route_host || !route_path
  # What Sluice forwards: X-Forwarded-* replaced (not appended), Forwarded dropped.
  http-request del-header Forwarded
  http-request set-header X-Forwarded-For %[src]
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend backend

backend backend
  server b1 127.0.0.1:{backend}
"#,
        h1 = ports.h1,
        h2c = ports.h2c,
        tls = ports.tls,
    )
}

pub(crate) const WRK_SCRIPT: &str = r#"-- Prints the percentiles wrk measured, on one parsable line.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d socket_errors=%d status_errors=%d p50=%d p90=%d p99=%d p999=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"#;

// ---------------------------------------------------------------- the capture backend

/// Stands in for the backend during the equivalence check: records the head
/// of every request, answers `200 ok` and closes (so no proxy keeps a pooled
/// connection to it).
struct Capture {
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(port: u16) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding the capture backend on 127.0.0.1:{port}"))?;
        listener.set_nonblocking(true)?;
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (heads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let h = h.clone();
                        std::thread::spawn(move || {
                            if let Some(head) = read_head(stream) {
                                h.lock().unwrap().push(head);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            heads,
            stop,
            thread: Some(thread),
        })
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.heads.lock().unwrap())
    }
}

fn read_head(mut stream: TcpStream) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request head in a comparable form: the request line, then the headers
/// as `name: value` with lower-case names, sorted (order and case of names
/// are not semantics).
fn normalize_head(head: &str) -> Vec<String> {
    let mut lines = head.split("\r\n");
    let mut out = vec![lines.next().unwrap_or_default().to_owned()];
    let mut headers: Vec<String> = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}: {}", n.trim().to_ascii_lowercase(), v.trim()),
            None => l.to_owned(),
        })
        .collect();
    headers.sort();
    out.extend(headers);
    out
}

// ---------------------------------------------------------------- checks

/// Sends one request with curl; returns the status code.
fn curl(port: u16, scheme: &str, h2: bool, host: &str, path: &str) -> Result<u16> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ]);
    if scheme == "https" {
        // SNI names the route's host; the certificate is self-signed.
        cmd.args(["-k", "--tlsv1.3"]);
        cmd.arg("--resolve").arg(format!("{HOST}:{port}:127.0.0.1"));
    }
    cmd.arg(if h2 {
        if scheme == "https" {
            "--http2"
        } else {
            "--http2-prior-knowledge"
        }
    } else {
        "--http1.1"
    });
    // Headers a client might spoof: every proxy must replace or drop them.
    cmd.args([
        "-H",
        &format!("Host: {host}"),
        "-H",
        "X-Forwarded-For: 192.0.2.7",
        "-H",
        "X-Forwarded-Proto: gopher",
        "-H",
        "X-Forwarded-Host: spoofed.example",
        "-H",
        "Forwarded: for=192.0.2.7",
        "-H",
        "X-Bench-Check: 1",
        "-A",
        "sluice-bench",
    ]);
    let authority = if scheme == "https" {
        format!("{HOST}:{port}")
    } else {
        format!("127.0.0.1:{port}")
    };
    cmd.arg(format!("{scheme}://{authority}{path}"));
    let out = cmd.output().context("running curl")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("curl {scheme} :{port}{path} gave no status: {out:?}"))
}

/// Before any load: each proxy answers the route, forwards the same request
/// head (HTTP/1.1, h2c, HTTPS, h2 over TLS), and says 404 to a wrong host or
/// path.
fn check_equivalence(targets: &[Target], capture: &Capture) -> Result<()> {
    // The access-log variant adds X-Request-Id, the tracing one traceparent.
    let proxies: Vec<&Target> = targets
        .iter()
        .filter(|t| t.proxy.is_some() && !t.is_variant())
        .collect();
    let modes: [(&str, &str, bool); 4] = [
        ("HTTP/1.1", "http", false),
        ("h2c", "http", true),
        ("HTTPS", "https", false),
        ("h2 over TLS", "https", true),
    ];
    let mut failures = Vec::new();
    for (mode, scheme, h2) in modes {
        let mut seen: Vec<(&str, Vec<String>)> = Vec::new();
        for t in &proxies {
            let port = match (scheme, h2) {
                ("https", _) => t.ports.tls,
                (_, true) => t.ports.h2c,
                _ => t.ports.h1,
            };
            capture.take();
            let status = curl(port, scheme, h2, HOST, "/bench/check?q=1")?;
            // Give a proxy's write a moment to reach the capture thread.
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut heads = capture.take();
            while heads.is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                heads = capture.take();
            }
            if status != 200 || heads.len() != 1 {
                failures.push(format!(
                    "{mode}: {} answered {status} and sent {} request(s) to the backend (want 200, 1)",
                    t.label,
                    heads.len()
                ));
                continue;
            }
            seen.push((&t.label, normalize_head(&heads[0])));
        }
        if let Some((first, reference)) = seen.first() {
            for (label, head) in &seen[1..] {
                if head != reference {
                    let only_ref: Vec<_> = reference.iter().filter(|l| !head.contains(l)).collect();
                    let only_this: Vec<_> =
                        head.iter().filter(|l| !reference.contains(l)).collect();
                    failures.push(format!(
                        "{mode}: {label} forwards differently from {first}:\n    only {first}: {only_ref:?}\n    only {label}: {only_this:?}"
                    ));
                }
            }
            eprintln!(
                "check {mode}: {} forward the same request head:\n      {}",
                seen.iter().map(|s| s.0).collect::<Vec<_>>().join(", "),
                reference.join("\n      ")
            );
            // What the head must say whatever the peers do.
            let want_proto = format!("x-forwarded-proto: {scheme}");
            for want in [
                format!("host: {HOST}"),
                "x-forwarded-for: 127.0.0.1".to_owned(),
                want_proto,
                format!("x-forwarded-host: {HOST}"),
            ] {
                if !reference.contains(&want) {
                    failures.push(format!("{mode}: the forwarded head lacks {want:?}"));
                }
            }
            if reference.iter().any(|l| l.starts_with("forwarded:")) {
                failures.push(format!(
                    "{mode}: the client's Forwarded header was passed on"
                ));
            }
        }
    }
    for t in &proxies {
        for (scheme, port) in [("http", t.ports.h1), ("https", t.ports.tls)] {
            for (host, path, want) in [
                (HOST, "/bench", 200),
                (HOST, "/bench/", 200),
                (HOST, "/benchmark", 404),
                (HOST, "/", 404),
                ("other.example.com", "/bench", 404),
            ] {
                capture.take();
                let got = curl(port, scheme, false, host, path)?;
                if got != want {
                    failures.push(format!(
                        "{}: {scheme} Host {host} {path}: {got}, want {want}",
                        t.label
                    ));
                }
            }
        }
    }
    capture.take();
    if !failures.is_empty() {
        bail!(
            "the proxies are not configured equivalently:\n  - {}",
            failures.join("\n  - ")
        );
    }
    eprintln!(
        "check: every proxy routes bench.example.com /bench (segment prefix) and 404s the rest"
    );
    Ok(())
}

// ---------------------------------------------------------------- loads

/// One run of one load against one target.
#[derive(Clone, Debug, Default)]
struct Sample {
    rps: f64,
    requests: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    /// Proxy CPU seconds during the run, and the run's wall seconds.
    cpu_s: Option<f64>,
    wall_s: f64,
    /// RSS and PSS of the proxy's processes after the run (kB).
    mem_kb: Option<(u64, u64)>,
    /// Share of the load CPUs (load generator + backend) left idle.
    load_idle: f64,
    /// h2load's TLS summary (protocol, cipher, key exchange, ALPN).
    tls: Option<String>,
}

/// Parses the `BENCH ...` line of the wrk script.
pub(crate) fn parse_wrk(out: &str) -> Option<(u64, f64, u64, u64, [f64; 4])> {
    let line = out.lines().find(|l| l.starts_with("BENCH "))?;
    let kv: BTreeMap<&str, f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    let g = |k: &str| kv.get(k).copied();
    Some((
        g("requests")? as u64,
        g("duration_us")? / 1e6,
        g("socket_errors")? as u64,
        g("status_errors")? as u64,
        [g("p50")?, g("p90")?, g("p99")?, g("p999")?],
    ))
}

struct H2loadSummary {
    rps: f64,
    succeeded: u64,
    failed: u64,
    non_2xx: u64,
    tls: Option<String>,
}

fn parse_h2load(out: &str) -> Option<H2loadSummary> {
    let rps = out.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("finished in ")?;
        let (_, r) = rest.split_once(", ")?;
        r.split_whitespace().next()?.parse().ok()
    })?;
    let count = |line: &str, what: &str| -> Option<u64> {
        line.split(',').find_map(|p| {
            let mut it = p.split_whitespace();
            let n = it.next()?.trim_start_matches(|c: char| !c.is_ascii_digit());
            (it.next()? == what).then(|| n.parse().ok())?
        })
    };
    let req = out.lines().find(|l| l.trim().starts_with("requests:"))?;
    let req = req.trim().trim_start_matches("requests:");
    let codes = out
        .lines()
        .find(|l| l.trim().starts_with("status codes:"))?;
    let codes = codes.trim().trim_start_matches("status codes:");
    let tls: Vec<String> = out
        .lines()
        .filter(|l| {
            [
                "TLS Protocol:",
                "Cipher:",
                "Server Temp Key:",
                "Application protocol:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(|l| l.trim().to_owned())
        .collect();
    Some(H2loadSummary {
        rps,
        succeeded: count(req, "succeeded")?,
        failed: count(req, "failed")? + count(req, "errored")? + count(req, "timeout")?,
        non_2xx: count(codes, "3xx")? + count(codes, "4xx")? + count(codes, "5xx")?,
        tls: (!tls.is_empty()).then(|| tls.join(", ")),
    })
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Request durations (µs) from h2load's `--log-file` (start, status, duration).
fn h2load_durations(log: &str) -> Vec<f64> {
    let mut v: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

struct Runner<'a> {
    opts: &'a Options,
    dir: PathBuf,
    tick: f64,
    printed: std::collections::BTreeSet<Load>,
}

impl Runner<'_> {
    fn command(&mut self, load: Load, port: u16, seconds: u32, log: &Path) -> Command {
        let opts = self.opts;
        let scheme = if load.tls() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}{PATH}");
        let conns = load.connections(opts).to_string();
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(opts.load_cpu_list());
        let threads = (opts.load_cpus.len() as u32)
            .min(load.connections(opts))
            .to_string();
        if load.h2load() {
            cmd.args(["h2load", "-t", &threads, "-c", &conns, "-m"])
                .arg(opts.streams.to_string())
                .args(["-D", &seconds.to_string()])
                .args(["-H", &format!(":authority: {HOST}")])
                .arg(format!("--log-file={}", log.display()))
                .arg(&url);
        } else {
            cmd.args(["wrk", "-t", &threads, "-c", &conns])
                .arg(format!("-d{seconds}s"))
                .args(["--timeout", "10s", "-s"])
                .arg(self.dir.join("percentiles.lua"))
                .args(["-H", &format!("Host: {HOST}")]);
            if load == Load::Handshakes {
                cmd.args(["-H", "Connection: close"]);
            }
            cmd.arg(&url);
        }
        cmd.stdin(Stdio::null());
        if self.printed.insert(load) {
            eprintln!("load {}: {cmd:?}", load.name());
        }
        cmd
    }

    fn run(&mut self, load: Load, target: &Target, seconds: u32) -> Result<Sample> {
        check_interrupted()?;
        let port = match target.proxy {
            Some(_) => target.ports.for_load(load),
            None => target.ports.h1,
        };
        let log = self.dir.join("h2load.log");
        let _ = std::fs::remove_file(&log);
        let ids = target.process.as_ref().map(Proc::tree).unwrap_or_default();
        let load_before = cpu_ticks(&self.opts.load_cpus);
        let (cpu_before, _) = usage(&ids, self.tick);
        let start = Instant::now();
        let out = self
            .command(load, port, seconds, &log)
            .output()
            .context("running the load generator")?;
        let wall_s = start.elapsed().as_secs_f64();
        let (cpu_after, _) = usage(&ids, self.tick);
        let load_after = cpu_ticks(&self.opts.load_cpus);
        check_interrupted()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "{} against {}: the load generator failed:\n{text}{err}",
                load.name(),
                target.label
            );
        }
        let mut s = Sample {
            wall_s,
            cpu_s: target.process.as_ref().map(|_| cpu_after - cpu_before),
            mem_kb: target.process.as_ref().map(|_| memory(&ids)),
            load_idle: {
                let total = load_after.1.saturating_sub(load_before.1).max(1);
                load_after.0.saturating_sub(load_before.0) as f64 / total as f64
            },
            ..Sample::default()
        };
        if load.h2load() {
            let h = parse_h2load(&text)
                .with_context(|| format!("unparsable h2load output:\n{text}{err}"))?;
            if h.failed > 0 || h.non_2xx > 0 || h.succeeded == 0 {
                bail!(
                    "{} against {}: {} failed, {} non-2xx of {} requests:\n{text}",
                    load.name(),
                    target.label,
                    h.failed,
                    h.non_2xx,
                    h.succeeded + h.failed
                );
            }
            let d = h2load_durations(&std::fs::read_to_string(&log).unwrap_or_default());
            s.rps = h.rps;
            s.requests = h.succeeded;
            s.p50 = percentile(&d, 50.0);
            s.p90 = percentile(&d, 90.0);
            s.p99 = percentile(&d, 99.0);
            s.p999 = percentile(&d, 99.9);
            s.tls = h.tls;
        } else {
            let (requests, dur, socket_errors, status_errors, p) =
                parse_wrk(&text).with_context(|| format!("unparsable wrk output:\n{text}{err}"))?;
            // A few socket errors as wrk stops are noise; more is a failure.
            if status_errors > 0 || socket_errors * 1000 > requests.max(1) || requests == 0 {
                bail!(
                    "{} against {}: {status_errors} non-2xx/3xx and {socket_errors} socket errors in {requests} requests:\n{text}",
                    load.name(),
                    target.label
                );
            }
            s.requests = requests;
            s.rps = requests as f64 / dur.max(1e-9);
            [s.p50, s.p90, s.p99, s.p999] = p;
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------- idle connections

/// Memory of a proxy before and after it holds idle keep-alive connections.
struct IdleMemory {
    label: String,
    connections: u32,
    /// (RSS, PSS) in kB of the proxy's processes, before and with the connections.
    before: (u64, u64),
    after: (u64, u64),
}

impl IdleMemory {
    /// Growth per connection in bytes: (RSS, PSS).
    fn per_connection(&self) -> (f64, f64) {
        let per = |a: u64, b: u64| (a as f64 - b as f64) * 1024.0 / f64::from(self.connections);
        (
            per(self.after.0, self.before.0),
            per(self.after.1, self.before.1),
        )
    }
}

/// Raises this process's open-file limit to `wanted` (as root, the hard
/// limit too, up to the kernel's `fs.nr_open`), else to the hard limit: the
/// idle test holds thousands of sockets, and the proxies started from here
/// inherit the limit (HAProxy wants two descriptors per `maxconn`).
fn raise_nofile_limit(wanted: u64) -> Result<u64> {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(wanted);
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0,
            "getrlimit(RLIMIT_NOFILE) failed"
        );
        let want = wanted.min(nr_open);
        if lim.rlim_max < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            // Only root may raise the hard limit; otherwise keep it.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Ok(want);
            }
        }
        lim.rlim_cur = lim.rlim_max;
        ensure!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0,
            "setrlimit(RLIMIT_NOFILE) failed"
        );
        Ok(lim.rlim_cur)
    }
}

/// Reads one HTTP/1.1 response (Content-Length or chunked) from a
/// keep-alive connection; returns its status.
/// Reads one HTTP/1.1 response (Content-Length or chunked body) into `buf`
/// (cleared first, so one buffer serves a connection) and returns its status.
pub fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status in the response")?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let done = |b: &[u8]| match length {
        Some(n) => b.len() >= head_end + n,
        // Chunked: the last chunk.
        None => b[head_end..].windows(5).any(|w| w == b"0\r\n\r\n"),
    };
    while !done(buf) {
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed before the response body ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// For each one-route proxy: its memory, then `n` keep-alive connections
/// that each made one request and stay open and idle, its memory again
/// after a second; then the connections close.
fn idle_memory(targets: &[Target], n: u32) -> Result<Vec<IdleMemory>> {
    let mut out = Vec::new();
    for t in targets
        .iter()
        .filter(|t| t.proxy.is_some() && t.extra_routes == 0)
    {
        check_interrupted()?;
        let ids = t.process.as_ref().map(Proc::tree).unwrap_or_default();
        let before = memory(&ids);
        let mut open = Vec::with_capacity(n as usize);
        for i in 0..n {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], t.ports.h1));
            // A proxy at its connection limit leaves new ones in the backlog.
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .with_context(|| format!("{}: idle connection {i}", t.label))?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(c, "GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")?;
            let status = read_response(&mut c, &mut Vec::with_capacity(512))
                .with_context(|| format!("{}: idle connection {i}", t.label))?;
            ensure!(
                status == 200,
                "{}: idle connection {i}: status {status}",
                t.label
            );
            open.push(c);
        }
        std::thread::sleep(Duration::from_secs(1));
        let after = memory(&ids);
        drop(open);
        eprintln!(
            "idle: {} with {n} idle keep-alive connections: RSS {:.1} → {:.1} MB",
            t.label,
            before.0 as f64 / 1024.0,
            after.0 as f64 / 1024.0
        );
        out.push(IdleMemory {
            label: t.label.clone(),
            connections: n,
            before,
            after,
        });
        // Let the proxy close its side before the next one is measured.
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(out)
}

fn print_idle(results: &[IdleMemory]) {
    let Some(first) = results.first() else {
        return;
    };
    println!(
        "\n### Idle keep-alive connections: memory per connection ({} connections, each after one request)\n",
        first.connections
    );
    println!("| proxy | RSS before | RSS with connections | RSS / connection | PSS / connection |");
    println!("|---|---:|---:|---:|---:|");
    for r in results {
        let (rss, pss) = r.per_connection();
        println!(
            "| {} | {:.1} MB | {:.1} MB | {} B | {} B |",
            r.label,
            r.before.0 as f64 / 1024.0,
            r.after.0 as f64 / 1024.0,
            thousands(rss),
            thousands(pss)
        );
    }
}

// ---------------------------------------------------------------- output

fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn micros(us: f64) -> String {
    if !us.is_finite() {
        "–".into()
    } else if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{} µs", thousands(us))
    }
}

fn cpu_per_100k(s: &Sample) -> Option<f64> {
    s.cpu_s.map(|c| c / s.requests.max(1) as f64 * 100_000.0)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// The median over rounds of `f(on) ÷ f(off)`, each pair from the same
/// round (samples are kept in round order).
/// What a variant is compared with: the access log with the request-ids
/// variant (when it ran), so the log's own cost shows; anything else with
/// plain Sluice (one route).
fn baseline_of(targets: &[Target], v: usize) -> Option<usize> {
    let plain = |t: &Target| t.proxy == Some(Proxy::Sluice) && t.extra_routes == 0;
    let ids_only = targets
        .iter()
        .position(|t| plain(t) && t.request_ids && !t.access_log && t.trace_ratio.is_none());
    match ids_only {
        Some(ids) if targets[v].access_log => Some(ids),
        _ => targets.iter().position(|t| plain(t) && !t.is_variant()),
    }
}

fn paired_median(on: &[Sample], off: &[Sample], f: fn(&Sample) -> Option<f64>) -> Option<f64> {
    let mut r: Vec<f64> = on
        .iter()
        .zip(off)
        .filter_map(|(a, b)| Some(f(a)? / f(b)?))
        .filter(|r| r.is_finite())
        .collect();
    r.sort_by(f64::total_cmp);
    r.get(r.len() / 2).copied()
}

/// The median round (by req/s) of a target's samples.
fn median(samples: &[Sample]) -> Option<&Sample> {
    let mut v: Vec<&Sample> = samples.iter().collect();
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    v.get(v.len() / 2).copied()
}

/// The figures of the run as charts: the latency distribution per load
/// (median round of each target), req/s per load, and with `--access-log` /
/// `--tracing` the variants' req/s relative to plain Sluice.
fn figure(
    opts: &Options,
    loads: &[Load],
    targets: &[Target],
    results: &BTreeMap<(Load, usize), Vec<Sample>>,
) -> Figure {
    let med = |load: Load, i: usize| results.get(&(load, i)).and_then(|v| median(v));
    let mut fig = Figure::new("bench proxy: Sluice, nginx, HAProxy and direct (loopback)");
    fig.notes.push(format!(
        "{} s per run, median of {} interleaved rounds; each proxy 1 worker on CPU {}, load generator + backend on CPU {}",
        opts.seconds,
        opts.rounds,
        opts.proxy_cpu,
        opts.load_cpu_list()
    ));
    let plain: Vec<usize> = (0..targets.len())
        .filter(|&i| !targets[i].is_variant())
        .collect();
    for &load in loads {
        let series: Vec<BarSeries> = plain
            .iter()
            .filter_map(|&i| {
                let s = med(load, i)?;
                Some(BarSeries {
                    name: targets[i].label.clone(),
                    values: vec![Some(s.p50), Some(s.p90), Some(s.p99), Some(s.p999)],
                })
            })
            .collect();
        fig.panels.push(Panel::Bars {
            title: format!(
                "{}: latency distribution — {}",
                load.name(),
                load.describe(opts)
            ),
            y_label: "latency (µs)".into(),
            categories: ["p50", "p90", "p99", "p99.9"].map(String::from).to_vec(),
            series,
            reference: None,
            log_y: true,
        });
    }
    let names: Vec<String> = loads.iter().map(|l| l.name().to_owned()).collect();
    fig.panels.push(Panel::Bars {
        // The direct baseline (the backend alone, no proxy) would dwarf the
        // proxies' bars: it is in the table and the latency panels.
        title: "Throughput per load (proxies; the direct baseline is in the table)".into(),
        y_label: "requests per second".into(),
        categories: names.clone(),
        series: (0..targets.len())
            .filter(|&i| targets[i].proxy.is_some())
            .map(|i| BarSeries {
                name: targets[i].label.clone(),
                values: loads.iter().map(|&l| med(l, i).map(|s| s.rps)).collect(),
            })
            .collect(),
        reference: None,
        log_y: false,
    });
    let variants: Vec<BarSeries> = (0..targets.len())
        .filter(|&i| targets[i].is_variant())
        .filter_map(|i| {
            let base = baseline_of(targets, i)?;
            Some(BarSeries {
                name: format!("{} ÷ {}", targets[i].label, targets[base].label),
                values: loads
                    .iter()
                    .map(|&l| {
                        let off = results.get(&(l, base))?;
                        paired_median(results.get(&(l, i))?, off, |s| Some(s.rps))
                    })
                    .collect(),
            })
        })
        .collect();
    if !variants.is_empty() {
        fig.panels.push(Panel::Bars {
            title:
                "Request ids / access log / tracing on: req/s ÷ without, same round (dashed: 1.0)"
                    .into(),
            y_label: "req/s ratio".into(),
            categories: names,
            series: variants,
            reference: Some(1.0),
            log_y: false,
        });
    }
    fig
}

/// Plain GET, the whole body (for the agent's /metrics).
fn http_body(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_owned())
}

/// The value of an unlabelled Prometheus sample.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The tracing variants really exported: the sink received posts and each
/// agent counts exported spans (a broken exporter would look free).
fn check_spans(targets: &[Target], sink: &crate::otlp_sink::OtlpSink) -> Result<()> {
    // Batches are posted at least every second: let the last ones arrive.
    std::thread::sleep(Duration::from_millis(1500));
    let (posts, bytes) = sink.received();
    println!("\nOTLP sink: {posts} export requests, {bytes} bytes of protobuf received");
    for t in targets.iter().filter(|t| t.trace_ratio.is_some()) {
        let text = http_body(t.ports.admin, "/metrics")
            .with_context(|| format!("{}: no /metrics", t.label))?;
        let get = |n: &str| metric(&text, n).unwrap_or(0.0);
        let (spans, dropped, failed) = (
            get("sluice_trace_spans_total"),
            get("sluice_trace_dropped_total"),
            get("sluice_trace_export_failures_total"),
        );
        println!(
            "- {}: {spans:.0} spans exported, {dropped:.0} requests dropped (queue full), {failed:.0} failed posts",
            t.label
        );
        ensure!(
            spans > 0.0 && posts > 0,
            "{}: no spans reached the OTLP sink ({spans} exported, {posts} posts)",
            t.label
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- the run

/// The bench's directory and processes. Fields drop in order: the processes
/// stop before the directory is removed.
struct Bench {
    targets: Vec<Target>,
    backend: Option<Proc>,
    dir: PathBuf,
    keep_dir: bool,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for t in &mut self.targets {
            t.process.take();
        }
        self.backend.take();
        if self.keep_dir && !INTERRUPTED.load(Ordering::SeqCst) {
            eprintln!(
                "bench proxy: configs and logs kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub(crate) fn wait_until(
    what: &str,
    proc: &mut Proc,
    timeout: Duration,
    ready: impl Fn() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check_interrupted()?;
        proc.ensure_running()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what} not ready after {timeout:?}; its log:\n{}",
                proc.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Status of a plain GET (for the agent's /readyz).
pub(crate) fn http_status(port: u16, path: &str) -> Option<u16> {
    http_status_of(port, "localhost", path, Duration::from_secs(2))
}

/// The status of `GET path` with `Host: host`, waiting at most `wait`.
pub(crate) fn http_status_of(port: u16, host: &str, path: &str, wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub(crate) fn pinned(cpu: &str, program: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", cpu]).arg(program);
    c
}

pub(crate) fn which(cmd: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(cmd);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(cmd)
}

#[allow(clippy::too_many_arguments)]
fn start_proxy(
    bench: &mut Bench,
    k: usize,
    sluice: &Path,
    otlp: Option<&str>,
    cert: &str,
    key: &str,
    cpu: &str,
    max_conns: u32,
) -> Result<()> {
    let dir = bench.dir.clone();
    let t = &mut bench.targets[k];
    let Some(proxy) = t.proxy else {
        return Ok(());
    };
    let name = t.label.replace('+', "-");
    let log = dir.join(format!("{name}.log"));
    let ports = t.ports;
    let mut proc = match proxy {
        Proxy::Sluice => {
            let cfg = dir.join(format!("{name}-config"));
            std::fs::create_dir_all(&cfg)?;
            std::fs::write(
                cfg.join("bench.yaml"),
                sluice_config(ports, BASE_PORT, t.extra_routes, cert, key),
            )?;
            let mut cmd = pinned(cpu, sluice);
            cmd.arg("--config-dir").arg(&cfg).args([
                "--datapath",
                "userspace",
                "--worker-threads",
                "1",
                // Every connection comes from 127.0.0.1, and the peers have
                // no limit per client address either (`--idle-connections`
                // opens thousands).
                "--max-connections-per-source",
                "0",
            ]);
            if t.access_log {
                cmd.arg("--access-log")
                    .arg(dir.join(format!("{name}-access.log")));
            }
            // Plain Sluice adds no request id, as nginx and HAProxy add none:
            // the same forwarded request (the equivalence check compares them).
            cmd.args([
                "--request-id",
                if t.request_ids { "generate" } else { "off" },
            ]);
            if let (Some(ratio), Some(endpoint)) = (t.trace_ratio, otlp) {
                cmd.args(["--otlp-endpoint", endpoint])
                    .arg("--trace-sample-ratio")
                    .arg(ratio.to_string());
            }
            cmd.arg("--admin-addr")
                .arg(format!("127.0.0.1:{}", ports.admin))
                .env("RUST_LOG", "info");
            Proc::spawn(&t.label, cmd, &log)?
        }
        Proxy::Nginx => {
            for tmp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                std::fs::create_dir_all(dir.join(format!("{name}-tmp/{tmp}")))?;
            }
            let conf = dir.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                nginx_config(&dir, &name, ports, BASE_PORT, t.extra_routes, max_conns),
            )?;
            let mut cmd = pinned(cpu, &which("nginx"));
            cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
            Proc::spawn(&t.label, cmd, &log)?
        }
        Proxy::Haproxy => {
            let list: String = hosts(t.extra_routes)
                .iter()
                .map(|h| format!("{h}\n"))
                .collect();
            std::fs::write(dir.join(format!("{name}-hosts.lst")), list)?;
            let conf = dir.join(format!("{name}.cfg"));
            std::fs::write(
                &conf,
                haproxy_config(&dir, &name, ports, BASE_PORT, max_conns),
            )?;
            let mut cmd = pinned(cpu, &which("haproxy"));
            cmd.arg("-f").arg(&conf).arg("-db");
            Proc::spawn(&t.label, cmd, &log)?
        }
    };
    let label = t.label.clone();
    let timeout = Duration::from_secs(60);
    match proxy {
        Proxy::Sluice => wait_until(&label, &mut proc, timeout, || {
            http_status(ports.admin, "/readyz") == Some(200)
        })?,
        _ => wait_until(&label, &mut proc, timeout, || {
            port_open(ports.h1) && port_open(ports.h2c) && port_open(ports.tls)
        })?,
    }
    if proxy == Proxy::Sluice {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        ensure!(
            log_text.contains("worker_threads=1"),
            "{label} did not report one worker thread; its log:\n{log_text}"
        );
    }
    eprintln!(
        "started {label} (pid {}, {} route(s)) on CPU {cpu}: h1 :{} h2c :{} tls :{}",
        proc.child.id(),
        t.extra_routes + 1,
        ports.h1,
        ports.h2c,
        ports.tls
    );
    t.process = Some(proc);
    Ok(())
}

fn make_cert(dir: &Path) -> Result<(String, String)> {
    // ECDSA P-256, the same certificate and key for all three proxies.
    crate::run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "7", "-subj", &format!("/CN={HOST}")])
            .args(["-addext", &format!("subjectAltName=DNS:{HOST}")])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let cert = std::fs::read_to_string(dir.join("cert.pem"))?;
    let key = std::fs::read_to_string(dir.join("key.pem"))?;
    std::fs::write(dir.join("cert-and-key.pem"), format!("{cert}{key}"))?;
    Ok((cert, key))
}

/// The agent a bench runs: `--sluice-bin` when given, else the release build
/// (made or brought up to date first). Shared by every bench of the proxy.
pub fn sluice_binary(root: &Path, given: Option<&Path>) -> Result<PathBuf> {
    if let Some(bin) = given {
        ensure!(bin.exists(), "--sluice-bin {}: no such file", bin.display());
        return Ok(bin.to_path_buf());
    }
    // Cargo reuses an up-to-date release build (a fresh one takes minutes).
    crate::run(crate::cargo().args(["build", "--release", "-p", "sluice", "--bin", "sluice"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/sluice"))
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let online = parse_cpu_list(&online).unwrap_or_default();
    for cpu in opts.load_cpus.iter().chain([&opts.proxy_cpu]) {
        ensure!(
            online.contains(cpu),
            "CPU {cpu} is not online (online: {online:?}); the default layout needs 2 CPUs \
             (--proxy-cpu 1, --load-cpus 0)"
        );
    }
    ensure!(!opts.load_cpus.is_empty(), "--load-cpus is empty");
    if opts.load_cpus.contains(&opts.proxy_cpu) {
        eprintln!(
            "bench proxy: the proxies share CPU {} with the load generators and the backend",
            opts.proxy_cpu
        );
    }
    crate::setup::ensure_tools("bench proxy", TOOLS)?;
    let sluice = sluice_binary(root, opts.sluice_bin.as_deref())?;
    if opts.idle_connections > 0 {
        // HAProxy reserves two descriptors per connection of its `maxconn`.
        let wanted = 2 * u64::from(conn_limit(opts.idle_connections)) + 256;
        let limit = raise_nofile_limit(wanted)?;
        ensure!(
            limit >= wanted,
            "--idle-connections {}: needs an open-file limit of {wanted}, the hard limit is {limit} \
             (run as root, or lower --idle-connections)",
            opts.idle_connections
        );
    }
    install_signal_handlers();

    let dir = std::env::temp_dir().join(format!("sluice-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut bench = Bench {
        targets: Vec::new(),
        backend: None,
        dir: dir.clone(),
        keep_dir: true,
    };
    std::fs::write(dir.join("percentiles.lua"), WRK_SCRIPT)?;
    let (cert, key) = make_cert(&dir)?;

    // Targets: direct, each proxy with one route, and with --routes N each
    // proxy again with N more routes, all running side by side.
    bench.targets.push(Target {
        label: "direct".into(),
        proxy: None,
        extra_routes: 0,
        access_log: false,
        request_ids: false,
        trace_ratio: None,
        ports: Ports {
            h1: BASE_PORT,
            h2c: 0,
            tls: 0,
            admin: 0,
        },
        process: None,
    });
    let mut sets = vec![0];
    if opts.routes > 0 {
        sets.push(opts.routes);
    }
    let mut k = 0;
    for &extra in &sets {
        for proxy in [Proxy::Sluice, Proxy::Nginx, Proxy::Haproxy] {
            let label = if extra == 0 {
                proxy.name().to_owned()
            } else {
                format!("{}+{extra}r", proxy.name())
            };
            bench.targets.push(Target {
                label,
                proxy: Some(proxy),
                extra_routes: extra,
                access_log: false,
                request_ids: false,
                trace_ratio: None,
                ports: Ports::of_instance(k),
                process: None,
            });
            k += 1;
        }
    }
    if opts.access_log {
        // Request ids alone (the agent's default), then the access log on
        // top of them: compared with each other, the cost of the log itself.
        for (label, access_log) in [("sluice+ids", false), ("sluice+log", true)] {
            bench.targets.push(Target {
                label: label.into(),
                proxy: Some(Proxy::Sluice),
                extra_routes: 0,
                access_log,
                request_ids: true,
                trace_ratio: None,
                ports: Ports::of_instance(k),
                process: None,
            });
            k += 1;
        }
    }
    // The OTLP sink the tracing variants export to (started before them).
    let sink = if opts.tracing {
        for (j, (label, ratio)) in [("sluice+trace", 1.0), ("sluice+trace0.01", 0.01)]
            .into_iter()
            .enumerate()
        {
            bench.targets.push(Target {
                label: label.into(),
                proxy: Some(Proxy::Sluice),
                extra_routes: 0,
                access_log: false,
                request_ids: false,
                trace_ratio: Some(ratio),
                ports: Ports::of_instance(k + j as u16),
                process: None,
            });
        }
        Some(crate::otlp_sink::OtlpSink::start()?)
    } else {
        None
    };
    // Every port must be free: a stray server would be measured instead.
    let mut ports = vec![BASE_PORT];
    for t in bench.targets.iter().filter(|t| t.proxy.is_some()) {
        ports.extend([t.ports.h1, t.ports.h2c, t.ports.tls, t.ports.admin]);
    }
    for p in &ports {
        TcpListener::bind(("127.0.0.1", *p)).with_context(|| {
            format!(
                "port 127.0.0.1:{p} is taken; the bench needs {BASE_PORT}–{}",
                ports.iter().max().unwrap_or(p)
            )
        })?;
    }

    // The capture backend first: the equivalence check runs against it.
    let capture = Capture::start(BASE_PORT)?;
    for k in 0..bench.targets.len() {
        start_proxy(
            &mut bench,
            k,
            &sluice,
            sink.as_ref().map(|s| s.endpoint()).as_deref(),
            &cert,
            &key,
            &opts.proxy_cpu.to_string(),
            conn_limit(opts.idle_connections),
        )?;
    }
    check_equivalence(&bench.targets, &capture)?;
    drop(capture);

    let backend = start_backend(
        &dir,
        &backend_config(&dir, BASE_PORT),
        Some(&opts.load_cpu_list()),
        || http_status(BASE_PORT, "/") == Some(200),
    )?;
    bench.backend = Some(backend);
    eprintln!(
        "started the backend (nginx `return 200 \"ok\"`) on CPU {}: :{BASE_PORT}",
        opts.load_cpu_list()
    );

    let mut runner = Runner {
        opts,
        dir: dir.clone(),
        tick: clock_ticks(),
        printed: Default::default(),
    };
    let loads: Vec<Load> = Load::ALL
        .into_iter()
        .filter(|l| opts.only.is_empty() || opts.only.contains(l))
        .collect();
    let is_proxy: Vec<bool> = bench.targets.iter().map(|t| t.proxy.is_some()).collect();
    let targets_of = |load: Load| -> Vec<usize> {
        (0..is_proxy.len())
            .filter(|&i| is_proxy[i] || load.has_direct())
            .collect()
    };

    // Warm-up: pools, caches, TLS session state, page faults.
    eprintln!("warm-up: 1 s of each load against each target");
    for &load in &loads {
        for i in targets_of(load) {
            runner.run(load, &bench.targets[i], 1)?;
        }
    }

    // results[(load, target index)] = one sample per round
    let mut results: BTreeMap<(Load, usize), Vec<Sample>> = BTreeMap::new();
    for round in 0..opts.rounds {
        for &load in &loads {
            let order = targets_of(load);
            let n = order.len();
            for j in 0..n {
                let i = order[(j + round as usize) % n];
                let t = &bench.targets[i];
                let s = runner.run(load, t, opts.seconds)?;
                eprintln!(
                    "round {}/{} {:<10} {:<12} {:>9} req/s  p50 {:>8}  p99 {:>8}{}",
                    round + 1,
                    opts.rounds,
                    load.name(),
                    t.label,
                    thousands(s.rps),
                    micros(s.p50),
                    micros(s.p99),
                    s.cpu_s
                        .map(|c| format!("  proxy CPU {:.0} %", 100.0 * c / s.wall_s))
                        .unwrap_or_default()
                );
                results.entry((load, i)).or_default().push(s);
                for t in &mut bench.targets {
                    if let Some(p) = &mut t.process {
                        p.ensure_running()?;
                    }
                }
            }
        }
    }

    let idle = if opts.idle_connections > 0 {
        idle_memory(&bench.targets, opts.idle_connections)?
    } else {
        Vec::new()
    };
    print_report(opts, &loads, &bench.targets, &results);
    if let Some(sink) = &sink {
        check_spans(&bench.targets, sink)?;
    }
    print_idle(&idle);
    if opts.plot {
        figure(opts, &loads, &bench.targets, &results).write(root, "proxy")?;
    }
    bench.keep_dir = false;
    Ok(())
}

fn print_report(
    opts: &Options,
    loads: &[Load],
    targets: &[Target],
    results: &BTreeMap<(Load, usize), Vec<Sample>>,
) {
    let med = |load: Load, i: usize| results.get(&(load, i)).and_then(|v| median(v));
    let find = |proxy: Proxy, extra: u32| {
        targets
            .iter()
            .position(|t| t.proxy == Some(proxy) && t.extra_routes == extra && !t.is_variant())
    };
    println!(
        "\n## cargo xtask bench proxy: {} s per run, median of {} interleaved rounds\n",
        opts.seconds, opts.rounds
    );
    println!(
        "Each proxy: 1 worker on CPU {}; load generator and backend (nginx `return 200`) on CPU {}; \
         loopback; route Host {HOST} + PathPrefix /bench; requests to {PATH}.\n\
         Proxy CPU = utime+stime of the proxy's processes; busy = that ÷ wall time (≈ 100 % means the proxy was the bottleneck); \
         load CPUs idle near 0 % means the load generator and backend were, and the proxy's req/s is a floor.\n",
        opts.proxy_cpu,
        opts.load_cpu_list()
    );
    println!(
        "| load | target | req/s | p50 | p90 | p99 | p99.9 | proxy CPU s / 100k req | proxy busy | proxy RSS (PSS) | load CPUs idle |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut tls_notes: BTreeMap<String, String> = BTreeMap::new();
    for &load in loads {
        for (i, t) in targets.iter().enumerate() {
            let Some(s) = med(load, i) else { continue };
            if let Some(tls) = results
                .get(&(load, i))
                .and_then(|v| v.iter().find_map(|s| s.tls.clone()))
            {
                tls_notes.insert(format!("{} {}", t.label, load.name()), tls);
            }
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} % |",
                load.name(),
                t.label,
                thousands(s.rps),
                micros(s.p50),
                micros(s.p90),
                micros(s.p99),
                micros(s.p999),
                cpu_per_100k(s).map_or("–".into(), |c| format!("{c:.2}")),
                s.cpu_s
                    .map_or("–".into(), |c| format!("{:.0} %", 100.0 * c / s.wall_s)),
                s.mem_kb.map_or("–".into(), |(rss, pss)| format!(
                    "{:.1} MB ({:.1} MB)",
                    rss as f64 / 1024.0,
                    pss as f64 / 1024.0
                )),
                100.0 * s.load_idle
            );
        }
    }
    println!("\nLoads:");
    for &load in loads {
        println!("- {}: {}", load.name(), load.describe(opts));
    }

    println!("\n### Sluice ÷ peer (median rounds; req/s above 1 is better, CPU per request and p99 below 1)\n");
    println!("| load | routes | req/s ÷ nginx | req/s ÷ HAProxy | CPU/req ÷ nginx | CPU/req ÷ HAProxy | p99 ÷ nginx | p99 ÷ HAProxy |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut route_sets = vec![0];
    if opts.routes > 0 {
        route_sets.push(opts.routes);
    }
    for &load in loads {
        for &extra in &route_sets {
            let get = |p: Proxy| find(p, extra).and_then(|i| med(load, i));
            let (Some(s), n, h) = (get(Proxy::Sluice), get(Proxy::Nginx), get(Proxy::Haproxy))
            else {
                continue;
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                load.name(),
                extra + 1,
                ratio(Some(s.rps), n.map(|n| n.rps)),
                ratio(Some(s.rps), h.map(|h| h.rps)),
                ratio(cpu_per_100k(s), n.and_then(cpu_per_100k)),
                ratio(cpu_per_100k(s), h.and_then(cpu_per_100k)),
                ratio(Some(s.p99), n.map(|n| n.p99)),
                ratio(Some(s.p99), h.map(|h| h.p99)),
            );
        }
    }
    if loads.contains(&Load::H1Single) {
        if let Some(direct) = med(Load::H1Single, 0) {
            println!("\nAdded p50 over direct (h1-single; the proxy on another CPU than client and backend):");
            for p in [Proxy::Sluice, Proxy::Nginx, Proxy::Haproxy] {
                if let Some(s) = find(p, 0).and_then(|i| med(Load::H1Single, i)) {
                    println!("- {}: +{:.0} µs", p.name(), s.p50 - direct.p50);
                }
            }
        }
    }
    if opts.routes > 0 {
        println!(
            "\n### {} more routes ÷ 1 route, req/s (target for Sluice: ≥ 0.95)\n",
            opts.routes
        );
        println!("| load | sluice | nginx | haproxy |");
        println!("|---|---:|---:|---:|");
        for &load in loads {
            let r = |p: Proxy| {
                ratio(
                    find(p, opts.routes)
                        .and_then(|i| med(load, i))
                        .map(|s| s.rps),
                    find(p, 0).and_then(|i| med(load, i)).map(|s| s.rps),
                )
            };
            println!(
                "| {} | {} | {} | {} |",
                load.name(),
                r(Proxy::Sluice),
                r(Proxy::Nginx),
                r(Proxy::Haproxy)
            );
        }
    }
    let variants: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].is_variant())
        .collect();
    if !variants.is_empty() {
        println!(
            "\n### Observability on ÷ off (Sluice, same run; target: access log ≥ 0.95 req/s)\n"
        );
        println!(
            "Each variant against what it adds to: sluice+ids (request ids, the agent's \
             default) against plain Sluice (no request ids, as the peers); sluice+log (a JSON \
             access log to a file) against sluice+ids, so it shows the log's own cost; \
             sluice+trace (OTLP/HTTP spans to a sink in the bench at sample ratio 1.0) and \
             sluice+trace0.01 (the default ratio) against plain Sluice.\n"
        );
        println!(
            "The ratios are the median over rounds of on ÷ off within a round (the two ran \
             seconds apart, so a change in the machine's load between rounds cancels out).\n"
        );
        println!("| load | variant | against | req/s | req/s against | req/s on ÷ off | CPU/req on ÷ off | p99 on ÷ off |");
        println!("|---|---|---|---:|---:|---:|---:|---:|");
        for &load in loads {
            for &v in &variants {
                let Some(base) = baseline_of(targets, v) else {
                    continue;
                };
                let on = med(load, v);
                let off = med(load, base);
                let paired = |f: fn(&Sample) -> Option<f64>| {
                    match (results.get(&(load, v)), results.get(&(load, base))) {
                        (Some(on), Some(off)) => paired_median(on, off, f),
                        _ => None,
                    }
                    .map_or("–".into(), |r| format!("{r:.2}×"))
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    load.name(),
                    targets[v].label,
                    targets[base].label,
                    on.map_or("–".into(), |s| thousands(s.rps)),
                    off.map_or("–".into(), |s| thousands(s.rps)),
                    paired(|s| Some(s.rps)),
                    paired(cpu_per_100k),
                    paired(|s| Some(s.p99)),
                );
            }
        }
    }
    if !tls_notes.is_empty() {
        println!("\nTLS as negotiated by h2load:");
        for (k, v) in tls_notes {
            println!("- {k}: {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_compared_round_by_round() {
        let rounds = |rps: &[f64]| -> Vec<Sample> {
            rps.iter()
                .map(|&rps| Sample {
                    rps,
                    ..Sample::default()
                })
                .collect()
        };
        // Round 1 ran on a busy machine and slowed both alike; the ratios
        // per round are 0.9, 0.95 and 0.9.
        let on = rounds(&[18.0, 95.0, 90.0]);
        let off = rounds(&[20.0, 100.0, 100.0]);
        let r = paired_median(&on, &off, |s| Some(s.rps)).unwrap();
        assert!((r - 0.9).abs() < 1e-9, "{r}");
        assert_eq!(paired_median(&on, &[], |s| Some(s.rps)), None);
        assert_eq!(paired_median(&on, &off, |_| None), None);
    }

    #[test]
    fn wrk_script_line_is_parsed() {
        let out = "Running 2s test\nBENCH requests=1000 duration_us=2000000 socket_errors=0 \
                   status_errors=2 p50=100 p90=150 p99=900 p999=2000\n";
        let (n, d, se, st, p) = parse_wrk(out).unwrap();
        assert_eq!((n, d, se, st), (1000, 2.0, 0, 2));
        assert_eq!(p, [100.0, 150.0, 900.0, 2000.0]);
        assert!(parse_wrk("nothing").is_none());
    }

    #[test]
    fn h2load_output_is_parsed() {
        let out = "\
finished in 2.00s, 45123.50 req/s, 1.20MB/s
requests: 90247 total, 90247 started, 90247 done, 90240 succeeded, 7 failed, 0 errored, 0 timeout
status codes: 90240 2xx, 0 3xx, 0 4xx, 0 5xx
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2
";
        let s = parse_h2load(out).unwrap();
        assert_eq!(s.rps, 45123.5);
        assert_eq!((s.succeeded, s.failed, s.non_2xx), (90240, 7, 0));
        assert_eq!(
            s.tls.as_deref(),
            Some("TLS Protocol: TLSv1.3, Cipher: TLS_AES_256_GCM_SHA384, Server Temp Key: X25519 253 bits, Application protocol: h2")
        );
        let d = h2load_durations("1\t200\t30\n2\t200\t10\n3\t200\t20\n");
        assert_eq!(d, [10.0, 20.0, 30.0]);
        assert_eq!(percentile(&d, 50.0), 20.0);
        assert_eq!(percentile(&d, 99.9), 30.0);
        assert_eq!(percentile(&[5.0], 0.0), 5.0);
    }

    #[test]
    fn heads_compare_without_order_and_name_case() {
        let a = normalize_head("GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1\r\n");
        let b = normalize_head("GET /x HTTP/1.1\r\nx-forwarded-for: 1\r\nhost: a");
        assert_eq!(a, b);
        assert_ne!(
            a,
            normalize_head("GET /y HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 1")
        );
    }

    #[test]
    fn configs_name_every_route_once() {
        let dir = Path::new("/tmp/x");
        let ports = Ports::of_instance(0);
        assert_eq!(hosts(4).len(), 5);
        assert_eq!(hosts(4)[2], HOST);
        let n = nginx_config(dir, "nginx", ports, 1, 3, 8192);
        assert_eq!(n.matches("server_name ").count(), 1 + 4);
        assert_eq!(n.matches("default_server").count(), 3);
        let s = sluice_config(ports, 1, 3, "C\n", "K\n");
        assert_eq!(s.matches("kind: HTTPRoute").count(), 4);
        assert!(s.contains("hostnames: [bench.example.com]"));
        let h = haproxy_config(dir, "haproxy", ports, 1, 8192);
        assert!(h.contains("-f /tmp/x/haproxy-hosts.lst"));
    }

    #[test]
    fn cpu_lists_are_parsed() {
        assert_eq!(parse_cpu_list("0-2,5\n"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn numbers_are_formatted() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(micros(12_345.0), "12.3 ms");
        assert_eq!(micros(950.0), "950 µs");
        assert_eq!(ratio(Some(2.0), Some(4.0)), "0.50×");
        assert_eq!(ratio(Some(2.0), None), "–");
    }
}
