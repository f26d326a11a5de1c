//! `sluice push DIR URL`: mirrors a config directory into a store, one key
//! per YAML file (`PREFIX/<path relative to DIR>`), deleting the keys under
//! the prefix that no file backs. The directory is validated first, exactly
//! as the agent would, so an invalid config is never pushed.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::{driver::Store, SourceError, SourceUrl, StoreSettings};
use crate::config::{self, ConfigError};

/// Errors of a push.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("configuration rejected, nothing pushed: {0}")]
    Invalid(#[from] ConfigError),
    #[error("{0} is a directory source; push to consul://, consuls://, etcd:// or etcds://")]
    NotAStore(String),
    #[error(transparent)]
    Store(#[from] SourceError),
    #[error("{0} holds no keys")]
    Empty(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a push changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub written: Vec<String>,
    pub unchanged: usize,
    pub deleted: Vec<String>,
}

/// The YAML files under `dir` (recursively, hidden entries skipped, as the
/// directory source reads them) by `/`-separated relative path.
pub fn yaml_files(dir: &Path) -> Result<BTreeMap<String, String>, PushError> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), PushError> {
        let read = |path: &Path, e| PushError::Read {
            path: path.to_path_buf(),
            source: e,
        };
        for entry in std::fs::read_dir(dir).map_err(|e| read(dir, e))? {
            let entry = entry.map_err(|e| read(dir, e))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(base, &path, out)?;
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                let text = std::fs::read_to_string(&path).map_err(|e| read(&path, e))?;
                let rel = path
                    .strip_prefix(base)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, text);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Validates `dir` and mirrors it into the store `url` names.
pub async fn push(
    dir: &Path,
    url: &SourceUrl,
    settings: &StoreSettings,
) -> Result<PushReport, PushError> {
    config::load_dir(dir)?;
    let store =
        Store::connect(url, settings)?.ok_or_else(|| PushError::NotAStore(url.describe()))?;
    let files = yaml_files(dir)?;
    let existing = store.list().await?;
    let mut report = PushReport::default();
    let mut wanted = std::collections::BTreeSet::new();
    for (rel, text) in &files {
        let key = store.key_for(rel);
        if existing.get(&key) == Some(text) {
            report.unchanged += 1;
        } else {
            store.put(&key, text).await?;
            report.written.push(key.clone());
        }
        wanted.insert(key);
    }
    // Deletes last: the store never holds less than the new set meanwhile
    // (a route briefly left over is better than one briefly missing).
    for key in existing.keys().filter(|k| !wanted.contains(*k)) {
        store.delete(key).await?;
        report.deleted.push(key.clone());
    }
    Ok(report)
}

/// Reads what `url` holds once and validates it exactly as the agent would
/// (`sluice check-config`, `sluice --check`).
pub async fn check(url: &SourceUrl, settings: &StoreSettings) -> Result<config::Config, PushError> {
    let Some(store) = Store::connect(url, settings)? else {
        let SourceUrl::File(dir) = url else {
            unreachable!("only a directory has no store")
        };
        return Ok(config::load_dir(dir)?);
    };
    let entries = store.list().await?;
    if entries.is_empty() {
        return Err(PushError::Empty(url.describe()));
    }
    let mut keys = config::KeyedDocuments::default();
    Ok(keys
        .load(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))?
        .0)
}
