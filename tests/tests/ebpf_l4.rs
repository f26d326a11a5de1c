//! End-to-end L4 features of the eBPF datapath, in network namespaces this
//! test creates: port ranges served by one shard socket (`sluice.dev/port-ranges`),
//! and `xdp_ingress` on VLAN-tagged traffic. Needs root; with CI=true a
//! missing privilege fails instead of skipping.
use std::{path::PathBuf, process::Command, time::Duration};

use sluice_tests::{
    frames::{in_netns, mac_of, tagged_syn, RawSocket},
    netns::{curl_in, privileged, url, BpfFs, Curl, Topology},
    process::{sluice_bin, ChildGuard},
};

const BACKEND_PORT: u16 = 9080;
const ADMIN_PORT: u16 = 9901;

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
    fn start(test: &str, topo: &Topology, config: &str, interface: &str, extra: &[&str]) -> Self {
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
            .args(extra)
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
    let agent = Agent::start("ranges", &topo, &config, &topo.node_if, &[]);
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

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes one entry of a pinned map with bpftool.
fn bpftool_delete(map: &std::path::Path, key: &[u8]) {
    let out = Command::new("bpftool")
        .args(["map", "delete", "pinned"])
        .arg(map)
        .arg("key")
        .arg("hex")
        .args(hex(key))
        .output()
        .expect("bpftool runs");
    assert!(
        out.status.success(),
        "bpftool map delete {}: {}",
        map.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn entries_removed_behind_the_agents_back_are_repaired_on_request_and_counted() {
    if !privileged("entries_removed_behind_the_agents_back_are_repaired_on_request_and_counted") {
        return;
    }
    let topo = Topology::new();
    let bpffs = BpfFs::mount("drift");
    let config = format!(
        r#"{common}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: team-a
  annotations: {{sluice.dev/port-ranges: "30000-30015"}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: "{v4}"}}]
  listeners:
  - {{name: http, port: 8080, protocol: HTTP}}
"#,
        common = common_config(&["edge"]),
        v4 = Topology::NODE_V4,
    );
    let agent = Agent::start(
        "drift",
        &topo,
        &config,
        &topo.node_if,
        &["--bpffs", bpffs.path.to_str().unwrap()],
    );
    let quick = Duration::from_secs(3);
    for port in [8080, 30007] {
        let r = get(&topo, Topology::NODE_V4, port, None, quick);
        assert_eq!(r.status, Some(200), "{port}: {r:?}");
    }

    // Another program removes the listener and the range block.
    let dir = bpffs
        .path
        .join("sluice")
        .join(topo.node.inode().to_string());
    let addr = {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&[10, 77, 0, 2]);
        a
    };
    let mut listener = addr.to_vec();
    listener.extend_from_slice(&8080u16.to_ne_bytes());
    listener.extend_from_slice(&[6, 0]);
    bpftool_delete(&dir.join("LISTENERS"), &listener);
    // LPM key: prefix length (host order), then proto, address, port (BE), pad.
    let mut block = (8u32 + 128 + 12).to_ne_bytes().to_vec();
    block.push(6);
    block.extend_from_slice(&addr);
    block.extend_from_slice(&30000u16.to_be_bytes());
    block.push(0);
    bpftool_delete(&dir.join("PORT_RANGES"), &block);
    for port in [8080, 30007] {
        let r = get(&topo, Topology::NODE_V4, port, None, quick);
        assert_eq!(
            r.exit, 7,
            "{port} must be refused once its entry is gone: {r:?}"
        );
    }

    // On request the agent finds both, repairs them and counts them.
    let out = topo
        .node
        .command("curl")
        .args(["-sS", "-X", "POST", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{ADMIN_PORT}/reconcile"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("202"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let drift = |map: &str| {
        agent.metric(
            &topo,
            "sluice_bpf_map_drift_total",
            &[&format!("map=\"{map}\"")],
        )
    };
    let mut seen = (0.0, 0.0);
    for _ in 0..50 {
        seen = (drift("LISTENERS"), drift("PORT_RANGES"));
        if seen == (1.0, 1.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen, (1.0, 1.0), "drift per map\n{}", agent.log());
    let log = agent.log();
    for map in ["LISTENERS", "PORT_RANGES"] {
        assert!(
            log.lines()
                .any(|l| l.contains("eBPF map drift") && l.contains(map)),
            "a log line names {map}:\n{log}"
        );
    }
    for port in [8080, 30007] {
        let r = get(&topo, Topology::NODE_V4, port, None, quick);
        assert_eq!(r.status, Some(200), "{port} after the repair: {r:?}");
    }
    drop(agent);
}

// VLAN: the kernels this runs on may be built without 802.1Q support
// (`CONFIG_VLAN_8021Q` unset: `ip link add ... type vlan` fails with "Unknown
// device type"), so the test does not depend on VLAN devices: it writes
// tagged frames itself with an AF_PACKET socket on the client's veth. They
// reach the node's veth with the tags in the frame bytes, which is where
// `xdp_ingress` must find them.

/// XDP on the node's veth parses 802.1Q and 802.1ad (QinQ) tagged frames:
/// tagged SYNs from a denied source are dropped and counted, from an allowed
/// source they pass; a priority-tagged (VLAN 0) SYN goes on through the
/// stack and sk_lookup to the shard socket, which answers.
fn vlan_scenario(test: &str, xdp_mode: &str) {
    let topo = Topology::new();
    let config = format!(
        r#"{common}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: team-a
  annotations:
    sluice.dev/source-deny: "{denied}/32"
spec:
  gatewayClassName: sluice
  addresses: [{{value: "{node}"}}]
  listeners:
  - {{name: http, port: 8080, protocol: HTTP}}
"#,
        common = common_config(&["edge"]),
        denied = Topology::CLIENT_V4_ALT,
        node = Topology::NODE_V4,
    );
    let agent = Agent::start(
        test,
        &topo,
        &config,
        &topo.node_if,
        &["--xdp-mode", xdp_mode],
    );
    let attached = agent.metric(
        &topo,
        "sluice_xdp_attached",
        &[
            &format!("interface=\"{}\"", topo.node_if),
            &format!("mode=\"{xdp_mode}\""),
        ],
    );
    assert_eq!(attached, 1.0, "xdp_ingress in {xdp_mode} mode");
    let counter = |reason: &str| {
        agent.metric(
            &topo,
            "sluice_xdp_packets_total",
            &["shard=\"team-a/edge\"", &format!("reason=\"{reason}\"")],
        )
    };
    let macs = (
        mac_of(&topo.client, &topo.client_if),
        mac_of(&topo.node, &topo.node_if),
    );
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    let (allowed, denied, node) = (
        ip(Topology::CLIENT_V4),
        ip(Topology::CLIENT_V4_ALT),
        ip(Topology::NODE_V4),
    );
    const DOT1Q: u16 = 0x8100;
    const DOT1AD: u16 = 0x88a8;
    for (tags, what) in [
        (vec![(DOT1Q, 10)], "802.1Q VLAN 10"),
        (vec![(DOT1AD, 20), (DOT1Q, 10)], "802.1ad 20 + 802.1Q 10"),
    ] {
        let (drops, passes) = (counter("drop_source_denied"), counter("pass_allowed"));
        in_netns(&topo.client.name, || {
            let sock = RawSocket::bind(&topo.client_if);
            for i in 0..3 {
                sock.send(&tagged_syn(macs, &tags, denied, node, 40000 + i, 8080));
            }
            sock.send(&tagged_syn(macs, &tags, allowed, node, 41000, 8080));
        });
        // Counters are read at scrape time; the frames are in by now, but
        // allow the receive path a moment on a loaded machine.
        let mut got = (0.0, 0.0);
        for _ in 0..20 {
            got = (
                counter("drop_source_denied") - drops,
                counter("pass_allowed") - passes,
            );
            if got == (3.0, 1.0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            got,
            (3.0, 1.0),
            "{what} ({xdp_mode}): (denied SYNs dropped, allowed SYNs passed)\n{}",
            agent.log()
        );
    }
    // VLAN 0 (priority tag): the stack takes the frame as untagged, so the
    // SYN reaches the shard socket through sk_lookup and is answered.
    let answered = in_netns(&topo.client.name, || {
        let sock = RawSocket::bind(&topo.client_if);
        sock.send(&tagged_syn(macs, &[(DOT1Q, 0)], allowed, node, 42000, 8080));
        sock.saw_syn_ack(node, 42000, Duration::from_secs(2))
    });
    assert!(
        answered,
        "no SYN-ACK for a priority-tagged SYN ({xdp_mode})"
    );
    let before = counter("drop_source_denied");
    let answered = in_netns(&topo.client.name, || {
        let sock = RawSocket::bind(&topo.client_if);
        sock.send(&tagged_syn(macs, &[(DOT1Q, 0)], denied, node, 42001, 8080));
        sock.saw_syn_ack(node, 42001, Duration::from_millis(600))
    });
    assert!(
        !answered,
        "a denied priority-tagged SYN was answered ({xdp_mode})"
    );
    assert!(counter("drop_source_denied") > before);
}

#[test]
fn vlan_tagged_frames_are_parsed_by_xdp_in_generic_mode() {
    if !privileged("vlan_tagged_frames_are_parsed_by_xdp_in_generic_mode") {
        return;
    }
    vlan_scenario("vlan-generic", "generic");
}

#[test]
fn vlan_tagged_frames_are_parsed_by_xdp_in_native_mode() {
    if !privileged("vlan_tagged_frames_are_parsed_by_xdp_in_native_mode") {
        return;
    }
    vlan_scenario("vlan-native", "native");
}
