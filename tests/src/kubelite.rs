//! A kubelite instance (`shared/kubelite`: a real Kubernetes API server on
//! 127.0.0.1) and kubectl against it, with errors instead of panics, for
//! tools that run outside `cargo test` (the conformance runner).
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context, Result};

/// A running kubelite; `down.sh` stops it (by its recorded pid) and its
/// state directory is removed when this drops.
pub struct Kubelite {
    scripts: PathBuf,
    state: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubelite {
    /// Starts a fresh, empty cluster (`up.sh STATE API_PORT ETCD_PORT`; etcd
    /// also takes ETCD_PORT+1), applies the CRDs of `crd_dir` and waits until
    /// they are served.
    pub fn start(scripts: &Path, api_port: u16, etcd_port: u16, crd_dir: &Path) -> Result<Self> {
        if !scripts.join("up.sh").exists() {
            bail!("{} not found", scripts.join("up.sh").display());
        }
        Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .context("kubectl not found")?;
        let state =
            std::env::temp_dir().join(format!("sluice-kubelite-{api_port}-{}", std::process::id()));
        std::fs::create_dir_all(&state)?;
        let k = Kubelite {
            scripts: scripts.to_owned(),
            kubeconfig: state.join("kubeconfig"),
            state,
        };
        let out = Command::new("bash")
            .arg(scripts.join("up.sh"))
            .arg(&k.state)
            .arg(api_port.to_string())
            .arg(etcd_port.to_string())
            .output()
            .context("running kubelite/up.sh")?;
        if !out.status.success() {
            bail!(
                "kubelite did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let crds = crd_dir.to_str().context("CRD path is not UTF-8")?;
        k.kubectl_ok(&["apply", "--server-side", "-f", crds], None)?;
        // CRDs are served a moment after they are created.
        k.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            None,
        )?;
        Ok(k)
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
        let _ = Command::new("bash")
            .arg(self.scripts.join("down.sh"))
            .arg(&self.state)
            .output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
