//! `cargo xtask soak`: the agent under steady load while things go wrong
//! around it, window after window, and checks that it comes out whole.
//!
//! One Gateway with a *stable* route (two echo backends, loaded all along)
//! and a *chaos* route (one echo backend that is killed and restarted).
//! Each window (default 10 s) starts with the next event of a fixed cycle —
//! 200 routes added, the chaos backend killed, an invalid config file
//! written, the backend restarted and the bad file removed, the 200 routes
//! removed, the access log rotated (rename + SIGHUP) — while wrk loads both
//! routes. Per window it prints requests, errors and the agent's RSS, open
//! file descriptors and threads. At the end it checks: the agent never
//! exited; the stable route had no failed request in any window; the chaos
//! route failed only in windows its backend was down; RSS and descriptors
//! came back near their level after the warm-up (no leak across churn);
//! every invalid config was rejected and every good one applied; the access
//! log was reopened after rotation. A failed check fails the command.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::bench_proxy::{
    check_interrupted, install_signal_handlers, parse_wrk, port_open, wait_until, which, Proc,
    WRK_SCRIPT,
};

/// Options of the soak.
pub struct Options {
    pub minutes: u64,
    pub window_secs: u64,
    pub release: bool,
}

const EVENTS: [&str; 6] = [
    "add 200 routes",
    "kill the chaos backend",
    "write an invalid config file",
    "restart the chaos backend, remove the invalid file",
    "remove the 200 routes",
    "rotate the access log (rename + SIGHUP)",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The body of a plain GET to the admin address.
fn fetch(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// The value of a metric line that starts with `prefix` (summed over lines).
fn metric(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn gateway_yaml(port: u16, stable: [u16; 2], chaos: u16) -> String {
    // One EndpointSlice per backend: each listens on a port of its own.
    let slice = |service: &str, ports: &[u16]| -> String {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                     metadata: {{name: {service}-{i}, namespace: soak, labels: {{kubernetes.io/service-name: {service}}}}}\n\
                     addressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {p}}}]\n"
                )
            })
            .collect()
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: sluice}}\n\
         spec: {{controllerName: sluice.dev/gateway-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: soak}}\n\
         spec:\n  gatewayClassName: sluice\n  addresses: [{{value: 127.0.0.1}}]\n  \
         listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: stable, namespace: soak}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [stable.soak]\n  rules: [{{backendRefs: [{{name: stable, port: 80}}]}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: chaos, namespace: soak}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [chaos.soak]\n  rules: [{{backendRefs: [{{name: chaos, port: 80}}]}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: stable, namespace: soak}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: chaos, namespace: soak}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n{}{}",
        slice("stable", &stable),
        slice("chaos", &[chaos]),
    )
}

fn churn_yaml(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {{name: churn-{i}, namespace: soak}}\nspec:\n  parentRefs: [{{name: gw}}]\n  \
                 hostnames: [churn-{i}.soak]\n  rules: [{{backendRefs: [{{name: stable, port: 80}}]}}]\n"
            )
        })
        .collect()
}

const INVALID: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
    metadata: {name: broken, namespace: soak}\nspec:\n  parentRefs: [{name: gw}]\n  \
    rules: [{matches: [{path: {type: Regex, value: /x}}], backendRefs: [{name: stable, port: 80}]}]\n";

/// What one process looks like from /proc: RSS (kB), open descriptors, threads.
fn footprint(pid: u32) -> (u64, usize, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (field("VmRSS:"), fds, field("Threads:"))
}

struct Window {
    event: &'static str,
    stable: (u64, u64),
    chaos: (u64, u64),
    chaos_down: bool,
    rss_kb: u64,
    fds: usize,
    threads: u64,
}

fn echo(bin: &Path, port: u16, name: &str, work: &Path) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--pod", name]);
    let mut p = Proc::spawn(name, cmd, &work.join(format!("{name}.log")))?;
    wait_until(name, &mut p, Duration::from_secs(10), || port_open(port))?;
    Ok(p)
}

/// wrk on one route for `secs`.
fn load(script: &Path, port: u16, host: &str, conns: u32, secs: u64) -> Command {
    let mut cmd = Command::new(which("wrk"));
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s")])
        .arg("-s")
        .arg(script)
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

fn wrk_result(out: std::process::Output, what: &str) -> Result<(u64, u64)> {
    let text = String::from_utf8_lossy(&out.stdout);
    let (requests, _, socket, status, _) =
        parse_wrk(&text).with_context(|| format!("wrk output for {what}: {text}"))?;
    Ok((requests, socket + status))
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    crate::setup::ensure_tools("soak", &[("wrk", "wrk", "the load")])?;
    install_signal_handlers();
    let mut build = crate::cargo();
    build.args(["build", "-p", "sluice", "-p", "sluice-tests", "--bins"]);
    if opts.release {
        build.arg("--release");
    }
    crate::run(&mut build)?;
    let bins = root.join(if opts.release {
        "target/release"
    } else {
        "target/debug"
    });
    let work: PathBuf = root.join("target/soak");
    let _ = std::fs::remove_dir_all(&work);
    let config = work.join("config");
    std::fs::create_dir_all(&config)?;
    let script = work.join("percentiles.lua");
    std::fs::write(&script, WRK_SCRIPT)?;

    let echo_bin = bins.join("sluice-echo");
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let _stable1 = echo(&echo_bin, p1, "stable-1", &work)?;
    let _stable2 = echo(&echo_bin, p2, "stable-2", &work)?;
    let mut chaos = Some(echo(&echo_bin, p3, "chaos", &work)?);
    let (gw, admin) = (free_port(), free_port());
    std::fs::write(config.join("gateway.yaml"), gateway_yaml(gw, [p1, p2], p3))?;
    let access_log = work.join("access.log");
    let mut agent_cmd = Command::new(bins.join("sluice"));
    agent_cmd
        .args(["--datapath", "userspace", "--config-dir"])
        .arg(&config)
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .arg("--access-log")
        .arg(&access_log)
        .env("RUST_LOG", "warn");
    let mut agent = Proc::spawn("sluice", agent_cmd, &work.join("sluice.log"))?;
    wait_until("sluice", &mut agent, Duration::from_secs(60), || {
        crate::bench_proxy::http_status(admin, "/readyz") == Some(200)
    })?;
    let pid = agent.child.id();

    let windows = (opts.minutes * 60 / opts.window_secs.max(1)).max(EVENTS.len() as u64);
    eprintln!(
        "soak: {windows} windows of {} s ({} min), agent pid {pid}, work dir {}",
        opts.window_secs,
        opts.minutes,
        work.display()
    );
    // Warm-up: one window of load, no event; its footprint is the baseline.
    let warm = one_window(&script, gw, opts.window_secs)?;
    let baseline = footprint(pid);
    eprintln!(
        "warm-up: stable {} requests ({} failed), RSS {} kB, {} fds, {} threads",
        warm.0 .0, warm.0 .1, baseline.0, baseline.1, baseline.2
    );
    let mut rows = Vec::new();
    let (mut invalid_pushes, mut good_changes, mut rotations) = (0u32, 0u32, 0u32);
    for w in 0..windows {
        check_interrupted()?;
        agent.ensure_running()?;
        let event = EVENTS[(w as usize) % EVENTS.len()];
        match (w as usize) % EVENTS.len() {
            0 => {
                std::fs::write(config.join("churn.yaml"), churn_yaml(200))?;
                good_changes += 1;
            }
            1 => drop(chaos.take()),
            2 => {
                std::fs::write(config.join("broken.yaml"), INVALID)?;
                invalid_pushes += 1;
            }
            3 => {
                chaos = Some(echo(&echo_bin, p3, "chaos", &work)?);
                std::fs::remove_file(config.join("broken.yaml"))?;
                good_changes += 1;
            }
            4 => {
                std::fs::remove_file(config.join("churn.yaml"))?;
                good_changes += 1;
            }
            _ => {
                std::fs::rename(&access_log, work.join(format!("access.log.{w}")))?;
                // SAFETY: a signal to the agent this command started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
                rotations += 1;
            }
        }
        let chaos_down = chaos.is_none();
        let (stable, chaos_r) = one_window(&script, gw, opts.window_secs)?;
        let (rss_kb, fds, threads) = footprint(pid);
        let row = Window {
            event,
            stable,
            chaos: chaos_r,
            chaos_down,
            rss_kb,
            fds,
            threads,
        };
        eprintln!(
            "window {w:>3}: {:<52} stable {:>7} req {:>3} failed | chaos {:>6} req {:>5} failed{} | RSS {:>6} kB, {:>3} fds, {:>2} threads",
            row.event,
            row.stable.0,
            row.stable.1,
            row.chaos.0,
            row.chaos.1,
            if row.chaos_down { " (down)" } else { "" },
            row.rss_kb,
            row.fds,
            row.threads
        );
        rows.push(row);
    }
    agent.ensure_running()?;
    let metrics = fetch(admin, "/metrics").context("reading /metrics")?;
    let rejected = metric(&metrics, "sluice_config_reloads_total{result=\"rejected\"");
    let applied = metric(&metrics, "sluice_config_reloads_total{result=\"applied\"");
    let last = rows.last().expect("at least one window");

    let mut failures = Vec::new();
    let stable_failed: u64 = rows.iter().map(|r| r.stable.1).sum();
    if stable_failed > 0 || warm.0 .1 > 0 {
        failures.push(format!(
            "the stable route failed {stable_failed} requests (never expected)"
        ));
    }
    // A window after the restart may still see connections the backend
    // refused while it came up: only windows with the backend up all along
    // after an up window must be clean.
    for pair in rows.windows(2) {
        let (before, r) = (&pair[0], &pair[1]);
        if !r.chaos_down && !before.chaos_down && r.chaos.1 > 0 {
            failures.push(format!(
                "the chaos route failed {} requests with its backend up ({})",
                r.chaos.1, r.event
            ));
        }
    }
    if rows.iter().any(|r| r.chaos_down && r.chaos.1 == 0) {
        failures.push("the chaos route never failed with its backend down: is it loaded?".into());
    }
    let rss_bound = (baseline.0 * 3 / 2).max(baseline.0 + 32 * 1024);
    if last.rss_kb > rss_bound {
        failures.push(format!(
            "RSS grew from {} kB after warm-up to {} kB (bound {rss_bound} kB)",
            baseline.0, last.rss_kb
        ));
    }
    if last.fds > baseline.1 + 64 {
        failures.push(format!(
            "open descriptors grew from {} to {}",
            baseline.1, last.fds
        ));
    }
    if rejected < f64::from(invalid_pushes) {
        failures.push(format!(
            "{invalid_pushes} invalid configs written, {rejected} rejected"
        ));
    }
    if applied < f64::from(good_changes) {
        failures.push(format!("{good_changes} config changes, {applied} applied"));
    }
    let reopened = std::fs::metadata(&access_log).map(|m| m.len()).unwrap_or(0);
    if rotations > 0 && reopened == 0 {
        failures.push("the access log was not reopened after rotation".into());
    }
    let total: u64 = rows.iter().map(|r| r.stable.0 + r.chaos.0).sum();
    println!(
        "\nsoak: {} windows, {total} requests; stable route failed {stable_failed}; \
         config changes {good_changes} (applied reloads {applied}), invalid {invalid_pushes} \
         (rejected {rejected}); RSS {} → {} kB, fds {} → {}, threads {} → {}",
        rows.len(),
        baseline.0,
        last.rss_kb,
        baseline.1,
        last.fds,
        baseline.2,
        last.threads
    );
    if failures.is_empty() {
        println!("soak: every check passed");
        Ok(())
    } else {
        for f in &failures {
            println!("soak: FAILED: {f}");
        }
        bail!(
            "soak: {} check(s) failed; logs in {}",
            failures.len(),
            work.display()
        )
    }
}

/// One window of load on both routes at once: (stable, chaos) as
/// (requests, failed).
fn one_window(script: &Path, gw: u16, secs: u64) -> Result<((u64, u64), (u64, u64))> {
    let stable = load(script, gw, "stable.soak", 16, secs)
        .spawn()
        .context("running wrk")?;
    // The chaos route's load, lighter, in the same window.
    let chaos = load(script, gw, "chaos.soak", 2, secs)
        .spawn()
        .context("running wrk")?;
    let stable = stable.wait_with_output().context("waiting for wrk")?;
    let chaos = chaos.wait_with_output().context("waiting for wrk")?;
    Ok((wrk_result(stable, "stable")?, wrk_result(chaos, "chaos")?))
}
