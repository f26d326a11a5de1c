//! etcd (v3 API) as a config source, through etcd's JSON gateway (`/v3/...`
//! on the client port) on the hyper client the other stores share: a range
//! read at revision R, then a watch from R+1; after a compaction (the watch
//! is cancelled with `compact_revision`) or a lost watch, a full read again.
//! Authentication with a user and password (`/v3/auth/authenticate`; the
//! token is renewed when the server no longer takes it); TLS with `etcds://`.
//!
//! Why the gateway and not the `etcd-client` crate: that crate brings the
//! tonic/prost gRPC stack and generates its code with `protoc` at build
//! time — a large share of a clean build on two cores — for five calls the
//! gateway serves as JSON over the HTTP client Consul and Vault need anyway.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use tokio::sync::{watch, Mutex};

use super::{
    consul::Backoff,
    http::{HttpClient, Reply},
    Secret, SourceError, StoreAddr, StoreView, TlsFiles,
};
use crate::admin::SourceHealth;

const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// An etcd v3 client over the JSON gateway.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    http: HttpClient,
    /// User and password, when the cluster has authentication enabled.
    auth: Option<(String, Secret)>,
    token: Arc<Mutex<Option<String>>>,
}

/// int64 fields come as JSON strings from the gateway.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(0),
        Some(N::I(i)) => Ok(i),
        Some(N::S(s)) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "int")]
    revision: i64,
}

#[derive(Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
}

#[derive(Deserialize)]
struct Event {
    /// Absent for PUT (the enum's zero value).
    #[serde(default, rename = "type")]
    kind: Option<String>,
    kv: Kv,
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

fn unb64(s: &str, what: &str) -> Result<String, SourceError> {
    let raw = B64.decode(s).map_err(|e| SourceError::decode(what, e))?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// The end of the key range that holds every key starting with `prefix`
/// (etcd's "prefix end": the prefix with its last byte incremented).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: "\0".
    vec![0]
}

/// The key prefix a store address covers: `/PREFIX/` (etcd keys are
/// conventionally absolute paths).
pub fn key_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        format!("/{p}/")
    }
}

impl EtcdClient {
    pub fn new(
        addr: &StoreAddr,
        tls: &TlsFiles,
        auth: Option<(String, Secret)>,
    ) -> Result<Self, SourceError> {
        Ok(Self {
            http: HttpClient::new(addr, tls)?,
            auth,
            token: Arc::default(),
        })
    }

    pub fn base(&self) -> &str {
        self.http.base()
    }

    async fn authenticate(&self) -> Result<Option<String>, SourceError> {
        let Some((user, password)) = &self.auth else {
            return Ok(None);
        };
        let password = password.current()?.unwrap_or_default();
        let reply = self
            .http
            .send(
                Method::POST,
                "/v3/auth/authenticate",
                &[],
                Bytes::from(json!({"name": user, "password": password}).to_string()),
                CALL_DEADLINE,
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(SourceError::status(
                format!("authenticate as {user}"),
                &reply,
            ));
        }
        #[derive(Deserialize)]
        struct Auth {
            token: String,
        }
        let auth: Auth = serde_json::from_slice(&reply.body)
            .map_err(|e| SourceError::decode("authenticate", e))?;
        *self.token.lock().await = Some(auth.token.clone());
        Ok(Some(auth.token))
    }

    async fn headers(&self, fresh: bool) -> Result<Vec<(HeaderName, HeaderValue)>, SourceError> {
        if self.auth.is_none() {
            return Ok(Vec::new());
        }
        let cached = self.token.lock().await.clone();
        let token = match cached {
            Some(t) if !fresh => Some(t),
            _ => self.authenticate().await?,
        };
        Ok(token
            .and_then(|t| HeaderValue::from_str(&t).ok())
            .map(|v| vec![(http::header::AUTHORIZATION, v)])
            .unwrap_or_default())
    }

    /// A unary call; with authentication, a refused token is renewed once.
    pub async fn call(&self, path: &str, body: serde_json::Value) -> Result<Reply, SourceError> {
        let body = Bytes::from(body.to_string());
        let mut fresh = false;
        loop {
            let headers = self.headers(fresh).await?;
            let reply = self
                .http
                .send(Method::POST, path, &headers, body.clone(), CALL_DEADLINE)
                .await?;
            if reply.status == StatusCode::OK {
                return Ok(reply);
            }
            if self.auth.is_some() && !fresh && token_refused(&reply) {
                fresh = true;
                continue;
            }
            return Err(SourceError::status(path, &reply));
        }
    }

    /// Every key under `prefix` and the revision of the read.
    pub async fn range(
        &self,
        prefix: &str,
    ) -> Result<(BTreeMap<String, String>, i64), SourceError> {
        let reply = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(prefix), "range_end": B64.encode(prefix_end(prefix))}),
            )
            .await?;
        let r: RangeResponse =
            serde_json::from_slice(&reply.body).map_err(|e| SourceError::decode("range", e))?;
        let mut out = BTreeMap::new();
        for kv in r.kvs {
            let key = unb64(&kv.key, "range key")?;
            out.insert(key.clone(), unb64(&kv.value, &key)?);
        }
        Ok((out, r.header.revision))
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<(), SourceError> {
        self.call("/v3/kv/put", json!({"key": b64(key), "value": b64(value)}))
            .await
            .map(drop)
    }

    pub async fn delete(&self, key: &str) -> Result<(), SourceError> {
        self.call("/v3/kv/deleterange", json!({"key": b64(key)}))
            .await
            .map(drop)
    }

    /// Compacts the history up to `revision` (tests use it to force a resync).
    pub async fn compact(&self, revision: i64) -> Result<(), SourceError> {
        self.call(
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": true}),
        )
        .await
        .map(drop)
    }

    /// Follows the mirror `entries` (read at `revision`) from `revision + 1`
    /// until the watch is lost or cancelled. Returns why it ended; each
    /// change is published meanwhile.
    async fn follow(
        &self,
        prefix: &str,
        entries: &mut BTreeMap<String, String>,
        revision: &mut i64,
        tx: &watch::Sender<StoreView>,
        health: &SourceHealth,
    ) -> SourceError {
        let body = json!({"create_request": {
            "key": b64(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": (*revision + 1).to_string(),
            "progress_notify": true,
        }});
        let headers = match self.headers(false).await {
            Ok(h) => h,
            Err(e) => return e,
        };
        let resp = match self
            .http
            .stream(
                Method::POST,
                "/v3/watch",
                &headers,
                Bytes::from(body.to_string()),
                CALL_DEADLINE,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return e,
        };
        if resp.status() != StatusCode::OK {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            // A refused token is renewed on the next full read.
            *self.token.lock().await = None;
            return SourceError::Status {
                what: "watch".into(),
                status,
                body,
            };
        }
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        loop {
            let frame = match body.frame().await {
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    return SourceError::Unreachable(format!("watch: {}", super::http::chain(&e)))
                }
                None => {
                    return SourceError::Unreachable("watch: the server closed the stream".into())
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            // Messages are JSON objects, one after the other.
            let mut consumed = 0;
            let mut messages = Vec::new();
            {
                let mut stream =
                    serde_json::Deserializer::from_slice(&buf).into_iter::<WatchMessage>();
                loop {
                    match stream.next() {
                        Some(Ok(m)) => {
                            consumed = stream.byte_offset();
                            messages.push(m);
                        }
                        Some(Err(e)) if e.is_eof() => break,
                        Some(Err(e)) => return SourceError::decode("watch", e),
                        None => break,
                    }
                }
            }
            let _ = buf.split_to(consumed);
            for m in messages {
                if let Some(e) = m.error {
                    return SourceError::decode("watch", e);
                }
                let Some(r) = m.result else { continue };
                if r.canceled || r.compact_revision > 0 {
                    if r.compact_revision > 0 {
                        return SourceError::Compacted(r.compact_revision);
                    }
                    return SourceError::Unreachable(format!(
                        "watch cancelled: {}",
                        r.cancel_reason
                    ));
                }
                let mut changed = false;
                for ev in r.events {
                    let key = match unb64(&ev.kv.key, "watch key") {
                        Ok(k) => k,
                        Err(e) => return e,
                    };
                    if ev.kind.as_deref() == Some("DELETE") {
                        changed |= entries.remove(&key).is_some();
                    } else {
                        let value = match unb64(&ev.kv.value, &key) {
                            Ok(v) => v,
                            Err(e) => return e,
                        };
                        if entries.get(&key) != Some(&value) {
                            entries.insert(key, value);
                            changed = true;
                        }
                    }
                }
                if r.header.revision > *revision {
                    *revision = r.header.revision;
                    health.set_position(format!("revision {revision}"));
                }
                if changed {
                    tx.send_replace(StoreView {
                        entries: Arc::new(entries.clone()),
                        position: *revision as u64,
                        loaded: true,
                    });
                }
            }
        }
    }
}

/// Whether an answer says the token is missing, expired or unknown.
fn token_refused(reply: &Reply) -> bool {
    matches!(reply.status.as_u16(), 400 | 401 | 403)
        && [
            "token",
            "user name is empty",
            "authentication",
            "Unauthenticated",
        ]
        .iter()
        .any(|w| reply.text().contains(w))
}

/// Reads the prefix, publishes it and follows it with a watch; after a
/// compaction, a lost watch or a failure, reads it whole again. Runs until
/// the sender has no receivers.
pub async fn watch_prefix(
    client: EtcdClient,
    prefix: String,
    tx: watch::Sender<StoreView>,
    health: Arc<SourceHealth>,
) {
    let mut backoff = Backoff::default();
    while !tx.is_closed() {
        let (mut entries, mut revision) = match client.range(&prefix).await {
            Ok(x) => x,
            Err(e) => {
                health.failed_with(&e.to_string());
                let delay = backoff.delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "etcd read failed; serving the last good configuration");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        health.ok();
        health.set_position(format!("revision {revision}"));
        let current = tx.borrow().clone();
        if !current.loaded || *current.entries != entries {
            tx.send_replace(StoreView {
                entries: Arc::new(entries.clone()),
                position: revision as u64,
                loaded: true,
            });
        }
        let why = client
            .follow(&prefix, &mut entries, &mut revision, &tx, &health)
            .await;
        match &why {
            SourceError::Compacted(r) => tracing::warn!(
                compacted = r,
                "etcd history compacted past the watch; reading the prefix again"
            ),
            e => {
                tracing::warn!(error = %e, "etcd watch lost; reading the prefix again");
                // The next full read tells whether the server is down.
                tokio::time::sleep(backoff.delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end("/sluice/"), b"/sluice0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
        assert_eq!(prefix_end(""), b"\0");
        assert_eq!(key_prefix("sluice/prod/"), "/sluice/prod/");
        assert_eq!(key_prefix(""), "/");
    }

    #[test]
    fn gateway_messages_decode() {
        let m: WatchMessage = serde_json::from_str(
            r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"L3gvYQ==","value":"aGk=","mod_revision":"7"}},{"type":"DELETE","kv":{"key":"L3gvYg=="}}]}}"#,
        )
        .unwrap();
        let r = m.result.unwrap();
        assert_eq!(r.header.revision, 7);
        assert_eq!(r.events[0].kind, None);
        assert_eq!(r.events[1].kind.as_deref(), Some("DELETE"));
        assert_eq!(unb64(&r.events[0].kv.value, "v").unwrap(), "hi");
        let m: WatchMessage = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"5"}}"#,
        )
        .unwrap();
        assert_eq!(m.result.unwrap().compact_revision, 5);
    }
}
