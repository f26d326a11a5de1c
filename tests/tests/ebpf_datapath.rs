//! End-to-end through the real eBPF programs, in network namespaces this test
//! creates: client ──veth──▶ node (XDP → sk_lookup → sluice → echo backend).
//! Needs root; with CI=true a missing privilege fails instead of skipping.
use std::{path::PathBuf, process::Command, time::Duration};

use sluice_tests::{
    netns::{curl_in, privileged, url, BpfFs, TestCgroups, Topology},
    process::{metric, sluice_bin, ChildGuard},
};

const GATEWAY_PORT: u16 = 8080;
const BACKEND_PORT: u16 = 9080;

fn config(annotations: &[(&str, &str)]) -> String {
    let annotation = if annotations.is_empty() {
        String::new()
    } else {
        let items: String = annotations
            .iter()
            .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
            .collect();
        format!("  annotations:\n{items}")
    };
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: team-a
{annotation}spec:
  gatewayClassName: sluice
  addresses: [{{value: "{v4}"}}, {{value: "{v6}"}}]
  listeners:
  - {{name: http, port: {GATEWAY_PORT}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: echo, namespace: team-a}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [echo.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: echo, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: team-a}}
spec: {{ports: [{{port: 80, targetPort: {BACKEND_PORT}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: team-a, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"]}}]
ports: [{{port: {BACKEND_PORT}}}]
"#,
        v4 = Topology::NODE_V4,
        v6 = Topology::NODE_V6,
    )
}

/// A topology with the echo backend and the agent running in the node netns.
struct Scenario {
    topo: Topology,
    agent: Option<ChildGuard>,
    _echo: ChildGuard,
    dir: PathBuf,
}

impl Scenario {
    fn start(test: &str, annotations: &[(&str, &str)], datapath: &str) -> Self {
        Self::start_with(test, annotations, datapath, |_| Vec::new())
    }

    /// Like [`start`](Self::start), with extra agent arguments computed from the
    /// scenario directory (for files the agent reads).
    fn start_with(
        test: &str,
        annotations: &[(&str, &str)],
        datapath: &str,
        extra: impl FnOnce(&std::path::Path) -> Vec<String>,
    ) -> Self {
        let topo = Topology::new();
        let dir = std::env::temp_dir().join(format!("sluice-e2e-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::write(dir.join("config/gateway.yaml"), config(annotations)).unwrap();

        let mut echo = topo.node.command(env!("CARGO_BIN_EXE_sluice-echo"));
        echo.args([
            "--listen",
            &format!("127.0.0.1:{BACKEND_PORT}"),
            "--pod",
            "echo-v1-abc-123",
            "--namespace",
            "team-a",
        ]);
        let mut echo = ChildGuard::spawn("echo", echo, &dir.join("echo.log")).unwrap();
        assert!(
            echo.wait_for_log(Duration::from_secs(10), |l| l.contains("listening")),
            "echo did not start: {}",
            echo.log()
        );

        let mut scenario = Self {
            topo,
            agent: None,
            _echo: echo,
            dir,
        };
        let extra = extra(&scenario.dir);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let agent = scenario.spawn_agent("agent", datapath, 9901, &extra);
        scenario.agent = Some(agent);
        scenario
    }

    /// Starts an agent in the node namespace and waits until it is ready.
    fn spawn_agent(
        &self,
        name: &str,
        datapath: &str,
        admin_port: u16,
        extra: &[&str],
    ) -> ChildGuard {
        let mut agent = self.topo.node.command(sluice_bin().to_str().unwrap());
        agent
            .args(["--config-dir", self.dir.join("config").to_str().unwrap()])
            .args(["--datapath", datapath, "--interface", &self.topo.node_if])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--ebpf-log-level", "debug"])
            .args(extra)
            .env("RUST_LOG", "info,sluice=debug");
        let mut agent =
            ChildGuard::spawn(name, agent, &self.dir.join(format!("{name}.log"))).unwrap();
        assert!(
            agent.wait_for_log(Duration::from_secs(20), |l| l.contains("sluice ready")),
            "{name} did not become ready:\n{}",
            agent.log()
        );
        agent
    }

    fn agent_log(&self) -> String {
        self.agent.as_ref().map(ChildGuard::log).unwrap_or_default()
    }

    fn admin(&self, path: &str) -> String {
        self.admin_on(9901, path)
    }

    fn admin_on(&self, port: u16, path: &str) -> String {
        let r = curl_in(
            &self.topo.node,
            &format!("http://127.0.0.1:{port}{path}"),
            None,
            None,
            Duration::from_secs(5),
        );
        assert_eq!(r.status, Some(200), "admin {path}: {r:?}");
        r.body
    }

    fn get(&self, addr: &str, port: u16, source: Option<&str>) -> sluice_tests::netns::Curl {
        self.topo.curl(
            &url(addr, port, "/hello?x=1"),
            Some("echo.example.com"),
            source,
            Duration::from_secs(3),
        )
    }

    /// Listening TCP sockets on `port` in the node namespace.
    fn listeners_on(&self, port: u16) -> String {
        let out = self
            .topo
            .node
            .command("ss")
            .args(["-Htln", &format!("sport = :{port}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stop_agent(&mut self) {
        let status = self.agent.as_mut().unwrap().stop(Duration::from_secs(15));
        assert!(
            status.is_some_and(|s| s.success()),
            "agent exit: {status:?}\n{}",
            self.agent_log()
        );
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.agent_log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn xdp_attached(topo: &Topology) -> bool {
    let out = topo.node.ip(&["link", "show", "dev", &topo.node_if]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// Every family the eBPF collector declares (the list the dashboard test
/// relies on for eBPF-only metrics) is exposed, with exactly its labels.
fn ebpf_families_are_exposed(metrics: &str) {
    use sluice::metrics::KERNEL_FAMILIES;
    for family in KERNEL_FAMILIES {
        let (name, kind) = (family.sample_name(), family.type_name());
        assert!(
            metrics.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) not exposed by the eBPF agent:\n{metrics}"
        );
        let want: Vec<&str> = family.labels.to_vec();
        for sample in sluice::admin::exposition::samples(metrics)
            .into_iter()
            .filter(|s| s.name == name)
        {
            let labels: Vec<&str> = sample.labels.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(labels, want, "labels of {name}");
        }
    }
}

/// sk_lookup links attached to the node namespace, from bpftool.
fn sk_lookup_links(topo: &Topology) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("bpftool runs");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let ino = topo.node.inode();
    links
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|l| l["type"] == "netns" && l["netns_ino"].as_u64() == Some(ino))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn ipv4_request_is_steered_by_sk_lookup_to_the_shard_socket() {
    if !privileged("ipv4_request_is_steered_by_sk_lookup_to_the_shard_socket") {
        return;
    }
    let mut s = Scenario::start("v4", &[], "ebpf");
    let r = s.get(Topology::NODE_V4, GATEWAY_PORT, None);
    assert_eq!(r.status, Some(200), "{r:?}\n{}", s.agent_log());
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["path"], "/hello?x=1");
    assert!(echo["pod"].as_str().unwrap().starts_with("echo-v1"));
    assert_eq!(echo["host"], "echo.example.com");
    assert_eq!(echo["headers"]["X-Forwarded-For"][0], Topology::CLIENT_V4);

    // Nobody listens on the port the client dialled: sk_lookup did the steering.
    assert_eq!(
        s.listeners_on(GATEWAY_PORT),
        "",
        "agent must not bind the gateway port in eBPF mode"
    );
    let config: serde_json::Value = serde_json::from_str(&s.admin("/config")).unwrap();
    assert_eq!(config["datapath"], "ebpf");
    let sockets = config["shards"][0]["sockets"].as_array().unwrap();
    assert!(!sockets.is_empty());
    for sock in sockets {
        let port: u16 = sock
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(
            port, GATEWAY_PORT,
            "shard socket {sock} must be on another port"
        );
    }

    // A port that is no gateway listener is not answered.
    let r = s.get(Topology::NODE_V4, 9999, None);
    assert_eq!(r.exit, 7, "expected connection refused: {r:?}");

    let metrics = s.admin("/metrics");
    let allowed = metric(
        &metrics,
        "sluice_xdp_packets_total",
        &["team-a/edge", "pass_allowed"],
    );
    assert!(allowed.unwrap_or(0.0) > 0.0, "{metrics}");
    let requests = metric(
        &metrics,
        "sluice_http_requests_total",
        &["team-a/edge", "2xx"],
    );
    assert_eq!(requests, Some(1.0), "{metrics}");
    assert!(
        metrics.contains("sluice_datapath_mode{mode=\"ebpf\"} 1"),
        "{metrics}"
    );
    ebpf_families_are_exposed(&metrics);
    // The status page's data has the eBPF part: XDP per interface and map
    // occupancy against capacity.
    let overview: serde_json::Value = serde_json::from_str(&s.admin("/api/overview")).unwrap();
    assert_eq!(overview["datapath"]["mode"], "ebpf");
    assert_eq!(
        overview["datapath"]["xdp"][0]["interface"],
        s.topo.node_if.as_str()
    );
    let maps = overview["ebpf"]["maps"].as_array().unwrap();
    let listeners = maps.iter().find(|m| m["name"] == "LISTENERS").unwrap();
    assert!(listeners["entries"].as_u64().unwrap() >= 2, "{listeners}");
    assert!(listeners["limit"].as_u64().unwrap() > 0, "{listeners}");
    assert!(
        overview["shards"][0]["packets"]["pass_allowed"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(xdp_attached(&s.topo));
    assert_eq!(sk_lookup_links(&s.topo), 1);

    // Stopping the agent detaches everything it attached.
    s.stop_agent();
    assert!(
        !xdp_attached(&s.topo),
        "XDP program left on {}",
        s.topo.node_if
    );
    assert_eq!(
        sk_lookup_links(&s.topo),
        0,
        "sk_lookup link left in the namespace"
    );
}

#[test]
fn ipv6_request_is_served_the_same_way() {
    if !privileged("ipv6_request_is_served_the_same_way") {
        return;
    }
    let s = Scenario::start("v6", &[], "ebpf");
    let r = s.get(Topology::NODE_V6, GATEWAY_PORT, Some(Topology::CLIENT_V6));
    assert_eq!(r.status, Some(200), "{r:?}\n{}", s.agent_log());
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["headers"]["X-Forwarded-For"][0], Topology::CLIENT_V6);
    assert_eq!(s.listeners_on(GATEWAY_PORT), "");
    let r = s.get(Topology::NODE_V6, 9999, None);
    assert_eq!(r.exit, 7, "expected connection refused: {r:?}");
}

#[test]
fn source_outside_the_allowed_cidrs_is_dropped_by_xdp() {
    if !privileged("source_outside_the_allowed_cidrs_is_dropped_by_xdp") {
        return;
    }
    let ranges = format!("{}/32, {}/128", Topology::CLIENT_V4, Topology::CLIENT_V6);
    let s = Scenario::start("cidr", &[("sluice.dev/source-ranges", &ranges)], "ebpf");
    for (allowed, denied, node) in [
        (
            Topology::CLIENT_V4,
            Topology::CLIENT_V4_ALT,
            Topology::NODE_V4,
        ),
        (
            Topology::CLIENT_V6,
            Topology::CLIENT_V6_ALT,
            Topology::NODE_V6,
        ),
    ] {
        let r = s.get(node, GATEWAY_PORT, Some(allowed));
        assert_eq!(r.status, Some(200), "allowed source {allowed}: {r:?}");
        let before = metric(
            &s.admin("/metrics"),
            "sluice_xdp_packets_total",
            &["team-a/edge", "drop_source_denied"],
        )
        .unwrap_or(0.0);
        let r = s.topo.curl(
            &url(node, GATEWAY_PORT, "/"),
            Some("echo.example.com"),
            Some(denied),
            Duration::from_secs(1),
        );
        assert_eq!(
            r.exit, 28,
            "denied source {denied} must time out (SYN dropped): {r:?}"
        );
        let after = metric(
            &s.admin("/metrics"),
            "sluice_xdp_packets_total",
            &["team-a/edge", "drop_source_denied"],
        )
        .unwrap_or(0.0);
        assert!(
            after > before,
            "drop counter did not rise for {denied}: {before} -> {after}"
        );
    }
    // aya-log output of xdp_ingress reaches the agent's log.
    let mut agent_log = String::new();
    for _ in 0..40 {
        agent_log = s.agent_log();
        if agent_log.contains("drop source-denied") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        agent_log.contains("drop source-denied"),
        "no eBPF log line in agent log:\n{agent_log}"
    );
}

#[test]
fn a_whole_gateway_ip_deny_policy_is_dropped_by_xdp_and_a_route_one_answers_403() {
    if !privileged("a_whole_gateway_ip_deny_policy_is_dropped_by_xdp_and_a_route_one_answers_403") {
        return;
    }
    let policies = format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: edge-deny, namespace: team-a}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge}}]
  ipDeny: ["{v4_alt}/32", "{v6_alt}/128"]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: echo-deny, namespace: team-a}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo}}]
  ipDeny: ["{v6}/128"]
"#,
        v4_alt = Topology::CLIENT_V4_ALT,
        v6_alt = Topology::CLIENT_V6_ALT,
        v6 = Topology::CLIENT_V6,
    );
    let s = Scenario::start_with("policy-ip", &[], "ebpf", |dir| {
        std::fs::write(dir.join("config/policy.yaml"), &policies).unwrap();
        Vec::new()
    });
    let dropped = || {
        metric(
            &s.admin("/metrics"),
            "sluice_xdp_packets_total",
            &["team-a/edge", "drop_source_denied"],
        )
        .unwrap_or(0.0)
    };
    // The Gateway-level deny is in the XDP source maps: the SYN never gets in.
    for (denied, node) in [
        (Topology::CLIENT_V4_ALT, Topology::NODE_V4),
        (Topology::CLIENT_V6_ALT, Topology::NODE_V6),
    ] {
        let before = dropped();
        let r = s.topo.curl(
            &url(node, GATEWAY_PORT, "/"),
            Some("echo.example.com"),
            Some(denied),
            Duration::from_secs(1),
        );
        assert_eq!(r.exit, 28, "{denied} must be dropped by XDP: {r:?}");
        assert!(
            dropped() > before,
            "XDP drop counter did not rise for {denied}"
        );
    }
    // Others pass XDP; the route-level deny answers at L7.
    let r = s.get(Topology::NODE_V4, GATEWAY_PORT, Some(Topology::CLIENT_V4));
    assert_eq!(r.status, Some(200), "{r:?}");
    let r = s.get(Topology::NODE_V6, GATEWAY_PORT, Some(Topology::CLIENT_V6));
    assert_eq!(r.status, Some(403), "route-level ipDeny answers 403: {r:?}");
    let metrics = s.admin("/metrics");
    assert!(
        metric(
            &metrics,
            "sluice_policy_decisions_total",
            &["team-a", "echo-deny", "ipDeny", "deny", "source_denied"],
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
}

#[test]
fn userspace_datapath_binds_the_gateway_port_and_serves() {
    if !privileged("userspace_datapath_binds_the_gateway_port_and_serves") {
        return;
    }
    let s = Scenario::start("user", &[], "userspace");
    let r = s.get(Topology::NODE_V4, GATEWAY_PORT, None);
    assert_eq!(r.status, Some(200), "{r:?}\n{}", s.agent_log());
    assert!(s
        .listeners_on(GATEWAY_PORT)
        .contains(&format!("{}:{GATEWAY_PORT}", Topology::NODE_V4)));
    assert!(!xdp_attached(&s.topo));
    let metrics = s.admin("/metrics");
    assert!(
        metrics.contains("sluice_datapath_mode{mode=\"userspace\"} 1"),
        "{metrics}"
    );
}

#[test]
fn syn_budget_drops_new_connections_over_the_per_source_rate() {
    if !privileged("syn_budget_drops_new_connections_over_the_per_source_rate") {
        return;
    }
    // One new connection per second per source, no burst beyond that.
    let s = Scenario::start(
        "syn",
        &[("sluice.dev/syn-rate", "1"), ("sluice.dev/syn-burst", "1")],
        "ebpf",
    );
    let attempt = |source: &str| {
        s.topo.curl(
            &url(Topology::NODE_V4, GATEWAY_PORT, "/"),
            Some("echo.example.com"),
            Some(source),
            Duration::from_millis(400),
        )
    };
    // The first SYN of a source takes its only token; an immediate second one
    // finds the bucket empty and is dropped (curl times out, no RST).
    let first = attempt(Topology::CLIENT_V4);
    assert_eq!(first.status, Some(200), "{first:?}\n{}", s.agent_log());
    // (Three tries, so a slow machine that takes a whole second per curl
    // still shows the drop: a dropped try takes 0.4 s, well under the refill.)
    let tries: Vec<_> = (0..3).map(|_| attempt(Topology::CLIENT_V4)).collect();
    assert!(
        tries.iter().any(|t| t.exit == 28 && t.status.is_none()),
        "a SYN right after the budget was spent must be dropped: {tries:?}"
    );
    // Budgets are per source: another address is not affected.
    let other = attempt(Topology::CLIENT_V4_ALT);
    assert_eq!(other.status, Some(200), "{other:?}");
    let metrics = s.admin("/metrics");
    let dropped = metric(
        &metrics,
        "sluice_xdp_packets_total",
        &["team-a/edge", "drop_syn_budget"],
    );
    assert!(dropped.unwrap_or(0.0) >= 1.0, "{metrics}");
}

#[test]
fn restart_under_load_hands_over_without_failed_requests() {
    if !privileged("restart_under_load_hands_over_without_failed_requests") {
        return;
    }
    let bpffs = BpfFs::mount("restart");
    let pin_arg = ["--bpffs", bpffs.path.to_str().unwrap()];
    let mut s = Scenario::start("restart", &[], "ebpf");
    // The scenario's default agent pins into its own private mount namespace;
    // run the pair under test on the shared private bpffs instead.
    s.stop_agent();
    let mut old = s.spawn_agent("old", "ebpf", 9901, &pin_arg);
    assert!(
        bpffs.pins().contains(&"SHARD_SOCKETS".to_owned()),
        "{:?}",
        bpffs.pins()
    );

    // Bounded load: two clients, fresh connection per request, until told to
    // stop (at most 2,000 requests or 60 s each).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let client = s.topo.client.name.clone();
            std::thread::spawn(move || {
                let ns = sluice_tests::netns::Netns::existing(&client);
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                let (mut ok, mut failed) = (0u32, Vec::new());
                for _ in 0..2000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || std::time::Instant::now() > deadline
                    {
                        break;
                    }
                    let r = curl_in(
                        &ns,
                        &url(Topology::NODE_V4, GATEWAY_PORT, "/load"),
                        Some("echo.example.com"),
                        None,
                        Duration::from_secs(5),
                    );
                    if r.status == Some(200) {
                        ok += 1
                    } else {
                        failed.push(r)
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    let mut new = s.spawn_agent("new", "ebpf", 9902, &pin_arg);
    assert!(
        new.log().contains("mode=\"adopted\""),
        "new agent must take over the pinned XDP link:\n{}",
        new.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let status = old.stop(Duration::from_secs(20));
    assert!(
        status.is_some_and(|st| st.success()),
        "old agent: {status:?}\n{}",
        old.log()
    );
    assert!(
        old.log().contains("another agent owns the eBPF datapath"),
        "{}",
        old.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let (mut ok, mut failed) = (0, Vec::new());
    for t in load {
        let (o, f) = t.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the restart: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        ok >= 20,
        "load loop too short to prove anything: {ok} requests"
    );
    eprintln!("restart under load: {ok} requests, 0 failed");

    // The successor serves, the datapath stayed attached through the hand-over.
    let served = metric(
        &s.admin_on(9902, "/metrics"),
        "sluice_http_requests_total",
        &["team-a/edge", "2xx"],
    );
    assert!(served.unwrap_or(0.0) > 0.0, "new agent served nothing");
    assert!(xdp_attached(&s.topo));
    assert_eq!(
        sk_lookup_links(&s.topo),
        1,
        "only the new agent's sk_lookup link remains"
    );

    // The last agent out cleans up: no XDP, no sk_lookup link, no pins.
    let status = new.stop(Duration::from_secs(20));
    assert!(
        status.is_some_and(|st| st.success()),
        "new agent: {status:?}\n{}",
        new.log()
    );
    assert!(
        !xdp_attached(&s.topo),
        "XDP left after the last agent stopped"
    );
    assert_eq!(sk_lookup_links(&s.topo), 0);
    assert_eq!(bpffs.pins(), Vec::<String>::new(), "pins left behind");
}

#[test]
fn namespaces_not_admitted_are_refused_at_sk_lookup_and_at_connect() {
    if !privileged("namespaces_not_admitted_are_refused_at_sk_lookup_and_at_connect") {
        return;
    }
    let cgroups = TestCgroups::new(&["team-a", "team-b"]);
    let parent = cgroups.parent.clone();
    let s = Scenario::start_with(
        "isolation",
        &[("sluice.dev/admitted-namespaces", "team-a")],
        "ebpf",
        |dir| {
            let cfg = dir.join("agent.yaml");
            std::fs::write(
                &cfg,
                format!(
                    "namespaces:\n  team-a:\n    cidrs: [{a}/32]\n    cgroups: [{pa}]\n  team-b:\n    cidrs: [{b}/32]\n    cgroups: [{pb}]\n",
                    a = Topology::CLIENT_V4,
                    b = Topology::CLIENT_V4_ALT,
                    pa = parent.join("team-a").display(),
                    pb = parent.join("team-b").display(),
                ),
            )
            .unwrap();
            vec![
                "--agent-config".into(),
                cfg.display().to_string(),
                "--cgroup".into(),
                parent.display().to_string(),
            ]
        },
    );
    assert!(
        s.agent_log().contains("connect4/connect6 attached"),
        "{}",
        s.agent_log()
    );

    // Remote clients: sk_lookup maps the source address to its namespace.
    let a = s.get(Topology::NODE_V4, GATEWAY_PORT, Some(Topology::CLIENT_V4));
    assert_eq!(
        a.status,
        Some(200),
        "team-a source: {a:?}\n{}",
        s.agent_log()
    );
    let b = s.get(
        Topology::NODE_V4,
        GATEWAY_PORT,
        Some(Topology::CLIENT_V4_ALT),
    );
    assert!(
        b.status.is_none() && (b.exit == 7 || b.exit == 28),
        "team-b source must be refused: {b:?}"
    );

    // Local processes: the cgroup connect hook knows their namespace.
    let local = |ns: &str| {
        let url = url(Topology::NODE_V4, GATEWAY_PORT, "/local");
        let out = cgroups
            .run_in(
                ns,
                &[
                    "ip",
                    "netns",
                    "exec",
                    &s.topo.node.name,
                    "curl",
                    "-sS",
                    "--max-time",
                    "3",
                    "-H",
                    "Host: echo.example.com",
                    "-w",
                    "\n%{http_code}",
                    &url,
                ],
            )
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = local("team-a");
    assert_eq!(
        code,
        Some(0),
        "team-a process: {out} {err}\n{}",
        s.agent_log()
    );
    assert!(out.ends_with("200"), "{out}");
    let (code, out, err) = local("team-b");
    assert_eq!(
        code,
        Some(7),
        "team-b process must fail to connect: {out} {err}"
    );
    // curl reports EPERM as a plain connect failure; the deny_namespace_connect
    // counter below proves it was the connect hook that refused.
    let _ = err;

    let metrics = s.admin("/metrics");
    for reason in ["deny_namespace_lookup", "deny_namespace_connect"] {
        let n = metric(
            &metrics,
            "sluice_xdp_packets_total",
            &["team-a/edge", reason],
        );
        assert!(n.unwrap_or(0.0) >= 1.0, "{reason} counter: {metrics}");
    }
}

#[test]
fn a_full_map_stops_the_agent_with_a_clear_error() {
    if !privileged("a_full_map_stops_the_agent_with_a_clear_error") {
        return;
    }
    let topo = Topology::new();
    let dir = std::env::temp_dir().join(format!("sluice-e2e-mapfull-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Two listener keys (an IPv4 and an IPv6 address) into a map of one.
    std::fs::write(dir.join("gateway.yaml"), config(&[])).unwrap();
    let mut cmd = topo.node.command(sluice_bin().to_str().unwrap());
    cmd.arg("--config-dir")
        .arg(&dir)
        .args(["--datapath", "ebpf", "--interface", &topo.node_if])
        .args([
            "--admin-addr",
            "127.0.0.1:9901",
            "--map-size",
            "LISTENERS=1",
        ]);
    let mut agent = ChildGuard::spawn("sluice", cmd, &dir.join("agent.log")).unwrap();
    let status = agent.stop_when_exited(Duration::from_secs(20));
    let log = agent.log();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.is_some_and(|s| !s.success()),
        "agent must refuse to start: {status:?}\n{log}"
    );
    assert!(
        log.contains("eBPF map LISTENERS is full") && log.contains("--map-size LISTENERS=N"),
        "{log}"
    );
    assert!(
        !xdp_attached(&topo),
        "a failed start must not leave XDP attached"
    );
}

#[test]
fn a_source_refused_too_often_is_dropped_by_xdp_listed_removed_and_expires() {
    if !privileged("a_source_refused_too_often_is_dropped_by_xdp_listed_removed_and_expires") {
        return;
    }
    // One request per hour per source address; two refusals put the source
    // into the penalty box for 4 s.
    let policy = r#"apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: per-source, namespace: team-a}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  rateLimit:
    local:
    - name: per-source
      requests: 1
      unit: Hour
      key: {sourceAddress: {}}
      penalty: {after: 2, within: 1m, block: 4s}
"#;
    let s = Scenario::start_with("penalty", &[], "ebpf", |dir| {
        std::fs::write(dir.join("config/policy.yaml"), policy).unwrap();
        Vec::new()
    });
    let dropped = || {
        metric(
            &s.admin("/metrics"),
            "sluice_xdp_packets_total",
            &["team-a/edge", "reason=\"penalty\""],
        )
        .unwrap_or(0.0)
    };
    let attempt = |source: &str| {
        s.topo.curl(
            &url(Topology::NODE_V4, GATEWAY_PORT, "/"),
            Some("echo.example.com"),
            Some(source),
            Duration::from_secs(1),
        )
    };
    // Abusive source: served once, refused twice, then boxed.
    let abuser = Topology::CLIENT_V4;
    let box_it = || {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let r = attempt(abuser);
            if r.status.is_none() {
                return statuses;
            }
            statuses.push(r.status);
        }
        panic!(
            "{abuser} was never dropped: {statuses:?}\n{}",
            s.agent_log()
        );
    };
    assert_eq!(
        box_it(),
        [Some(200), Some(429), Some(429)],
        "{}",
        s.agent_log()
    );
    let before = dropped();
    let r = attempt(abuser);
    assert_eq!(r.exit, 28, "the SYN must be dropped by XDP: {r:?}");
    assert!(
        dropped() > before,
        "XDP penalty counter did not rise:\n{}",
        s.admin("/metrics")
    );
    // A well-behaved source is served.
    let r = attempt(Topology::CLIENT_V4_ALT);
    assert_eq!(r.status, Some(200), "{r:?}");
    // Listed at the admin endpoint with its Gateway and rule.
    let listed = s.admin("/ratelimit");
    assert!(
        listed.contains(&format!("\"{abuser}/32\"")) && listed.contains("team-a/edge"),
        "{listed}"
    );
    // Expires by itself (the kernel entry's expiry against the clock).
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = attempt(abuser);
        if r.status.is_some() {
            assert_eq!(r.status, Some(429), "still over its limit: {r:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the 4 s penalty never expired"
        );
    }
    // Boxed again, then taken out by an admin call: served (429) at once.
    let statuses = box_it();
    assert!(statuses.iter().all(|s| *s == Some(429)), "{statuses:?}");
    let out = s
        .topo
        .node
        .command("curl")
        .args(["-sS", "-X", "DELETE", "-w", "\n%{http_code}"])
        .arg(format!(
            "http://127.0.0.1:9901/ratelimit/penalties?prefix={abuser}/32"
        ))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.ends_with("\n200"), "DELETE: {out}");
    let r = attempt(abuser);
    assert_eq!(r.status, Some(429), "removed from the box: {r:?}");
    assert!(!s.admin("/ratelimit").contains(&format!("\"{abuser}/32\"")));
}

/// A second Gateway with a TCP listener (TCPRoute to the echo backend) and a
/// TLS Passthrough listener (no route for plain HTTP), for the L4 test.
fn l4_config() -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: l4, namespace: team-a}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: "{v4}"}}]
  listeners:
  - {{name: tcp, port: {TCP_PORT}, protocol: TCP}}
  - {{name: tls, port: {TLS_PORT}, protocol: TLS, tls: {{mode: Passthrough}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {{name: echo-tcp, namespace: team-a}}
spec:
  parentRefs: [{{name: l4, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
"#,
        v4 = Topology::NODE_V4,
    )
}

const TCP_PORT: u16 = 5432;
const TLS_PORT: u16 = 8443;

#[test]
fn tcp_and_tls_listeners_are_steered_by_sk_lookup_like_http_ones() {
    if !privileged("tcp_and_tls_listeners_are_steered_by_sk_lookup_like_http_ones") {
        return;
    }
    let s = Scenario::start_with("l4", &[], "ebpf", |dir| {
        std::fs::write(dir.join("config/l4.yaml"), l4_config()).unwrap();
        Vec::new()
    });
    // HTTP is bytes to a TCP listener: relayed to the echo backend as sent.
    let r = s.get(Topology::NODE_V4, TCP_PORT, None);
    assert_eq!(r.status, Some(200), "{r:?}\n{}", s.agent_log());
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["path"], "/hello?x=1");
    // Relayed, not proxied: no X-Forwarded-For added.
    assert!(echo["headers"].get("X-Forwarded-For").is_none(), "{echo}");
    // Plain HTTP to the TLS Passthrough listener reaches the shard (it is
    // accepted, not refused) and is closed without an answer.
    let r = s.get(Topology::NODE_V4, TLS_PORT, None);
    // (Empty reply, or a reset when the close found request bytes unread.)
    assert!(
        matches!(r.exit, 52 | 56),
        "expected the connection closed without an answer: {r:?}"
    );
    for port in [TCP_PORT, TLS_PORT] {
        assert_eq!(
            s.listeners_on(port),
            "",
            "agent must not bind {port} in eBPF mode"
        );
    }
    let metrics = s.admin("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "sluice_l4_connections_total",
            &["team-a/l4", "team-a/echo-tcp", "relayed"]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "sluice_l4_connections_total",
            &["team-a/l4", "not_tls"]
        ),
        Some(1.0),
        "{metrics}"
    );
    let allowed = metric(
        &metrics,
        "sluice_xdp_packets_total",
        &["team-a/l4", "pass_allowed"],
    );
    assert!(
        allowed.unwrap_or(0.0) > 0.0,
        "XDP admitted the L4 traffic: {metrics}"
    );
}
