//! Gateway API conformance runner (GATEWAY-HTTP, GATEWAY-GRPC, GATEWAY-TLS, GATEWAY-TCP). Usually run through
//! `cargo xtask conformance`; see tests/conformance/README.md.
use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Parser, ValueEnum};
use sluice_tests::conformance::{
    network::{self, Network},
    report, runner,
};

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(rel)
}

/// Replays the upstream Gateway API HTTP, gRPC, TLS and TCP conformance scenarios against the
/// sluice agent (one agent per test, userspace datapath, echo backends on
/// loopback) and writes report.md and report.yaml.
#[derive(Parser)]
#[command(name = "sluice-conformance")]
struct Args {
    /// Only these tests (case file name without .yaml, or upstream ShortName);
    /// repeatable or comma separated.
    #[arg(long, value_delimiter = ',')]
    run: Vec<String>,
    /// Claimed features (comma separated, upstream names), or `all`. Tests
    /// needing an unclaimed feature are skipped.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    features: Vec<String>,
    /// Transcribed cases.
    #[arg(long)]
    cases_dir: Option<PathBuf>,
    /// Upstream `conformance/` directory (base/manifests.yaml, tests/*.yaml).
    #[arg(
        long,
        env = "SLUICE_GATEWAY_API_CONFORMANCE",
        default_value = "/work/shared/gateway-api/conformance"
    )]
    upstream_dir: PathBuf,
    /// The agent binary.
    #[arg(long, env = "SLUICE_BIN")]
    agent_bin: Option<PathBuf>,
    /// Where to run: `private` enters a network namespace of its own (needs
    /// root) so that listeners keep the manifests' ports, as upstream expects;
    /// `host` moves them up by --port-offset on the host's loopback; `auto`
    /// tries `private` and falls back to `host` loudly (fails with CI=true).
    #[arg(long, value_enum, default_value_t = NetworkArg::Auto)]
    network: NetworkArg,
    /// Added to every listener port of the manifests (default: 0 in a private
    /// network namespace, 20000 on the host network).
    #[arg(long)]
    port_offset: Option<u16>,
    /// Seconds a case may take to give the expected answer 3 times in a row
    /// (upstream MaxTimeToConsistency is 30).
    #[arg(long, default_value_t = 10)]
    max_time: u64,
    /// Seconds per request.
    #[arg(long, default_value_t = 10)]
    request_timeout: u64,
    /// Seconds status assertions are polled against the agent's /status
    /// (upstream: 60 for routes, 180 for Gateways; the agent computes status
    /// when it loads a config, before it reports ready).
    #[arg(long, default_value_t = 5)]
    status_timeout: u64,
    /// Report directory.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Check mode: exit 1 when a test listed in the passing file no longer
    /// passes (request cases and status assertions), or one listed in the
    /// passing-requests file no longer passes its request cases.
    #[arg(long)]
    check: bool,
    /// Tests that fully pass (default tests/conformance/passing.txt).
    #[arg(long)]
    passing_file: Option<PathBuf>,
    /// Tests whose request cases all pass (default
    /// tests/conformance/passing-requests.txt).
    #[arg(long)]
    passing_requests_file: Option<PathBuf>,
    /// Add newly passing tests to both passing files (never removes any).
    #[arg(long)]
    update_passing: bool,
    /// Diagnostic, non-conformant: leave this Gateway (namespace/name) out of
    /// the manifests (repeatable). The report says so; check mode refuses it.
    #[arg(long)]
    skip_gateway: Vec<String>,
    /// Keep per-test config and agent logs (under $TMPDIR/sluice-conformance-<pid>).
    #[arg(long)]
    keep_temp: bool,
    /// Log every case.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum NetworkArg {
    Auto,
    Private,
    Host,
}

/// Enters the private network namespace if asked (before any thread exists:
/// the tokio runtime is built afterwards, so its threads and every agent
/// started later inherit the namespace).
fn choose_network(arg: NetworkArg) -> Result<Network> {
    match arg {
        NetworkArg::Host => Ok(Network::Host),
        NetworkArg::Private => {
            network::enter_private_namespace().map_err(|e| {
                anyhow::anyhow!("cannot enter a private network namespace (run as root): {e}")
            })?;
            Ok(Network::Private)
        }
        NetworkArg::Auto => match network::enter_private_namespace() {
            Ok(()) => Ok(Network::Private),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => Err(anyhow::anyhow!(
                "cannot enter a private network namespace in CI: {e}"
            )),
            Err(e) => {
                eprintln!(
                    "\n!!! cannot enter a private network namespace ({e}): running on the host \
                     network with listener ports moved up, so tests whose expectations name \
                     ports (redirects) fail. Run as root for the conformant setup.\n"
                );
                Ok(Network::Host)
            }
        },
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let network = choose_network(a.network)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(a, network))
}

async fn run(a: Args, network: Network) -> Result<()> {
    let guard = a.check || a.update_passing;
    anyhow::ensure!(
        !guard || a.skip_gateway.is_empty(),
        "--check/--update-passing cannot be combined with the diagnostic --skip-gateway"
    );
    let features = if a.features.iter().any(|f| f == "all") {
        None
    } else {
        Some(a.features.iter().cloned().collect::<BTreeSet<_>>())
    };
    let opts = runner::Options {
        cases_dir: a
            .cases_dir
            .unwrap_or_else(|| repo("tests/conformance/cases")),
        upstream_dir: a.upstream_dir,
        agent_bin: a.agent_bin.unwrap_or_else(|| repo("target/debug/sluice")),
        port_offset: a
            .port_offset
            .unwrap_or_else(|| network.default_port_offset()),
        network,
        max_time_to_consistency: Duration::from_secs(a.max_time),
        request_timeout: Duration::from_secs(a.request_timeout),
        status_timeout: Duration::from_secs(a.status_timeout),
        agent_start_timeout: Duration::from_secs(10),
        run: a.run,
        features,
        skip_gateways: a.skip_gateway,
        keep_temp: a.keep_temp,
        verbose: a.verbose,
    };
    anyhow::ensure!(
        opts.agent_bin.exists(),
        "agent binary {} not found: build it with `cargo build -p sluice`",
        opts.agent_bin.display()
    );
    let rep = runner::run(opts).await?;
    let out_dir = a.out_dir.unwrap_or_else(|| repo("target/conformance"));
    rep.write(&out_dir)?;
    println!("{}", rep.markdown());
    eprintln!(
        "\n{}\nreports: {}, {}",
        rep.summary(),
        out_dir.join("report.md").display(),
        out_dir.join("report.yaml").display()
    );
    if guard {
        let lists = [
            (
                report::PassLevel::Full,
                a.passing_file
                    .clone()
                    .unwrap_or_else(|| repo("tests/conformance/passing.txt")),
            ),
            (
                report::PassLevel::Requests,
                a.passing_requests_file
                    .clone()
                    .unwrap_or_else(|| repo("tests/conformance/passing-requests.txt")),
            ),
        ];
        let mut failed = false;
        for (level, file) in lists {
            let listed = report::read_passing(&file)?;
            let (regressions, new) = report::compare_passing(&rep, &listed, level);
            if !new.is_empty() {
                if a.update_passing {
                    report::grow_passing(&file, &new)?;
                    eprintln!("added to {}: {}", file.display(), new.join(", "));
                } else {
                    eprintln!(
                        "newly passing (add them to {} or rerun with --update-passing): {}",
                        file.display(),
                        new.join(", ")
                    );
                }
            }
            if a.check {
                if regressions.is_empty() {
                    eprintln!(
                        "conformance check: all {} tests listed in {} still pass",
                        listed.len(),
                        file.display()
                    );
                } else {
                    eprintln!("\nconformance regressions (listed in {}):", file.display());
                    for r in &regressions {
                        eprintln!("  - {r}");
                    }
                    failed = true;
                }
            }
        }
        if failed {
            std::process::exit(1);
        }
    }
    Ok(())
}
