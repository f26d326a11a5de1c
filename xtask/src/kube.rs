//! Checks against a real Kubernetes API server: kubelite from ../shared,
//! started for the run and stopped afterwards (also on failure).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::run;

/// Ports for this run's kubelite (API, etcd, etcd+1): away from the defaults
/// so a developer's own instance is left alone, and below the kernel's
/// ephemeral range (32768+) so no client connection's TIME-WAIT holds them.
const API_PORT: &str = "26443";
const ETCD_PORT: &str = "28990";

/// A kubelite instance; `down.sh` runs when it drops.
pub struct Kubelite {
    dir: PathBuf,
    state: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubelite {
    pub fn up(root: &Path) -> Result<Option<Self>> {
        let dir = root.join("../shared/kubelite");
        if !dir.join("up.sh").exists() {
            return Ok(None);
        }
        let state = std::env::temp_dir().join(format!("sluice-kubelite-{}", std::process::id()));
        std::fs::create_dir_all(&state)?;
        eprintln!("+ kubelite up ({})", state.display());
        let out = Command::new("bash")
            .arg(dir.join("up.sh"))
            .arg(&state)
            .args([API_PORT, ETCD_PORT])
            .output()
            .context("running kubelite/up.sh")?;
        let k = Self {
            dir,
            kubeconfig: state.join("kubeconfig"),
            state,
        };
        if !out.status.success() {
            bail!(
                "kubelite did not start:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Some(k))
    }
}

impl Drop for Kubelite {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.dir.join("down.sh"))
            .arg(&self.state)
            .output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// `kubectl apply --dry-run=server --validate=strict` of the install and the
/// namespaced overlay, plus the SluicePolicy CRD's validation rules.
pub fn validate_deploy(root: &Path, ci: bool) -> Result<()> {
    let Some(kube) = Kubelite::up(root)? else {
        if ci {
            bail!("CI=true but ../shared/kubelite is missing: the Kubernetes checks cannot run");
        }
        eprintln!("\n!!! ../shared/kubelite not found: deploy/daemonset validation SKIPPED\n");
        return Ok(());
    };
    run(Command::new("bash")
        .arg(root.join("deploy/daemonset/validate.sh"))
        .env("KUBECONFIG", &kube.kubeconfig))
    .context("deploy/daemonset validation against kubelite")
}
