//! `cargo xtask bench kube`: how long a route change written to the API
//! server takes to be in effect at the data path, with 100, 1,000 and 5,000
//! routes. The agent runs as a process with `--kubernetes` against kubelite
//! and the userspace datapath on 127.0.0.1; changes are `kubectl patch`es of
//! one route's path, and the clock starts when kubectl returns (the write is
//! stored) and stops at the first 200 for the new path. kubectl's own start-up
//! is therefore not counted; the watch event may even beat kubectl's exit, so
//! the numbers are a slight under-estimate of write → effect.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::kube::Kubelite;
use crate::plot::{Figure, LineSeries, Panel};

const SIZES: [usize; 3] = [100, 1_000, 5_000];
/// Changes per size; p99 of 50 is the second-slowest.
const SAMPLES: usize = 50;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn run(root: &Path, release: bool, plot: bool) -> Result<()> {
    let profile = if release { "release" } else { "debug" };
    let mut build = crate::cargo();
    build.args(["build", "-p", "sluice", "-p", "sluice-tests", "--bins"]);
    if release {
        build.arg("--release");
    }
    crate::run(&mut build)?;
    let bin = root.join("target").join(profile);
    let Some(kube) = Kubelite::up(root)? else {
        bail!("../shared/kubelite not found: the Kubernetes benchmark needs it");
    };
    let kubectl = |args: &[&str], stdin: Option<&str>| -> Result<()> {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &kube.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("kubectl")?;
        if let Some(s) = stdin {
            child.stdin.take().expect("piped").write_all(s.as_bytes())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let crds = root.join("../shared/gateway-api/crd/standard");
    kubectl(
        &[
            "apply",
            "--server-side",
            "-f",
            crds.to_str().unwrap_or_default(),
        ],
        None,
    )?;
    kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ],
        None,
    )?;

    let echo_port = free_port()?;
    let _echo = Killed(
        Command::new(bin.join("sluice-echo"))
            .args(["--listen", &format!("127.0.0.1:{echo_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("sluice-echo")?,
    );
    let gw_port = free_port()?;
    kubectl(
        &["apply", "--server-side", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: Namespace
metadata: {{name: sluice-system}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: apps}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: sluice
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners: [{{name: http, port: {gw_port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: apps}}
spec: {{ports: [{{port: 80, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: apps, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {echo_port}, protocol: TCP}}]
"#
        )),
    )?;
    let log = std::env::temp_dir().join(format!("sluice-bench-kube-{}.log", std::process::id()));
    let _agent = Killed(
        Command::new(bin.join("sluice"))
            .args([
                "--kubernetes",
                "--datapath",
                "userspace",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .args(["--node-name", "bench", "--pod-namespace", "sluice-system"])
            .env("KUBECONFIG", &kube.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("sluice")?,
    );

    let mut rows = Vec::new();
    let mut have = 0;
    for n in SIZES {
        let mut yaml = String::new();
        for i in have..n {
            yaml.push_str(&route(i, 0));
        }
        kubectl(&["apply", "--server-side", "-f", "-"], Some(&yaml))?;
        have = n;
        wait_for(
            gw_port,
            &format!("r{}.example.com", n - 1),
            "/v0",
            Duration::from_secs(300),
        )
        .with_context(|| format!("{n} routes never served (agent log: {})", log.display()))?;
        let mut samples = Vec::with_capacity(SAMPLES);
        for k in 1..=SAMPLES {
            let i = (k * 7919) % n;
            let path = format!("/n{n}-v{k}");
            let patch = format!(
                r#"[{{"op":"replace","path":"/spec/rules/0/matches/0/path/value","value":"{path}"}}]"#
            );
            kubectl(
                &[
                    "patch",
                    "-n",
                    "apps",
                    "httproute",
                    &format!("r{i}"),
                    "--type=json",
                    "-p",
                    &patch,
                ],
                None,
            )?;
            let t0 = Instant::now();
            wait_for(
                gw_port,
                &format!("r{i}.example.com"),
                &path,
                Duration::from_secs(30),
            )?;
            samples.push(t0.elapsed());
        }
        samples.sort();
        rows.push((
            n,
            samples[samples.len() / 2],
            samples[(samples.len() * 99).div_ceil(100) - 1],
            samples[samples.len() - 1],
        ));
    }

    println!("\nroute change via the Kubernetes API → in effect at the data path ({profile} build, {SAMPLES} changes per size)");
    println!("| routes | p50 | target | p99 | target | max | anchors (BRIEF) |");
    println!("|---:|---:|---|---:|---|---:|---|");
    for &(n, p50, p99, max) in &rows {
        let (t50, t99) = if n == 5_000 {
            ("≤ 50 ms", "≤ 200 ms")
        } else {
            ("–", "–")
        };
        println!(
            "| {n} | {:.1} ms | {t50} | {:.1} ms | {t99} | {:.1} ms | agentgateway 10–30 ms, Istio 120–300 ms, Envoy Gateway ~600 ms |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    println!(
        "\nThe clock starts when `kubectl patch` returns and stops at the first 200 for the new \
         path (polled every 0.5 ms). Includes the watch event, the agent's 20 ms quiet period \
         (KubeSettings::debounce) and the apply; the elected agent's status writes for each \
         change run meanwhile (coalesced, at most one round per 250 ms)."
    );
    if plot {
        let ms = |pick: fn(&(usize, Duration, Duration, Duration)) -> Duration| {
            rows.iter()
                .map(|r| (r.0 as f64, pick(r).as_secs_f64() * 1e3))
                .collect::<Vec<_>>()
        };
        let mut fig =
            Figure::new("bench kube: route change via the Kubernetes API against the route count");
        fig.notes.push(format!(
            "{profile} agent, kubelite API server, {SAMPLES} changes per size; from `kubectl patch` \
             returning to the first 200 on the new path"
        ));
        fig.panels.push(Panel::Lines {
            title: "HTTPRoute change → in effect at the data path".into(),
            x_label: "HTTPRoutes".into(),
            y_label: "milliseconds".into(),
            log_x: true,
            log_y: false,
            series: vec![
                LineSeries {
                    name: "p50".into(),
                    points: ms(|r| r.1),
                },
                LineSeries {
                    name: "p99".into(),
                    points: ms(|r| r.2),
                },
                LineSeries {
                    name: "max".into(),
                    points: ms(|r| r.3),
                },
            ],
        });
        fig.write(root, "kube")?;
    }
    Ok(())
}

fn route(i: usize, version: usize) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: apps}}\nspec:\n  \
         parentRefs: [{{name: gw}}]\n  hostnames: [r{i}.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /v{version}}}}}]\n    \
         backendRefs: [{{name: echo, port: 80}}]\n---\n"
    )
}

/// Polls until GET `path` for `host` answers 200.
fn wait_for(port: u16, host: &str, path: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if status(port, host, path) == Some(200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    bail!("{host}{path} not served within {timeout:?}")
}

fn status(port: u16, host: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
