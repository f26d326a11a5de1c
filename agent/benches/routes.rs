//! Route-table benchmark: `cargo xtask bench routes` (or `cargo bench -p
//! sluice --bench routes`, with `SLUICE_BIN` naming a release agent for the
//! agent columns).
//!
//! For 0 (baseline), 100, 1,000, 5,000 and 50,000 HTTPRoutes in a generated
//! config directory it measures, in this process:
//! - change → swap: what a one-route change of the file source costs before
//!   it is in effect — the directory source re-reads and re-parses the
//!   changed document (the others come from its cache), the [`Compiler`]
//!   recompiles the changed route and patches the route tables, and the
//!   snapshot is stored in the `ArcSwap`. The watcher's debounce is not
//!   included (the agent columns include it).
//! - cold load: the same from nothing (start-up): every file read and
//!   parsed, every route compiled.
//! - state RSS: a child process that holds what the agent holds for its
//!   configuration (directory cache, compiler cache, published snapshot,
//!   status), VmRSS after glibc has handed freed heap back.
//!
//! and, with `SLUICE_BIN`, of the real agent (userspace datapath, loopback):
//! start → `/readyz`, a one-route file change → the new path answered by the
//! gateway (a 404 before; its backend does not exist, so "in effect" means
//! any other answer), including the watcher's debounce, and its RSS.
//!
//! Figures are printed next to the targets of the design brief; nothing here
//! asserts a time.
//!
//! For heap profilers, the bench binary also writes a config (`--generate
//! DIR N`) and holds what the agent holds until it exits (`--rss-child DIR
//! --hold`): `valgrind --tool=dhat` then reports the kept bytes by
//! allocation site.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicIsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use sluice::{
    config::DirSource,
    control::{Compiler, PolicyEnv, ShardIds},
    policy::{state::PolicyState, PolicyMetrics},
    snapshot::Snapshot,
};

/// Counts the bytes allocated and not freed, in the RSS child only (one
/// relaxed load per allocation elsewhere): where the memory goes.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_kb() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1024.0
}

const SIZES: [usize; 5] = [0, 100, 1_000, 5_000, 50_000];
const SERVICES: usize = 50;
const ROUTES_PER_FILE: usize = 500;
/// One-route changes through the real agent per size.
const AGENT_CHANGES: usize = 15;

/// The design brief's targets for `n` routes: (change ms, cold start ms, RSS MB).
fn targets(n: usize) -> (Option<f64>, Option<f64>, Option<f64>) {
    match n {
        5_000 => (Some(10.0), None, Some(20.0)),
        50_000 => (Some(30.0), Some(1_000.0), Some(100.0)),
        _ => (None, None, None),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Child mode: load and hold the state, report memory, exit.
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        rss_child(Path::new(&args[i + 1]), args.iter().any(|a| a == "--hold"));
        return;
    }
    // For heap profilers (`valgrind --tool=dhat`): write the config of N
    // routes into DIR, then run `--rss-child DIR --hold` on it.
    if let Some(i) = args.iter().position(|a| a == "--generate") {
        let n = args[i + 2].parse().expect("--generate DIR N");
        generate(Path::new(&args[i + 1]), n, free_port());
        return;
    }
    let only: Option<Vec<usize>> = std::env::var("SLUICE_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect());
    let agent = std::env::var_os("SLUICE_BIN").map(PathBuf::from);
    let root = std::env::temp_dir().join(format!("sluice-bench-routes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    println!("Sluice route-table benchmark (file source)");
    println!(
        "config: 1 Gateway (HTTP listener, allowedRoutes All), {SERVICES} Services with \
         EndpointSlices, N HTTPRoutes (own hostname, 2 rules: PathPrefix + header-matched \
         Exact with a RequestHeaderModifier, 3 backendRefs), {ROUTES_PER_FILE} routes per file"
    );
    println!();
    println!(
        "| routes | change→swap p50 (max) ms | of which read+parse+merge / compile / swap ms | target | cold load ms (of which read+parse) | target | old snapshot freed ms | agent start→ready ms | agent file change→in effect p50 (max) ms | agent RSS MB (anon + file) | target |"
    );
    println!("|---:|---|---|---|---:|---|---:|---:|---|---|---|");
    let mut memory = Vec::new();
    // With SLUICE_BENCH_JSON: the figures of each size, for
    // `cargo xtask bench routes --plot` (which charts them).
    let mut figures = Vec::new();
    for n in SIZES {
        if only.as_ref().is_some_and(|o| !o.contains(&n)) {
            continue;
        }
        let dir = root.join(format!("routes-{n}"));
        let port = free_port();
        generate(&dir, n, port);
        let t = rebuild_times(&dir, n);
        let state_rss = rss_of_child(&dir);
        let real = agent.as_deref().map(|bin| run_agent(bin, &dir, n, port));
        let (change_target, cold_target, rss_target) = targets(n);
        let show = |t: Option<f64>, unit: &str| match t {
            Some(v) => format!("≤ {v} {unit}"),
            None if n == 0 => "baseline".into(),
            None => "–".into(),
        };
        let (start, change, rss) = match &real {
            Some(Ok(a)) => (
                format!("{:.0}", a.ready_ms),
                format!("{:.1} ({:.1})", a.change_p50_ms, a.change_max_ms),
                format!("{:.1} ({:.1} + {:.1})", a.rss_mb, a.anon_mb, a.file_mb),
            ),
            Some(Err(e)) => ("–".into(), format!("failed: {e}"), "–".into()),
            None => ("–".into(), "(set SLUICE_BIN)".into(), "–".into()),
        };
        println!(
            "| {n} | {:.2} ({:.2}) | {:.2} / {:.2} / {:.3} | {} | {:.0} ({:.0}) | {} | {:.2} | {start} | {change} | {rss} | {} |",
            t.total_p50_ms,
            t.total_max_ms,
            t.parse_ms,
            t.compile_ms,
            t.store_ms,
            show(change_target, "ms"),
            t.cold_ms,
            t.cold_parse_ms,
            show(cold_target, "ms"),
            t.drop_ms,
            show(rss_target, "MB"),
        );
        figures.push(serde_json::json!({
            "routes": n,
            "change_p50_ms": t.total_p50_ms,
            "change_max_ms": t.total_max_ms,
            "cold_ms": t.cold_ms,
            "cold_parse_ms": t.cold_parse_ms,
            "state_rss_mb": state_rss.as_ref().map(|m| m.rss),
            "agent_ready_ms": real.as_ref().and_then(|r| r.as_ref().ok()).map(|a| a.ready_ms),
            "agent_change_p50_ms": real.as_ref().and_then(|r| r.as_ref().ok()).map(|a| a.change_p50_ms),
            "agent_rss_mb": real.as_ref().and_then(|r| r.as_ref().ok()).map(|a| a.rss_mb),
        }));
        memory.push((n, state_rss));
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!();
    println!("Where the memory goes: a process holding what the agent holds for its configuration");
    println!();
    println!(
        "| routes | RSS MB | live heap MB | directory cache (config) | snapshot (tables, actions) | compiler cache | status | heap per route |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, m) in memory {
        match m {
            Some(m) => println!(
                "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
                m.rss,
                m.heap,
                m.config,
                m.snapshot,
                m.cache,
                m.status,
                if n == 0 {
                    "–".to_owned()
                } else {
                    format!(
                        "{:.2} kB",
                        (m.config + m.snapshot + m.cache + m.status) * 1024.0 / n as f64
                    )
                }
            ),
            None => println!("| {n} | failed | | | | | | |"),
        }
    }
    println!();
    println!(
        "A change rewrites the file holding route 0 (one of the {ROUTES_PER_FILE}-route files) \
         with a new path prefix: the directory source re-reads that file and re-parses the one \
         changed document, the compiler recompiles that route and patches the route table \
         (every other route's entries, actions and status are shared with the previous \
         snapshot), and the snapshot is stored. Parts are medians; change→swap is their sum \
         per run. Cold load: every file read and parsed, every route compiled, stored. Agent \
         columns: the release agent (userspace datapath) started on the directory until \
         /readyz; then {AGENT_CHANGES} one-route file changes, each until the gateway answers \
         the new path (including the watcher's {} ms quiet period); RSS after the changes, \
         split into anonymous memory and file-backed pages (the executable's code, shared and \
         clean). Memory table: live heap counted by the bench's allocator, each part measured \
         by freeing it (tables are shared by the snapshot and the compiler cache and count for \
         the snapshot); RSS above the heap is allocator overhead and fragmentation.",
        sluice::reload::DEBOUNCE.as_millis()
    );
    let _ = std::fs::remove_dir_all(&root);
    if let Some(path) = std::env::var_os("SLUICE_BENCH_JSON") {
        let doc = serde_json::json!({ "sizes": figures });
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).expect("JSON") + "\n",
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", Path::new(&path).display()));
    }
}

struct Times {
    /// Median of cold loads: every file read and parsed, compiled, stored.
    cold_ms: f64,
    /// Median of the cold loads' read + parse (the rest is the compile).
    cold_parse_ms: f64,
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
fn changed_file(dir: &Path, n: usize, run: usize) -> (PathBuf, String, String) {
    if n == 0 {
        let path = dir.join("base.yaml");
        let text = std::fs::read_to_string(&path).expect("base file");
        let text = match text.rsplit_once("\n# run ") {
            Some((head, _)) => head.to_owned(),
            None => text,
        };
        (
            path.clone(),
            format!("{text}\n# run {run}\n"),
            String::new(),
        )
    } else {
        let path = dir.join("routes-000.yaml");
        let text = std::fs::read_to_string(&path).expect("route file");
        let start = text.find("/api/v1/items-0").expect("route 0") + "/api/v1/items-0".len();
        let end = start + text[start..].find('}').expect("end of path");
        let new_path = format!("/api/v1/items-0-v{run}");
        let text = format!("{}-v{run}{}", &text[..start], &text[end..]);
        (path, text, new_path)
    }
}

/// A compile environment like the agent's: policy state and metrics that
/// live as long as the compiler.
struct Env {
    state: PolicyState,
    metrics: PolicyMetrics,
}

impl Env {
    fn new() -> Self {
        Env {
            state: PolicyState::default(),
            metrics: PolicyMetrics::default(),
        }
    }

    fn compile(
        &self,
        compiler: &mut Compiler,
        cfg: &sluice::config::Config,
        ids: &mut ShardIds,
        generation: u64,
    ) -> sluice::control::Compiled {
        let run = self.state.compile();
        let env = PolicyEnv {
            metrics: &self.metrics,
            state: &run,
        };
        let c = compiler.compile(cfg, ids, generation, &env);
        self.state.commit(run.id());
        c
    }
}

/// A number from the environment, for profiling runs.
fn knob(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

fn rebuild_times(dir: &Path, n: usize) -> Times {
    let runs = knob("SLUICE_BENCH_RUNS").unwrap_or((20_000 / n.max(1)).clamp(10, 50));
    let swap = ArcSwap::from_pointee(Snapshot::default());
    let env = Env::new();
    let mut ids = ShardIds::default();

    // Cold loads: what the agent pays at start-up.
    let mut cold = vec![];
    let mut cold_parse = vec![];
    let colds = knob("SLUICE_BENCH_COLD").unwrap_or(if n > 10_000 { 2 } else { 4 });
    for run in 0..colds {
        let t0 = Instant::now();
        let cfg = DirSource::new(dir)
            .load()
            .expect("generated config is valid");
        cold_parse.push(ms(t0.elapsed()));
        let compiled = env.compile(&mut Compiler::default(), &cfg, &mut ids, run as u64 + 1);
        swap.store(Arc::new(compiled.snapshot));
        cold.push(ms(t0.elapsed()));
    }

    // One-route changes through the directory source, as the watcher applies them.
    let mut source = DirSource::new(dir);
    let mut compiler = Compiler::default();
    let cfg = source.load().expect("generated config is valid");
    swap.store(Arc::new(
        env.compile(&mut compiler, &cfg, &mut ids, 9).snapshot,
    ));
    drop(cfg);
    let (mut parse, mut comp, mut store, mut total) = (vec![], vec![], vec![], vec![]);
    let mut drop_ms = vec![];
    // One warm-up run (page cache, allocator).
    for run in 0..=runs {
        let (path, text, _) = changed_file(dir, n, run);
        std::fs::write(&path, text).expect("rewrite");
        let t0 = Instant::now();
        let (cfg, stats) = source.load_with_stats().expect("changed config is valid");
        let t1 = Instant::now();
        let compiled = env.compile(&mut compiler, &cfg, &mut ids, run as u64 + 10);
        let t2 = Instant::now();
        assert_eq!(compiled.snapshot.shards.len(), 1, "{:?}", compiled.warnings);
        let previous = swap.swap(Arc::new(compiled.snapshot));
        let t3 = Instant::now();
        // As the agent does: the old snapshot is freed after the swap, off the
        // reload path; timed separately.
        drop(previous);
        drop_ms.push(ms(t3.elapsed()));
        drop(cfg);
        assert_eq!(
            stats.documents_parsed, 1,
            "exactly the changed document is parsed"
        );
        let c = compiler.stats();
        assert!(
            n == 0 || (c.incremental && c.compiled == 1),
            "one route compiled: {c:?}"
        );
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
        cold_ms: if cold.is_empty() {
            f64::NAN
        } else {
            median(&mut cold)
        },
        cold_parse_ms: if cold_parse.is_empty() {
            f64::NAN
        } else {
            median(&mut cold_parse)
        },
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

/// Child: load, compile, publish and keep what the agent keeps for its
/// configuration; report VmRSS and the live heap of each part (kB). With
/// `hold`, exit while still holding it all, so that a heap profiler's
/// end-of-run figures are what the agent keeps, by allocation site.
fn rss_child(dir: &Path, hold: bool) {
    COUNTING.store(true, Ordering::Relaxed);
    let swap = ArcSwap::from_pointee(Snapshot::default());
    let env = Env::new();
    let mut source = DirSource::new(dir);
    let mut compiler = Compiler::default();
    let start = live_kb();
    let cfg = source.load().expect("valid config");
    // The merged list of routes is the caller's, dropped after the compile.
    let config = live_kb() - start - (cfg.routes.capacity() * 8) as f64 / 1024.0;
    let compiled = env.compile(&mut compiler, &cfg, &mut ShardIds::default(), 1);
    drop(cfg);
    swap.store(Arc::new(compiled.snapshot));
    let status = compiled.status;
    drop(compiled.kernel);
    // As the agent does after every reload: hand freed heap back to the kernel.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let (rss, _) = proc_status_kb("self");
    let heap = live_kb();
    let all = heap - start;
    if hold {
        println!("{rss} {heap} {config}");
        std::process::exit(0);
    }
    // What each part holds alone: measured by letting it go.
    let before = live_kb();
    drop(status);
    let status_kb = before - live_kb();
    let before = live_kb();
    drop(compiler);
    let cache_kb = before - live_kb();
    println!(
        "{rss} {heap} {config} {} {status_kb} {cache_kb}",
        all - config - status_kb - cache_kb
    );
    drop((swap, source));
}

/// What the RSS child reports (MB).
struct StateMemory {
    rss: f64,
    heap: f64,
    config: f64,
    snapshot: f64,
    status: f64,
    cache: f64,
}

fn rss_of_child(dir: &Path) -> Option<StateMemory> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .arg("--rss-child")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .collect();
    (v.len() == 6).then(|| StateMemory {
        rss: v[0],
        heap: v[1],
        config: v[2],
        snapshot: v[3],
        status: v[4],
        cache: v[5],
    })
}

struct AgentFigures {
    ready_ms: f64,
    change_p50_ms: f64,
    change_max_ms: f64,
    rss_mb: f64,
    anon_mb: f64,
    file_mb: f64,
}

/// Kills the agent (by its pid, through the `Child`) when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        // The agent holds nothing that needs a clean stop in userspace mode.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the real agent on the directory: start-up, file changes, RSS.
fn run_agent(bin: &Path, dir: &Path, n: usize, port: u16) -> Result<AgentFigures, String> {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let started = Instant::now();
    let mut agent = Agent(
        Command::new(bin)
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
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?,
    );
    let deadline = started + Duration::from_secs(300);
    loop {
        if let Ok(Some(status)) = agent.0.try_wait() {
            return Err(format!("agent exited: {status}"));
        }
        if http_status(admin, "bench", "/readyz") == Some(200) {
            break;
        }
        if Instant::now() > deadline {
            return Err("not ready after 300 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready_ms = ms(started.elapsed());
    let gateway: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut changes = Vec::new();
    if n > 0 {
        // Let start-up settle (the watcher's first events, page cache).
        std::thread::sleep(Duration::from_millis(300));
        for run in 1..=AGENT_CHANGES {
            let (path, text, new_path) = changed_file(dir, n, 1_000 + run);
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            // Before the change is in effect the new path is a 404.
            while let Some(404) | None = http_status(gateway, "r0.example.com", &new_path) {
                if t0.elapsed() > Duration::from_secs(30) {
                    return Err(format!("{new_path} not in effect after 30 s"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            changes.push(ms(t0.elapsed()));
            // Separate changes: each is its own reload.
            std::thread::sleep(Duration::from_millis(100));
        }
    } else {
        changes.push(f64::NAN);
    }
    // After the agent's coalesced heap trim (half a second after a change).
    std::thread::sleep(Duration::from_millis(1_000));
    let pid = agent.0.id().to_string();
    let (rss, _) = proc_status_kb(&pid);
    let field = |name| proc_field_kb(&pid, name) / 1024.0;
    let max = changes.iter().copied().fold(f64::NAN, f64::max);
    Ok(AgentFigures {
        ready_ms,
        change_p50_ms: median(&mut changes),
        change_max_ms: max,
        rss_mb: rss / 1024.0,
        anon_mb: field("RssAnon:"),
        file_mb: field("RssFile:") + field("RssShmem:"),
    })
}

fn http_status(addr: SocketAddr, host: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

fn proc_status_kb(pid: &str) -> (f64, f64) {
    (proc_field_kb(pid, "VmRSS:"), proc_field_kb(pid, "VmHWM:"))
}

/// A kB field of /proc/PID/status.
fn proc_field_kb(pid: &str, name: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
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
