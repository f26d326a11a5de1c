//! Child processes of a test: started with output captured to a file, ended
//! by pid (SIGTERM, then SIGKILL) when the guard drops — also on panic.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct ChildGuard {
    child: Option<Child>,
    log: PathBuf,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd`, capturing stdout and stderr into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        Ok(Self {
            child: Some(child),
            log: log.to_path_buf(),
            name: name.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Polls (bounded) until `pred(log)` holds; returns whether it did.
    pub fn wait_for_log(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.log()) {
                return true;
            }
            if !self.is_running() {
                return pred(&self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits (bounded) for the process to exit on its own; then as [`stop`](Self::stop).
    pub fn stop_when_exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop(Duration::from_secs(5))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status if known.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{}: still running after {grace:?}; killing pid {}",
            self.name,
            child.id()
        );
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The agent binary the end-to-end tests run: `SLUICE_BIN` (set by `cargo
/// xtask test`), else the workspace's debug build.
pub fn sluice_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sluice");
    assert!(
        p.exists(),
        "{} missing: build it first (`cargo build -p sluice`; `cargo xtask test` does this)",
        p.display()
    );
    p
}

/// The value of the first sample of metric `name` whose line contains every
/// one of `labels`, from a Prometheus text exposition.
pub fn metric(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}
