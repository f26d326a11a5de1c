//! Config, discovery and secret sources outside Kubernetes.
//!
//! - [`SourceUrl`]: `--config-source` (`file:///PATH`, `consul://`, `consuls://`,
//!   `etcd://`, `etcds://`). Under a store's prefix each key holds the text
//!   of one YAML file; [`DocumentSource`] turns the keys (or a directory's
//!   files) into one validated [`Config`](crate::config::Config) through the
//!   same loader and validation as the directory source.
//! - [`consul`]: Consul KV with blocking queries, and the HTTP client the
//!   discovery shares; [`etcd`]: the etcd v3 API through its JSON gateway.
//! - [`driver`]: applies what a store holds (whole or nothing, the last good
//!   configuration kept, an empty read never applied) and reports the
//!   source's position and outages to `/config` and `/readyz`.
//! - [`discovery`]: `ConsulService` backends from Consul's health API.
//! - [`vault`]: Secrets from a KV v2 store speaking the Vault HTTP API.
//! - [`push`]: mirrors a directory into a store, key by key.
pub mod consul;
pub mod discovery;
pub mod driver;
pub mod etcd;
pub mod http;
pub mod push;
pub mod vault;

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc};

use crate::config::{self, Config, ConfigError, LoadStats};

pub use http::TlsFiles;

/// Errors of the store clients.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid source URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("building a request: {0}")]
    Request(String),
    #[error("store unreachable: {0}")]
    Unreachable(String),
    #[error("store answered {status} to {what}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("unexpected answer to {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("the store's data was compacted past revision {0}")]
    Compacted(i64),
}

impl SourceError {
    pub(crate) fn status(what: impl Into<String>, reply: &http::Reply) -> Self {
        SourceError::Status {
            what: what.into(),
            status: reply.status.as_u16(),
            body: reply.text(),
        }
    }

    pub(crate) fn decode(what: impl Into<String>, reason: impl fmt::Display) -> Self {
        SourceError::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// A store's address and key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAddr {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl StoreAddr {
    /// `host:port` (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Which store a `--config-source` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    /// A directory of YAML files (what `--config-dir` reads).
    File(PathBuf),
    Consul(StoreAddr),
    Etcd(StoreAddr),
}

impl SourceUrl {
    /// Parses `file:///PATH`, `consul[s]://HOST:PORT/PREFIX` or
    /// `etcd[s]://HOST:PORT/PREFIX`.
    pub fn parse(url: &str) -> Result<Self, SourceError> {
        let bad = |reason: &str| SourceError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected SCHEME://..."))?;
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad("a file URL needs an absolute path: file:///etc/sluice"));
                }
                Ok(SourceUrl::File(PathBuf::from(rest)))
            }
            "consul" | "consuls" | "etcd" | "etcds" => {
                let addr = parse_store(rest, scheme.ends_with('s'), default_port(scheme))
                    .map_err(|r| bad(&r))?;
                Ok(if scheme.starts_with("consul") {
                    SourceUrl::Consul(addr)
                } else {
                    SourceUrl::Etcd(addr)
                })
            }
            _ => Err(bad(
                "unknown scheme; expected file, consul, consuls, etcd or etcds",
            )),
        }
    }

    /// What `/config` and logs call the source (no credentials: URLs
    /// carry none).
    pub fn describe(&self) -> String {
        match self {
            SourceUrl::File(p) => format!("file://{}", p.display()),
            SourceUrl::Consul(a) => store_url(if a.tls { "consuls" } else { "consul" }, a),
            SourceUrl::Etcd(a) => store_url(if a.tls { "etcds" } else { "etcd" }, a),
        }
    }
}

fn store_url(scheme: &str, a: &StoreAddr) -> String {
    format!("{scheme}://{}/{}", a.authority(), a.prefix)
}

fn default_port(scheme: &str) -> u16 {
    match scheme {
        "consul" | "consuls" => 8500,
        "vault" | "vaults" => 8200,
        _ => 2379,
    }
}

/// `HOST[:PORT][/PREFIX]`.
pub(crate) fn parse_store(rest: &str, tls: bool, port: u16) -> Result<StoreAddr, String> {
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        match after.strip_prefix(':') {
            Some(p) => (host.to_owned(), p.parse().map_err(|_| "bad port")?),
            None if after.is_empty() => (host.to_owned(), port),
            None => return Err("garbage after the IPv6 host".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| "bad port")?),
            None => (authority.to_owned(), port),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if authority.contains('@') {
        return Err("credentials do not go in the URL; use the token or password file".into());
    }
    Ok(StoreAddr {
        tls,
        host,
        port,
        prefix: prefix.trim_matches('/').to_owned(),
    })
}

/// Credentials and TLS for the stores (config, discovery, secrets).
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    pub tls: TlsFiles,
    /// Consul: file holding the ACL token (re-read on every request, so a
    /// rotated token is used at once); else `CONSUL_HTTP_TOKEN`.
    pub consul_token_file: Option<PathBuf>,
    /// etcd: user name for authentication (`--etcd-user`), with the
    /// password from `etcd_password_file` or `ETCD_PASSWORD`.
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
}

/// A token or password from a file (re-read each time) or a fixed value
/// (from the environment).
#[derive(Debug, Clone, Default)]
pub enum Secret {
    #[default]
    None,
    Value(String),
    File(PathBuf),
}

impl Secret {
    /// The file if given, else the first set environment variable.
    pub fn from_file_or_env(file: Option<&PathBuf>, env: &[&str]) -> Self {
        if let Some(f) = file {
            return Secret::File(f.clone());
        }
        env.iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
            .map_or(Secret::None, |v| Secret::Value(v.trim().to_owned()))
    }

    /// The current value; a file that cannot be read is an error.
    pub fn current(&self) -> Result<Option<String>, SourceError> {
        match self {
            Secret::None => Ok(None),
            Secret::Value(v) => Ok(Some(v.clone())),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
                .map_err(|source| SourceError::File {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// What a store holds under its prefix at one position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreView {
    /// Full key → the text of one YAML file.
    pub entries: Arc<BTreeMap<String, String>>,
    /// Consul's `X-Consul-Index` or etcd's revision of this read.
    pub position: u64,
    /// Whether the store has answered at all yet.
    pub loaded: bool,
}

/// A source of whole configurations: a directory, or a store's keys.
pub trait DocumentSource: Send {
    /// Converts everything the source holds now into one validated
    /// configuration; any invalid document fails the whole load, with
    /// every error (each naming its file or key) reported.
    fn load(&mut self) -> Result<(Config, LoadStats), ConfigError>;
}

impl DocumentSource for config::DirSource {
    fn load(&mut self) -> Result<(Config, LoadStats), ConfigError> {
        self.load_with_stats()
    }
}

/// The keys of a [`StoreView`] as a [`DocumentSource`], with the loader's
/// per-key, per-document cache.
#[derive(Debug, Default)]
pub struct KeySource {
    pub view: StoreView,
    cache: config::KeyedDocuments,
}

impl DocumentSource for KeySource {
    fn load(&mut self) -> Result<(Config, LoadStats), ConfigError> {
        self.cache.load(
            self.view
                .entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls_parse() {
        assert_eq!(
            SourceUrl::parse("file:///etc/sluice").unwrap(),
            SourceUrl::File("/etc/sluice".into())
        );
        assert!(SourceUrl::parse("file://etc").is_err());
        let SourceUrl::Consul(a) =
            SourceUrl::parse("consuls://127.0.0.1:8501/sluice/prod/").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (a.tls, a.host.as_str(), a.port, a.prefix.as_str()),
            (true, "127.0.0.1", 8501, "sluice/prod")
        );
        let SourceUrl::Etcd(a) = SourceUrl::parse("etcd://[::1]/p").unwrap() else {
            panic!()
        };
        assert_eq!((a.tls, a.host.as_str(), a.port), (false, "::1", 2379));
        assert_eq!(a.authority(), "[::1]:2379");
        assert!(SourceUrl::parse("redis://x").is_err());
        assert!(SourceUrl::parse("etcd://u:p@host:1/x").is_err());
        assert_eq!(
            SourceUrl::parse("consul://h:1/a/b").unwrap().describe(),
            "consul://h:1/a/b"
        );
    }

    #[test]
    fn secrets_come_from_the_file_first_and_follow_it() {
        let path = std::env::temp_dir().join(format!("sluice-secret-{}", std::process::id()));
        std::fs::write(&path, "one\n").unwrap();
        let s = Secret::from_file_or_env(Some(&path), &["PATH"]);
        assert_eq!(s.current().unwrap().as_deref(), Some("one"));
        std::fs::write(&path, "two").unwrap();
        assert_eq!(s.current().unwrap().as_deref(), Some("two"));
        std::fs::remove_file(&path).unwrap();
        assert!(s.current().is_err());
    }
}
