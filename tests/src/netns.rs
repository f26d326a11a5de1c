//! Network-namespace topologies for privileged tests:
//!
//! ```text
//!   client netns                     node netns (agent + backends)
//!   cveth 10.77.0.1, .3 (alt)  <-->  nveth 10.77.0.2
//!         fd77::1, fd77::3            fd77::2
//! ```
//!
//! Names are unique per process and call, so tests run in parallel. Dropping
//! the [`Topology`] deletes both namespaces (and with them the veth pair).
use std::{
    net::IpAddr,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether privileged tests can run. Outside CI a missing privilege skips
/// the test with a loud message; with `CI=true` it fails the test.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let problem = if !root {
        Some("not running as root".to_owned())
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("`ip` (iproute2) not found".to_owned())
    } else {
        None
    };
    match problem {
        None => true,
        Some(p) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: privileged test cannot run in CI: {p}")
        }
        Some(p) => {
            eprintln!(
                "\n!!! SKIPPED {test}: {p}. Run as root (cargo xtask test does) to exercise it.\n"
            );
            false
        }
    }
}

/// Runs a command and fails the test with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sluice-{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A handle on a namespace someone else owns (not deleted on drop).
    pub fn existing(name: &str) -> std::mem::ManuallyDrop<Self> {
        std::mem::ManuallyDrop::new(Self {
            name: name.to_owned(),
        })
    }

    /// `ip netns exec <ns> <program> ...`
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `ip -n <ns> ...`, checked.
    pub fn ip(&self, args: &[&str]) -> Output {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Inode of the namespace (how bpftool identifies it).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .map(|m| m.ino())
            .unwrap_or(0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Client and node namespaces joined by a veth pair.
pub struct Topology {
    pub client: Netns,
    pub node: Netns,
    pub client_if: String,
    pub node_if: String,
}

impl Topology {
    pub const CLIENT_V4: &'static str = "10.77.0.1";
    pub const CLIENT_V4_ALT: &'static str = "10.77.0.3";
    pub const NODE_V4: &'static str = "10.77.0.2";
    pub const CLIENT_V6: &'static str = "fd77::1";
    pub const CLIENT_V6_ALT: &'static str = "fd77::3";
    pub const NODE_V6: &'static str = "fd77::2";

    pub fn new() -> Self {
        let client = Netns::new("c");
        let node = Netns::new("n");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let client_if = format!("slc{n}");
        let node_if = format!("sln{n}");
        run(Command::new("ip").args([
            "link",
            "add",
            &client_if,
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            &node_if,
            "netns",
            &node.name,
        ]));
        for (ns, ifname, addrs) in [
            (
                &client,
                &client_if,
                [
                    format!("{}/24", Self::CLIENT_V4),
                    format!("{}/24", Self::CLIENT_V4_ALT),
                    format!("{}/64", Self::CLIENT_V6),
                    format!("{}/64", Self::CLIENT_V6_ALT),
                ],
            ),
            (
                &node,
                &node_if,
                [
                    format!("{}/24", Self::NODE_V4),
                    String::new(),
                    format!("{}/64", Self::NODE_V6),
                    String::new(),
                ],
            ),
        ] {
            for a in addrs.iter().filter(|a| !a.is_empty()) {
                let mut args = vec!["addr", "add", a.as_str(), "dev", ifname.as_str()];
                if a.contains(':') {
                    args.push("nodad");
                }
                ns.ip(&args);
            }
            ns.ip(&["link", "set", ifname, "up"]);
        }
        // Checksums left to a device that never computes them confuse native
        // XDP on veth; compute them in software like a real NIC would deliver.
        let _ = client
            .command("ethtool")
            .args(["-K", &client_if, "tx", "off"])
            .output();
        Self {
            client,
            node,
            client_if,
            node_if,
        }
    }

    /// curl from the client namespace. `source` picks the client address.
    pub fn curl(
        &self,
        url: &str,
        host: Option<&str>,
        source: Option<&str>,
        timeout: Duration,
    ) -> Curl {
        curl_in(&self.client, url, host, source, timeout)
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// Result of one curl run.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0 ok, 7 connection refused, 28 timeout).
    pub exit: i32,
    pub status: Option<u16>,
    pub body: String,
    pub stderr: String,
}

/// curl inside `ns`, bounded by `timeout`.
pub fn curl_in(
    ns: &Netns,
    url: &str,
    host: Option<&str>,
    source: Option<&str>,
    timeout: Duration,
) -> Curl {
    let mut c = ns.command("curl");
    c.args([
        "-sS",
        "-g",
        "--max-time",
        &format!("{:.1}", timeout.as_secs_f64()),
    ]);
    c.args(["-w", "\n%{http_code}"]);
    if let Some(h) = host {
        c.args(["-H", &format!("Host: {h}")]);
    }
    if let Some(s) = source {
        c.args(["--interface", s]);
    }
    c.arg(url);
    let out = c.output().expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().ok().filter(|c| *c != 0),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `http://addr:port/path` with IPv6 brackets where needed.
pub fn url(addr: &str, port: u16, path: &str) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("http://[{addr}]:{port}{path}"),
        _ => format!("http://{addr}:{port}{path}"),
    }
}

/// A private bpf filesystem mounted on a temporary directory, so tests never
/// touch the host's `/sys/fs/bpf`. Unmounting frees whatever is still pinned.
pub struct BpfFs {
    pub path: std::path::PathBuf,
}

impl BpfFs {
    pub fn mount(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sluice-bpffs-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path));
        Self { path }
    }

    /// Files pinned under `sluice/` (any network namespace).
    pub fn pins(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(dirs) = std::fs::read_dir(self.path.join("sluice")) {
            for d in dirs.flatten() {
                if let Ok(files) = std::fs::read_dir(d.path()) {
                    out.extend(
                        files
                            .flatten()
                            .map(|f| f.file_name().to_string_lossy().into_owned()),
                    );
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).output();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A private mount of the cgroup v2 hierarchy plus a test cgroup in it, at a
/// path that stays visible inside `ip netns exec` (which replaces `/sys`).
pub struct TestCgroups {
    pub mount: std::path::PathBuf,
    /// `<mount>/sluice-test-<pid>-<n>`: attach point of the connect hooks.
    pub parent: std::path::PathBuf,
}

impl TestCgroups {
    pub fn new(children: &[&str]) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mount = std::env::temp_dir().join(format!("sluice-cg-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&mount).unwrap();
        run(Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(&mount));
        let parent = mount.join(format!("sluice-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&parent).unwrap();
        for c in children {
            std::fs::create_dir_all(parent.join(c)).unwrap();
        }
        Self { mount, parent }
    }

    /// A shell command line that joins `child` and then runs `cmd` (which
    /// inherits the membership).
    pub fn run_in(&self, child: &str, cmd: &[&str]) -> Command {
        let procs = self.parent.join(child).join("cgroup.procs");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display()))
            .arg("sh")
            .args(cmd);
        c
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.parent) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.parent);
        let _ = Command::new("umount").arg(&self.mount).output();
        let _ = std::fs::remove_dir(&self.mount);
    }
}
