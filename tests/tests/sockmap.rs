//! The opt-in sockmap fast path (`--sockmap`), end to end in a network
//! namespace, a private cgroup and a private bpffs this test creates: a local
//! client → the gateway (127.0.0.1:8080, steered by sk_lookup) → a local echo
//! backend, with every process in the cgroup `sockops_track` watches.
//! Needs root; with CI=true a missing privilege fails instead of skipping.
use std::{path::PathBuf, process::Command, time::Duration};

use sluice_tests::{
    netns::{privileged, BpfFs, Netns, TestCgroups},
    process::{metric, sluice_bin, ChildGuard},
};

const GATEWAY: &str = "127.0.0.1:8080";
const ADMIN: &str = "127.0.0.1:9901";

const CONFIG: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: team-a}
spec:
  gatewayClassName: sluice
  addresses: [{value: "127.0.0.1"}]
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: team-a}
spec:
  parentRefs: [{name: edge}]
  hostnames: [echo.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: echo, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: team-a}
spec: {ports: [{port: 80, targetPort: 9080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: team-a, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
endpoints: [{addresses: ["127.0.0.1"]}]
ports: [{port: 9080}]
"#;

/// Agent and echo backend in `ns`, both members of `<cgroups.parent>/apps`.
/// Field order is drop order: processes end before their cgroup and bpffs go.
struct Node {
    agent: Option<ChildGuard>,
    _echo: ChildGuard,
    cgroups: TestCgroups,
    bpffs: BpfFs,
    ns: Netns,
    dir: PathBuf,
}

impl Node {
    fn start(test: &str, sockmap: bool) -> Self {
        let ns = Netns::new("sm");
        let bpffs = BpfFs::mount("sockmap");
        let cgroups = TestCgroups::new(&["apps"]);
        let dir = std::env::temp_dir().join(format!("sluice-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::write(dir.join("config/gateway.yaml"), CONFIG).unwrap();

        let echo_bin = env!("CARGO_BIN_EXE_sluice-echo");
        let echo = cgroups.run_in(
            "apps",
            &[
                "ip",
                "netns",
                "exec",
                &ns.name,
                echo_bin,
                "--listen",
                "127.0.0.1:9080",
                "--pod",
                "echo-v1",
                "--namespace",
                "team-a",
            ],
        );
        let mut echo = ChildGuard::spawn("echo", echo, &dir.join("echo.log")).unwrap();
        assert!(
            echo.wait_for_log(Duration::from_secs(10), |l| l.contains("listening")),
            "echo did not start: {}",
            echo.log()
        );

        let mut node = Self {
            agent: None,
            _echo: echo,
            cgroups,
            bpffs,
            ns,
            dir,
        };
        node.agent = Some(node.spawn_agent("agent", ADMIN, sockmap));
        node
    }

    /// Starts an agent in the namespace and the tracked cgroup, pinning into
    /// the test's bpffs, and waits until it is ready.
    fn spawn_agent(&self, name: &str, admin: &str, sockmap: bool) -> ChildGuard {
        let bin = sluice_bin();
        let config = self.dir.join("config");
        let mut args = vec![
            "ip",
            "netns",
            "exec",
            &self.ns.name,
            bin.to_str().unwrap(),
            "--config-dir",
            config.to_str().unwrap(),
            "--datapath",
            "ebpf",
            "--admin-addr",
            admin,
            "--bpffs",
            self.bpffs.path.to_str().unwrap(),
            "--cgroup",
            self.cgroups.parent.to_str().unwrap(),
        ];
        if sockmap {
            args.push("--sockmap");
        }
        let mut cmd = self.cgroups.run_in("apps", &args);
        cmd.env("RUST_LOG", "info,sluice=debug");
        let mut agent =
            ChildGuard::spawn(name, cmd, &self.dir.join(format!("{name}.log"))).unwrap();
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

    /// curl as a process of the tracked cgroup in the node namespace;
    /// returns (exit code, stdout bytes).
    fn curl(&self, extra: &[&str], url: &str) -> (Option<i32>, Vec<u8>) {
        let mut args = vec![
            "ip",
            "netns",
            "exec",
            &self.ns.name,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
        ];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.cgroups.run_in("apps", &args).output().unwrap();
        if !out.status.success() {
            eprintln!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        }
        (out.status.code(), out.stdout)
    }

    fn metrics(&self) -> String {
        self.metrics_on(ADMIN)
    }

    fn metrics_on(&self, admin: &str) -> String {
        let (code, body) = self.curl(&[], &format!("http://{admin}/metrics"));
        assert_eq!(code, Some(0), "admin /metrics");
        String::from_utf8(body).unwrap()
    }

    /// sock_ops programs attached to the test cgroup, from bpftool.
    fn sock_ops_programs(&self) -> Vec<String> {
        let out = Command::new("bpftool")
            .args(["-j", "cgroup", "show"])
            .arg(&self.cgroups.parent)
            .output()
            .expect("bpftool runs");
        let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        progs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                matches!(
                    p["attach_type"].as_str(),
                    Some("sock_ops" | "cgroup_sock_ops")
                )
            })
            .map(|p| p["name"].as_str().unwrap_or("").to_owned())
            .collect()
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

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.agent_log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn event(metrics: &str, event: &str) -> f64 {
    metric(
        metrics,
        "sluice_sockmap_events_total",
        &[&format!("event=\"{event}\"")],
    )
    .unwrap_or_else(|| panic!("no sockmap counter {event}:\n{metrics}"))
}

/// A body that is not the same byte over and over, so that a reordered or
/// lost chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect()
}

/// A small GET and large POSTs (bodies above 64 KiB: many messages per
/// request, and partial redirects) through the gateway; asserts the answers.
fn exchange(node: &Node) {
    let (code, body) = node.curl(
        &["-H", "Host: echo.example.com"],
        &format!("http://{GATEWAY}/hello?x=1"),
    );
    assert_eq!(code, Some(0), "GET failed\n{}", node.agent_log());
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["host"], "echo.example.com");
    assert_eq!(echo["pod"], "echo-v1");

    for len in [70 * 1024, 1024 * 1024 + 7] {
        let sent = pattern(len);
        let file = node.dir.join(format!("body-{len}"));
        std::fs::write(&file, &sent).unwrap();
        let data = format!("@{}", file.display());
        let (code, got) = node.curl(
            &[
                "-H",
                "Host: echo.example.com",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &data,
            ],
            &format!("http://{GATEWAY}/echo-body"),
        );
        assert_eq!(code, Some(0), "POST of {len} bytes failed");
        assert_eq!(got.len(), sent.len(), "echoed body length");
        assert!(got == sent, "echoed body of {len} bytes differs");
    }
}

#[test]
fn sockmap_fast_path_carries_local_requests_and_cleans_up() {
    if !privileged("sockmap_fast_path_carries_local_requests_and_cleans_up") {
        return;
    }
    let mut node = Node::start("sockmap-on", true);
    assert!(
        node.agent_log().contains("sockmap fast path attached"),
        "{}",
        node.agent_log()
    );
    assert_eq!(node.sock_ops_programs(), ["sockops_track"]);
    assert!(node.bpffs.pins().contains(&"SOCK_PAIRS".to_owned()));
    let before = node.metrics();
    assert_eq!(
        metric(&before, "sluice_sockmap_enabled", &[]),
        Some(1.0),
        "{before}"
    );
    let redirected_before = event(&before, "message_redirected");

    exchange(&node);

    let after = node.metrics();
    let redirected = event(&after, "message_redirected") - redirected_before;
    let tracked = event(&after, "socket_tracked");
    // Client, gateway side of the client connection, agent upstream socket,
    // backend side: four sockets at least, and the GET plus two POSTs with
    // their answers are at least six redirected messages.
    eprintln!(
        "sockmap: {tracked} sockets tracked, {redirected} messages redirected, {} passed",
        event(&after, "message_passed")
    );
    assert!(tracked >= 4.0, "sockets tracked: {tracked}\n{after}");
    assert!(
        redirected >= 6.0,
        "messages redirected: {redirected}\n{after}"
    );
    assert_eq!(
        metric(
            &after,
            "sluice_http_requests_total",
            &["team-a/edge", "2xx"]
        ),
        Some(3.0),
        "{after}"
    );

    // The last agent out detaches the programs and removes the pins.
    node.stop_agent();
    assert!(
        node.agent_log().contains("eBPF pins removed"),
        "{}",
        node.agent_log()
    );
    assert_eq!(node.sock_ops_programs(), Vec::<String>::new());
    assert_eq!(node.bpffs.pins(), Vec::<String>::new(), "pins left behind");
}

#[test]
fn without_the_flag_the_fast_path_stays_off() {
    if !privileged("without_the_flag_the_fast_path_stays_off") {
        return;
    }
    let mut node = Node::start("sockmap-off", false);
    assert_eq!(node.sock_ops_programs(), Vec::<String>::new());
    exchange(&node);
    let m = node.metrics();
    assert_eq!(metric(&m, "sluice_sockmap_enabled", &[]), Some(0.0), "{m}");
    assert_eq!(event(&m, "socket_tracked"), 0.0, "{m}");
    assert_eq!(event(&m, "message_redirected"), 0.0, "{m}");
    node.stop_agent();
    assert_eq!(node.bpffs.pins(), Vec::<String>::new(), "pins left behind");
}

#[test]
fn a_restarted_agent_takes_over_the_fast_path() {
    if !privileged("a_restarted_agent_takes_over_the_fast_path") {
        return;
    }
    let mut node = Node::start("sockmap-restart", true);
    exchange(&node);
    // The successor adopts the pinned SOCK_PAIRS (and its counters) and
    // attaches its own programs next to the old agent's.
    let mut new = node.spawn_agent("new", "127.0.0.1:9902", true);
    assert!(
        new.log().contains("sockmap fast path attached"),
        "{}",
        new.log()
    );
    exchange(&node);
    node.stop_agent();
    assert!(
        node.agent_log()
            .contains("another agent owns the eBPF datapath"),
        "{}",
        node.agent_log()
    );
    assert_eq!(
        node.sock_ops_programs(),
        ["sockops_track"],
        "the new agent's stays"
    );
    let before = event(&node.metrics_on("127.0.0.1:9902"), "message_redirected");
    exchange(&node);
    let after = node.metrics_on("127.0.0.1:9902");
    assert!(
        event(&after, "message_redirected") >= before + 6.0,
        "the successor's fast path redirects: {before} -> {after}"
    );
    let status = new.stop(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{}", new.log());
    assert_eq!(node.sock_ops_programs(), Vec::<String>::new());
    assert_eq!(node.bpffs.pins(), Vec::<String>::new(), "pins left behind");
}
