//! A kubelite instance (`shared/kubelite`: a real Kubernetes API server on
//! 127.0.0.1) and kubectl against it, with errors instead of panics, for
//! tools that run outside `cargo test` (the conformance runner).
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context, Result};

/// A running kubelite; `down.sh` stops it (by its recorded pid) when this
/// drops, and its state directory is removed unless the thread panics (a
/// failed test keeps it for inspection).
pub struct Kubelite {
    scripts: PathBuf,
    state: PathBuf,
    api_port: u16,
    etcd_port: u16,
    crd_dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubelite {
    /// Starts a fresh, empty cluster (`up.sh STATE API_PORT ETCD_PORT`; etcd
    /// also takes ETCD_PORT+1), applies the CRDs of `crd_dir` and waits until
    /// they are served.
    pub fn start(scripts: &Path, api_port: u16, etcd_port: u16, crd_dir: &Path) -> Result<Self> {
        Self::start_tagged("", scripts, api_port, etcd_port, crd_dir)
    }

    /// [`Self::start`] with `tag` in the state directory's name.
    pub fn start_tagged(
        tag: &str,
        scripts: &Path,
        api_port: u16,
        etcd_port: u16,
        crd_dir: &Path,
    ) -> Result<Self> {
        if !scripts.join("up.sh").exists() {
            bail!("{} not found", scripts.join("up.sh").display());
        }
        Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .context("kubectl not found")?;
        let state = std::env::temp_dir().join(format!(
            "sluice-kubelite-{tag}{api_port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&state)?;
        let k = Kubelite {
            scripts: scripts.to_owned(),
            kubeconfig: state.join("kubeconfig"),
            state,
            api_port,
            etcd_port,
            crd_dir: crd_dir.to_owned(),
        };
        k.up()?;
        Ok(k)
    }

    /// (Re)starts the server on the same ports: `up.sh` wipes the state, so
    /// it comes back empty, with the CRDs applied again.
    pub fn up(&self) -> Result<()> {
        let out = Command::new("bash")
            .arg(self.scripts.join("up.sh"))
            .arg(&self.state)
            .arg(self.api_port.to_string())
            .arg(self.etcd_port.to_string())
            .output()
            .context("running kubelite/up.sh")?;
        if !out.status.success() {
            bail!(
                "kubelite did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let crds = self.crd_dir.to_str().context("CRD path is not UTF-8")?;
        self.kubectl_ok(&["apply", "--server-side", "-f", crds], None)?;
        // CRDs are served a moment after they are created.
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            None,
        )?;
        Ok(())
    }

    /// Stops the server (`down.sh`: the recorded pid only); [`Self::up`]
    /// starts it again.
    pub fn down(&self) {
        let _ = Command::new("bash")
            .arg(self.scripts.join("down.sh"))
            .arg(&self.state)
            .output();
    }

    /// Runs kubectl against this cluster, `stdin` piped in.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .context("kubectl stdin")?
                .write_all(input.as_bytes())?;
        }
        drop(child.stdin.take());
        Ok(child.wait_with_output()?)
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl(args, stdin)?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Server-side apply of a multi-document YAML text.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        self.kubectl_ok(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(yaml),
        )
        .map(drop)
    }
}

impl Drop for Kubelite {
    fn drop(&mut self) {
        self.down();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}
