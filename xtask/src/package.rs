//! The Debian package (`cargo deb`): build, and the install test CI runs.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::run;

/// Builds `target/debian/sluice_*.deb` with cargo-deb from the binary of
/// `profile` (`release` for distribution; the test uses the debug build it
/// has already, so CI does not spend a release build on it).
pub fn build(root: &Path, profile: &str) -> Result<std::path::PathBuf> {
    let out = root.join("target/debian");
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = crate::cargo();
    cmd.args(["deb", "-p", "sluice", "--no-strip", "-o"])
        .arg(&out);
    if profile == "release" {
        run(&mut cmd)?;
    } else {
        // The binary is built already (cargo xtask test builds it first);
        // --fast: the test package is unpacked at once, not shipped.
        run(cmd.args(["--no-build", "--fast", "--profile", profile]))?;
    }
    let deb = std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo deb wrote no .deb")?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed: {text}");
    }
    Ok(text)
}

/// Installs the package with dpkg (CI only: it changes the machine; a
/// developer's run unpacks it instead), then runs the installed binary's
/// `--version` and `check-config` on the shipped example config, and
/// `systemd-analyze verify` on the shipped unit where systemd-analyze exists.
pub fn test(root: &Path, ci: bool) -> Result<()> {
    let deb = build(root, "dev")?;
    let (prefix, installed) = if ci && crate::is_root() {
        run(Command::new("dpkg").arg("-i").arg(&deb)).context("dpkg -i")?;
        (std::path::PathBuf::from("/"), true)
    } else {
        let dir = root.join("target/debian/root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
        eprintln!(
            "package: not CI (or not root): unpacked into {} instead of installing",
            dir.display()
        );
        (dir, false)
    };
    let result = (|| -> Result<()> {
        let bin = prefix.join("usr/bin/sluice");
        let version = output(Command::new(&bin).arg("--version"))?;
        if !version.starts_with("sluice ") {
            bail!("unexpected --version output: {version}");
        }
        eprintln!("package: {}", version.trim());
        let checked = output(
            Command::new(&bin)
                .arg("check-config")
                .arg(prefix.join("etc/sluice/config")),
        )?;
        if !checked.contains("configuration valid") {
            bail!("check-config of the shipped example: {checked}");
        }
        eprintln!("package: {}", checked.trim());
        let unit = prefix.join("lib/systemd/system/sluice.service");
        if Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok()
        {
            // Outside an install the unit names /usr/bin/sluice, which is
            // not there: only the installed unit verifies cleanly.
            let mut verify = Command::new("systemd-analyze");
            verify.arg("verify").arg(&unit);
            if installed {
                let out = output(&mut verify)?;
                if out.contains("sluice.service") {
                    bail!("systemd-analyze verify {}: {out}", unit.display());
                }
                eprintln!("package: systemd-analyze verify {}: clean", unit.display());
            } else {
                let out = verify.output()?;
                eprintln!(
                    "package: systemd-analyze verify (unpacked, /usr/bin/sluice absent): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        } else {
            eprintln!("package: no systemd-analyze here; unit not verified");
        }
        Ok(())
    })();
    if installed {
        // Back to the machine as it was, pass or fail.
        let _ = run(Command::new("dpkg").args(["--purge", "sluice"]));
    }
    result
}
