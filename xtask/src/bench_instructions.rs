//! `cargo xtask bench instructions`: what a request costs the agent in
//! user-space instructions, counted by callgrind (valgrind). Wall-clock and
//! CPU-time figures on a shared VM move by ±20 % from run to run, more than
//! the few per cent a change to the request path makes; an instruction count
//! is the same on every run, so it shows such a change (though not what it
//! costs in cache misses or system calls, which `bench proxy` shows).
//!
//! Each variant runs the release agent under callgrind with one route to an
//! nginx backend: a warm-up, then the counters are zeroed, `--requests`
//! HTTP/1.1 requests are sent over 8 keep-alive connections (h2load), the
//! counters are dumped, and instructions per request are printed next to the
//! plain agent's: plain (no request ids), the default (request ids), and
//! with the access log on top. Installs valgrind, nginx and h2load if missing.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};

use crate::bench_proxy::{
    backend_config, http_status, http_status_of, start_backend, wait_until, which, Proc,
};

const BACKEND: u16 = 18700;
const AGENT: u16 = 18701;
const ADMIN: u16 = 18702;
const HOST: &str = "bench.example.com";

/// Options of the benchmark.
pub struct Options {
    /// Requests counted per variant.
    pub requests: u32,
    pub sluice_bin: Option<PathBuf>,
    /// h2c (8 connections, 16 streams each) instead of HTTP/1.1.
    pub h2c: bool,
    /// Copy the callgrind dumps here (for `callgrind_annotate`).
    pub keep: Option<PathBuf>,
}

/// One way of running the agent.
struct Variant {
    name: &'static str,
    args: Vec<String>,
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    crate::setup::ensure_tools(
        "bench instructions",
        &[
            ("valgrind", "valgrind", "counts the instructions"),
            (
                "callgrind_control",
                "valgrind",
                "zeroes and dumps the counters",
            ),
            ("nginx", "nginx", "the backend"),
            ("h2load", "nghttp2-client", "sends the requests"),
        ],
    )?;
    ensure!(opts.requests > 0, "--requests must be at least 1");
    let sluice = crate::bench_proxy::sluice_binary(root, opts.sluice_bin.as_deref())?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-instr-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, &sluice, opts);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path, sluice: &Path, opts: &Options) -> Result<()> {
    let backend = start_backend(dir, &backend_config(dir, BACKEND), None, || {
        http_status(BACKEND, "/") == Some(200)
    })?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("bench.yaml"), agent_config())?;
    let log = dir.join("access.log");
    let variants = [
        Variant {
            name: "plain",
            args: vec!["--request-id".into(), "off".into()],
        },
        // The agent's default: no access log, request ids on.
        Variant {
            name: "request ids",
            args: vec!["--request-id".into(), "generate".into()],
        },
        Variant {
            name: "access log + request ids",
            args: vec![
                "--access-log".into(),
                log.display().to_string(),
                "--request-id".into(),
                "generate".into(),
            ],
        },
    ];
    let mut rows = Vec::new();
    for v in &variants {
        let (per_request, dump) = count(dir, sluice, &config, v, opts)?;
        if let Some(keep) = &opts.keep {
            std::fs::create_dir_all(keep)?;
            let to = keep.join(dump.file_name().unwrap_or_default());
            std::fs::copy(&dump, &to)
                .with_context(|| format!("copying {} to {}", dump.display(), to.display()))?;
            eprintln!(
                "kept {} (callgrind_annotate --inclusive=yes it)",
                to.display()
            );
        }
        eprintln!("{}: {per_request:.0} instructions per request", v.name);
        rows.push((v.name, per_request));
    }
    println!(
        "\n## cargo xtask bench instructions: user-space instructions per request (callgrind), \
         {} {} requests per variant\n",
        opts.requests,
        if opts.h2c { "h2c" } else { "HTTP/1.1" }
    );
    println!("| variant | instructions / request | ÷ plain | ÷ the row above |");
    println!("|---|---:|---:|---:|");
    let plain = rows[0].1;
    let mut above = plain;
    for (name, n) in &rows {
        println!(
            "| {name} | {n:.0} | {:.2}× | {:.2}× |",
            n / plain,
            n / above
        );
        above = *n;
    }
    drop(backend);
    Ok(())
}

/// Instructions per request of one variant, and its callgrind dump.
fn count(
    dir: &Path,
    sluice: &Path,
    config: &Path,
    v: &Variant,
    opts: &Options,
) -> Result<(f64, PathBuf)> {
    let requests = opts.requests;
    let tag = v.name.split_whitespace().next().unwrap_or("v");
    let out = dir.join(format!("callgrind-{tag}"));
    let mut cmd = Command::new(which("valgrind"));
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}.%p", out.display()))
        .arg(sluice)
        .arg("--config-dir")
        .arg(config)
        .args(["--datapath", "userspace", "--worker-threads", "1"])
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{ADMIN}"))
        .args(&v.args);
    let mut agent = Proc::spawn(v.name, cmd, &dir.join(format!("agent-{tag}.log")))?;
    // Under valgrind the agent starts about fifty times slower.
    wait_until(v.name, &mut agent, Duration::from_secs(120), || {
        http_status_of(AGENT, HOST, "/bench/ready", Duration::from_secs(5)) == Some(200)
    })?;
    h2load(2_000, opts.h2c)?;
    let pid = agent.child.id();
    callgrind_control("-z", pid)?;
    h2load(requests, opts.h2c)?;
    callgrind_control("-d", pid)?;
    drop(agent);
    // The dump asked for is the first part file; the one at exit follows.
    let dump = PathBuf::from(format!("{}.{pid}.1", out.display()));
    let text = std::fs::read_to_string(&dump)
        .with_context(|| format!("reading the callgrind dump {}", dump.display()))?;
    let total = summary(&text).with_context(|| format!("no summary in {}", dump.display()))?;
    Ok((total as f64 / f64::from(requests), dump))
}

/// The instructions total of a callgrind dump.
fn summary(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn callgrind_control(flag: &str, pid: u32) -> Result<()> {
    let out = Command::new(which("callgrind_control"))
        .arg(flag)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control")?;
    ensure!(
        out.status.success(),
        "callgrind_control {flag} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `n` requests over 8 keep-alive HTTP/1.1 connections (or h2c ones with
/// 16 streams each); all must succeed.
fn h2load(n: u32, h2c: bool) -> Result<()> {
    let mut cmd = Command::new(which("h2load"));
    if h2c {
        cmd.args(["-m", "16"]);
    } else {
        cmd.arg("--h1");
    }
    let out = cmd
        .args(["-c", "8", "-n"])
        .arg(n.to_string())
        .arg("-H")
        .arg(format!(":authority: {HOST}"))
        .arg(format!("http://127.0.0.1:{AGENT}/bench/hello"))
        .output()
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<u32>().ok());
    if ok != Some(n) {
        bail!("h2load: not all {n} requests got 2xx:\n{text}");
    }
    Ok(())
}

fn agent_config() -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
         metadata: {{name: sluice}}\nspec: {{controllerName: sluice.dev/gateway-controller}}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: bench}}\n\
         spec:\n  gatewayClassName: sluice\n  addresses: [{{value: \"127.0.0.1\"}}]\n  \
         listeners: [{{name: http, port: {AGENT}, protocol: HTTP}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: bench}}\n\
         spec: {{ports: [{{port: 80, targetPort: {BACKEND}}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: backend-1, namespace: bench, labels: {{kubernetes.io/service-name: backend}}}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\nports: [{{port: {BACKEND}}}]\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: bench, namespace: bench}}\n\
         spec:\n  parentRefs: [{{name: edge}}]\n  hostnames: [{HOST}]\n  \
         rules: [{{matches: [{{path: {{type: PathPrefix, value: /bench}}}}], \
         backendRefs: [{{name: backend, port: 80}}]}}]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_summary_is_read() {
        let dump =
            "# callgrind format\nversion: 1\nevents: Ir\nsummary: 1213995952\n\nfn=(1) x\n0 8\n";
        assert_eq!(summary(dump), Some(1_213_995_952));
        assert_eq!(summary("totals: 42\n"), Some(42));
        assert_eq!(summary("events: Ir\n"), None);
    }
}
