//! Route-table benchmark: `cargo xtask bench routes` (or `cargo bench -p
//! sluice --bench routes`).
//!
//! For 0 (baseline), 100, 1,000 and 5,000 HTTPRoutes in a generated config
//! directory it measures
//! - change → swap: what a one-route change of the file source costs before
//!   it is in effect — the directory source re-reads and re-parses the
//!   changed file (the others come from its per-file cache), then the whole
//!   snapshot is compiled and stored in the `ArcSwap` (dropping the previous
//!   one). Not included: the watcher's debounce (`reload::DEBOUNCE`), which
//!   waits for the directory to go quiet first.
//! - cold load: the same from an empty cache (start-up).
//! - RSS: of a child process that has built and published the snapshot
//!   (VmRSS/VmHWM from /proc/self/status), and, when `SLUICE_BIN` names the
//!   agent binary, of the real agent serving the directory (userspace
//!   datapath, after /readyz).
//!
//! Figures are printed next to the targets of the design brief.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use sluice::{
    config::{load_dir, DirSource},
    control::{compile, ShardIds},
    snapshot::Snapshot,
};

const SIZES: [usize; 4] = [0, 100, 1_000, 5_000];
const SERVICES: usize = 50;
const ROUTES_PER_FILE: usize = 500;
const TARGET_CHANGE_MS: f64 = 10.0;
const TARGET_RSS_MB: f64 = 20.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Child mode: build one snapshot, report memory, exit.
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        let dir = PathBuf::from(&args[i + 1]);
        rss_child(&dir);
        return;
    }
    let agent = std::env::var_os("SLUICE_BIN").map(PathBuf::from);
    let root = std::env::temp_dir().join(format!("sluice-bench-routes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    println!("Sluice route-table benchmark (file source)");
    println!(
        "config: 1 Gateway (HTTP listener, allowedRoutes All), {SERVICES} Services with \
         EndpointSlices, N HTTPRoutes (own hostname, 2 rules: PathPrefix + header-matched \
         Exact with a RequestHeaderModifier), {ROUTES_PER_FILE} routes per file"
    );
    println!();
    println!(
        "| routes | cold load ms | runs | change: read+parse ms | compile ms | swap ms | change→swap p50 ms | max ms | target | old snapshot freed after, ms | snapshot process RSS MB (peak) | agent RSS MB (peak) | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in SIZES {
        let dir = root.join(format!("routes-{n}"));
        let port = free_port();
        generate(&dir, n, port);
        let t = rebuild_times(&dir, n);
        let child = rss_of_child(&dir);
        let real = agent.as_deref().map(|bin| rss_of_agent(bin, &dir));
        let fmt_mem = |m: Option<(f64, f64)>| match m {
            Some((rss, hwm)) => format!("{rss:.1} ({hwm:.1})"),
            None => "–".into(),
        };
        let (change_target, rss_target) = if n == 0 {
            ("baseline".to_owned(), "baseline".to_owned())
        } else if n == 5_000 {
            (
                format!("≤ {TARGET_CHANGE_MS} ms"),
                format!("≤ {TARGET_RSS_MB} MB"),
            )
        } else {
            ("–".into(), "–".into())
        };
        println!(
            "| {n} | {:.1} | {} | {:.2} | {:.2} | {:.3} | {:.2} | {:.2} | {change_target} | {:.2} | {} | {} | {rss_target} |",
            t.cold_ms,
            t.runs,
            t.parse_ms,
            t.compile_ms,
            t.store_ms,
            t.total_p50_ms,
            t.total_max_ms,
            t.drop_ms,
            fmt_mem(child),
            match real {
                Some(Ok(m)) => fmt_mem(Some(m)),
                Some(Err(e)) => format!("failed: {e}"),
                None => "(set SLUICE_BIN)".into(),
            },
        );
    }
    println!();
    println!(
        "A change rewrites the file holding route 0 (one of the {ROUTES_PER_FILE}-route files) \
         with a new path prefix; the directory source re-reads and re-parses only that file, \
         then the whole snapshot is compiled and stored. parse/compile/store are medians; \
         'change→swap' is their sum per run. The watcher applies a change after a {} ms \
         debounce, which these figures do not include. 'cold load' is a start-up: every \
         file read and parsed, compiled and stored.",
        sluice::reload::DEBOUNCE.as_millis()
    );
    let _ = std::fs::remove_dir_all(&root);
}

struct Times {
    runs: usize,
    /// Median of a cold load: every file read and parsed, compiled, stored.
    cold_ms: f64,
    parse_ms: f64,
    compile_ms: f64,
    store_ms: f64,
    /// Freeing the previous snapshot, after the swap (not on the change path).
    drop_ms: f64,
    total_p50_ms: f64,
    total_max_ms: f64,
}

/// The file a one-route change rewrites, and its text for run `run`: route 0
/// gets a new path prefix (or, without routes, the base file a new comment),
/// so every run is a real content change.
fn changed_file(dir: &Path, n: usize, run: usize) -> (PathBuf, String) {
    if n == 0 {
        let path = dir.join("base.yaml");
        let text = std::fs::read_to_string(&path).expect("base file");
        let text = match text.rsplit_once("\n# run ") {
            Some((head, _)) => head.to_owned(),
            None => text,
        };
        (path.clone(), format!("{text}\n# run {run}\n"))
    } else {
        let path = dir.join("routes-000.yaml");
        let text = std::fs::read_to_string(&path).expect("route file");
        let start = text.find("/api/v1/items-0").expect("route 0") + "/api/v1/items-0".len();
        let end = start + text[start..].find('}').expect("end of path");
        let text = format!("{}-v{run}{}", &text[..start], &text[end..]);
        (path, text)
    }
}

fn rebuild_times(dir: &Path, n: usize) -> Times {
    let runs = (20_000 / n.max(1)).clamp(10, 50);
    let swap = ArcSwap::from_pointee(Snapshot::default());
    let mut ids = ShardIds::default();

    // Cold loads: what the agent pays at start-up.
    let mut cold = vec![];
    for run in 0..4 {
        let t0 = Instant::now();
        let cfg = DirSource::new(dir)
            .load()
            .expect("generated config is valid");
        let compiled = compile(&cfg, &mut ids, run + 1);
        swap.store(Arc::new(compiled.snapshot));
        cold.push(ms(t0.elapsed()));
    }

    // One-route changes through the directory source, as the watcher applies them.
    let mut source = DirSource::new(dir);
    source.load().expect("generated config is valid");
    let (mut parse, mut comp, mut store, mut total) = (vec![], vec![], vec![], vec![]);
    let mut drop_ms = vec![];
    // One warm-up run (page cache, allocator).
    for run in 0..=runs {
        let (path, text) = changed_file(dir, n, run);
        std::fs::write(&path, text).expect("rewrite");
        let t0 = Instant::now();
        let (cfg, stats) = source.load_with_stats().expect("changed config is valid");
        let t1 = Instant::now();
        let compiled = compile(&cfg, &mut ids, run as u64 + 10);
        let t2 = Instant::now();
        assert_eq!(compiled.snapshot.shards.len(), 1, "{:?}", compiled.warnings);
        let previous = swap.swap(Arc::new(compiled.snapshot));
        let t3 = Instant::now();
        // As the agent does: the old snapshot is freed after the swap, off the
        // reload path; timed separately.
        drop(previous);
        drop_ms.push(ms(t3.elapsed()));
        drop(cfg);
        assert_eq!(stats.parsed, 1, "exactly the changed file is parsed again");
        if run > 0 {
            parse.push(ms(t1 - t0));
            comp.push(ms(t2 - t1));
            store.push(ms(t3 - t2));
            total.push(ms(t3 - t0));
        }
    }
    let routes = swap.load().shards[0].listeners[0].routes.len();
    // Two matches per route: each rule has one.
    assert_eq!(routes, 2 * n, "every generated route is in the table");
    Times {
        runs,
        cold_ms: median(&mut cold),
        parse_ms: median(&mut parse),
        compile_ms: median(&mut comp),
        store_ms: median(&mut store),
        drop_ms: median(&mut drop_ms),
        total_p50_ms: median(&mut total),
        total_max_ms: total.iter().copied().fold(0.0, f64::max),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Child: load, compile, publish, then report VmRSS and VmHWM (kB).
fn rss_child(dir: &Path) {
    let swap = ArcSwap::from_pointee(Snapshot::default());
    let cfg = load_dir(dir).expect("valid config");
    let compiled = compile(&cfg, &mut ShardIds::default(), 1);
    drop(cfg);
    swap.store(Arc::new(compiled.snapshot));
    // As the agent does after every reload: hand freed heap back to the kernel.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let (rss, hwm) = proc_status_kb("self");
    println!("{rss} {hwm}");
    drop(swap);
}

fn rss_of_child(dir: &Path) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .arg("--rss-child")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((it.next()?? / 1024.0, it.next()?? / 1024.0))
}

/// Runs the real agent on the directory; its RSS once ready (MB).
fn rss_of_agent(bin: &Path, dir: &Path) -> Result<(f64, f64), String> {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(bin)
        .args([
            "--datapath",
            "userspace",
            "--admin-addr",
            &admin.to_string(),
        ])
        .arg("--config-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("agent exited: {status}"));
        }
        if http_status(admin, "/readyz") == Some(200) {
            // Let start-up allocations settle (watcher thread, first accepts).
            std::thread::sleep(Duration::from_millis(300));
            let (rss, hwm) = proc_status_kb(&child.id().to_string());
            break Ok((rss / 1024.0, hwm / 1024.0));
        }
        if Instant::now() > deadline {
            break Err("not ready after 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SIGTERM via kill(1) would need libc here; the agent holds nothing that
    // needs a clean stop in userspace mode.
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

fn proc_status_kb(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Writes the config for `n` routes into `dir`.
fn generate(dir: &Path, n: usize, port: u16) {
    std::fs::create_dir_all(dir).expect("bench dir");
    let mut base = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners:
  - {{name: http, port: {port}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
"#
    );
    for s in 0..SERVICES {
        base.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: apps}}
spec: {{ports: [{{name: http, port: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{s}-1, namespace: apps, labels: {{kubernetes.io/service-name: svc-{s}}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"]}}, {{addresses: ["127.0.0.2"]}}]
ports: [{{name: http, port: {}}}]
"#,
            30_000 + s
        ));
    }
    std::fs::write(dir.join("base.yaml"), base).expect("write base");
    for (file, chunk) in (0..n)
        .collect::<Vec<_>>()
        .chunks(ROUTES_PER_FILE)
        .enumerate()
    {
        let mut text = String::new();
        for &i in chunk {
            let svc = i % SERVICES;
            text.push_str(&format!(
                r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{i}, namespace: apps}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [r{i}.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api/v1/items-{i}}}}}]
    backendRefs: [{{name: svc-{svc}, port: 8080}}]
  - matches: [{{path: {{type: Exact, value: /health}}, headers: [{{name: x-probe, value: "yes"}}]}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-route, value: route-{i}}}]}}
    backendRefs: [{{name: svc-{}, port: 8080, weight: 3}}, {{name: svc-{svc}, port: 8080}}]
"#,
                (svc + 1) % SERVICES
            ));
        }
        std::fs::write(dir.join(format!("routes-{file:03}.yaml")), text).expect("write routes");
    }
}
