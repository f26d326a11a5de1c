//! Consul: the KV store as a config source, and the client the service
//! discovery shares. A small client of our own on hyper: it must keep the
//! blocking index of a 404 (an empty prefix answers 404 *with*
//! `X-Consul-Index`) and service tags.
//!
//! The KV watch follows Consul's rules for blocking queries: `?recurse&index=N&wait=W`;
//! an index that goes backwards (a restored or restarted server) resets to 0
//! (the next read does not block and returns the whole state); an index
//! below 1 is used as 1 (index 0 would never block and spin); a wake-up
//! with the same index or the same entries is no change; the loop is
//! rate-limited, and backs off while the server fails.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use tokio::sync::watch;

use super::{
    http::{encode, HttpClient, Reply},
    Secret, SourceError, StoreAddr, StoreView, TlsFiles,
};
use crate::admin::SourceHealth;

/// How long one blocking query may wait on the server.
pub const BLOCKING_WAIT: Duration = Duration::from_secs(60);
/// How long a blocking read waits while the prefix reads empty: a token
/// that could not read it may have been replaced meanwhile, which moves no
/// index, so such reads come back often enough to notice.
pub const EMPTY_WAIT: Duration = Duration::from_secs(3);
/// Least time between two KV reads: a store changing many times a second
/// (a push of a directory) is read a few times, not once per change.
pub const MIN_INTERVAL: Duration = Duration::from_millis(20);

const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-consul-token");
const INDEX_HEADER: &str = "x-consul-index";

/// A Consul HTTP API client (one agent or server address).
#[derive(Debug, Clone)]
pub struct ConsulClient {
    http: HttpClient,
    token: Secret,
}

/// A KV read: the entries under a prefix and the blocking index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRead {
    /// Full key → value (folder keys, ending in `/`, are left out).
    pub entries: BTreeMap<String, String>,
    pub index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    key: String,
    #[serde(default)]
    value: Option<String>,
}

/// The blocking index of a watch, kept by Consul's rules.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockingIndex(u64);

/// What one response's index means for the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStep {
    /// The index is the one we waited on: the wait ended without a change.
    Same,
    /// The index moved forward: something under the prefix may have changed.
    Advanced,
    /// The index went backwards (a restarted or restored server): start over.
    Reset,
}

impl BlockingIndex {
    /// The index to send with the next request.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Takes the index of a response.
    pub fn observe(&mut self, index: u64) -> IndexStep {
        let step = if index < self.0 {
            // Backwards: reset, so the next read returns at once with the
            // whole state instead of blocking until the server catches up.
            self.0 = 0;
            return IndexStep::Reset;
        } else if index == self.0 {
            IndexStep::Same
        } else {
            IndexStep::Advanced
        };
        // Index 0 would make every query return at once: use at least 1.
        self.0 = index.max(1);
        step
    }

    /// After a failure: the next read should not block (the server may
    /// have come back with a lower index, which a blocking read with our
    /// index would wait out).
    pub fn forget(&mut self) {
        self.0 = 0;
    }
}

impl ConsulClient {
    pub fn new(addr: &StoreAddr, tls: &TlsFiles, token: Secret) -> Result<Self, SourceError> {
        Ok(Self {
            http: HttpClient::new(addr, tls)?,
            token,
        })
    }

    pub fn base(&self) -> &str {
        self.http.base()
    }

    fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, SourceError> {
        match self.token.current()? {
            Some(t) => Ok(vec![(
                TOKEN_HEADER,
                HeaderValue::from_str(&t).map_err(|_| {
                    SourceError::Request("the Consul token is not a header value".into())
                })?,
            )]),
            None => Ok(Vec::new()),
        }
    }

    /// A GET (or other method) with the token, within `deadline`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        deadline: Duration,
    ) -> Result<Reply, SourceError> {
        let headers = self.headers()?;
        self.http.send(method, path, &headers, body, deadline).await
    }

    /// Reads every key under `prefix` (a folder: `prefix/`), blocking until
    /// the index passes `index` or `wait` elapses (`index` 0: at once).
    pub async fn read_prefix(
        &self,
        prefix: &str,
        index: u64,
        wait: Duration,
    ) -> Result<KvRead, SourceError> {
        let folder = folder(prefix);
        let mut path = format!("/v1/kv/{}?recurse=true", encode(&folder, true));
        if index > 0 {
            path.push_str(&format!("&index={index}&wait={}s", wait.as_secs().max(1)));
        }
        // Consul adds up to wait/16 of jitter to a blocking query.
        let deadline = wait + wait / 16 + Duration::from_secs(5);
        let reply = self
            .call(Method::GET, &path, Bytes::new(), deadline)
            .await?;
        let index = header_index(&reply);
        match reply.status {
            // An empty prefix, or one the token may not read (ACLs filter
            // the list to nothing): empty, with an index to block on.
            StatusCode::NOT_FOUND => Ok(KvRead {
                entries: BTreeMap::new(),
                index: index
                    .ok_or_else(|| SourceError::decode(&path, "404 without X-Consul-Index"))?,
            }),
            StatusCode::OK => {
                let list: Vec<KvEntry> = serde_json::from_slice(&reply.body)
                    .map_err(|e| SourceError::decode(&path, e))?;
                let mut entries = BTreeMap::new();
                for e in list {
                    if e.key.ends_with('/') {
                        continue;
                    }
                    let value = match e.value {
                        Some(v) => base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .map_err(|err| SourceError::decode(&e.key, err))?,
                        None => Vec::new(),
                    };
                    entries.insert(e.key, String::from_utf8_lossy(&value).into_owned());
                }
                Ok(KvRead {
                    entries,
                    index: index.ok_or_else(|| SourceError::decode(&path, "no X-Consul-Index"))?,
                })
            }
            _ => Err(SourceError::status(format!("GET {}", folder), &reply)),
        }
    }

    /// Writes one key.
    pub async fn put(&self, key: &str, value: &str) -> Result<(), SourceError> {
        let path = format!("/v1/kv/{}", encode(key, true));
        let reply = self
            .call(
                Method::PUT,
                &path,
                Bytes::copy_from_slice(value.as_bytes()),
                Duration::from_secs(10),
            )
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(SourceError::status(format!("PUT {key}"), &reply))
        }
    }

    /// Deletes one key.
    pub async fn delete(&self, key: &str) -> Result<(), SourceError> {
        let path = format!("/v1/kv/{}", encode(key, true));
        let reply = self
            .call(Method::DELETE, &path, Bytes::new(), Duration::from_secs(10))
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(SourceError::status(format!("DELETE {key}"), &reply))
        }
    }
}

/// `prefix/`, or the whole store for an empty prefix.
pub fn folder(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

pub(crate) fn header_index(reply: &Reply) -> Option<u64> {
    reply
        .headers
        .get(INDEX_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Watches the KV prefix and publishes each changed state until the sender
/// has no receivers left. Failures are reported to `health` (the last state
/// stays published, so the agent keeps serving it).
pub async fn watch_kv(
    client: ConsulClient,
    prefix: String,
    tx: watch::Sender<StoreView>,
    health: Arc<SourceHealth>,
) {
    let mut index = BlockingIndex::default();
    let mut backoff = Backoff::default();
    let mut last_request: Option<Instant> = None;
    let mut empty = false;
    loop {
        if tx.is_closed() {
            return;
        }
        if let Some(t) = last_request {
            let since = t.elapsed();
            if since < MIN_INTERVAL {
                tokio::time::sleep(MIN_INTERVAL - since).await;
            }
        }
        last_request = Some(Instant::now());
        let wait = if empty { EMPTY_WAIT } else { BLOCKING_WAIT };
        match client.read_prefix(&prefix, index.get(), wait).await {
            Ok(read) => {
                empty = read.entries.is_empty();
                backoff.reset();
                health.ok();
                let step = index.observe(read.index);
                health.set_position(format!("index {}", read.index));
                if step == IndexStep::Reset {
                    tracing::warn!(
                        index = read.index,
                        "Consul index went backwards (server restarted or restored); reading the whole prefix again"
                    );
                }
                let current = tx.borrow().clone();
                // A wake-up without a change (the wait ran out, or another
                // key moved the index) is not a reload.
                if current.loaded && *current.entries == read.entries {
                    // The position moves silently: receivers are not woken.
                    tx.send_if_modified(|v| {
                        v.position = read.index;
                        false
                    });
                    continue;
                }
                tx.send_replace(StoreView {
                    entries: Arc::new(read.entries),
                    position: read.index,
                    loaded: true,
                });
            }
            Err(e) => {
                index.forget();
                health.failed_with(&e.to_string());
                let delay = backoff.delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Consul KV read failed; serving the last good configuration");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Exponential backoff for a failing store: 100 ms doubling to 5 s.
#[derive(Debug, Default)]
pub struct Backoff(u32);

impl Backoff {
    pub fn delay(&mut self) -> Duration {
        let d = Duration::from_millis(100) * 2u32.pow(self.0.min(6));
        self.0 += 1;
        d.min(Duration::from_secs(5))
    }

    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

/// One healthy instance of a Consul service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    /// `Service.Address`, or `Node.Address` when the service has none.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: HealthNode,
    service: HealthService,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthNode {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthService {
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl ConsulClient {
    /// `GET /v1/health/service/<name>?passing`: the instances whose checks
    /// all pass, blocking on `index` (0: at once). Returns them with the
    /// response's index.
    pub async fn healthy_instances(
        &self,
        service: &str,
        datacenter: Option<&str>,
        index: u64,
        wait: Duration,
    ) -> Result<(Vec<Instance>, u64), SourceError> {
        let mut path = format!("/v1/health/service/{}?passing=true", encode(service, false));
        if let Some(dc) = datacenter {
            path.push_str(&format!("&dc={}", encode(dc, false)));
        }
        if index > 0 {
            path.push_str(&format!("&index={index}&wait={}s", wait.as_secs().max(1)));
        }
        let deadline = wait + wait / 16 + Duration::from_secs(5);
        let reply = self
            .call(Method::GET, &path, Bytes::new(), deadline)
            .await?;
        if reply.status != StatusCode::OK {
            return Err(SourceError::status(format!("health of {service}"), &reply));
        }
        let index =
            header_index(&reply).ok_or_else(|| SourceError::decode(&path, "no X-Consul-Index"))?;
        let entries: Vec<HealthEntry> =
            serde_json::from_slice(&reply.body).map_err(|e| SourceError::decode(&path, e))?;
        let mut out: Vec<Instance> = entries
            .into_iter()
            .map(|e| Instance {
                address: if e.service.address.is_empty() {
                    e.node.address
                } else {
                    e.service.address
                },
                port: e.service.port,
                tags: e.service.tags.unwrap_or_default(),
            })
            .collect();
        out.sort();
        Ok((out, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_index_follows_consuls_rules() {
        let mut i = BlockingIndex::default();
        assert_eq!(i.observe(10), IndexStep::Advanced);
        assert_eq!(i.get(), 10);
        assert_eq!(i.observe(10), IndexStep::Same, "the wait ran out");
        assert_eq!(i.observe(12), IndexStep::Advanced);
        assert_eq!(
            i.observe(3),
            IndexStep::Reset,
            "backwards: a restarted server"
        );
        assert_eq!(i.get(), 0, "the next read does not block");
        assert_eq!(i.observe(0), IndexStep::Same);
        assert_eq!(i.get(), 1, "an index below 1 is used as 1");
        i.forget();
        assert_eq!(i.get(), 0);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::default();
        let d: Vec<_> = (0..8).map(|_| b.delay().as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.delay().as_millis(), 100);
    }

    #[test]
    fn folders_end_in_a_slash() {
        assert_eq!(folder("sluice"), "sluice/");
        assert_eq!(folder("/a/b/"), "a/b/");
        assert_eq!(folder(""), "");
    }
}
