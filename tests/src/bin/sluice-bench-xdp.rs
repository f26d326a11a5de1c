//! `cargo xtask bench xdp`: CPU cost per dropped packet, XDP versus iptables
//! and nftables, on the same flood in the same run.
//!
//! A client netns floods TCP SYNs from a source outside the Gateway's allowed
//! CIDRs over a veth to the node netns. The flood is generated on CPU 0; the
//! node's receive path is moved to CPU 1 (RPS for the kernel stack and generic
//! XDP, a pinned threaded NAPI for native XDP), so CPU 1's time per dropped
//! packet is the cost of dropping it. Every mode checks its own drop counter.
use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use sluice_tests::{
    flood::{flood, parse_mac, syn_frame},
    netns::{curl_in, run, Topology},
    process::ChildGuard,
};

#[derive(Parser)]
struct Args {
    /// Packets per mode.
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// The agent binary.
    #[arg(long)]
    sluice: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Iptables,
    Nftables,
    XdpGeneric,
    XdpNative,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables raw PREROUTING drop",
            Mode::Nftables => "nftables prerouting (raw prio) drop",
            Mode::XdpGeneric => "sluice xdp_ingress, generic mode",
            Mode::XdpNative => "sluice xdp_ingress, native mode",
        }
    }
}

fn mac(ns: &sluice_tests::netns::Netns, ifname: &str) -> Result<[u8; 6]> {
    let out = ns
        .command("cat")
        .arg(format!("/sys/class/net/{ifname}/address"))
        .output()?;
    parse_mac(&String::from_utf8_lossy(&out.stdout)).context("reading MAC")
}

/// Ticks (USER_HZ) CPU 1 spent in softirq, and all busy ticks.
fn cpu1() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu1 "))
        .context("no cpu1 in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Ok((v[6], v[0] + v[1] + v[2] + v[5] + v[6]))
}

/// utime + stime ticks of a thread.
fn thread_ticks(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = s.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn napi_threads(ifname: &str) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim().starts_with(&format!("napi/{ifname}")) {
                out.push(pid);
            }
        }
    }
    out
}

const CONFIG: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: bench
  annotations: {sluice.dev/source-ranges: "10.77.0.1/32"}
spec:
  gatewayClassName: sluice
  addresses: [{value: 10.77.0.2}]
  listeners: [{name: http, port: 8080, protocol: HTTP}]
"#;

struct Result1 {
    mode: Mode,
    dropped: u64,
    ns_per_packet: f64,
}

fn measure(mode: Mode, args: &Args) -> Result<Result1> {
    let topo = Topology::new();
    let node_if = topo.node_if.clone();
    // Receive processing of the stack (and generic XDP) on CPU 1.
    run(topo.node.command("sh").arg("-c").arg(format!(
        "echo 2 > /sys/class/net/{node_if}/queues/rx-0/rps_cpus"
    )));
    let dir = std::env::temp_dir().join(format!("sluice-bench-xdp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut agent = None;
    match mode {
        Mode::Iptables => {
            run(topo.node.command("iptables").args([
                "-t",
                "raw",
                "-A",
                "PREROUTING",
                "-s",
                "10.77.0.3",
                "-j",
                "DROP",
            ]));
        }
        Mode::Nftables => {
            run(topo.node.command("nft").arg(
                "add table inet bench; add chain inet bench pre { type filter hook prerouting priority raw; }; \
                 add rule inet bench pre ip saddr 10.77.0.3 counter drop",
            ));
        }
        Mode::XdpGeneric | Mode::XdpNative => {
            std::fs::write(dir.join("gw.yaml"), CONFIG)?;
            let mut cmd = topo.node.command(args.sluice.to_str().unwrap());
            cmd.arg("--config-dir")
                .arg(&dir)
                .args([
                    "--datapath",
                    "ebpf",
                    "--interface",
                    &node_if,
                    "--admin-addr",
                    "127.0.0.1:9901",
                ])
                .args([
                    "--xdp-mode",
                    if mode == Mode::XdpNative {
                        "native"
                    } else {
                        "generic"
                    },
                ])
                .env("RUST_LOG", "warn,sluice=info");
            let mut a = ChildGuard::spawn("sluice", cmd, &dir.join("agent.log"))?;
            if !a.wait_for_log(Duration::from_secs(20), |l| l.contains("sluice ready")) {
                bail!("agent did not start:\n{}", a.log());
            }
            agent = Some(a);
            if mode == Mode::XdpNative {
                // Native XDP on veth runs in the veth's NAPI (enabled by the
                // attach); threaded, it can be pinned to CPU 1 like RPS does
                // for the stack.
                run(topo
                    .node
                    .command("sh")
                    .arg("-c")
                    .arg(format!("echo 1 > /sys/class/net/{node_if}/threaded")));
            }
        }
    }
    let frame = syn_frame(
        mac(&topo.node, &node_if)?,
        mac(&topo.client, &topo.client_if)?,
        Ipv4Addr::new(10, 77, 0, 3),
        Ipv4Addr::new(10, 77, 0, 2),
        10_000,
        8080,
    );
    // Warm-up, then find the NAPI thread (it exists once traffic flowed).
    const WARMUP: u64 = 10_000;
    flood(&topo.client.name, &topo.client_if, &frame, WARMUP, 0)?;
    std::thread::sleep(Duration::from_millis(200));
    let napi = if mode == Mode::XdpNative {
        let threads = napi_threads(&node_if);
        for t in &threads {
            let _ = Command::new("taskset")
                .args(["-p", "2", &t.to_string()])
                .output();
        }
        threads
    } else {
        Vec::new()
    };
    let before = cpu1()?;
    let napi_before: u64 = napi.iter().filter_map(|t| thread_ticks(*t).ok()).sum();
    let start = Instant::now();
    let sent = flood(&topo.client.name, &topo.client_if, &frame, args.packets, 0)?;
    std::thread::sleep(Duration::from_millis(300));
    let after = cpu1()?;
    let napi_after: u64 = napi.iter().filter_map(|t| thread_ticks(*t).ok()).sum();
    let elapsed = start.elapsed();

    let dropped = match mode {
        Mode::Iptables => {
            let out = run(topo.node.command("iptables").args([
                "-t",
                "raw",
                "-L",
                "PREROUTING",
                "-v",
                "-x",
                "-n",
            ]));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.contains("DROP"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        }
        Mode::Nftables => {
            let out = run(topo
                .node
                .command("nft")
                .args(["list", "chain", "inet", "bench", "pre"]));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split("packets ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        }
        Mode::XdpGeneric | Mode::XdpNative => {
            let r = curl_in(
                &topo.node,
                "http://127.0.0.1:9901/metrics",
                None,
                None,
                Duration::from_secs(5),
            );
            r.body
                .lines()
                .find(|l| {
                    l.starts_with("sluice_xdp_packets_total")
                        && l.contains("drop_source_denied")
                        && l.contains("bench/edge")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        }
    };
    let dropped = dropped.saturating_sub(WARMUP);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    if dropped < sent / 2 {
        bail!(
            "{}: only {dropped} of {sent} packets were dropped by the filter under test",
            mode.label()
        );
    }
    let ticks = match mode {
        Mode::XdpNative => (napi_after - napi_before) + (after.0 - before.0),
        _ => after.0 - before.0,
    };
    // USER_HZ is 100 on Linux: one tick is 10 ms.
    let cpu_ns = ticks as f64 * 10_000_000.0;
    eprintln!(
        "{:<40} sent {sent} dropped {dropped} in {elapsed:.2?}; CPU1 softirq ticks {}, busy ticks {}, napi ticks {}",
        mode.label(),
        after.0 - before.0,
        after.1 - before.1,
        napi_after - napi_before
    );
    Ok(Result1 {
        mode,
        dropped,
        ns_per_packet: cpu_ns / dropped as f64,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench xdp needs root (network namespaces, eBPF, iptables)");
    }
    if std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        < 2
    {
        bail!("bench xdp needs at least 2 CPUs (flood on CPU 0, receive on CPU 1)");
    }
    let mut results = Vec::new();
    for mode in [
        Mode::Iptables,
        Mode::Nftables,
        Mode::XdpGeneric,
        Mode::XdpNative,
    ] {
        results.push(measure(mode, &args)?);
    }
    let base = results
        .iter()
        .find(|r| r.mode == Mode::Iptables)
        .map(|r| r.ns_per_packet)
        .unwrap_or(f64::NAN);
    println!("\nCPU cost per dropped packet (receive side, CPU 1), {} SYNs per mode, veth between network namespaces", args.packets);
    println!("| mode | dropped | CPU ns / packet | iptables ÷ mode | target (BRIEF) |");
    println!("|---|---:|---:|---:|---|");
    for r in &results {
        let target = match r.mode {
            Mode::XdpNative | Mode::XdpGeneric => "≥ 4×",
            _ => "baseline",
        };
        println!(
            "| {} | {} | {:.0} | {:.2}× | {target} |",
            r.mode.label(),
            r.dropped,
            r.ns_per_packet,
            base / r.ns_per_packet
        );
    }
    Ok(())
}
