//! `cargo xtask bench isolation`: does a flood on one Gateway hurt another
//! Gateway of the same proxy?
//!
//! Each proxy serves two tenants, A and B, on their own ports (two Gateways
//! for Sluice, two `server` blocks for nginx), each routed to its own nginx
//! backend answering `200 ok`. All proxies have one worker pinned to
//! `--proxy-cpu`; the load generators and the backends share `--load-cpu`.
//! Per proxy: tenant B gets a fixed request rate (open loop: requests are
//! sent on schedule whether or not earlier ones were answered, and latency
//! counts from the scheduled time, so queueing is not hidden) alone, then
//! the same while tenant A is flooded by wrk with `--flood-connections`
//! closed-loop connections (each sends its next request the moment the
//! previous one is answered: as much as the proxy will take). The proxies:
//! Sluice (fair sharing between Gateways, the default), the same Sluice with
//! `--shard-fairness off`, and nginx (one event loop for both servers).
//! Target (issue 13): B keeps ≥ 90 % of its throughput, its p99 stays
//! ≤ 1.5× its alone figure, zero errors.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::bench_proxy::{
    check_interrupted, http_status, install_signal_handlers, nginx_common, nginx_temp_paths,
    parse_wrk, percentile, pinned, port_open, read_response, sluice_binary, wait_until, which,
    Proc, WRK_SCRIPT,
};
use crate::plot::{BarSeries, Figure, Panel};

/// Options of the isolation benchmark.
pub struct Options {
    pub seconds: u32,
    pub rounds: u32,
    /// Tenant B's requests per second.
    pub rate: u32,
    /// Tenant B's keep-alive connections (the rate is split between them).
    pub connections: u32,
    /// wrk's connections on tenant A.
    pub flood_connections: u32,
    pub proxy_cpu: u32,
    pub load_cpu: u32,
    pub sluice_bin: Option<PathBuf>,
    /// Write a chart (`target/bench/isolation.svg`) next to the table.
    pub plot: bool,
}

const BACKEND_A: u16 = 18730;
const BACKEND_B: u16 = 18731;
const A_HOST: &str = "a.bench";
const B_HOST: &str = "b.bench";

/// One proxy under test, with its two tenants' ports.
struct Target {
    label: &'static str,
    a: u16,
    b: u16,
    /// Sluice's admin port (its metrics).
    admin: Option<u16>,
    process: Option<Proc>,
}

/// Tenant B's figures in one phase.
#[derive(Clone, Debug, Default)]
struct Phase {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// One round of one target.
#[derive(Clone, Debug, Default)]
struct Round {
    alone: Phase,
    flooded: Phase,
    /// Tenant A's answered requests per second during the flood.
    flood_rps: f64,
    flood_errors: u64,
}

fn sluice_config(a: u16, b: u16) -> String {
    let mut s = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
         metadata: {name: sluice}\nspec: {controllerName: sluice.dev/gateway-controller}\n",
    );
    for (tenant, port, backend, host) in [("a", a, BACKEND_A, A_HOST), ("b", b, BACKEND_B, B_HOST)]
    {
        s.push_str(&format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tenant-{tenant}, namespace: team-{tenant}}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: "127.0.0.1"}}]
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: team-{tenant}}}
spec: {{ports: [{{port: 80, targetPort: {backend}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: backend-1, namespace: team-{tenant}, labels: {{kubernetes.io/service-name: backend}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"]}}]
ports: [{{port: {backend}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: team-{tenant}}}
spec:
  parentRefs: [{{name: tenant-{tenant}}}]
  hostnames: [{host}]
  rules: [{{backendRefs: [{{name: backend, port: 80}}]}}]
"#
        ));
    }
    s
}

fn nginx_config(dir: &Path, a: u16, b: u16) -> String {
    let mut s = nginx_common(dir, "nginx");
    s.push_str("http {\n  access_log off;\n");
    s.push_str(&nginx_temp_paths(dir, "nginx"));
    s.push_str(
        "  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  \
         proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n  \
         proxy_set_header Host $http_host;\n  proxy_set_header X-Forwarded-For $remote_addr;\n",
    );
    for (tenant, port, backend, host) in [("a", a, BACKEND_A, A_HOST), ("b", b, BACKEND_B, B_HOST)]
    {
        s.push_str(&format!(
            "  upstream backend_{tenant} {{\n    server 127.0.0.1:{backend};\n    keepalive 1024;\n    \
             keepalive_requests 100000000;\n    keepalive_timeout 300s;\n  }}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    server_name {host};\n    \
             location / {{ proxy_pass http://backend_{tenant}; }}\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

fn backend_config(dir: &Path, name: &str, port: u16) -> String {
    format!(
        "{}http {{\n  access_log off;\n{}  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
         server {{\n    listen 127.0.0.1:{port} default_server;\n    \
         location / {{ default_type text/plain; return 200 \"ok\"; }}\n  }}\n}}\n",
        nginx_common(dir, name),
        nginx_temp_paths(dir, name),
    )
}

/// Tenant B's load: `rate` requests per second over `connections`
/// keep-alive connections for `duration`, each request sent at its
/// scheduled time (or at once when the previous answer came later), its
/// latency counted from that scheduled time.
fn fixed_rate(port: u16, rate: u32, connections: u32, duration: Duration) -> Phase {
    let interval = Duration::from_secs_f64(f64::from(connections) / f64::from(rate.max(1)));
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            std::thread::spawn(move || {
                let offset = interval.mul_f64(f64::from(i) / f64::from(connections));
                let request = format!("GET /api HTTP/1.1\r\nHost: {B_HOST}\r\n\r\n");
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut conn: Option<TcpStream> = None;
                let mut buf = Vec::with_capacity(1024);
                let mut k = 0u32;
                loop {
                    let due = start + offset + interval * k;
                    if due >= end {
                        break;
                    }
                    k += 1;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let stream = match conn.as_mut() {
                        Some(s) => s,
                        None => match TcpStream::connect(("127.0.0.1", port)) {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                                conn.insert(s)
                            }
                            Err(_) => {
                                errors += 1;
                                continue;
                            }
                        },
                    };
                    let ok = stream.write_all(request.as_bytes()).is_ok()
                        && read_response(stream, &mut buf).is_ok_and(|s| s == 200);
                    if ok {
                        lat.push(due.elapsed().as_secs_f64() * 1e6);
                    } else {
                        errors += 1;
                        conn = None;
                    }
                }
                (lat, errors, Instant::now())
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    // Requests sent late (their connection still busy with an earlier
    // one) finish after `end`: the rate is what was answered over the time
    // it took, so a proxy that cannot keep up shows a lower rate.
    let mut finished = end;
    for t in threads {
        let Ok((l, e, done)) = t.join() else {
            continue;
        };
        lat.extend(l);
        errors += e;
        finished = finished.max(done);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&lat, p * 100.0);
    Phase {
        rps: lat.len() as f64 / finished.duration_since(start).as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

/// One GET; the status.
fn get(port: u16, host: &str) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET /api HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    read_response(&mut s, &mut Vec::new())
}

fn measure(opts: &Options, t: &mut Target, dir: &Path) -> Result<Round> {
    let secs = Duration::from_secs(u64::from(opts.seconds));
    if let Some(p) = t.process.as_mut() {
        p.ensure_running()?;
    }
    let alone = fixed_rate(t.b, opts.rate, opts.connections, secs);
    check_interrupted()?;
    let mut wrk = pinned(&opts.load_cpu.to_string(), &which("wrk"));
    wrk.args(["-t1", "-c", &opts.flood_connections.to_string()])
        .arg(format!("-d{}s", opts.seconds + 2))
        .args(["-H", &format!("Host: {A_HOST}"), "-s"])
        .arg(dir.join("percentiles.lua"))
        .arg(format!("http://127.0.0.1:{}/api", t.a));
    let flood = wrk
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting wrk")?;
    std::thread::sleep(Duration::from_secs(1));
    let flooded = fixed_rate(t.b, opts.rate, opts.connections, secs);
    let out = flood.wait_with_output().context("waiting for wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (requests, seconds, socket_errors, status_errors, _) = parse_wrk(&text)
        .with_context(|| format!("no figures in wrk's output for {}: {text}", t.label))?;
    Ok(Round {
        alone,
        flooded,
        flood_rps: requests as f64 / seconds,
        flood_errors: socket_errors + status_errors,
    })
}

fn start_backend(dir: &Path, cpu: u32, name: &str, port: u16) -> Result<Proc> {
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(format!("{name}-tmp/{t}")))?;
    }
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(&conf, backend_config(dir, name, port))?;
    let mut cmd = pinned(&cpu.to_string(), &which("nginx"));
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
    let mut p = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
    wait_until(name, &mut p, Duration::from_secs(20), || port_open(port))?;
    Ok(p)
}

fn start_sluice(dir: &Path, cpu: u32, bin: &Path, t: &Target, fair: bool) -> Result<Proc> {
    let config = dir.join(format!("{}-config", t.label));
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("bench.yaml"), sluice_config(t.a, t.b))?;
    let admin = t.admin.expect("sluice targets have an admin port");
    let mut cmd = pinned(&cpu.to_string(), bin);
    cmd.arg("--config-dir")
        .arg(&config)
        .args(["--datapath", "userspace", "--worker-threads", "1"])
        .args(["--request-id", "off"])
        .args(["--shard-fairness", if fair { "on" } else { "off" }])
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn");
    let mut p = Proc::spawn(t.label, cmd, &dir.join(format!("{}.log", t.label)))?;
    wait_until(t.label, &mut p, Duration::from_secs(60), || {
        http_status(admin, "/readyz") == Some(200)
    })?;
    Ok(p)
}

/// `sluice_fair_deferred_polls_total` of a Sluice.
fn deferred_polls(admin: u16) -> Option<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("sluice_fair_deferred_polls_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    install_signal_handlers();
    crate::setup::ensure_tools(
        "bench isolation",
        &[
            ("nginx", "nginx", "the backends and the peer proxy"),
            ("wrk", "wrk", "the flood on tenant A"),
        ],
    )?;
    ensure!(
        opts.rate > 0 && opts.connections > 0,
        "--rate and --connections must be > 0"
    );
    let sluice = sluice_binary(root, opts.sluice_bin.as_deref())?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-isolation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = run_in(root, opts, &sluice, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(root: &Path, opts: &Options, sluice: &Path, dir: &Path) -> Result<()> {
    std::fs::write(dir.join("percentiles.lua"), WRK_SCRIPT)?;
    let _backend_a = start_backend(dir, opts.load_cpu, "backend-a", BACKEND_A)?;
    let _backend_b = start_backend(dir, opts.load_cpu, "backend-b", BACKEND_B)?;
    let mut targets = vec![
        Target {
            label: "sluice",
            a: 18700,
            b: 18701,
            admin: Some(18702),
            process: None,
        },
        Target {
            label: "sluice-fifo",
            a: 18710,
            b: 18711,
            admin: Some(18712),
            process: None,
        },
        Target {
            label: "nginx",
            a: 18720,
            b: 18721,
            admin: None,
            process: None,
        },
    ];
    for t in &mut targets {
        let p = match t.label {
            "sluice" => start_sluice(dir, opts.proxy_cpu, sluice, t, true)?,
            "sluice-fifo" => start_sluice(dir, opts.proxy_cpu, sluice, t, false)?,
            _ => {
                for tmp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                    std::fs::create_dir_all(dir.join(format!("nginx-tmp/{tmp}")))?;
                }
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, nginx_config(dir, t.a, t.b))?;
                let mut cmd = pinned(&opts.proxy_cpu.to_string(), &which("nginx"));
                cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
                let mut p = Proc::spawn(t.label, cmd, &dir.join("nginx.log"))?;
                wait_until(t.label, &mut p, Duration::from_secs(20), || {
                    port_open(t.a) && port_open(t.b)
                })?;
                p
            }
        };
        t.process = Some(p);
        for (port, host) in [(t.a, A_HOST), (t.b, B_HOST)] {
            let status = get(port, host).with_context(|| format!("{} :{port}", t.label))?;
            ensure!(
                status == 200,
                "{} answered {status} for {host} before any load",
                t.label
            );
        }
    }
    eprintln!(
        "bench isolation: tenant B at {} req/s over {} connections, tenant A flooded by wrk \
         with {} connections; proxies on CPU {}, load and backends on CPU {}; {} s per phase, \
         {} round(s)",
        opts.rate,
        opts.connections,
        opts.flood_connections,
        opts.proxy_cpu,
        opts.load_cpu,
        opts.seconds,
        opts.rounds
    );
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); targets.len()];
    for r in 0..opts.rounds.max(1) as usize {
        for i in 0..targets.len() {
            let k = (i + r) % targets.len();
            check_interrupted()?;
            let round = measure(opts, &mut targets[k], dir)?;
            eprintln!(
                "round {}: {:<12} B alone {:>7.0} req/s p99 {:>7.0} µs | flooded {:>7.0} req/s p99 {:>7.0} µs, {} errors | A {:>7.0} req/s",
                r + 1,
                targets[k].label,
                round.alone.rps,
                round.alone.p99_us,
                round.flooded.rps,
                round.flooded.p99_us,
                round.flooded.errors,
                round.flood_rps
            );
            rounds[k].push(round);
        }
    }
    print_report(opts, &targets, &rounds);
    if opts.plot {
        chart(opts, &targets, &rounds).write(root, "isolation")?;
    }
    Ok(())
}

/// Tenant B's latency per proxy, alone and flooded (log scale: FIFO and
/// flooded figures are orders of magnitude apart).
fn chart(opts: &Options, targets: &[Target], rounds: &[Vec<Round>]) -> Figure {
    let mut fig = Figure::new(format!(
        "Noisy neighbour: tenant B at {} req/s, alone and while tenant A is flooded ({} connections)",
        opts.rate, opts.flood_connections
    ));
    let medians: Vec<(&str, Round)> = targets
        .iter()
        .zip(rounds)
        .filter(|(_, r)| !r.is_empty())
        .map(|(t, r)| (t.label, median(r)))
        .collect();
    let categories: Vec<String> = medians.iter().map(|(l, _)| (*l).to_owned()).collect();
    let series = |name: &str, pick: fn(&Round) -> f64| BarSeries {
        name: name.to_owned(),
        values: medians
            .iter()
            .map(|(_, r)| Some(pick(r) / 1000.0))
            .collect(),
    };
    fig.panels.push(Panel::Bars {
        title: "Tenant B's latency".into(),
        y_label: "ms (log)".into(),
        categories,
        series: vec![
            series("p50 alone", |r| r.alone.p50_us),
            series("p99 alone", |r| r.alone.p99_us),
            series("p50 flooded", |r| r.flooded.p50_us),
            series("p99 flooded", |r| r.flooded.p99_us),
        ],
        reference: None,
        log_y: true,
    });
    fig
}

/// The round with the median p99 under flood (the figure the target is about).
fn median(rounds: &[Round]) -> Round {
    let mut v = rounds.to_vec();
    v.sort_by(|a, b| a.flooded.p99_us.total_cmp(&b.flooded.p99_us));
    v[v.len() / 2].clone()
}

fn print_report(opts: &Options, targets: &[Target], rounds: &[Vec<Round>]) {
    println!(
        "\n### Noisy neighbour: tenant B ({} req/s) while tenant A is flooded ({} connections)\n",
        opts.rate, opts.flood_connections
    );
    println!(
        "| proxy | B alone req/s | p50 | p99 | B flooded req/s | p50 | p99 | errors | kept | p99 × alone | A served req/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (t, rs) in targets.iter().zip(rounds) {
        if rs.is_empty() {
            continue;
        }
        let m = median(rs);
        let kept = m.flooded.rps / m.alone.rps;
        let p99x = m.flooded.p99_us / m.alone.p99_us;
        let meets = kept >= 0.9 && p99x <= 1.5 && m.flooded.errors == 0;
        println!(
            "| {}{} | {:.0} | {:.0} µs | {:.0} µs | {:.0} | {:.0} µs | {:.0} µs | {} | {:.0} % | {:.2}× | {:.0}{} |",
            t.label,
            if meets { " ✓" } else { "" },
            m.alone.rps,
            m.alone.p50_us,
            m.alone.p99_us,
            m.flooded.rps,
            m.flooded.p50_us,
            m.flooded.p99_us,
            m.flooded.errors,
            100.0 * kept,
            p99x,
            m.flood_rps,
            if m.flood_errors > 0 { format!(" ({} errors)", m.flood_errors) } else { String::new() },
        );
    }
    if let Some(admin) = targets.first().and_then(|t| t.admin) {
        if let Some(n) = deferred_polls(admin) {
            println!("\nsluice: {n} polls of tenant A's tasks deferred by fair sharing (sluice_fair_deferred_polls_total)");
        }
    }
    println!(
        "\nTarget (issue 13): B keeps ≥ 90 % of its req/s, p99 ≤ 1.5× alone, no errors (✓). \
         Median round of {} by B's p99 under flood; wrk and the backends share CPU {} with B's client.",
        opts.rounds.max(1),
        opts.load_cpu
    );
}
