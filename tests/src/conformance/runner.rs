//! Runs the case files against one fresh agent per test.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_yaml::Value;

use super::{
    cases::{self, Case, TestFile},
    certs::SuiteCerts,
    client::{tls_request, Clients, Outgoing, NO_CLIENT_CERT_REQUEST},
    compare::compare,
    l4,
    manifests::{self, Prepared, GATEWAY_CLASS},
    report::{CaseResult, Profile, Report, StatusResult, TestResult, Traffic},
    stats,
    status::{self as st, AgentStatus, Objects, Poll},
    websocket,
};
use crate::echo::{serve_tls, serve_with, Identity, RequestLog};

/// Features Sluice does not implement, never claimed by default:
/// `TLSRouteModeMixed` (Terminate and Passthrough listeners on one port are a
/// `ProtocolConflict`; `tlsroute-listener-mixed-termination-not-supported`
/// checks exactly that).
const NOT_IMPLEMENTED: &[&str] = &["TLSRouteModeMixed"];

/// Upstream `RequiredConsecutiveSuccesses`.
pub const CONSECUTIVE_SUCCESSES: usize = 3;

#[derive(Debug, Clone)]
pub struct Options {
    /// `tests/conformance/cases`.
    pub cases_dir: PathBuf,
    /// Upstream `conformance/` directory (holds `base/` and `tests/`).
    pub upstream_dir: PathBuf,
    /// The `sluice` binary.
    pub agent_bin: PathBuf,
    /// Added to every listener port.
    pub port_offset: u16,
    /// Where the runner runs (for the report).
    pub network: super::network::Network,
    /// Upstream `MaxTimeToConsistency` (30 s upstream).
    pub max_time_to_consistency: Duration,
    /// Per request (10 s upstream).
    pub request_timeout: Duration,
    /// How long status assertions are polled (upstream: 60 s for routes,
    /// 180 s for Gateways).
    pub status_timeout: Duration,
    /// How long the agent may take to become ready.
    pub agent_start_timeout: Duration,
    /// Only tests whose id or upstream name is listed (all when empty).
    pub run: Vec<String>,
    /// Claimed features; `None` claims every feature (runs every test).
    pub features: Option<BTreeSet<String>>,
    /// Diagnostic: Gateways (`namespace/name`) left out of the manifests.
    pub skip_gateways: Vec<String>,
    /// Keep the per-test temporary directories (config + agent log).
    pub keep_temp: bool,
    pub verbose: bool,
}

/// A Service's echo backend.
struct Backend {
    port: u16,
    log: Arc<RequestLog>,
}

pub(super) struct Env {
    pub(super) opts: Options,
    base: Vec<Value>,
    backends: BTreeMap<(String, String), Backend>,
    /// Backends with more than one port (the TCP echo server's plain and TLS
    /// ports), by (namespace, Service, container port).
    pub(super) container_ports: BTreeMap<(String, String, u16), u16>,
    work: PathBuf,
    /// The Secrets the suite creates in code; HTTPS cases trust their CAs.
    pub(super) certs: Arc<SuiteCerts>,
    /// The API server of the tests that need one (started on first use).
    cluster: tokio::sync::OnceCell<Result<Arc<super::cluster::Cluster>, String>>,
    /// The background start of that API server.
    cluster_start: tokio::sync::Mutex<Option<ClusterStart>>,
}

type ClusterStart = tokio::task::JoinHandle<Result<super::cluster::Cluster>>;

/// Runs the selected tests and returns the report.
pub async fn run(opts: Options) -> Result<Report> {
    let mut tests = cases::load_dir(&opts.cases_dir)?;
    if !opts.run.is_empty() {
        tests.retain(|t| opts.run.iter().any(|r| *r == t.id || *r == t.name));
        anyhow::ensure!(
            !tests.is_empty(),
            "no case file matches --run {:?}",
            opts.run
        );
    }
    let every_test = cases::load_dir(&opts.cases_dir)?;
    let all_features: BTreeSet<String> =
        every_test.iter().flat_map(|t| t.features.clone()).collect();
    let mut profile_features: BTreeMap<Profile, BTreeSet<String>> = BTreeMap::new();
    for t in &every_test {
        profile_features
            .entry(Profile::of(&t.features))
            .or_default()
            .extend(t.features.iter().cloned());
    }
    // By default every feature a test names is claimed, except those Sluice
    // does not implement (their tests are reported skipped, as upstream does
    // for unclaimed features).
    let claimed = opts.features.clone().unwrap_or_else(|| {
        all_features
            .iter()
            .filter(|f| !NOT_IMPLEMENTED.contains(&f.as_str()))
            .cloned()
            .collect()
    });
    let base = manifests::read_docs(
        &opts.upstream_dir.join("base/manifests.yaml"),
        GATEWAY_CLASS,
    )?;

    // One echo server per Service of any manifest, for the whole run.
    let mut services: BTreeSet<(String, String)> = manifests::services(&base).into_iter().collect();
    let mut all_docs = base.clone();
    for t in &tests {
        for m in &t.manifests {
            if let Ok(docs) = manifests::read_docs(&opts.upstream_dir.join(m), GATEWAY_CLASS) {
                services.extend(manifests::services(&docs));
                all_docs.extend(docs);
            }
        }
    }
    let certs = Arc::new(SuiteCerts::generate().context("generating the suite's certificates")?);
    let mut backends = BTreeMap::new();
    let mut container_ports = BTreeMap::new();
    for (ns, name) in services {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let log = Arc::new(RequestLog::default());
        let id = Identity {
            // Like a Deployment's pod: <deployment>-<hash>-<suffix>.
            pod: format!("{name}-5c9d7f8b4-conf0"),
            namespace: ns.clone(),
        };
        // Backends whose Deployment serves TLS (echo-basic's TLS_* settings).
        let key = (ns.clone(), name.clone());
        if l4::is_tcp_echo_backend(&all_docs, &key) {
            // echo-basic's TCP server: plain on 3000, TLS on 8443 when the
            // Deployment mounts a certificate.
            let tls = l4::tcp_echo_tls(&all_docs, &key, &certs)
                .with_context(|| format!("TCP echo backend {ns}/{name}"))?;
            let identity = l4::Assertions {
                namespace: ns.clone(),
                service: name.clone(),
                pod: id.pod.clone(),
                tcpport: l4::PLAIN_PORT.to_string(),
                tlsport: l4::TLS_PORT.to_string(),
                ..Default::default()
            };
            container_ports.insert((ns.clone(), name.clone(), l4::PLAIN_PORT), port);
            if let Some(tls) = tls {
                let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                container_ports.insert(
                    (ns.clone(), name.clone(), l4::TLS_PORT),
                    tls_listener.local_addr()?.port(),
                );
                tokio::spawn(l4::serve_tcp_echo(
                    tls_listener,
                    identity.clone(),
                    Some(tls),
                ));
            }
            tokio::spawn(l4::serve_tcp_echo(listener, identity, None));
            backends.insert((ns, name), Backend { port, log });
            continue;
        }
        match super::tls_backends::server_config(&all_docs, &key, &certs)
            .with_context(|| format!("TLS backend {ns}/{name}"))?
        {
            // The gRPC echo backends (h2c) of the GATEWAY-GRPC tests.
            None if super::grpc::is_grpc_backend(&all_docs, &key) => {
                tokio::spawn(crate::grpc::serve_echo(listener, id))
            }
            Some(tls) => tokio::spawn(serve_tls(listener, id, Some(log.clone()), true, tls)),
            None => tokio::spawn(serve_with(listener, id, Some(log.clone()), true)),
        };
        backends.insert((ns, name), Backend { port, log });
    }

    let work = std::env::temp_dir().join(format!("sluice-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let env = Env {
        opts: opts.clone(),
        base,
        backends,
        container_ports,
        work: work.clone(),
        certs,
        cluster: tokio::sync::OnceCell::new(),
        cluster_start: tokio::sync::Mutex::new(None),
    };
    // kubelite starts in the background while the other tests run; the
    // tests that need it run last.
    let needs_cluster = |t: &TestFile| {
        t.runnable
            && super::cluster::needs_api_server(t)
            && t.features.iter().all(|f| claimed.contains(f))
    };
    if tests.iter().any(needs_cluster) {
        let upstream = opts.upstream_dir.clone();
        *env.cluster_start.lock().await = Some(tokio::task::spawn_blocking(move || {
            super::cluster::Cluster::start(&upstream)
        }));
    }
    let order: Vec<usize> = (0..tests.len())
        .filter(|i| !needs_cluster(&tests[*i]))
        .chain((0..tests.len()).filter(|i| needs_cluster(&tests[*i])))
        .collect();
    let mut results: Vec<Option<TestResult>> = tests.iter().map(|_| None).collect();
    for i in order {
        let t = &tests[i];
        let started = Instant::now();
        let mut r = run_test(&env, t, &claimed).await;
        r.seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "[{:>7}] {} ({}) requests {} status {} in {:.1}s{}",
            r.outcome().label(),
            r.id,
            r.name,
            r.traffic_label(),
            r.status_label(),
            r.seconds,
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", r.reason.lines().next().unwrap_or(""))
            }
        );
        results[i] = Some(r);
    }
    let results: Vec<TestResult> = results.into_iter().flatten().collect();
    if !opts.keep_temp {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("kept per-test directories under {}", work.display());
    }
    let non_conformant = (!opts.skip_gateways.is_empty()).then(|| {
        format!(
            "Gateways left out of the manifests: {}",
            opts.skip_gateways.join(", ")
        )
    });
    Ok(Report {
        results,
        claimed,
        all_features,
        profile_features,
        non_conformant,
        network: opts.network.describe(opts.port_offset),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

fn skeleton(t: &TestFile) -> TestResult {
    TestResult {
        id: t.id.clone(),
        name: t.name.clone(),
        features: t.features.clone(),
        provisional: t.provisional,
        traffic: Traffic::NotRun,
        status: Vec::new(),
        reason: String::new(),
        cases: Vec::new(),
        seconds: 0.0,
    }
}

async fn run_test(env: &Env, t: &TestFile, claimed: &BTreeSet<String>) -> TestResult {
    let mut r = skeleton(t);
    if !t.runnable {
        r.reason = format!("not runnable without a cluster: {}", t.reason);
        return r;
    }
    if let Some(f) = t
        .returns_if_claimed
        .as_ref()
        .filter(|f| claimed.contains(*f))
    {
        r.reason = format!("upstream returns without assertions when {f} is claimed");
        return r;
    }
    let missing: Vec<&String> = t
        .features
        .iter()
        .filter(|f| !claimed.contains(*f))
        .collect();
    if !missing.is_empty() {
        r.reason = format!("feature(s) not claimed: {missing:?}");
        return r;
    }
    let dir = env.work.join(&t.id);
    let outcome = run_test_in(env, t, &dir, &mut r).await;
    if let Err(e) = outcome {
        r.traffic = Traffic::Refused(format!("{e:#}"));
        // Nothing could be checked: the assertions fail (unsupported ones stay so).
        let why = "the agent refused the config";
        r.status = unchecked(&t.status, "", why);
        for (i, step) in t.steps.iter().enumerate() {
            r.status
                .extend(unchecked(&step.status, &format!("step {}: ", i + 1), why));
        }
    }
    if !env.opts.keep_temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r.reason = match &r.traffic {
        Traffic::Refused(e) => format!("agent refused the config: {e}"),
        _ => {
            let first = r
                .cases
                .iter()
                .find_map(|c| c.error.as_ref().map(|e| format!("{}: {e}", c.label)));
            first
                .or_else(|| r.first_status_problem())
                .unwrap_or_default()
        }
    };
    r
}

/// Runs one test; `Err` means the agent did not accept the config.
async fn run_test_in(env: &Env, t: &TestFile, dir: &Path, r: &mut TestResult) -> Result<()> {
    let mut source = env.base.clone();
    for m in &t.manifests {
        source.extend(manifests::read_docs(
            &env.opts.upstream_dir.join(m),
            GATEWAY_CLASS,
        )?);
    }
    source.retain(|d| {
        let (gk, key) = (manifests::group_kind(d), manifests::object_key(d));
        !(gk.1 == "Gateway"
            && env
                .opts
                .skip_gateways
                .contains(&format!("{}/{}", key.0, key.1)))
    });
    let ports: BTreeMap<_, _> = env
        .backends
        .iter()
        .map(|(k, b)| (k.clone(), b.port))
        .collect();

    manifests::set_initial_generations(&mut source);
    let prepared =
        manifests::prepare_with(&source, env.opts.port_offset, &ports, &env.container_ports)?;
    if super::cluster::needs_api_server(t) {
        let cluster = env
            .cluster
            .get_or_init(|| async {
                let started = env.cluster_start.lock().await.take();
                let upstream = env.opts.upstream_dir.clone();
                let start = started.unwrap_or_else(|| {
                    tokio::task::spawn_blocking(move || super::cluster::Cluster::start(&upstream))
                });
                start
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| format!("{e:#}")))
                    .map(Arc::new)
            })
            .await;
        return super::cluster::run_test(env, t, dir, r, cluster, source, &ports, prepared).await;
    }
    let mut agent = Agent::start(env, dir, &prepared, 0).await?;
    r.status
        .extend(check_status(env, &agent, &t.status, &prepared, "").await);
    let mut case_results = run_cases(env, t, &t.cases, &prepared, "").await;
    agent.stop().await;
    if t.cases.is_empty() && t.steps.iter().all(|s| s.cases.is_empty()) {
        r.traffic = Traffic::NoCases;
    }
    for (i, step) in t.steps.iter().enumerate() {
        let applied = match (&step.delete, &step.patch, &step.create) {
            (Some(d), _, _) => manifests::delete(&mut source, d),
            (_, Some(p), _) => manifests::patch(&mut source, p),
            (_, _, Some(c)) => manifests::create(&mut source, c),
            _ => Ok(()),
        };
        let prefix = format!("step {}: ", i + 1);
        if let Err(e) = applied {
            r.status.extend(unchecked(
                &step.status,
                &prefix,
                &format!("cannot apply the step: {e:#}"),
            ));
            case_results.extend(step.cases.iter().map(|c| CaseResult {
                label: format!("{prefix}{}", label(c)),
                error: Some(format!("cannot apply the step: {e:#}")),
            }));
            continue;
        }
        let prepared =
            manifests::prepare_with(&source, env.opts.port_offset, &ports, &env.container_ports)?;
        match Agent::start(env, dir, &prepared, i + 1).await {
            Ok(mut a) => {
                r.status
                    .extend(check_status(env, &a, &step.status, &prepared, &prefix).await);
                case_results.extend(run_cases(env, t, &step.cases, &prepared, &prefix).await);
                a.stop().await;
            }
            Err(e) => {
                let why = format!("agent refused the config after the step: {e:#}");
                r.status.extend(unchecked(&step.status, &prefix, &why));
                case_results.extend(step.cases.iter().map(|c| CaseResult {
                    label: format!("{prefix}{}", label(c)),
                    error: Some(why.clone()),
                }))
            }
        }
    }
    if r.traffic != Traffic::NoCases {
        let passed = case_results.iter().filter(|c| c.error.is_none()).count();
        r.traffic = Traffic::Ran {
            passed,
            total: case_results.len(),
        };
    }
    r.cases = case_results;
    Ok(())
}

/// Status assertions that cannot be checked because the agent did not run.
pub(super) fn unchecked(status: &Value, prefix: &str, why: &str) -> Vec<StatusResult> {
    st::assertions(status)
        .into_iter()
        .map(|a| StatusResult {
            label: format!("{prefix}{}", a.label),
            verdict: match a.check {
                st::Check::Unsupported(u) => st::Verdict::Unsupported(u),
                _ => st::Verdict::Fail(why.to_owned()),
            },
        })
        .collect()
}

/// The agent's `/status`.
async fn fetch_status(clients: &Clients, admin: SocketAddr) -> Result<AgentStatus, String> {
    let req = Outgoing {
        dial: admin,
        method: "GET".into(),
        host: admin.to_string(),
        path: "/status".into(),
        headers: BTreeMap::new(),
        h2c: false,
        tls: None,
    };
    let o = clients.round_trip(&req).await?;
    if o.status != 200 {
        return Err(format!("GET /status answered {}", o.status));
    }
    serde_json::from_slice(&o.body).map_err(|e| format!("GET /status: invalid JSON: {e}"))
}

/// Polls the agent's `/status` until every assertion of `status` holds or
/// `--status-timeout` has passed (upstream polls too, bounded).
async fn check_status(
    env: &Env,
    agent: &Agent,
    status: &Value,
    prepared: &Prepared,
    prefix: &str,
) -> Vec<StatusResult> {
    let clients = Clients::new(Duration::from_secs(2));
    poll_status(env, status, prefix, None, || async {
        fetch_status(&clients, agent.admin)
            .await
            .map(|s| (s, prepared.docs.clone()))
    })
    .await
}

/// Polls `fetch` (a status snapshot and the objects it is judged against)
/// until every assertion of `status` holds or `--status-timeout` has passed.
/// `before_step`: the API server's objects before the step, when there is one.
pub(super) async fn poll_status<F, Fut>(
    env: &Env,
    status: &Value,
    prefix: &str,
    before_step: Option<&[Value]>,
    mut fetch: F,
) -> Vec<StatusResult>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(AgentStatus, Vec<Value>), String>>,
{
    let assertions = st::assertions(status);
    if assertions.is_empty() {
        return Vec::new();
    }
    let timeout = env.opts.status_timeout;
    let deadline = Instant::now() + timeout;
    let mut poll = Poll::new(assertions.len(), Duration::from_secs(1));
    let mut fetch_error: Option<String>;
    loop {
        match fetch().await {
            Ok((s, docs)) => {
                fetch_error = None;
                let objs = Objects {
                    docs: &docs,
                    before_step,
                };
                let now = Instant::now();
                for (i, a) in assertions.iter().enumerate() {
                    if poll.pending(i) {
                        poll.record(i, st::evaluate(&a.check, &s, &objs), now);
                    }
                }
            }
            Err(e) => fetch_error = Some(e),
        }
        if poll.done() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let verdicts = poll.finish(timeout);
    assertions
        .into_iter()
        .zip(verdicts)
        .map(|(a, v)| {
            let verdict = match (v, &fetch_error) {
                (st::Verdict::Fail(e), Some(f)) => st::Verdict::Fail(format!("{f}; {e}")),
                (v, _) => v,
            };
            if env.opts.verbose {
                eprintln!("    {prefix}status {}: {verdict:?}", a.label);
            }
            StatusResult {
                label: format!("{prefix}{}", a.label),
                verdict,
            }
        })
        .collect()
}

/// One agent process for one config.
pub(super) struct Agent {
    child: tokio::process::Child,
    admin: SocketAddr,
}

impl Agent {
    async fn start(env: &Env, dir: &Path, prepared: &Prepared, n: usize) -> Result<Self> {
        let config = dir.join(format!("config-{n}"));
        std::fs::create_dir_all(&config)?;
        std::fs::write(config.join("conformance.yaml"), prepared.to_yaml()?)?;
        // The Secrets and CA ConfigMaps the suite creates in code.
        let mut secrets = String::new();
        for d in env
            .certs
            .secret_docs()
            .into_iter()
            .chain(env.certs.config_map_docs())
        {
            secrets.push_str("---\n");
            secrets.push_str(&serde_yaml::to_string(&d)?);
        }
        std::fs::write(config.join("suite-secrets.yaml"), secrets)?;
        let mut cmd = tokio::process::Command::new(&env.opts.agent_bin);
        cmd.arg("--config-dir").arg(&config);
        Self::spawn(env, dir, n, cmd, &config).await
    }

    /// The agent reading the Kubernetes API of `kubeconfig` (its own
    /// status-writer Lease `lease`, so that it need not wait for the
    /// previous test's agent's Lease to expire).
    pub(super) async fn start_kube(
        env: &Env,
        dir: &Path,
        n: usize,
        kubeconfig: &Path,
        lease: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut cmd = tokio::process::Command::new(&env.opts.agent_bin);
        cmd.args([
            "--kubernetes",
            "--node-name",
            "conformance",
            "--lease-name",
            lease,
        ])
        .env("KUBECONFIG", kubeconfig);
        Self::spawn(env, dir, n, cmd, dir).await
    }

    async fn spawn(
        env: &Env,
        dir: &Path,
        n: usize,
        mut cmd: tokio::process::Command,
        config: &Path,
    ) -> Result<Self> {
        let admin = free_port()?;
        let log_path = dir.join(format!("agent-{n}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = cmd
            .args(["--datapath", "userspace", "--admin-addr"])
            .arg(admin.to_string())
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LOG", if env.opts.verbose { "debug" } else { "info" })
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", env.opts.agent_bin.display()))?;
        let mut agent = Agent { child, admin };
        let deadline = Instant::now() + env.opts.agent_start_timeout;
        let client = Clients::new(Duration::from_secs(1));
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                anyhow::bail!("{}", agent_error(&text, config, status));
            }
            let probe = Outgoing {
                dial: admin,
                method: "GET".into(),
                host: admin.to_string(),
                path: "/readyz".into(),
                headers: BTreeMap::new(),
                h2c: false,
                tls: None,
            };
            if matches!(client.round_trip(&probe).await, Ok(o) if o.status == 200) {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                agent.stop().await;
                anyhow::bail!(
                    "agent not ready after {:?} (log: {})",
                    env.opts.agent_start_timeout,
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM by pid, then SIGKILL after 5 s.
    pub(super) async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child process by its pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// The agent's own error message from its log, without backtraces and with
/// the temporary directory removed from file names.
fn agent_error(log: &str, config: &Path, status: std::process::ExitStatus) -> String {
    let start = log.find("Error: ").map(|i| i + "Error: ".len());
    let Some(start) = start else {
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        return format!(
            "agent exited with {status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    };
    let text = &log[start..];
    // anyhow's chain: "Caused by:\n    0: ...\n    1: ..."; the first cause is the most complete.
    let body = match text.find("Caused by:") {
        Some(i) => {
            let causes = &text[i + "Caused by:".len()..];
            let first = causes.split("\n    1: ").next().unwrap_or(causes);
            first.trim().trim_start_matches("0: ").to_owned()
        }
        None => text.trim().to_owned(),
    };
    let prefix = format!("{}/", config.display());
    body.replace(&prefix, "")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

pub(super) fn label(c: &Case) -> String {
    let l4 = match (&c.tcp, &c.tls_rejected) {
        (Some(t), _) => Some(format!(
            "{}{} -> {}{}",
            if t.tls { "TLS" } else { "TCP" },
            t.sni
                .as_deref()
                .map(|s| format!(" SNI {s}"))
                .unwrap_or_default(),
            c.backend.as_deref().unwrap_or("?"),
            if c.weights.is_empty() {
                ""
            } else {
                " (weights)"
            }
        )),
        (None, Some(r)) => Some(format!("TLS SNI {} rejected", r.sni)),
        _ => None,
    };
    if let Some(base) = l4 {
        return match &c.name {
            Some(n) => format!("{n} ({base})"),
            None => base,
        };
    }
    if let Some(g) = &c.grpc {
        let base = format!(
            "gRPC {}/{}{}",
            g.authority.as_deref().unwrap_or(""),
            g.method,
            if g.metadata.is_empty() {
                String::new()
            } else {
                format!(" {:?}", g.metadata)
            }
        );
        return match &c.name {
            Some(n) => format!("{n} ({base})"),
            None => base,
        };
    }
    let base = format!(
        "{} {}{}",
        c.request.method(),
        c.request.host.as_deref().unwrap_or(""),
        c.request.path
    );
    match &c.name {
        Some(n) => format!("{n} ({base})"),
        None => base,
    }
}

pub(super) async fn run_cases(
    env: &Env,
    t: &TestFile,
    cases: &[Case],
    prepared: &Prepared,
    prefix: &str,
) -> Vec<CaseResult> {
    let clients = Clients::new(env.opts.request_timeout).with_certs(env.certs.clone());
    if t.sequential() {
        let mut out = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            out.push(run_one(env, t, c, i, prepared, &clients, prefix).await);
        }
        out
    } else {
        futures_join_all(
            cases
                .iter()
                .enumerate()
                .map(|(i, c)| run_one(env, t, c, i, prepared, &clients, prefix)),
        )
        .await
    }
}

async fn run_one(
    env: &Env,
    t: &TestFile,
    c: &Case,
    i: usize,
    prepared: &Prepared,
    clients: &Clients,
    prefix: &str,
) -> CaseResult {
    let error = run_case(env, t, c, i, prepared, clients).await.err();
    if env.opts.verbose {
        eprintln!(
            "    {}{}: {}",
            prefix,
            label(c),
            error.as_deref().unwrap_or("ok")
        );
    }
    CaseResult {
        label: format!("{prefix}{}", label(c)),
        error,
    }
}

/// Runs futures concurrently on the current task, keeping their order.
pub(super) async fn futures_join_all<F: std::future::Future>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// The wire request of a case.
fn outgoing(env: &Env, t: &TestFile, c: &Case, prepared: &Prepared) -> Result<Outgoing, String> {
    let g = t.gateways.get(c.gateway).ok_or_else(|| {
        format!(
            "case refers to gateways[{}], which is not listed",
            c.gateway
        )
    })?;
    let info = prepared
        .gateways
        .get(&(g.namespace.clone(), g.name.clone()))
        .ok_or_else(|| format!("Gateway {}/{} is not in the manifests", g.namespace, g.name))?;
    let listener = match &g.listener {
        Some(n) => info.listeners.iter().find(|l| &l.name == n),
        None => info.listeners.first(),
    }
    .ok_or_else(|| format!("Gateway {}/{} has no such listener", g.namespace, g.name))?;
    let port = c.port.unwrap_or(listener.port);
    let scheme = c.request.scheme();
    let host = c.request.host.clone().unwrap_or_else(|| {
        if (port == 80 && scheme == "http") || (port == 443 && scheme == "https") {
            info.address.to_string()
        } else {
            format!("{}:{port}", info.address)
        }
    });
    let dial_port = port
        .checked_add(env.opts.port_offset)
        .ok_or_else(|| format!("port {port} + offset overflows"))?;
    let mut headers = c.request.headers.clone();
    let set: Vec<String> = c
        .backend_response_headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    headers.insert("X-Echo-Set-Header".into(), set.join(","));
    let tls = tls_request(&c.request, &host);
    Ok(Outgoing {
        tls,
        dial: SocketAddr::new(info.address, dial_port),
        method: c.request.method().to_owned(),
        host,
        path: c.request.path.clone(),
        headers,
        h2c: c.request.protocol.as_deref() == Some("H2C_PRIOR_KNOWLEDGE"),
    })
}

/// What the runner cannot do yet, if the case needs it.
fn unsupported(c: &Case) -> Option<String> {
    let percent = c.mirrored_to.iter().any(|m| m.percent.is_some());
    if c.check.is_some() && c.weights.is_empty() && !percent && c.backend_header.is_none() {
        return Some("this statistical check is not supported by the runner yet".into());
    }
    None
}

async fn run_case(
    env: &Env,
    t: &TestFile,
    c: &Case,
    index: usize,
    prepared: &Prepared,
    clients: &Clients,
) -> Result<(), String> {
    if c.tcp.is_some() || c.tls_rejected.is_some() {
        let out = outgoing(env, t, c, prepared)?;
        let target = l4::Target {
            dial: out.dial,
            certs: &env.certs,
            request_timeout: env.opts.request_timeout,
            max_time: env.opts.max_time_to_consistency,
        };
        return match (&c.tcp, &c.tls_rejected) {
            (Some(tcp), _) => l4::run_case(c, tcp, &target).await,
            (None, Some(r)) => l4::run_rejection(r, &target).await,
            _ => unreachable!("checked above"),
        };
    }
    if let Some(why) = unsupported(c) {
        return Err(why);
    }
    if let Some(g) = &c.grpc {
        let out = outgoing(env, t, c, prepared)?;
        // Upstream's client dials the Gateway address `ip:port` and uses it
        // as the authority when the case names none (port included, also 80).
        let listener_port = out.dial.port().saturating_sub(env.opts.port_offset);
        let host = format!("{}:{listener_port}", out.dial.ip());
        return super::grpc::run_case(
            c,
            g,
            out.dial,
            &host,
            env.opts.request_timeout,
            env.opts.max_time_to_consistency,
            CONSECUTIVE_SUCCESSES,
        )
        .await;
    }
    if let Some(ws) = &c.websocket {
        let out = outgoing(env, t, c, prepared)?;
        return websocket::converge(ws, &out, env.opts.max_time_to_consistency).await;
    }
    let mut c = c.clone();
    if let Some(e) = c.expected_request.as_mut() {
        if let Some(r) = &e.client_cert_secret {
            e.client_cert_pem = Some(env.certs.secret_ref(r)?.cert_pem.clone());
        }
    }
    // Plain mirrors are found by a request id of their own; percentage
    // mirrors get a fresh id per statistics round.
    let plain_mirrors = c.mirrored_to.iter().any(|m| m.percent.is_none());
    let mirror_id = plain_mirrors.then(|| {
        format!(
            "gateway-api-conformance-request-id={}-{}-{index}",
            std::process::id(),
            t.id
        )
    });
    if let Some(id) = &mirror_id {
        let sep = |p: &str| if p.contains('?') { '&' } else { '?' };
        c.request.path = format!("{}{}{id}", c.request.path, sep(&c.request.path));
        if let Some(e) = c.expected_request.as_mut() {
            if let Some(p) = e.path.as_mut() {
                *p = format!("{p}{}{id}", sep(p));
            }
        }
    }
    let out = outgoing(env, t, &c, prepared)?;
    if c.expect_error
        .as_ref()
        .is_some_and(|v| v.as_bool() != Some(false))
    {
        // One shot: the round trip must fail at transport/TLS level.
        return match clients.round_trip(&out).await {
            Ok(o) => Err(format!(
                "expected a transport/TLS failure, got HTTP {}",
                o.status
            )),
            Err(e) if e.contains(NO_CLIENT_CERT_REQUEST) => Err(e),
            Err(_) => Ok(()),
        };
    }
    let max = env.opts.max_time_to_consistency;
    converge(&c, &out, clients, max, CONSECUTIVE_SUCCESSES).await?;
    if mirror_id.is_some() {
        check_mirrors(env, &c).await?;
    }
    let mut targets = Vec::new();
    for m in &c.mirrored_to {
        if let Some(percent) = m.percent {
            let b = env
                .backends
                .get(&(m.namespace.clone(), m.backend.clone()))
                .ok_or_else(|| {
                    format!(
                        "mirror backend {}/{} is not a Service",
                        m.namespace, m.backend
                    )
                })?;
            targets.push(stats::MirrorTarget {
                label: format!("{}/{}", m.namespace, m.backend),
                log: &b.log,
                percent,
            });
        }
    }
    if !targets.is_empty() {
        let round_id = |r: usize| format!("{}-{}-{index}-round{r}", std::process::id(), t.id);
        stats::check_percentage_mirrors(&c, &out, clients, &targets, round_id, max).await?;
    }
    if !c.weights.is_empty() {
        stats::check_weights(&c, &out, clients).await?;
    }
    if let Some(b) = &c.backend_header {
        stats::check_backend_header(b, &out, clients).await?;
    }
    Ok(())
}

/// Upstream `MakeRequestAndExpectEventuallyConsistentResponse`: `required`
/// passing round trips in a row within `max`.
pub(super) async fn converge(
    c: &Case,
    out: &Outgoing,
    clients: &Clients,
    max: Duration,
    required: usize,
) -> Result<(), String> {
    let deadline = Instant::now() + max;
    let mut ok = 0;
    static UUIDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        // `{uuid}` in a path (retry cases): a fresh value for every attempt.
        let (c, out) = if c.request.path.contains("{uuid}") {
            let n = UUIDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let uuid = format!("{:08x}-{n:08x}-conformance", std::process::id());
            let mut c = c.clone();
            let mut out = out.clone();
            c.request.path = c.request.path.replace("{uuid}", &uuid);
            if let Some(p) = c.expected_request.as_mut().and_then(|e| e.path.as_mut()) {
                *p = p.replace("{uuid}", &uuid);
            }
            out.path = out.path.replace("{uuid}", &uuid);
            (std::borrow::Cow::Owned(c), std::borrow::Cow::Owned(out))
        } else {
            (
                std::borrow::Cow::Borrowed(c),
                std::borrow::Cow::Borrowed(out),
            )
        };
        let result = match clients.round_trip(&out).await {
            Ok(o) => compare(&c, &BTreeMap::new(), &o).map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                ok += 1;
                if ok >= required {
                    return Ok(());
                }
            }
            Err(e) => {
                ok = 0;
                if Instant::now() >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn check_mirrors(env: &Env, c: &Case) -> Result<(), String> {
    let deadline = Instant::now() + env.opts.request_timeout;
    for m in &c.mirrored_to {
        let b = env
            .backends
            .get(&(m.namespace.clone(), m.backend.clone()))
            .ok_or_else(|| {
                format!(
                    "mirror backend {}/{} is not a Service",
                    m.namespace, m.backend
                )
            })?;
        loop {
            if b.log.entries().contains(&c.request.path) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "mirror backend {}/{} never received {}",
                    m.namespace, m.backend, c.request.path
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
