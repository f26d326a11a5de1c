//! Secrets from a KV v2 store speaking the Vault HTTP API (OpenBao, Vault):
//! `--secret-source vault://HOST:PORT/MOUNT/PREFIX` (`vaults://` for TLS).
//! The Secret `<namespace>/<name>` is the KV entry `<PREFIX>/<namespace>/<name>`
//! of the mount: `tls.crt` and `tls.key` make it a `kubernetes.io/tls`
//! Secret (listener and client certificates); any other keys an `Opaque`
//! one (SluicePolicy credentials).
//!
//! Only Secrets the configuration references are read (as the Kubernetes
//! source holds only referenced Secrets). KV v2 has no watch: each entry's
//! metadata is polled and its data read again only when `current_version`
//! moved; a change wakes the source driver, which applies the configuration
//! again — the new certificate serves new handshakes while open connections
//! carry on. The token comes from a file (re-read, so a rotated token is
//! used at once) or `VAULT_TOKEN`/`BAO_TOKEN`, and a renewable token is
//! renewed when two thirds of its TTL have passed.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use tokio::{sync::Notify, task::JoinHandle};

use super::{
    http::{encode, HttpClient, Reply},
    Secret as Token, SourceError, StoreAddr, TlsFiles,
};
use crate::config::{Config, ObjectRef, Secret, SECRET_TYPE_TLS};

const CALL_DEADLINE: Duration = Duration::from_secs(10);
const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-vault-token");

/// `vault[s]://HOST:PORT/MOUNT/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultUrl {
    pub addr: StoreAddr,
    pub mount: String,
    pub prefix: String,
}

impl VaultUrl {
    pub fn parse(url: &str) -> Result<Self, SourceError> {
        let bad = |reason: &str| SourceError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected vault://HOST:PORT/MOUNT/PREFIX"))?;
        let tls = match scheme {
            "vault" => false,
            "vaults" => true,
            _ => return Err(bad("unknown scheme; expected vault or vaults")),
        };
        let addr = super::parse_store(rest, tls, 8200).map_err(|r| bad(&r))?;
        let (mount, prefix) = addr.prefix.split_once('/').unwrap_or((&addr.prefix, ""));
        if mount.is_empty() {
            return Err(bad(
                "missing the KV v2 mount, e.g. vault://127.0.0.1:8200/secret/sluice",
            ));
        }
        Ok(Self {
            mount: mount.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            addr,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{}://{}/{}/{}",
            if self.addr.tls { "vaults" } else { "vault" },
            self.addr.authority(),
            self.mount,
            self.prefix
        )
    }

    fn path(&self, kind: &str, id: &ObjectRef) -> String {
        let mut p = format!("/v1/{}/{kind}/", encode(&self.mount, false));
        if !self.prefix.is_empty() {
            p.push_str(&encode(&self.prefix, true));
            p.push('/');
        }
        p.push_str(&encode(&id.namespace, false));
        p.push('/');
        p.push_str(&encode(&id.name, false));
        p
    }
}

/// A KV v2 client with a token.
#[derive(Debug, Clone)]
pub struct VaultClient {
    http: HttpClient,
    token: Token,
    url: VaultUrl,
}

#[derive(Deserialize)]
struct Wrapper<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    current_version: u64,
}

#[derive(Deserialize)]
struct Data {
    data: Option<BTreeMap<String, serde_json::Value>>,
    metadata: Option<DataMetadata>,
}

#[derive(Deserialize)]
struct DataMetadata {
    #[serde(default)]
    version: u64,
}

#[derive(Deserialize)]
struct TokenInfo {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

impl VaultClient {
    pub fn new(url: VaultUrl, tls: &TlsFiles, token: Token) -> Result<Self, SourceError> {
        Ok(Self {
            http: HttpClient::new(&url.addr, tls)?,
            token,
            url,
        })
    }

    pub fn url(&self) -> &VaultUrl {
        &self.url
    }

    async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Reply, SourceError> {
        let mut headers = Vec::new();
        if let Some(t) = self.token.current()? {
            headers.push((
                TOKEN_HEADER,
                HeaderValue::from_str(&t).map_err(|_| {
                    SourceError::Request("the Vault token is not a header value".into())
                })?,
            ));
        }
        self.http
            .send(method, path, &headers, body, CALL_DEADLINE)
            .await
    }

    /// The current version of a Secret's entry; `None` when it does not exist.
    pub async fn version(&self, id: &ObjectRef) -> Result<Option<u64>, SourceError> {
        let path = self.url.path("metadata", id);
        let reply = self.call(Method::GET, &path, Bytes::new()).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let m: Wrapper<Metadata> = serde_json::from_slice(&reply.body)
                    .map_err(|e| SourceError::decode(&path, e))?;
                Ok(m.data.map(|m| m.current_version))
            }
            _ => Err(SourceError::status(
                format!("metadata of Secret {id}"),
                &reply,
            )),
        }
    }

    /// A Secret's latest version as a [`Secret`] with that version; `None`
    /// when it does not exist or its latest version is deleted.
    pub async fn read(&self, id: &ObjectRef) -> Result<Option<(u64, Secret)>, SourceError> {
        let path = self.url.path("data", id);
        let reply = self.call(Method::GET, &path, Bytes::new()).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let d: Wrapper<Data> = serde_json::from_slice(&reply.body)
                    .map_err(|e| SourceError::decode(&path, e))?;
                let Some(Data {
                    data: Some(values),
                    metadata,
                }) = d.data
                else {
                    return Ok(None);
                };
                let data: BTreeMap<String, Vec<u8>> = values
                    .into_iter()
                    .map(|(k, v)| {
                        let text = match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, text.into_bytes())
                    })
                    .collect();
                let kind = if data.contains_key("tls.crt") && data.contains_key("tls.key") {
                    SECRET_TYPE_TLS
                } else {
                    "Opaque"
                };
                Ok(Some((
                    metadata.map_or(0, |m| m.version),
                    Secret {
                        id: id.clone(),
                        kind: kind.to_owned(),
                        data,
                    },
                )))
            }
            _ => Err(SourceError::status(format!("Secret {id}"), &reply)),
        }
    }

    /// Writes a Secret's keys as a new version (tests and `sluice push`-like tools).
    pub async fn write(
        &self,
        id: &ObjectRef,
        data: &BTreeMap<String, String>,
    ) -> Result<(), SourceError> {
        let path = self.url.path("data", id);
        let body = serde_json::json!({ "data": data }).to_string();
        let reply = self.call(Method::POST, &path, Bytes::from(body)).await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(SourceError::status(format!("write Secret {id}"), &reply))
        }
    }

    async fn lookup_self(&self) -> Result<TokenInfo, SourceError> {
        let reply = self
            .call(Method::GET, "/v1/auth/token/lookup-self", Bytes::new())
            .await?;
        if reply.status != StatusCode::OK {
            return Err(SourceError::status("token lookup", &reply));
        }
        let info: Wrapper<TokenInfo> = serde_json::from_slice(&reply.body)
            .map_err(|e| SourceError::decode("token lookup", e))?;
        info.data
            .ok_or_else(|| SourceError::decode("token lookup", "no data"))
    }

    async fn renew_self(&self) -> Result<(), SourceError> {
        let reply = self
            .call(
                Method::POST,
                "/v1/auth/token/renew-self",
                Bytes::from_static(b"{}"),
            )
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(SourceError::status("token renewal", &reply))
        }
    }
}

/// When to renew a token with `ttl` seconds left: after two thirds of it
/// (at least a second from now); `None` for a token that does not expire
/// or cannot be renewed.
pub fn renew_after(ttl: u64, renewable: bool) -> Option<Duration> {
    (renewable && ttl > 0).then(|| Duration::from_secs((ttl * 2 / 3).max(1)))
}

struct Held {
    version: Option<u64>,
    secret: Option<Secret>,
}

/// The running secret source.
pub struct VaultSecrets {
    client: VaultClient,
    held: Mutex<BTreeMap<ObjectRef, Held>>,
    changed: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSecrets")
            .field("url", &self.client.url.describe())
            .finish_non_exhaustive()
    }
}

impl Drop for VaultSecrets {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl VaultSecrets {
    /// Starts polling every `poll` and renewing the token; `changed` is
    /// notified when a held Secret changes.
    pub fn start(client: VaultClient, poll: Duration, changed: Arc<Notify>) -> Arc<Self> {
        Arc::new_cyclic(|weak: &std::sync::Weak<Self>| {
            let poller = {
                let weak = weak.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(poll).await;
                        let Some(me) = weak.upgrade() else { return };
                        me.poll().await;
                    }
                })
            };
            let renewer = {
                let client = client.clone();
                tokio::spawn(renew_loop(client))
            };
            Self {
                client,
                held: Mutex::default(),
                changed,
                tasks: vec![poller, renewer],
            }
        })
    }

    /// Stops polling and renewing.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    pub fn describe(&self) -> String {
        self.client.url.describe()
    }

    /// Reads each held Secret's version and, where it moved, its data.
    async fn poll(&self) {
        let ids: Vec<ObjectRef> = self
            .held
            .lock()
            .expect("held lock")
            .keys()
            .cloned()
            .collect();
        let mut changed = false;
        for id in ids {
            let version = match self.client.version(&id).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(secret = %id, error = %e, "Vault-API store: version check failed; keeping the Secret held");
                    continue;
                }
            };
            let known = self
                .held
                .lock()
                .expect("held lock")
                .get(&id)
                .and_then(|h| h.version);
            if version == known {
                continue;
            }
            changed |= self.fetch(&id).await;
        }
        if changed {
            self.changed.notify_one();
        }
    }

    /// Reads a Secret; returns whether what is held changed.
    async fn fetch(&self, id: &ObjectRef) -> bool {
        match self.client.read(id).await {
            Ok(found) => {
                let mut held = self.held.lock().expect("held lock");
                let Some(h) = held.get_mut(id) else {
                    return false;
                };
                let (version, secret) = match found {
                    Some((v, s)) => (Some(v), Some(s)),
                    None => (None, None),
                };
                let changed = h.version != version || h.secret.is_some() != secret.is_some();
                if changed {
                    tracing::info!(secret = %id, version = ?version, "Vault-API store: Secret changed");
                }
                h.version = version;
                h.secret = secret;
                changed
            }
            Err(e) => {
                tracing::warn!(secret = %id, error = %e, "Vault-API store: reading the Secret failed; keeping what is held");
                false
            }
        }
    }

    /// Adds the referenced Secrets (listener and backend client
    /// certificates, SluicePolicy credentials) that the configuration does
    /// not hold itself, reading those not held yet first.
    pub async fn augment(&self, cfg: &mut Config) -> Vec<String> {
        let mut wanted: BTreeSet<ObjectRef> = crate::kube::held::referenced_secrets(&cfg.gateways);
        wanted.extend(crate::kube::held::referenced_policy_secrets(&cfg.policies));
        wanted.extend(crate::kube::held::referenced_listener_set_secrets(
            cfg,
            &cfg.gateways,
        ));
        for s in &cfg.secrets {
            wanted.remove(&s.id);
        }
        let new: Vec<ObjectRef> = {
            let mut held = self.held.lock().expect("held lock");
            held.retain(|id, _| wanted.contains(id));
            let new: Vec<ObjectRef> = wanted
                .iter()
                .filter(|id| !held.contains_key(*id))
                .cloned()
                .collect();
            for id in &new {
                held.insert(
                    id.clone(),
                    Held {
                        version: None,
                        secret: None,
                    },
                );
            }
            new
        };
        futures::future::join_all(new.iter().map(|id| self.fetch(id))).await;
        let held = self.held.lock().expect("held lock");
        let mut warnings = Vec::new();
        for id in &wanted {
            match held.get(id).and_then(|h| h.secret.clone()) {
                Some(s) => cfg.secrets.push(s),
                None => warnings.push(format!(
                    "Secret {id}: not found in {}",
                    self.client.url.describe()
                )),
            }
        }
        warnings
    }

    /// Names of the Secrets held, for `/config`.
    pub fn held_names(&self) -> Vec<String> {
        self.held
            .lock()
            .expect("held lock")
            .iter()
            .filter(|(_, h)| h.secret.is_some())
            .map(|(id, _)| id.to_string())
            .collect()
    }
}

/// Renews a renewable token before it expires; looks again every minute
/// (the token file may hold a new token).
async fn renew_loop(client: VaultClient) {
    loop {
        let wait = match client.lookup_self().await {
            Ok(info) => match renew_after(info.ttl, info.renewable) {
                Some(after) => {
                    tokio::time::sleep(after).await;
                    match client.renew_self().await {
                        Ok(()) => {
                            tracing::debug!("Vault-API token renewed");
                            Duration::ZERO
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Vault-API token renewal failed");
                            Duration::from_secs(5)
                        }
                    }
                }
                None => Duration::from_secs(60),
            },
            Err(e) => {
                tracing::warn!(error = %e, "Vault-API token lookup failed");
                Duration::from_secs(5)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_mount_and_prefix() {
        let u = VaultUrl::parse("vaults://127.0.0.1:8200/secret/sluice/prod").unwrap();
        assert!(u.addr.tls);
        assert_eq!(
            (u.mount.as_str(), u.prefix.as_str()),
            ("secret", "sluice/prod")
        );
        assert_eq!(
            u.path("data", &ObjectRef::new("shop", "tls")),
            "/v1/secret/data/sluice/prod/shop/tls"
        );
        let u = VaultUrl::parse("vault://h/kv").unwrap();
        assert_eq!(
            u.path("metadata", &ObjectRef::new("a", "b")),
            "/v1/kv/metadata/a/b"
        );
        assert!(VaultUrl::parse("vault://h").is_err());
        assert!(VaultUrl::parse("consul://h/x").is_err());
    }

    #[test]
    fn tokens_renew_after_two_thirds_of_their_ttl() {
        assert_eq!(renew_after(30, true), Some(Duration::from_secs(20)));
        assert_eq!(renew_after(1, true), Some(Duration::from_secs(1)));
        assert_eq!(renew_after(0, true), None, "a root token does not expire");
        assert_eq!(renew_after(30, false), None);
    }
}
