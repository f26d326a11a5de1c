//! A real `redis-server` for the cluster rate-limit tests, started by the
//! test on a free loopback port (plain or TLS, with or without AUTH) and
//! killed by pid when dropped. Without `redis-server` a test is skipped
//! with a loud message — and fails with `CI=true` (`cargo xtask setup`
//! installs it).
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::free_port;

/// TLS material of a server (PEM): CA, server certificate and key.
pub struct RedisTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    password: Option<String>,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    dir: PathBuf,
}

/// `redis-server`, or `None` (skip) outside CI; panics in CI.
fn binary(test: &str) -> Option<PathBuf> {
    let found = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: redis-server not found (cargo xtask setup installs it)");
        }
        eprintln!(
            "\n!!! SKIPPED {test}: redis-server not found; `cargo xtask setup` installs it.\n"
        );
    }
    found
}

impl RedisServer {
    /// Starts a server; `None` when the test is to be skipped.
    pub fn start(test: &str, password: Option<&str>, tls: Option<&RedisTls>) -> Option<Self> {
        binary(test)?;
        let dir = std::env::temp_dir().join(format!(
            "sluice-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let tls = tls.map(|t| {
            let files = (
                dir.join("ca.crt"),
                dir.join("server.crt"),
                dir.join("server.key"),
            );
            std::fs::write(&files.0, &t.ca).unwrap();
            std::fs::write(&files.1, &t.cert).unwrap();
            std::fs::write(&files.2, &t.key).unwrap();
            files
        });
        let mut s = Self {
            port: free_port(),
            child: None,
            password: password.map(str::to_owned),
            tls,
            dir,
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(binary("redis").expect("checked at start"));
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir"])
            .arg(&self.dir);
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some((ca, cert, key)) => {
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-ca-cert-file")
                    .arg(ca)
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < until,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (by its pid) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `redis://` or `rediss://` URL (without the password).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
