//! `cargo xtask fuzz`: the coverage-guided fuzz targets of `agent/fuzz`
//! (`cargo fuzz`, libFuzzer, nightly), each run for a bounded time from its
//! committed seed corpus. What a run adds to the corpus goes to
//! `agent/fuzz/corpus-gen/<target>/` (ignored by git), crashes to
//! `agent/fuzz/artifacts/<target>/`.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

/// Every target, in the order they run (`agent/fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: &[&str] = &[
    "config",
    "route_match",
    "request_head",
    "jwt",
    "jwks",
    "api_key",
    "client_hello",
    "traceparent",
    "path",
];

/// The cargo-fuzz release the targets are built with. It is a cargo
/// subcommand, not a library, so no lock file pins it: installed here
/// (`cargo install --locked`) at this version, once.
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// libFuzzer's limit for one input: an input slower than this is reported
/// as a failure (a hang), like a crash.
const INPUT_TIMEOUT_SECS: u64 = 10;

/// What to run.
pub struct Options {
    /// One target; `None`: all of them.
    pub target: Option<String>,
    /// How long each target runs.
    pub seconds: u64,
    /// The quick build `cargo xtask test` uses: unoptimised, no sanitizer
    /// (the code under test is safe Rust; a panic is the finding). It
    /// builds in a fraction of the time of the default optimised ASan build.
    pub quick: bool,
}

/// The `cargo fuzz build`/`run` flags of a build kind.
fn build_flags(quick: bool) -> &'static [&'static str] {
    if quick {
        &["--dev", "-s", "none"]
    } else {
        &[]
    }
}

/// What one target's run did, from libFuzzer's final statistics.
struct Outcome {
    target: &'static str,
    executions: u64,
    execs_per_sec: u64,
    corpus: u64,
    /// Coverage points gained beyond what the seeds reach.
    new_coverage: i64,
    /// `None`: no crash; else the artifact libFuzzer wrote.
    crash: Option<String>,
    log: PathBuf,
}

/// Installs cargo-fuzz if needed, builds every target once, then runs the
/// chosen ones; fails naming the crash artifact and how to reproduce it.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    prepare(root, opts.quick)?;
    run_targets(root, opts)
}

/// Runs the chosen targets, built by [`prepare`], and prints what each did.
pub fn run_targets(root: &Path, opts: &Options) -> Result<()> {
    let targets: Vec<&'static str> = match &opts.target {
        Some(t) => vec![*TARGETS
            .iter()
            .find(|n| **n == t.as_str())
            .with_context(|| format!("no fuzz target {t:?}; targets: {}", TARGETS.join(", ")))?],
        None => TARGETS.to_vec(),
    };
    let started = Instant::now();
    let fuzz_dir = root.join("agent/fuzz");
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(&fuzz_dir, target, opts.seconds, opts.quick)?);
    }
    print_table(&outcomes);
    eprintln!("fuzz: runs took {:.0?}", started.elapsed());
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if crashed.is_empty() {
        return Ok(());
    }
    for o in &crashed {
        let artifact = o.crash.as_deref().unwrap_or_default();
        eprintln!(
            "\nfuzz target {} FAILED (log: {})\n  crash input: {artifact}\n  reproduce:   \
             cargo +nightly fuzz run --fuzz-dir agent/fuzz {} {artifact}",
            o.target,
            o.log.display(),
            o.target
        );
    }
    bail!(
        "{} fuzz target(s) found a crash: {}",
        crashed.len(),
        crashed
            .iter()
            .map(|o| o.target)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// cargo-fuzz at [`CARGO_FUZZ_VERSION`] (installed when missing or at
/// another version), then one build of every target.
pub fn prepare(root: &Path, quick: bool) -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() != Some(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}")) {
        eprintln!(
            "fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (found {}): the fuzz targets \
             are built and run with it",
            installed.as_deref().unwrap_or("none")
        );
        super::run(Command::new("cargo").args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))
        .context("installing cargo-fuzz")?;
    }
    let started = Instant::now();
    super::run(
        nightly_cargo_fuzz(&root.join("agent/fuzz"))
            .arg("build")
            .args(build_flags(quick))
            .args(["--fuzz-dir", "."]),
    )
    .context("building the fuzz targets")?;
    eprintln!("fuzz: build took {:.0?}", started.elapsed());
    Ok(())
}

/// `cargo fuzz` with the nightly toolchain (sanitizers and libFuzzer's
/// instrumentation need it), run in `agent/fuzz`. The eBPF object the
/// agent's build script makes is unaffected by the sanitizer flags:
/// cargo-fuzz gives them as `RUSTFLAGS` with an explicit `--target`, so
/// build scripts do not get them, and aya-build sets the eBPF build's own
/// `CARGO_ENCODED_RUSTFLAGS`, which wins over `RUSTFLAGS`.
fn nightly_cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"])
        .current_dir(fuzz_dir);
    // What the stable `cargo run` of xtask set: the toolchain, and xtask's
    // own package variables. Build scripts (ring's, through cc) ask to be
    // rerun when CARGO_PKG_* or CARGO_MANIFEST_* change, so leaving them
    // would rebuild half the dependency tree on every switch between
    // `cargo xtask fuzz` and a plain `cargo fuzz`.
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if ["RUSTUP_TOOLCHAIN", "CARGO", "RUSTC", "RUSTDOC", "OUT_DIR"].contains(&&*name)
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        {
            cmd.env_remove(&var);
        }
    }
    cmd
}

fn run_target(fuzz_dir: &Path, target: &'static str, seconds: u64, quick: bool) -> Result<Outcome> {
    // New inputs go to the first directory: the ignored one, not the seeds.
    let grown = fuzz_dir.join("corpus-gen").join(target);
    let seeds = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    for dir in [&grown, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = fuzz_dir.join("artifacts").join(format!("{target}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = nightly_cargo_fuzz(fuzz_dir);
    cmd.arg("run")
        .args(build_flags(quick))
        .args(["--fuzz-dir", ".", target])
        .arg(&grown)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    eprintln!("fuzz: {target} for {seconds} s (log: {})", log.display());
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running fuzz target {target}"))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut outcome = parse_stats(target, &text, log);
    if !status.success() && outcome.crash.is_none() {
        // Failed without writing an input (a build or start-up failure).
        outcome.crash = Some(format!("(none written; exit {status})"));
    }
    Ok(outcome)
}

/// Reads libFuzzer's output: `stat::` lines, the coverage at start
/// (`INITED cov: N`) and at the end, and `Test unit written to PATH`.
fn parse_stats(target: &'static str, log: &str, path: PathBuf) -> Outcome {
    let stat = |name: &str| -> u64 {
        log.lines()
            .filter_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    // A status line: `#1234\tNEW    cov: 567 ft: 890 corp: 12/3456b ...`.
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        let value = rest.split_whitespace().next()?;
        value.split('/').next()?.parse().ok()
    };
    let inited = log
        .lines()
        .find(|l| l.contains("INITED"))
        .and_then(|l| field(l, "cov: "));
    let last = log.lines().rev().find(|l| l.contains("cov: "));
    let final_cov = last.and_then(|l| field(l, "cov: "));
    let corpus = last.and_then(|l| field(l, "corp: ")).unwrap_or(0);
    let crash = log
        .lines()
        .find_map(|l| l.split("Test unit written to ").nth(1))
        .map(|p| p.trim().to_owned());
    Outcome {
        target,
        executions: stat("number_of_executed_units"),
        execs_per_sec: stat("average_exec_per_sec"),
        corpus,
        new_coverage: match (inited, final_cov) {
            (Some(a), Some(b)) => b as i64 - a as i64,
            _ => 0,
        },
        crash,
        log: path,
    }
}

fn print_table(outcomes: &[Outcome]) {
    println!(
        "\n{:<14} {:>12} {:>9} {:>8} {:>8}  result",
        "target", "executions", "execs/s", "corpus", "new cov"
    );
    for o in outcomes {
        println!(
            "{:<14} {:>12} {:>9} {:>8} {:>8}  {}",
            o.target,
            o.executions,
            o.execs_per_sec,
            o.corpus,
            o.new_coverage,
            if o.crash.is_some() { "CRASH" } else { "ok" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics_and_the_crash_artifact() {
        let log = "\
INFO: seed corpus: files: 5 min: 11b max: 529b total: 2003b rss: 40Mb
#6\tINITED cov: 1200 ft: 1500 corp: 5/2003b exec/s: 0 rss: 45Mb
#100\tNEW    cov: 1234 ft: 1600 corp: 7/2100b lim: 4 exec/s: 50 rss: 46Mb
==1== ERROR: libFuzzer: deadly signal
artifact_prefix='a/'; Test unit written to a/crash-0123abcd
stat::number_of_executed_units: 4321
stat::average_exec_per_sec:     72
";
        let o = parse_stats("jwt", log, PathBuf::from("x.log"));
        assert_eq!(o.executions, 4321);
        assert_eq!(o.execs_per_sec, 72);
        assert_eq!(o.corpus, 7);
        assert_eq!(o.new_coverage, 34);
        assert_eq!(o.crash.as_deref(), Some("a/crash-0123abcd"));
        let clean = parse_stats("jwt", "#6\tINITED cov: 9 corp: 1/1b\n", PathBuf::new());
        assert!(clean.crash.is_none());
        assert_eq!((clean.corpus, clean.new_coverage), (1, 0));
    }
}
