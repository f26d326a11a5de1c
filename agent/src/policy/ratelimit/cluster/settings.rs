//! Where the cluster store is and how to reach it: `redis://` and
//! `rediss://` URLs, AUTH and TLS settings.
use super::*;

/// TLS to Redis (`rediss://`).
#[derive(Clone)]
pub struct TlsSettings {
    /// PEM CA bundle; `None`: the platform's CAs.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and key (mutual TLS).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// Name the server certificate must have (default: the URL's host).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Where the cluster store is and how to talk to it (agent flags).
#[derive(Clone)]
pub struct StoreSettings {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<TlsSettings>,
    /// Prefix of every key (fleets sharing one Redis need different ones).
    pub key_prefix: String,
    pub sync_interval: Duration,
    /// Limit for connecting and for each reply.
    pub timeout: Duration,
    /// Benchmark baseline only: one Redis call per request instead of the
    /// batched sync (`--ratelimit-naive-cluster`).
    pub naive: bool,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("addr", &self.addr())
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("key_prefix", &self.key_prefix)
            .field("sync_interval", &self.sync_interval)
            .finish()
    }
}

/// Default interval of the batched sync.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);

impl StoreSettings {
    /// Settings from `redis://[user[:password]@]host[:port][/db]` or
    /// `rediss://...` (TLS with the platform's CAs unless told otherwise).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Url {
            url: redact(url),
            why: why.to_owned(),
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else {
            return Err(bad("must start with redis:// or rediss://"));
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, d)) if !d.is_empty() => (
                h,
                d.parse::<i64>()
                    .map_err(|_| bad("the database after / must be a number"))?,
            ),
            Some((h, _)) => (h, 0),
            None => (rest, 0),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h.to_owned(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p),
                None => (hostport.to_owned(), ""),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = if port.is_empty() {
            6379
        } else {
            port.parse().map_err(|_| bad("bad port"))?
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_owned()), Some(p.to_owned())),
                None => (Some(a.to_owned()), None),
            },
        };
        Ok(Self {
            host,
            port,
            db,
            username,
            password,
            tls: tls.then_some(TlsSettings {
                ca_pem: None,
                client: None,
                server_name: None,
            }),
            key_prefix: "sluice".into(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            timeout: Duration::from_secs(1),
            naive: false,
        })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
