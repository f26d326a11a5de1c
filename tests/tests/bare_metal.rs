//! docs/bare-metal.md, step by step, in network namespaces (a client and a
//! node joined by veth): the NodePort described as a Gateway, checked with
//! `sluice check-config`, served by an agent started with the systemd
//! unit's flags (XDP on the node's interface, sk_lookup, no listener on the
//! port), restarted the way `systemctl restart` does it (stop, then start)
//! under load without a failed request, and removed with `sluice detach`.
use std::{process::Command, time::Duration};

use sluice_tests::{
    netns::{curl_in, privileged, url, BpfFs, Topology},
    process::{sluice_bin, ChildGuard},
};

const NODE_PORT: u16 = 30080;
const BACKEND_PORT: u16 = 9080;

/// The Gateway of docs/bare-metal.md, step 2.
fn config() -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: nodeport, namespace: default}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: {node}}}]
  listeners: [{{name: http, port: {NODE_PORT}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: nodeport}}]
  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: default}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app, namespace: default, labels: {{kubernetes.io/service-name: app}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {BACKEND_PORT}}}]
"#,
        node = Topology::NODE_V4
    )
}

fn xdp_attached(topo: &Topology) -> bool {
    let out = topo.node.ip(&["link", "show", "dev", &topo.node_if]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// sk_lookup links attached to the node namespace, from bpftool.
fn sk_lookup_links(topo: &Topology) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("bpftool runs");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let ino = topo.node.inode();
    links.as_array().map_or(0, |a| {
        a.iter()
            .filter(|l| l["type"] == "netns" && l["netns_ino"].as_u64() == Some(ino))
            .count()
    })
}

#[test]
fn nodeport_replaced_by_xdp_and_sk_lookup_with_a_hitless_systemctl_restart() {
    if !privileged("nodeport_replaced_by_xdp_and_sk_lookup_with_a_hitless_systemctl_restart") {
        return;
    }
    let topo = Topology::new();
    let bpffs = BpfFs::mount("bare-metal");
    let dir = std::env::temp_dir().join(format!("sluice-bare-metal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config_dir = dir.join("etc/sluice/config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("gateway.yaml"), config()).unwrap();
    let cleanup = scopeguard(dir.clone());

    let mut echo = topo.node.command(env!("CARGO_BIN_EXE_sluice-echo"));
    echo.args([
        "--listen",
        &format!("127.0.0.1:{BACKEND_PORT}"),
        "--pod",
        "app-1",
    ]);
    let mut echo = ChildGuard::spawn("echo", echo, &dir.join("echo.log")).unwrap();
    assert!(echo.wait_for_log(Duration::from_secs(10), |l| l.contains("listening")));

    // Step 2: check-config.
    let out = Command::new(sluice_bin())
        .arg("check-config")
        .arg(&config_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Steps 3-4: the agent as the unit's ExecStart runs it.
    let source = format!("file://{}", config_dir.display());
    let start = |name: &str| {
        let mut agent = topo.node.command(sluice_bin().to_str().unwrap());
        agent
            .args(["--config-source", &source])
            .args([
                "--bpffs",
                bpffs.path.to_str().unwrap(),
                "--keep-datapath-on-exit",
            ])
            .args(["--interface", &topo.node_if, "--datapath", "ebpf"])
            .args(["--admin-addr", "127.0.0.1:9901"])
            .env("RUST_LOG", "info");
        let mut agent = ChildGuard::spawn(name, agent, &dir.join(format!("{name}.log"))).unwrap();
        assert!(
            agent.wait_for_log(Duration::from_secs(30), |l| l.contains("sluice ready")),
            "{name} did not become ready:\n{}",
            agent.log()
        );
        agent
    };
    let mut first = start("first");

    // Step 5: served through the node's address, with no NodePort machinery.
    let get = |timeout| {
        topo.curl(
            &url(Topology::NODE_V4, NODE_PORT, "/"),
            None,
            None,
            Duration::from_secs(timeout),
        )
    };
    assert_eq!(get(5).status, Some(200), "{}", first.log());
    let ss = topo
        .node
        .command("ss")
        .args(["-Htln", &format!("sport = :{NODE_PORT}")])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ss.stdout).trim().is_empty(),
        "nothing listens on the NodePort: {}",
        String::from_utf8_lossy(&ss.stdout)
    );
    assert!(xdp_attached(&topo), "xdp_ingress on the node's interface");
    assert_eq!(sk_lookup_links(&topo), 1);

    // Step 6: `systemctl restart` = stop, then start; under load.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let client = topo.client.name.clone();
            std::thread::spawn(move || {
                let ns = sluice_tests::netns::Netns::existing(&client);
                let deadline = std::time::Instant::now() + Duration::from_secs(90);
                let (mut ok, mut failed) = (0u32, Vec::new());
                for _ in 0..2000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || std::time::Instant::now() > deadline
                    {
                        break;
                    }
                    // A client's patience: SYNs dropped while no agent runs
                    // are retransmitted after 1 s, 3 s, 7 s.
                    let r = curl_in(
                        &ns,
                        &url(Topology::NODE_V4, NODE_PORT, "/load"),
                        None,
                        None,
                        Duration::from_secs(15),
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
    let status = first.stop(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "first agent: {status:?}\n{}",
        first.log()
    );
    assert!(
        first.log().contains("left pinned for the next agent"),
        "{}",
        first.log()
    );
    assert!(xdp_attached(&topo), "XDP stays while no agent runs");
    let mut second = start("second");
    assert!(
        second.log().contains("mode=\"adopted\""),
        "the next agent adopts the pinned XDP link:\n{}",
        second.log()
    );
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for t in load {
        let (o, f) = t.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across stop + start: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok >= 10, "load too short to prove anything: {ok} requests");
    eprintln!("systemctl-style restart under load: {ok} requests, 0 failed");
    assert_eq!(
        sk_lookup_links(&topo),
        1,
        "the first agent's sk_lookup link replaced"
    );

    // Step 7: stop for good and detach.
    let status = second.stop(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", second.log());
    let out = topo
        .node
        .command(sluice_bin().to_str().unwrap())
        .args(["detach", "--bpffs", bpffs.path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!xdp_attached(&topo), "XDP detached");
    assert_eq!(sk_lookup_links(&topo), 0, "sk_lookup detached");
    assert_eq!(bpffs.pins(), Vec::<String>::new(), "no pins left");
    drop(cleanup);
}

/// Removes the test directory when dropped (also on panic).
fn scopeguard(dir: std::path::PathBuf) -> impl Drop {
    struct Guard(std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    Guard(dir)
}
