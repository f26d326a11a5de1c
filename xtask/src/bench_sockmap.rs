//! `cargo xtask bench sockmap`: HTTP request/response latency and throughput
//! through the agent to a local echo backend, with the sockmap fast path off
//! and on, in the same run on the same machine.
//!
//! Everything runs in a network namespace, a cgroup and a bpf filesystem the
//! bench creates (and removes, also on error): the echo backend, the agent
//! (release build, eBPF datapath, `--cgroup` on the private cgroup) and the
//! load generator (wrk, keep-alive connections) are all members of that cgroup,
//! so both hops (client → gateway, gateway → backend) are node-local. Modes
//! alternate (off, on, off, on, ...) so that drift in the machine's load hits
//! both; each row reports the median round.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::plot::{BarSeries, Figure, Panel};
use anyhow::{bail, Context, Result};

const GATEWAY: &str = "127.0.0.1:8080";
const ADMIN: &str = "127.0.0.1:9901";

const CONFIG: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: bench}
spec:
  gatewayClassName: sluice
  addresses: [{value: "127.0.0.1"}]
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: bench}
spec:
  parentRefs: [{name: edge}]
  hostnames: [echo.example.com]
  rules:
  - backendRefs: [{name: echo, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: bench}
spec: {ports: [{port: 80, targetPort: 9080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: bench, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
endpoints: [{addresses: ["127.0.0.1"]}]
ports: [{port: 9080}]
"#;

/// Options of the benchmark.
pub struct Options {
    /// Seconds per wrk run.
    pub seconds: u32,
    /// Rounds per mode and load.
    pub rounds: u32,
    /// Connections of the loaded scenario.
    pub connections: u32,
    /// Write the figures (`target/bench/sockmap.json`) and a chart of them.
    pub plot: bool,
}

/// The private namespace, cgroup and bpffs; removed on drop.
struct Sandbox {
    netns: String,
    cgroup_mount: PathBuf,
    cgroup: PathBuf,
    bpffs: PathBuf,
    dir: PathBuf,
}

impl Sandbox {
    fn new() -> Result<Self> {
        let pid = std::process::id();
        let tmp = std::env::temp_dir();
        let sandbox = Self {
            netns: format!("sluice-bench-sm-{pid}"),
            cgroup_mount: tmp.join(format!("sluice-bench-sm-cg-{pid}")),
            cgroup: tmp
                .join(format!("sluice-bench-sm-cg-{pid}"))
                .join(format!("sluice-bench-{pid}")),
            bpffs: tmp.join(format!("sluice-bench-sm-bpf-{pid}")),
            dir: tmp.join(format!("sluice-bench-sm-{pid}")),
        };
        std::fs::create_dir_all(sandbox.dir.join("config"))?;
        std::fs::write(sandbox.dir.join("config/gateway.yaml"), CONFIG)?;
        crate::run(Command::new("ip").args(["netns", "add", &sandbox.netns]))?;
        crate::run(Command::new("ip").args(["-n", &sandbox.netns, "link", "set", "lo", "up"]))?;
        std::fs::create_dir_all(&sandbox.cgroup_mount)?;
        crate::run(
            Command::new("mount")
                .args(["-t", "cgroup2", "none"])
                .arg(&sandbox.cgroup_mount),
        )?;
        std::fs::create_dir_all(sandbox.cgroup.join("apps"))?;
        std::fs::create_dir_all(&sandbox.bpffs)?;
        crate::run(
            Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(&sandbox.bpffs),
        )?;
        Ok(sandbox)
    }

    /// `cmd` as a member of the bench cgroup, inside the bench namespace.
    fn command(&self, cmd: &[&str]) -> Command {
        let procs = self.cgroup.join("apps/cgroup.procs");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display()))
            .arg("sh")
            .args(["ip", "netns", "exec", &self.netns])
            .args(cmd);
        c
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        let _ = std::fs::remove_dir(self.cgroup.join("apps"));
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = Command::new("umount").arg(&self.cgroup_mount).status();
        let _ = std::fs::remove_dir(&self.cgroup_mount);
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One wrk result.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Parses wrk's `--latency` output.
fn parse_wrk(out: &str) -> Option<Sample> {
    let value = |s: &str| -> Option<f64> {
        let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n,
            "ms" => n * 1e3,
            "s" => n * 1e6,
            _ => return None,
        })
    };
    let percentile = |p: &str| {
        out.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == p).then(|| value(it.next()?))?
        })
    };
    let rps = out.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Requests/sec:")
            .and_then(|v| v.trim().parse().ok())
    })?;
    Some(Sample {
        rps,
        p50_us: percentile("50%")?,
        p99_us: percentile("99%")?,
    })
}

fn ensure_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("installing wrk (load generator of the sockmap benchmark)");
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn admin_get(sandbox: &Sandbox, path: &str) -> Option<String> {
    let out = sandbox
        .command(&[
            "curl",
            "-sf",
            "--max-time",
            "2",
            &format!("http://{ADMIN}{path}"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn redirected(sandbox: &Sandbox) -> f64 {
    admin_get(sandbox, "/metrics")
        .and_then(|m| {
            m.lines()
                .find(|l| {
                    l.starts_with("sluice_sockmap_events_total") && l.contains("message_redirected")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        })
        .unwrap_or(0.0)
}

fn start_agent(sandbox: &Sandbox, bin: &Path, sockmap: bool) -> Result<crate::Guard> {
    let config = sandbox.dir.join("config");
    let mut args = vec![
        bin.to_str().context("agent path")?,
        "--config-dir",
        config.to_str().context("config path")?,
        "--datapath",
        "ebpf",
        "--admin-addr",
        ADMIN,
        "--bpffs",
        sandbox.bpffs.to_str().context("bpffs path")?,
        "--cgroup",
        sandbox.cgroup.to_str().context("cgroup path")?,
    ];
    if sockmap {
        args.push("--sockmap");
    }
    let log = std::fs::File::create(sandbox.dir.join("agent.log"))?;
    let child = sandbox
        .command(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting sluice")?;
    let guard = crate::Guard(child, "sluice");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if admin_get(sandbox, "/readyz").is_some() {
            let m = admin_get(sandbox, "/metrics").unwrap_or_default();
            let want = format!("sluice_sockmap_enabled {}", u8::from(sockmap));
            if !m.lines().any(|l| l == want) {
                bail!(
                    "agent started without the expected fast path state ({want}):\n{}",
                    std::fs::read_to_string(sandbox.dir.join("agent.log")).unwrap_or_default()
                );
            }
            return Ok(guard);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "agent not ready after 20 s:\n{}",
        std::fs::read_to_string(sandbox.dir.join("agent.log")).unwrap_or_default()
    )
}

fn wrk(sandbox: &Sandbox, threads: u32, connections: u32, seconds: u32) -> Result<Sample> {
    let url = format!("http://{GATEWAY}/bench");
    let out = sandbox
        .command(&[
            "wrk",
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "5s",
            "--latency",
            "-H",
            "Host: echo.example.com",
            &url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!(
            "wrk reported failures:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("unparsable wrk output:\n{text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    if !crate::is_root() {
        bail!(
            "bench sockmap loads eBPF programs and needs root: `sudo -E cargo xtask bench sockmap`"
        );
    }
    crate::run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "sluice",
        "-p",
        "sluice-tests",
        "--bins",
    ]))?;
    ensure_wrk()?;
    let target = root.join("target/release");
    let sandbox = Sandbox::new()?;
    let echo_bin = target.join("sluice-echo");
    let echo = sandbox
        .command(&[
            echo_bin.to_str().context("echo path")?,
            "--listen",
            "127.0.0.1:9080",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting sluice-echo")?;
    let _echo = crate::Guard(echo, "sluice-echo");

    // (label, wrk threads, connections)
    let loads = [("light", 1, 1), ("loaded", 2, opts.connections)];
    // results[load][mode] = samples
    let mut results: Vec<[Vec<Sample>; 2]> = vec![[Vec::new(), Vec::new()]; loads.len()];
    let mut redirects = 0.0;
    for round in 0..opts.rounds {
        for (mode, sockmap) in [(0, false), (1, true)] {
            let agent = start_agent(&sandbox, &target.join("sluice"), sockmap)?;
            // Warm-up: connections, pools, caches.
            wrk(&sandbox, 1, 4, 1)?;
            for (i, (label, threads, conns)) in loads.iter().enumerate() {
                let s = wrk(&sandbox, *threads, *conns, opts.seconds)?;
                eprintln!(
                    "round {} sockmap {}: {label}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs",
                    round + 1,
                    if sockmap { "on" } else { "off" },
                    s.rps,
                    s.p50_us,
                    s.p99_us
                );
                results[i][mode].push(s);
            }
            if sockmap {
                redirects += redirected(&sandbox);
            }
            drop(agent);
        }
    }
    if redirects == 0.0 {
        bail!(
            "the fast path redirected nothing with --sockmap: the 'on' rows would be meaningless"
        );
    }

    println!(
        "\nsockmap fast path, {} s per run, median of {} rounds (modes alternated), \
         client → sluice → echo on 127.0.0.1 in a private netns; \
         {redirects:.0} messages redirected in the 'on' runs\n",
        opts.seconds, opts.rounds
    );
    println!(
        "| load | sockmap | req/s | p50 | p99 | req/s on ÷ off | p50 on ÷ off | p99 on ÷ off |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    // Per load: its label, then [off, on] of req/s, p50, p99 (the chart's).
    let mut chart: Vec<Row> = Vec::new();
    for (i, (label, _, conns)) in loads.iter().enumerate() {
        let med =
            |mode: usize, f: fn(&Sample) -> f64| median(results[i][mode].iter().map(f).collect());
        let (rps, p50, p99) = (
            [med(0, |s| s.rps), med(1, |s| s.rps)],
            [med(0, |s| s.p50_us), med(1, |s| s.p50_us)],
            [med(0, |s| s.p99_us), med(1, |s| s.p99_us)],
        );
        chart.push((format!("{label} ({conns} conn)"), rps, p50, p99));
        for (mode, name) in [(0, "off"), (1, "on")] {
            let ratios = if mode == 1 {
                format!(
                    "{:.2}× | {:.2}× | {:.2}×",
                    rps[1] / rps[0],
                    p50[1] / p50[0],
                    p99[1] / p99[0]
                )
            } else {
                "baseline | | ".to_owned()
            };
            println!(
                "| {label} ({conns} conn) | {name} | {:.0} | {:.0} µs | {:.0} µs | {ratios} |",
                rps[mode], p50[mode], p99[mode]
            );
        }
    }
    if opts.plot {
        figure(opts, &chart).write(root, "sockmap")?;
    }
    Ok(())
}

/// A load's chart figures: label, then `[off, on]` req/s, p50 µs, p99 µs.
type Row = (String, [f64; 2], [f64; 2], [f64; 2]);
/// One figure of a [`Row`].
type Pick = fn(&Row) -> [f64; 2];

fn figure(opts: &Options, chart: &[Row]) -> Figure {
    let mut fig = Figure::new("bench sockmap: the sockmap fast path off and on");
    fig.notes.push(format!(
        "{} s per run, median of {} rounds; client → sluice → echo on loopback in a private netns",
        opts.seconds, opts.rounds
    ));
    let categories: Vec<String> = chart.iter().map(|r| r.0.clone()).collect();
    let panels: [(&str, &str, Pick); 3] = [
        ("Throughput", "requests per second", |r| r.1),
        ("p50 latency", "latency (µs)", |r| r.2),
        ("p99 latency", "latency (µs)", |r| r.3),
    ];
    for (title, y_label, pick) in panels {
        fig.panels.push(Panel::Bars {
            title: title.into(),
            y_label: y_label.into(),
            categories: categories.clone(),
            series: ["sockmap off", "sockmap on"]
                .iter()
                .enumerate()
                .map(|(mode, name)| BarSeries {
                    name: (*name).into(),
                    values: chart.iter().map(|r| Some(pick(r)[mode])).collect(),
                })
                .collect(),
            reference: None,
            log_y: false,
        });
    }
    fig
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let out = "Running 2s test @ http://127.0.0.1:8080/\n  1 threads and 1 connections\n\
                   Latency Distribution\n     50%  102.00us\n     75%  120.00us\n     90%  1.20ms\n\
                   \x20    99%    1.50ms\n  2000 requests in 2.00s, 1.00MB read\n\
                   Requests/sec:   9876.54\nTransfer/sec:    500.00KB\n";
        let s = parse_wrk(out).unwrap();
        assert_eq!(s.rps, 9876.54);
        assert_eq!(s.p50_us, 102.0);
        assert_eq!(s.p99_us, 1500.0);
        assert!(parse_wrk("garbage").is_none());
    }
}
