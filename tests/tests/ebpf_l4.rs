//! End-to-end L4 features of the eBPF datapath, in network namespaces this
//! test creates: port ranges served by one shard socket (`sluice.dev/port-ranges`),
//! and `xdp_ingress` on VLAN-tagged traffic. Needs root; with CI=true a
//! missing privilege fails instead of skipping.
use std::{path::PathBuf, time::Duration};

use sluice_tests::{
    netns::{curl_in, privileged, url, Curl, Topology},
    process::ChildGuard,
};

const BACKEND_PORT: u16 = 9080;
const ADMIN_PORT: u16 = 9901;

fn sluice_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sluice");
    assert!(
        p.exists(),
        "{} missing: build it first (`cargo build -p sluice`; `cargo xtask test` does this)",
        p.display()
    );
    p
}

/// The GatewayClass, the route to the echo backend (for every Gateway named
/// in `gateways`) and the backend Service.
fn common_config(gateways: &[&str]) -> String {
    let parents: Vec<String> = gateways.iter().map(|g| format!("{{name: {g}}}")).collect();
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: echo, namespace: team-a}}
spec:
  parentRefs: [{parents}]
  hostnames: [echo.example.com]
  rules:
  - backendRefs: [{{name: echo, port: 80}}]
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
        parents = parents.join(", ")
    )
}

/// The agent (eBPF datapath) and an echo backend in the node namespace.
struct Agent {
    agent: ChildGuard,
    _echo: ChildGuard,
    dir: PathBuf,
}

impl Agent {
    /// Starts the echo backend and the agent on `config`, with `xdp_ingress`
    /// on `interface`, once `setup` has prepared the topology.
    fn start(test: &str, topo: &Topology, config: &str, interface: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-l4-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::write(dir.join("config/gateway.yaml"), config).unwrap();

        let mut echo = topo.node.command(env!("CARGO_BIN_EXE_sluice-echo"));
        echo.args(["--listen", &format!("127.0.0.1:{BACKEND_PORT}")]);
        let mut echo = ChildGuard::spawn("echo", echo, &dir.join("echo.log")).unwrap();
        assert!(
            echo.wait_for_log(Duration::from_secs(10), |l| l.contains("listening")),
            "echo did not start: {}",
            echo.log()
        );
        let mut agent = topo.node.command(sluice_bin().to_str().unwrap());
        agent
            .args(["--config-dir", dir.join("config").to_str().unwrap()])
            .args(["--datapath", "ebpf", "--interface", interface])
            .args(["--admin-addr", &format!("127.0.0.1:{ADMIN_PORT}")])
            .args(["--ebpf-log-level", "debug"])
            .env("RUST_LOG", "info,sluice=debug");
        let mut agent = ChildGuard::spawn("agent", agent, &dir.join("agent.log")).unwrap();
        assert!(
            agent.wait_for_log(Duration::from_secs(20), |l| l.contains("sluice ready")),
            "agent did not become ready:\n{}",
            agent.log()
        );
        Self {
            agent,
            _echo: echo,
            dir,
        }
    }

    fn log(&self) -> String {
        self.agent.log()
    }

    fn admin(&self, topo: &Topology, path: &str) -> String {
        let r = curl_in(
            &topo.node,
            &format!("http://127.0.0.1:{ADMIN_PORT}{path}"),
            None,
            None,
            Duration::from_secs(5),
        );
        assert_eq!(r.status, Some(200), "admin {path}: {r:?}");
        r.body
    }

    fn metric(&self, topo: &Topology, name: &str, labels: &[&str]) -> f64 {
        self.admin(topo, "/metrics")
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.agent.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn get(topo: &Topology, addr: &str, port: u16, source: Option<&str>, timeout: Duration) -> Curl {
    topo.curl(
        &url(addr, port, "/"),
        Some("echo.example.com"),
        source,
        timeout,
    )
}

/// Listening TCP sockets on `port` in the node namespace.
fn listeners_on(topo: &Topology, port: u16) -> String {
    let out = topo
        .node
        .command("ss")
        .args(["-Htln", &format!("sport = :{port}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A second node address, so that ranges are shown on two IPv4 addresses.
const NODE_V4_SECOND: &str = "10.77.0.5";

#[test]
fn port_ranges_reach_the_shard_socket_on_every_address_and_exact_ports_win() {
    if !privileged("port_ranges_reach_the_shard_socket_on_every_address_and_exact_ports_win") {
        return;
    }
    let topo = Topology::new();
    topo.node.ip(&[
        "addr",
        "add",
        &format!("{NODE_V4_SECOND}/24"),
        "dev",
        &topo.node_if,
    ]);
    // `edge` serves two ranges on three addresses; `exact` has a plain
    // listener on a port inside edge's first range, on one of the addresses.
    let config = format!(
        r#"{common}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: team-a
  annotations:
    sluice.dev/port-ranges: "30000-30100, http=31000"
    sluice.dev/source-deny: "{denied}/32"
spec:
  gatewayClassName: sluice
  addresses: [{{value: "{v4}"}}, {{value: "{v4b}"}}, {{value: "{v6}"}}]
  listeners:
  - {{name: http, port: 8080, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: exact, namespace: team-a}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: "{v4}"}}]
  listeners:
  - {{name: http, port: 30050, protocol: HTTP}}
"#,
        common = common_config(&["edge", "exact"]),
        denied = Topology::CLIENT_V4_ALT,
        v4 = Topology::NODE_V4,
        v4b = NODE_V4_SECOND,
        v6 = Topology::NODE_V6,
    );
    let agent = Agent::start("ranges", &topo, &config, &topo.node_if);
    let requests = |gateway: &str| {
        agent.metric(
            &topo,
            "sluice_http_requests_total",
            &[&format!("shard=\"team-a/{gateway}\""), "2xx"],
        )
    };

    let mut served = 0.0;
    for (addr, source) in [
        (Topology::NODE_V4, None),
        (NODE_V4_SECOND, None),
        (Topology::NODE_V6, Some(Topology::CLIENT_V6)),
    ] {
        for port in [30000, 30001, 30049, 30077, 30100, 31000] {
            let r = get(&topo, addr, port, source, Duration::from_secs(3));
            assert_eq!(r.status, Some(200), "{addr}:{port}: {r:?}\n{}", agent.log());
            let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(echo["host"], "echo.example.com");
            served += 1.0;
            assert_eq!(requests("edge"), served, "{addr}:{port} not served by edge");
            assert_eq!(listeners_on(&topo, port), "", "nothing may bind {port}");
        }
        // Just outside the ranges: nobody serves these.
        for port in [29999, 30101, 30999, 31001] {
            let r = get(&topo, addr, port, source, Duration::from_secs(3));
            assert_eq!(r.exit, 7, "{addr}:{port} must be refused: {r:?}");
        }
    }
    // One shard, its two steering sockets (IPv4, IPv6) for every port.
    let config: serde_json::Value = serde_json::from_str(&agent.admin(&topo, "/config")).unwrap();
    let edge = config["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["gateway"] == "team-a/edge")
        .unwrap_or_else(|| panic!("{config}"));
    assert_eq!(edge["sockets"].as_array().unwrap().len(), 2, "{edge}");

    // The exact listener wins over the range on its address; the range
    // still has the port on the other address.
    let r = get(
        &topo,
        Topology::NODE_V4,
        30050,
        None,
        Duration::from_secs(3),
    );
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(requests("exact"), 1.0);
    let r = get(&topo, NODE_V4_SECOND, 30050, None, Duration::from_secs(3));
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(requests("exact"), 1.0);
    assert_eq!(requests("edge"), served + 1.0);

    // XDP admission covers range ports: the denied source is dropped there.
    let before = agent.metric(
        &topo,
        "sluice_xdp_packets_total",
        &["team-a/edge", "drop_source_denied"],
    );
    let r = get(
        &topo,
        Topology::NODE_V4,
        30010,
        Some(Topology::CLIENT_V4_ALT),
        Duration::from_secs(1),
    );
    assert_eq!(
        r.exit, 28,
        "denied source must time out (SYN dropped): {r:?}"
    );
    let after = agent.metric(
        &topo,
        "sluice_xdp_packets_total",
        &["team-a/edge", "drop_source_denied"],
    );
    assert!(after > before, "drop counter: {before} -> {after}");
}
