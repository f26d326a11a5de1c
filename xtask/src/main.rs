//! Developer tasks: `cargo xtask setup | test | lint | run-ebpf | conformance | bench | plot | fuzz | gen-crd`.
mod bench_charts;
mod bench_instructions;
mod bench_isolation;
mod bench_kube;
mod bench_policy;
mod bench_proxy;
mod bench_sockmap;
mod bench_stores;
mod fuzz;
mod kube;
mod otlp_sink;
mod package;
mod plot;
mod setup;
mod soak;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Sluice developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent): llvm-22-dev,
    /// libzstd-dev, bpf-linker 0.13 (llvm-22), nightly rust-src, and the test
    /// tools (iproute2, curl, bpftool, ethtool).
    Setup,
    /// Set up, build, and run every test: unit, in-process and privileged
    /// (network namespaces + eBPF; needs root, required when CI=true).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Formatting and clippy (`-D warnings`) over the workspace.
    Lint,
    /// Benchmarks that print figures next to a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// The agent under steady load while routes churn, a backend dies and
    /// comes back, invalid configs arrive and the log is rotated; checks
    /// that it serves throughout and does not leak (see xtask/src/soak.rs).
    Soak {
        /// How long, in minutes (at least one full cycle of six events).
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Seconds per window (one event per window).
        #[arg(long, default_value_t = 10)]
        window: u64,
        /// Soak the release build.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run the agent with eBPF on the quickstart config,
    /// with a local echo backend. Ctrl-C stops and detaches everything.
    RunEbpf {
        /// Interface for xdp_ingress.
        #[arg(long, default_value = "lo")]
        interface: String,
        /// Config directory.
        #[arg(long, default_value = "examples/quickstart")]
        config_dir: PathBuf,
        /// Build and run in release mode.
        #[arg(long)]
        release: bool,
    },
    /// Build the agent and the runner, then replay the upstream Gateway API
    /// HTTP, gRPC, TLS and TCP conformance scenarios against the agent (see
    /// tests/conformance/README.md). Reports go to stdout and target/conformance/.
    Conformance {
        /// Only these tests (case file name or upstream ShortName, comma separated).
        #[arg(long)]
        run: Option<String>,
        /// Claimed features (comma separated), or `all` (default).
        #[arg(long)]
        features: Option<String>,
        /// Further arguments for sluice-conformance (see its --help).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the Debian package (cargo deb, release build) into target/debian/.
    Deb,
    /// Render a chart again from figures a bench saved with `--plot`
    /// (target/bench/<kind>.json), without re-running the bench; also takes
    /// the raw output of `sluice-bench-xdp --json` and of the routes bench
    /// (`SLUICE_BENCH_JSON`).
    Plot {
        /// The figures file.
        json: PathBuf,
        /// Where the SVG goes (default: next to the JSON, `.svg`).
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Coverage-guided fuzzing (cargo fuzz, nightly) of the parsers in
    /// agent/fuzz: every target (or one) for a bounded time from its
    /// committed seed corpus; fails with the crash input and how to replay it.
    Fuzz {
        /// Only this target (config, route_match, request_head, jwt, jwks,
        /// api_key, client_hello, traceparent, path).
        #[arg(long)]
        target: Option<String>,
        /// Seconds each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Unoptimised build without sanitizer (what `cargo xtask test`
        /// runs): builds much faster; finds panics, not memory errors.
        #[arg(long)]
        quick: bool,
    },
    /// Regenerate deploy/daemonset/crds/sluice.dev_sluicepolicies.yaml from
    /// the SluicePolicy Rust types (agent/src/config/policy/wire.rs).
    GenCrd,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    // Paths given on the command line are relative to where it was typed.
    let cwd = std::env::current_dir()?;
    std::env::set_current_dir(&root)?;
    match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::Lint => lint(),
        Cmd::Bench { what } => bench(what, &root),
        Cmd::Soak {
            minutes,
            window,
            release,
        } => soak::run(
            &root,
            &soak::Options {
                minutes,
                window_secs: window,
                release,
            },
        ),
        Cmd::Test { args } => test(&args),
        Cmd::RunEbpf {
            interface,
            config_dir,
            release,
        } => run_ebpf(&interface, &config_dir, release),
        Cmd::Conformance {
            run: tests,
            features,
            args,
        } => conformance(tests.as_deref(), features.as_deref(), &args),
        Cmd::GenCrd => gen_crd(&root),
        Cmd::Plot { json, out } => {
            let (json, out) = (cwd.join(json), out.map(|o| cwd.join(o)));
            match bench_charts::from_raw(&json)? {
                // Raw runs of sluice-bench-xdp / the routes bench: their
                // figures go next to the chart as well.
                Some(fig) => {
                    let out = out.unwrap_or_else(|| plot::raw_chart_path(&json));
                    ensure!(
                        out.with_extension("json") != json,
                        "{}: the chart's figures would overwrite the raw file; pick another -o",
                        out.display()
                    );
                    fig.write_to(&out)
                }
                None => plot::replot(&json, out.as_deref()).map(drop),
            }
        }
        Cmd::Fuzz {
            target,
            seconds,
            quick,
        } => fuzz::run(
            &root,
            &fuzz::Options {
                target,
                seconds,
                quick,
            },
        ),
        Cmd::Deb => {
            setup::run()?;
            package::build(&root, "release").map(drop)
        }
    }
}

/// The CRD comes from the agent's own types (kube's `CustomResourceExt`),
/// printed by an example of the agent crate: xtask itself must not depend
/// on the agent, whose build needs what `cargo xtask setup` installs.
fn gen_crd(root: &Path) -> Result<()> {
    setup::run()?;
    let mut cmd = cargo();
    cmd.args(["run", "-q", "-p", "sluice", "--example", "gen-crd"]);
    eprintln!("+ {cmd:?}");
    let out = cmd.output().context("running the gen-crd example")?;
    if !out.status.success() {
        bail!(
            "gen-crd failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = root.join("deploy/daemonset/crds/sluice.dev_sluicepolicies.yaml");
    let unchanged = std::fs::read(&path).is_ok_and(|old| old == out.stdout);
    std::fs::write(&path, &out.stdout).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "{} {}",
        if unchanged { "unchanged:" } else { "written:" },
        path.display()
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its name if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn is_root() -> bool {
    // SAFETY-free: `id -u` avoids a libc dependency for one call.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[derive(Subcommand)]
enum Bench {
    /// User-space instructions per request of the agent, plain and with its
    /// access log, counted by callgrind: the same on every run, unlike time
    /// on a shared machine. Installs valgrind, nginx, h2load if missing.
    Instructions {
        /// Requests counted per variant.
        #[arg(long, default_value_t = 20_000)]
        requests: u32,
        /// Use this sluice binary instead of building the release one.
        #[arg(long)]
        sluice_bin: Option<PathBuf>,
        /// h2c with 16 streams per connection instead of HTTP/1.1.
        #[arg(long)]
        h2c: bool,
        /// Keep the callgrind dumps in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Route change → in effect (file source), cold start, memory at 100 /
    /// 1,000 / 5,000 / 50,000 HTTPRoutes (release build), in process and
    /// through the real agent, next to the design targets; then a one-route
    /// change → in effect at 5,000 routes through the directory, etcd and
    /// Consul KV (real servers on loopback).
    Routes {
        /// Only the config-source part (directory, etcd, Consul).
        #[arg(long)]
        stores_only: bool,
        /// Write the figures to target/bench/routes.json and a chart of them
        /// to target/bench/routes.svg.
        #[arg(long)]
        plot: bool,
    },
    /// Route change through the Kubernetes API (kubelite) → in effect at the
    /// data path, p50/p99 at 100 / 1,000 / 5,000 routes.
    Kube {
        /// Build and run the agent in release mode.
        #[arg(long)]
        release: bool,
        /// Write the figures to target/bench/kube.json and a chart of them
        /// to target/bench/kube.svg.
        #[arg(long)]
        plot: bool,
    },
    /// CPU cost per dropped packet: xdp_ingress (native and generic) versus
    /// iptables and nftables drops of the same SYN flood, on veth (root):
    /// the receive path's exact thread time, perf cycles where available, the
    /// program's BPF run-time statistics; several runs with their spread.
    Xdp {
        /// Packets per run.
        #[arg(long, default_value_t = 1_000_000)]
        packets: u64,
        /// Runs per mode (interleaved; min/median/max printed).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Write the figures to target/bench/xdp.json and a chart of them
        /// to target/bench/xdp.svg.
        #[arg(long)]
        plot: bool,
    },
    /// Sluice next to nginx and HAProxy (one worker each on CPU 1, configured
    /// equivalently and checked to forward identically) and a direct baseline:
    /// req/s, p50/p90/p99/p99.9, proxy CPU per request and RSS over HTTP/1.1,
    /// h2c, HTTPS, h2 over TLS and TLS handshakes (loopback; see
    /// docs/benchmarks.md). Installs nginx, haproxy, wrk, h2load if missing.
    Proxy {
        /// Seconds per load-generator run.
        #[arg(long, default_value_t = 8)]
        seconds: u32,
        /// Rounds (every load against every target per round, the order of
        /// the targets rotated; the median round is reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Connections of the loaded scenarios (all but h1-single).
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// Concurrent streams per connection of the HTTP/2 loads.
        #[arg(long, default_value_t = 8)]
        streams: u32,
        /// Only these loads (comma separated; default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench_proxy::Load>,
        /// Also run every proxy with N more routes (distinct hostnames, e.g.
        /// 5000) besides the measured one, side by side with the one-route runs.
        #[arg(long, default_value_t = 0)]
        routes: u32,
        /// Use this sluice binary instead of building the release one.
        #[arg(long)]
        sluice_bin: Option<PathBuf>,
        /// The CPU every proxy is pinned to.
        #[arg(long, default_value_t = 1)]
        proxy_cpu: u32,
        /// The CPUs of the load generators (a thread per CPU) and the backend,
        /// as a list (`0`, `0,2-3`).
        #[arg(long, default_value = "0")]
        load_cpus: String,
        /// After the loads, open this many idle keep-alive connections to
        /// each proxy (one request each) and report memory per connection
        /// (e.g. 10000; 0 skips it).
        #[arg(long, default_value_t = 0)]
        idle_connections: u32,
        /// Also run Sluice with request ids (its default), and with a JSON
        /// access log on top, and print what each costs: ids against plain
        /// Sluice, the log against ids (two more targets in the same run).
        #[arg(long)]
        access_log: bool,
        /// Also run Sluice exporting OTLP spans (to a sink in the bench that
        /// answers 200) at sample ratio 1.0 and at the default 0.01, and
        /// print their cost against Sluice without (two more targets).
        #[arg(long)]
        tracing: bool,
        /// Write the figures to target/bench/proxy.json and a chart of them
        /// to target/bench/proxy.svg.
        #[arg(long)]
        plot: bool,
    },
    /// Per-request cost of each SluicePolicy section (JWT RS256/ES256 with
    /// repeat and fresh tokens, API key, Basic, external auth) next to the
    /// same route without policy, one run (release build).
    Policy {
        /// Seconds per run.
        #[arg(long, default_value_t = 8)]
        seconds: u32,
        /// Rounds (scenarios interleaved; the median round is reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Keep-alive connections of wrk.
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// Distinct tokens of the fresh-token scenarios.
        #[arg(long, default_value_t = 20_000)]
        fresh_tokens: usize,
        /// CPU of the agent.
        #[arg(long, default_value_t = 1)]
        proxy_cpu: u32,
        /// CPU of wrk and the backend.
        #[arg(long, default_value_t = 0)]
        load_cpu: u32,
        /// Use this agent binary instead of building the release one.
        #[arg(long)]
        sluice_bin: Option<PathBuf>,
        /// Write the figures to target/bench/policy.json and a chart of them
        /// to target/bench/policy.svg.
        #[arg(long)]
        plot: bool,
    },
    /// Noisy neighbour: one Gateway's latency and throughput at a fixed
    /// rate, alone and while another Gateway of the same proxy is flooded;
    /// Sluice with and without fair sharing, and nginx (two servers).
    Isolation {
        /// Seconds per phase (alone, flooded).
        #[arg(long, default_value_t = 8)]
        seconds: u32,
        /// Rounds (proxies interleaved; the median round is reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Tenant B's requests per second (open loop).
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Tenant B's keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: u32,
        /// wrk's closed-loop connections flooding tenant A.
        #[arg(long, default_value_t = 256)]
        flood_connections: u32,
        /// CPU of the proxies.
        #[arg(long, default_value_t = 1)]
        proxy_cpu: u32,
        /// CPU of the load generators and backends.
        #[arg(long, default_value_t = 0)]
        load_cpu: u32,
        /// Use this agent binary instead of building the release one.
        #[arg(long)]
        sluice_bin: Option<PathBuf>,
        /// Write a chart (target/bench/isolation.svg) next to the table.
        #[arg(long)]
        plot: bool,
    },
    /// HTTP latency (p50/p99) and throughput through the agent to a local
    /// echo backend with the sockmap fast path off and on, same run (root).
    Sockmap {
        /// Seconds per load-generator run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Rounds per mode (modes alternate; the median round is reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Connections of the loaded scenario.
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// Write the figures to target/bench/sockmap.json and a chart of them
        /// to target/bench/sockmap.svg.
        #[arg(long)]
        plot: bool,
    },
}

fn bench(what: Bench, root: &Path) -> Result<()> {
    setup::run()?;
    match what {
        Bench::Kube { release, plot } => bench_kube::run(root, release, plot),
        Bench::Isolation {
            seconds,
            rounds,
            rate,
            connections,
            flood_connections,
            proxy_cpu,
            load_cpu,
            sluice_bin,
            plot,
        } => bench_isolation::run(
            root,
            &bench_isolation::Options {
                seconds: seconds.clamp(1, 120),
                rounds: rounds.clamp(1, 10),
                rate: rate.clamp(1, 1_000_000),
                connections: connections.clamp(1, 1024),
                flood_connections: flood_connections.clamp(1, 10_000),
                proxy_cpu,
                load_cpu,
                sluice_bin,
                plot,
            },
        ),
        Bench::Policy {
            seconds,
            rounds,
            connections,
            fresh_tokens,
            proxy_cpu,
            load_cpu,
            sluice_bin,
            plot,
        } => bench_policy::run(
            root,
            &bench_policy::Options {
                seconds: seconds.clamp(1, 120),
                rounds: rounds.clamp(1, 10),
                connections: connections.clamp(1, 1024),
                fresh_tokens: fresh_tokens.clamp(100, 1_000_000),
                proxy_cpu,
                load_cpu,
                sluice_bin,
                plot,
            },
        ),
        Bench::Instructions {
            requests,
            sluice_bin,
            h2c,
            keep,
        } => bench_instructions::run(
            root,
            &bench_instructions::Options {
                requests,
                sluice_bin,
                h2c,
                keep,
            },
        ),
        Bench::Sockmap {
            seconds,
            rounds,
            connections,
            plot,
        } => bench_sockmap::run(
            root,
            &bench_sockmap::Options {
                seconds: seconds.clamp(1, 120),
                rounds: rounds.clamp(1, 10),
                connections: connections.clamp(1, 1024),
                plot,
            },
        ),
        Bench::Proxy {
            seconds,
            rounds,
            connections,
            streams,
            only,
            routes,
            sluice_bin,
            proxy_cpu,
            load_cpus,
            idle_connections,
            access_log,
            tracing,
            plot,
        } => bench_proxy::run(
            root,
            &bench_proxy::Options {
                seconds: seconds.clamp(1, 600),
                rounds: rounds.clamp(1, 21),
                connections: connections.clamp(1, 4096),
                streams: streams.clamp(1, 100),
                only,
                routes: routes.min(100_000),
                sluice_bin,
                proxy_cpu,
                load_cpus: bench_proxy::parse_cpu_list(&load_cpus)
                    .with_context(|| format!("--load-cpus {load_cpus:?}: not a CPU list"))?,
                idle_connections: idle_connections.min(100_000),
                access_log,
                tracing,
                plot,
            },
        ),
        Bench::Routes { stores_only, plot } => {
            let raw = workspace_root().join("target/bench/routes-raw.json");
            if plot {
                std::fs::create_dir_all(raw.parent().expect("a parent"))?;
                let _ = std::fs::remove_file(&raw);
            }
            if stores_only {
                run(cargo().args(["build", "--release", "-p", "sluice", "--bin", "sluice"]))?;
            } else {
                // The real agent too: `cargo bench` builds the package's
                // binary (with the same profile, into target/release) before
                // the bench runs, so one build serves both.
                run(cargo()
                    .args(["bench", "-p", "sluice", "--bench", "routes"])
                    .env("SLUICE_BIN", workspace_root().join("target/release/sluice"))
                    .envs(plot.then_some(("SLUICE_BENCH_JSON", &raw))))?;
            }
            // The same change through each config source, in the same run.
            let consul = Path::new(setup::CONSUL_DIR).join("usr/bin/consul");
            let stores = bench_stores::run(
                &workspace_root().join("target/release/sluice"),
                consul.exists().then_some(consul),
            )?;
            if plot {
                let raw = (!stores_only).then_some(raw.as_path());
                bench_charts::routes(raw, &stores)?.write(root, "routes")?;
            }
            Ok(())
        }
        Bench::Xdp {
            packets,
            runs,
            plot,
        } => {
            if !is_root() {
                bail!("bench xdp needs root: `sudo -E cargo xtask bench xdp`");
            }
            setup::ensure_tools(
                "bench xdp",
                &[
                    (
                        "iptables",
                        "iptables",
                        "the iptables baseline (raw PREROUTING drop)",
                    ),
                    ("nft", "nftables", "the nftables baseline"),
                    (
                        "perf",
                        "linux-perf",
                        "CPU 1's cycles where the machine has a PMU",
                    ),
                    (
                        "bpftool",
                        "bpftool",
                        "the XDP program's run-time statistics",
                    ),
                    ("ethtool", "ethtool", "GRO/TSO on the veth pair"),
                    ("taskset", "util-linux", "pins the NAPI thread to CPU 1"),
                ],
            )?;
            run(cargo().args([
                "build",
                "--release",
                "-p",
                "sluice",
                "-p",
                "sluice-tests",
                "--bins",
            ]))?;
            let target = workspace_root().join("target/release");
            let raw = workspace_root().join("target/bench/xdp-raw.json");
            let mut cmd = Command::new(target.join("sluice-bench-xdp"));
            cmd.arg("--packets")
                .arg(packets.to_string())
                .arg("--runs")
                .arg(runs.clamp(1, 20).to_string())
                .arg("--sluice")
                .arg(target.join("sluice"));
            if plot {
                std::fs::create_dir_all(raw.parent().expect("a parent"))?;
                cmd.arg("--json").arg(&raw);
            }
            run(&mut cmd)?;
            if plot {
                bench_charts::xdp(&raw)?.write(root, "xdp")?;
            }
            Ok(())
        }
    }
}

fn lint() -> Result<()> {
    setup::run()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// Seconds each fuzz target runs in `cargo xtask test`: 8 targets, so the
/// runs add about two minutes to the (incremental) build of the targets.
const FUZZ_SECONDS_IN_TEST: u64 = 15;

fn test(extra: &[String]) -> Result<()> {
    let start = Instant::now();
    setup::run()?;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !is_root() {
        if ci {
            bail!("CI=true but not running as root: the privileged eBPF/netns tests cannot run");
        }
        eprintln!(
            "\n!!! not root: privileged tests (network namespaces, eBPF) will be SKIPPED. \
             Run `sudo -E cargo xtask test` to run them.\n"
        );
    }
    // Binaries first: the end-to-end tests run the real `sluice` binary.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    let bin = workspace_root().join("target/debug/sluice");
    run(cargo()
        .args(["test", "--workspace"])
        .args(extra)
        .env("SLUICE_BIN", &bin))?;
    kube::validate_deploy(&workspace_root(), ci)?;
    package::test(&workspace_root(), ci)?;
    // Conformance regression check: every test in tests/conformance/passing.txt
    // must still pass (requests + status), every test in passing-requests.txt its
    // request cases (short timeouts keep it to minutes).
    run(
        Command::new(workspace_root().join("target/debug/sluice-conformance"))
            .args(["--check", "--max-time", "10", "--request-timeout", "5"])
            .args(["--status-timeout", "3"])
            .arg("--agent-bin")
            .arg(&bin),
    )?;
    // Every fuzz target for a bounded time from its committed corpus (the
    // build is most of this step's time; `cargo xtask fuzz` runs longer).
    eprintln!(
        "\n=== fuzz: {} targets x {FUZZ_SECONDS_IN_TEST} s (cargo xtask fuzz) ===",
        fuzz::TARGETS.len()
    );
    // The quick build (unoptimised, no sanitizer): a CI machine builds the
    // fuzz crate from scratch, which the optimised ASan build makes far
    // longer than the runs.
    match fuzz::prepare(&workspace_root(), true) {
        Ok(()) => fuzz::run_targets(
            &workspace_root(),
            &fuzz::Options {
                target: None,
                seconds: FUZZ_SECONDS_IN_TEST,
                quick: true,
            },
        )?,
        Err(e) if ci => return Err(e.context("CI=true: the fuzz targets must build")),
        Err(e) => eprintln!("\n!!! fuzz targets NOT RUN: {e:#}\n"),
    }
    if !Path::new(setup::CONSUL_DIR).join("usr/bin/consul").exists() {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! Consul 1.8.7 could not be installed: the REAL-SERVER Consul tests\n\
             !!! DID NOT RUN. Consul was covered by the RECORDED contract suite only\n\
             !!! (tests/tests/consul_recorded.rs replaying tests/recorded/consul-1.8.7.json).\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
    }
    eprintln!("xtask test: all tests passed in {:.0?}", start.elapsed());
    Ok(())
}

fn conformance(tests: Option<&str>, features: Option<&str>, extra: &[String]) -> Result<()> {
    run(cargo().args(["build", "-p", "sluice", "-p", "sluice-tests", "--bins"]))?;
    let target = workspace_root().join("target/debug");
    let mut cmd = Command::new(target.join("sluice-conformance"));
    cmd.arg("--agent-bin").arg(target.join("sluice"));
    if let Some(t) = tests {
        cmd.args(["--run", t]);
    }
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    run(cmd.args(extra))
}

/// Kills a child by pid when dropped (also on error paths).
struct Guard(Child, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SIGINT by pid: lets the agent detach its programs cleanly.
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("{} did not stop; killing it", self.1);
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn run_ebpf(interface: &str, config_dir: &Path, release: bool) -> Result<()> {
    setup::run()?;
    if !is_root() {
        bail!("run-ebpf loads eBPF programs and needs root: run `sudo -E cargo xtask run-ebpf`");
    }
    let profile = if release { "release" } else { "debug" };
    let mut build = cargo();
    build.args(["build", "-p", "sluice", "-p", "sluice-tests", "--bins"]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let target = workspace_root().join("target").join(profile);

    let echo = Command::new(target.join("sluice-echo"))
        .args([
            "--listen",
            "127.0.0.1:9080",
            "--pod",
            "quickstart-echo",
            "--namespace",
            "default",
        ])
        .spawn()
        .context("starting the echo backend")?;
    let _echo = Guard(echo, "sluice-echo");
    let agent = Command::new(target.join("sluice"))
        .arg("--config-dir")
        .arg(config_dir)
        .args(["--datapath", "ebpf", "--interface", interface])
        .spawn()
        .context("starting sluice")?;
    let mut agent = Guard(agent, "sluice");
    eprintln!(
        "\nsluice is running (eBPF on {interface}). Try:\n  curl -H 'Host: echo.example.com' http://127.0.0.1:8080/hello\n  curl http://127.0.0.1:9901/metrics\nCtrl-C to stop.\n"
    );
    // Ctrl-C reaches the whole foreground process group: the agent detaches
    // and exits; we then stop the backend.
    let status = agent.0.wait()?;
    if !status.success() {
        bail!("sluice exited with {status}");
    }
    Ok(())
}
