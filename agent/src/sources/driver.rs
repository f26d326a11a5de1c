//! Applies what a source holds. A store's watch publishes each changed
//! [`StoreView`]; the driver converts it (whole or nothing: one invalid
//! document and nothing changes, the error naming its key), adds discovered
//! backends and Secrets ([`Extras`]) and hands it to
//! [`Runtime::apply_config`]. The last good configuration keeps serving
//! through rejections, outages and empty reads: an empty (or ACL-filtered)
//! read is never applied — it would take every route down at once — and
//! is reported on `/config` instead.
//!
//! The directory source runs here too when discovery or secrets need
//! re-applying on their changes; otherwise [`Runtime::watch`] serves it.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{watch, Notify},
    task::JoinHandle,
};

use super::{
    consul::{self, ConsulClient},
    discovery::Discovery,
    etcd::{self, EtcdClient},
    vault::VaultSecrets,
    DocumentSource, KeySource, Secret, SourceError, SourceUrl, StoreSettings, StoreView,
};
use crate::{
    admin::{AdminState, SourceHealth},
    config::{Config, ConfigError, DirWatcher, LoadStats},
    reload::{ReloadError, Runtime, DEBOUNCE},
};

/// How long a store must be quiet before its state is applied: a push of a
/// directory lands as one change, not one per key.
const QUIET: Duration = DEBOUNCE;
/// After a failed apply (a port still in use, say), try again this often.
const RETRY: Duration = Duration::from_secs(5);

/// A store holding config documents, one YAML file per key.
#[derive(Debug, Clone)]
pub enum Store {
    /// Client and the folder (`prefix/`).
    Consul(ConsulClient, String),
    /// Client and the key prefix (`/prefix/`).
    Etcd(EtcdClient, String),
}

impl Store {
    /// Connects to the store `url` names (`None` for a directory).
    pub fn connect(url: &SourceUrl, settings: &StoreSettings) -> Result<Option<Self>, SourceError> {
        Ok(match url {
            SourceUrl::File(_) => None,
            SourceUrl::Consul(addr) => {
                let token = Secret::from_file_or_env(
                    settings.consul_token_file.as_ref(),
                    &["CONSUL_HTTP_TOKEN"],
                );
                Some(Store::Consul(
                    ConsulClient::new(addr, &settings.tls, token)?,
                    consul::folder(&addr.prefix),
                ))
            }
            SourceUrl::Etcd(addr) => {
                let auth = settings.etcd_user.clone().map(|u| {
                    (
                        u,
                        Secret::from_file_or_env(
                            settings.etcd_password_file.as_ref(),
                            &["ETCD_PASSWORD"],
                        ),
                    )
                });
                Some(Store::Etcd(
                    EtcdClient::new(addr, &settings.tls, auth)?,
                    etcd::key_prefix(&addr.prefix),
                ))
            }
        })
    }

    /// The key a file at `relative` (a `/`-separated path) is stored under.
    pub fn key_for(&self, relative: &str) -> String {
        match self {
            Store::Consul(_, folder) | Store::Etcd(_, folder) => format!("{folder}{relative}"),
        }
    }

    /// Every key under the prefix.
    pub async fn list(&self) -> Result<BTreeMap<String, String>, SourceError> {
        match self {
            Store::Consul(c, folder) => Ok(c.read_prefix(folder, 0, Duration::ZERO).await?.entries),
            Store::Etcd(c, prefix) => Ok(c.range(prefix).await?.0),
        }
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<(), SourceError> {
        match self {
            Store::Consul(c, _) => c.put(key, value).await,
            Store::Etcd(c, _) => c.put(key, value).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), SourceError> {
        match self {
            Store::Consul(c, _) => c.delete(key).await,
            Store::Etcd(c, _) => c.delete(key).await,
        }
    }

    /// Starts following the prefix, publishing each changed state.
    fn watch(&self, tx: watch::Sender<StoreView>, admin: &AdminState) -> JoinHandle<()> {
        let health = admin.source_health.clone();
        match self.clone() {
            Store::Consul(c, folder) => tokio::spawn(consul::watch_kv(c, folder, tx, health)),
            Store::Etcd(c, prefix) => tokio::spawn(etcd::watch_prefix(c, prefix, tx, health)),
        }
    }
}

/// What is added to every configuration before it is applied, from stores
/// other than the config source: Consul-discovered backends, Secrets from a
/// Vault-API store.
#[derive(Debug, Default, Clone)]
pub struct Extras {
    pub discovery: Option<Arc<Discovery>>,
    pub secrets: Option<Arc<VaultSecrets>>,
    /// Notified when either has a change to apply.
    pub changed: Arc<Notify>,
}

impl Extras {
    pub fn is_empty(&self) -> bool {
        self.discovery.is_none() && self.secrets.is_none()
    }

    /// Adds discovered backends and held Secrets to `cfg`; warnings are logged.
    pub async fn augment(&self, cfg: &mut Config) {
        let mut warnings = Vec::new();
        if let Some(d) = &self.discovery {
            warnings.extend(d.augment(cfg).await);
        } else if super::discovery::references_consul(cfg) {
            warnings.push(
                "routes reference ConsulService backends but no Consul is configured \
                 (--consul-addr, or a consul:// config source): they have no endpoints"
                    .into(),
            );
        }
        if let Some(s) = &self.secrets {
            warnings.extend(s.augment(cfg).await);
        }
        for w in warnings {
            tracing::warn!("{w}");
        }
    }

    /// Stops the discovery watches and the secret polling.
    pub fn stop(&self) {
        if let Some(d) = &self.discovery {
            d.stop();
        }
        if let Some(s) = &self.secrets {
            s.stop();
        }
    }
}

/// The running source driver.
pub struct SourceDriver {
    tasks: Vec<JoinHandle<()>>,
    extras: Extras,
}

impl SourceDriver {
    /// Stops the store watch, the apply loop, discovery and secret polling.
    pub async fn shutdown(self) {
        self.extras.stop();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Converts (off the async workers), augments and applies.
async fn load_and_apply<S: DocumentSource + 'static>(
    source: &Arc<Mutex<S>>,
    extras: &Extras,
    runtime: &Arc<Runtime>,
) -> Result<LoadStats, ReloadError> {
    let src = source.clone();
    let (mut cfg, stats) =
        tokio::task::spawn_blocking(move || src.lock().expect("source lock").load())
            .await
            .map_err(|_| ReloadError::Compile)??;
    extras.augment(&mut cfg).await;
    runtime.apply_config(cfg).await?;
    Ok(stats)
}

/// Starts a store source: the agent becomes ready with the first
/// configuration applied from it.
pub fn start_store(
    store: Store,
    url: &SourceUrl,
    runtime: Arc<Runtime>,
    admin: Arc<AdminState>,
    extras: Extras,
) -> SourceDriver {
    let describe = url.describe();
    admin.source_health.set_url(describe.clone());
    let (tx, rx) = watch::channel(StoreView::default());
    let watcher = store.watch(tx, &admin);
    let apply = tokio::spawn(store_loop(rx, describe, runtime, admin, extras.clone()));
    SourceDriver {
        tasks: vec![watcher, apply],
        extras,
    }
}

async fn store_loop(
    mut rx: watch::Receiver<StoreView>,
    url: String,
    runtime: Arc<Runtime>,
    admin: Arc<AdminState>,
    extras: Extras,
) {
    let health = admin.source_health.clone();
    let source = Arc::new(Mutex::new(KeySource::default()));
    let mut retry = false;
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = extras.changed.notified() => {}
            _ = tokio::time::sleep(RETRY), if retry => {}
        }
        // Quiet for QUIET, at most ten times that in all.
        let give_up = tokio::time::Instant::now() + QUIET * 10;
        loop {
            let until = (tokio::time::Instant::now() + QUIET).min(give_up);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                r = rx.changed() => if r.is_err() { return },
            }
        }
        let view = rx.borrow_and_update().clone();
        if !view.loaded {
            continue;
        }
        let serving = runtime.generation() > 0;
        if view.entries.is_empty() {
            let why = format!(
                "{url} returned no keys at position {} (an empty prefix, or a token that may not \
                 read it); {}",
                view.position,
                if serving {
                    "the configuration being served is kept"
                } else {
                    "nothing to serve yet"
                }
            );
            tracing::warn!("{why}");
            health.set_not_applied(Some(why));
            continue;
        }
        let started = std::time::Instant::now();
        source.lock().expect("source lock").view = view.clone();
        match load_and_apply(&source, &extras, &runtime).await {
            Ok(stats) => {
                retry = false;
                health.set_not_applied(None);
                if !admin.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!(source = %url, "first configuration applied; ready");
                }
                tracing::info!(
                    source = %url,
                    position = view.position,
                    keys = stats.files,
                    parsed = stats.parsed,
                    generation = runtime.generation(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "configuration applied"
                );
            }
            Err(ReloadError::Cancelled(why)) => {
                tracing::info!("configuration change not applied: {why}")
            }
            Err(e) => {
                // An invalid document stays invalid until its key changes;
                // anything else (a port in use) may go away by itself.
                retry = !matches!(e, ReloadError::Config(ConfigError::Invalid(_)));
                health.set_not_applied(Some(format!("rejected: {e}")));
                runtime.reject(&e);
            }
        }
    }
}

/// The directory source when [`Extras`] are in use: the first load must
/// succeed (as without them); then every change of the directory, of a
/// discovered service or of a held Secret is applied.
pub async fn start_dir(
    dir: &Path,
    runtime: Arc<Runtime>,
    health: Arc<SourceHealth>,
    extras: Extras,
    watch_dir: bool,
) -> Result<SourceDriver, ReloadError> {
    health.set_url(SourceUrl::File(dir.to_path_buf()).describe());
    let source = Arc::new(Mutex::new(crate::config::DirSource::new(dir)));
    load_and_apply(&source, &extras, &runtime).await?;
    let watcher = if watch_dir {
        Some(DirWatcher::new(dir).map_err(ReloadError::Config)?)
    } else {
        None
    };
    let dir: PathBuf = dir.to_path_buf();
    let ex = extras.clone();
    let task = tokio::spawn(async move {
        let mut watcher = watcher;
        let mut retry = false;
        loop {
            tokio::select! {
                open = async {
                    match watcher.as_mut() {
                        Some(w) => w.changed(DEBOUNCE).await,
                        None => std::future::pending().await,
                    }
                } => if !open { return },
                _ = ex.changed.notified() => {}
                _ = tokio::time::sleep(RETRY), if retry => {}
            }
            match load_and_apply(&source, &ex, &runtime).await {
                Ok(_) => {
                    retry = false;
                    tracing::info!(dir = %dir.display(), generation = runtime.generation(), "configuration reloaded");
                }
                Err(ReloadError::Cancelled(why)) => {
                    tracing::info!("configuration change not applied: {why}")
                }
                Err(e) => {
                    retry = !matches!(e, ReloadError::Config(ConfigError::Invalid(_)));
                    runtime.reject(&e);
                }
            }
        }
    });
    Ok(SourceDriver {
        tasks: vec![task],
        extras,
    })
}
