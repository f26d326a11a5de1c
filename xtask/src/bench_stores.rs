//! Part of `cargo xtask bench routes`: a one-route change → in effect at the
//! data path, at 5,000 routes, through each config source in the same run:
//! the directory, Consul KV and etcd (real servers on loopback, as the tests
//! run them). The agent is the release binary on the userspace datapath;
//! the change rewrites the key (file) holding route 0 with a new path
//! prefix, and the clock stops at the first request on that path that is
//! routed (not 404). Included: the store's notification (blocking query,
//! watch), the source's debounce, parsing the changed key, the compile,
//! the swap.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

const ROUTES: usize = 5_000;
const ROUTES_PER_FILE: usize = 500;
const RUNS: usize = 30;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn get(port: u16, path: &str, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Ends a child by pid when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Proc> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    Ok(Proc(
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?,
    ))
}

/// The config: base.yaml (Gateway, 50 Services) and 500-route files.
fn generate(dir: &Path, port: u16) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut base = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: sluice}}\n\
         spec: {{controllerName: sluice.dev/gateway-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\n\
         spec:\n  gatewayClassName: sluice\n  addresses: [{{value: 127.0.0.1}}]\n  listeners:\n  \
         - {{name: http, port: {port}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}\n"
    );
    for s in 0..50 {
        base.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: apps}}\n\
             spec: {{ports: [{{name: http, port: 8080}}]}}\n---\napiVersion: discovery.k8s.io/v1\n\
             kind: EndpointSlice\nmetadata: {{name: svc-{s}-1, namespace: apps, labels: {{kubernetes.io/service-name: svc-{s}}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\nports: [{{name: http, port: {}}}]\n",
            30_000 + s
        ));
    }
    std::fs::write(dir.join("base.yaml"), base)?;
    for file in 0..ROUTES.div_ceil(ROUTES_PER_FILE) {
        std::fs::write(
            dir.join(format!("routes-{file:03}.yaml")),
            routes_file(file, None),
        )?;
    }
    Ok(())
}

/// Routes file `file`; route 0 (in file 0) with `prefix` when given.
fn routes_file(file: usize, prefix: Option<&str>) -> String {
    let mut text = String::new();
    for i in file * ROUTES_PER_FILE..((file + 1) * ROUTES_PER_FILE).min(ROUTES) {
        let default = format!("/api/v1/items-{i}");
        let path = match prefix {
            Some(p) if i == 0 => p,
            _ => &default,
        };
        text.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: route-{i}, namespace: apps}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  \
             hostnames: [r{i}.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    \
             backendRefs: [{{name: svc-{}, port: 8080}}]\n",
            i % 50
        ));
    }
    text
}

/// Change → in effect through one source, ms.
pub struct Figures {
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

fn figures(mut ms: Vec<f64>) -> Figures {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    Figures {
        p50: at(0.5),
        p90: at(0.9),
        max: *ms.last().unwrap(),
    }
}

/// Applies `write(run)` and times until route 0 answers on its new prefix.
fn measure(port: u16, mut write: impl FnMut(&str) -> Result<()>) -> Result<Figures> {
    let mut ms = Vec::new();
    for run in 0..RUNS {
        let prefix = format!("/changed-{run}-{}", std::process::id());
        let start = Instant::now();
        write(&prefix)?;
        loop {
            if get(port, &prefix, "r0.example.com").is_some_and(|s| s != 404) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("change {run} not in effect after 30 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        // Let the source settle (a store's next blocking read is out again).
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok(figures(ms))
}

fn wait_ready(admin: u16, agent: &mut Proc, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(admin, "/readyz", "admin") != Some(200) {
        if let Ok(Some(st)) = agent.0.try_wait() {
            bail!(
                "agent exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "agent not ready: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn agent(bin: &Path, source: &str, admin: u16, work: &Path, name: &str) -> Result<Proc> {
    let log = work.join(format!("agent-{name}.log"));
    let mut a = spawn(
        Command::new(bin)
            .args(["--config-source", source, "--datapath", "userspace"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .env("RUST_LOG", "warn"),
        &log,
    )?;
    wait_ready(admin, &mut a, &log)?;
    Ok(a)
}

fn push(bin: &Path, dir: &Path, url: &str) -> Result<()> {
    let out = Command::new(bin).arg("push").arg(dir).arg(url).output()?;
    if !out.status.success() {
        bail!("sluice push: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs the three sources; prints one table and returns its rows.
pub fn run(bin: &Path, consul: Option<PathBuf>) -> Result<Vec<(&'static str, Figures)>> {
    let work = std::env::temp_dir().join(format!("sluice-bench-stores-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let dir = work.join("config");
    let port = free_port();
    generate(&dir, port)?;
    let route0 = dir.join("routes-000.yaml");
    let mut rows = Vec::new();

    // Directory.
    {
        let admin = free_port();
        let _a = agent(
            bin,
            &format!("file://{}", dir.display()),
            admin,
            &work,
            "dir",
        )?;
        rows.push((
            "directory (inotify)",
            measure(port, |p| {
                Ok(std::fs::write(&route0, routes_file(0, Some(p)))?)
            })?,
        ));
    }
    std::fs::write(&route0, routes_file(0, None))?;

    // etcd.
    {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let _etcd = spawn(
            Command::new("etcd")
                .args(["--name", "bench", "--data-dir"])
                .arg(work.join("etcd"))
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args([
                    "--initial-cluster",
                    &format!("bench=http://127.0.0.1:{peer}"),
                ])
                .args(["--log-level", "warn", "--quota-backend-bytes", "4294967296"]),
            &work.join("etcd.log"),
        )?;
        let source = format!("etcd://127.0.0.1:{client}/sluice");
        let deadline = Instant::now() + Duration::from_secs(20);
        while push(bin, &dir, &source).is_err() {
            if Instant::now() > deadline {
                bail!("etcd did not start");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let admin = free_port();
        let _a = agent(bin, &source, admin, &work, "etcd")?;
        rows.push((
            "etcd (watch)",
            measure(port, |p| {
                put_etcd(client, "/sluice/routes-000.yaml", &routes_file(0, Some(p)))
            })?,
        ));
    }

    // Consul.
    match consul {
        Some(consul) => {
            let http = free_port();
            let _c = spawn(
                Command::new(consul)
                    .args([
                        "agent",
                        "-dev",
                        "-bind",
                        "127.0.0.1",
                        "-client",
                        "127.0.0.1",
                    ])
                    .args([
                        "-http-port",
                        &http.to_string(),
                        "-dns-port",
                        "-1",
                        "-grpc-port",
                        "-1",
                    ])
                    .args(["-serf-lan-port", &free_port().to_string()])
                    .args(["-serf-wan-port", &free_port().to_string()])
                    .args(["-server-port", &free_port().to_string()]),
                &work.join("consul.log"),
            )?;
            let source = format!("consul://127.0.0.1:{http}/sluice");
            let deadline = Instant::now() + Duration::from_secs(30);
            while push(bin, &dir, &source).is_err() {
                if Instant::now() > deadline {
                    bail!("consul did not start");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let admin = free_port();
            let _a = agent(bin, &source, admin, &work, "consul")?;
            rows.push((
                "Consul KV (blocking query)",
                measure(port, |p| {
                    put_consul(http, "sluice/routes-000.yaml", &routes_file(0, Some(p)))
                })?,
            ));
        }
        None => {
            eprintln!("\n!!! Consul 1.8.7 not installed (cargo xtask setup): its row is missing\n")
        }
    }

    println!();
    println!("Config sources: one-route change → in effect at the data path, {ROUTES} routes ({RUNS} changes each, release agent, userspace datapath)");
    println!();
    println!("| source | p50 ms | p90 ms | max ms |");
    println!("|---|---|---|---|");
    for (name, f) in &rows {
        println!("| {name} | {:.1} | {:.1} | {:.1} |", f.p50, f.p90, f.max);
    }
    println!();
    println!(
        "Each change rewrites the key (file) holding 500 routes, route 0 with a new prefix; timed from \
         the write until a request on the new prefix is routed. Includes the store's notification, \
         the agent's 5 ms quiet period (sluice::reload::DEBOUNCE), parsing the changed \
         document of the key, compiling the changed route and the swap."
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}

fn put_http(port: u16, req: String) -> Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        bail!("store write failed: {text}");
    }
    Ok(())
}

fn put_consul(port: u16, key: &str, value: &str) -> Result<()> {
    put_http(
        port,
        format!(
            "PUT /v1/kv/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{value}",
            value.len()
        ),
    )
}

fn put_etcd(port: u16, key: &str, value: &str) -> Result<()> {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    let encode = |b: &[u8]| STANDARD.encode(b);
    let body = format!(
        r#"{{"key":"{}","value":"{}"}}"#,
        encode(key.as_bytes()),
        encode(value.as_bytes())
    );
    put_http(
        port,
        format!(
            "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}
