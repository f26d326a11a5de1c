//! Watching the configuration directory (inotify through `notify`). Changes
//! are coalesced: [`DirWatcher::changed`] returns once the directory has been
//! quiet for a while, so an editor's save or a GitOps sync that touches many
//! files causes one reload, not one per file.
use std::{path::Path, time::Duration};

use notify::{
    event::{AccessKind, AccessMode, MetadataKind, ModifyKind},
    EventKind, RecursiveMode, Watcher as _,
};
use tokio::sync::mpsc;

use super::ConfigError;

/// A recursive watch on one directory.
pub struct DirWatcher {
    // Kept alive: dropping it ends the inotify watch.
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::Receiver<()>,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher").finish_non_exhaustive()
    }
}

/// Whether an event can change what [`super::load_dir`] reads. Reads (ours
/// included) and access-time updates must not count, or every reload would
/// trigger the next.
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

impl DirWatcher {
    pub fn new(dir: &Path) -> Result<Self, ConfigError> {
        // Capacity 1: one pending "something changed" is all the reloader needs.
        let (tx, rx) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(e) if !relevant(&e.kind) => {}
                Ok(_) => {
                    let _ = tx.try_send(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "config watch error; reloading to be safe");
                    let _ = tx.try_send(());
                }
            })
            .map_err(|source| ConfigError::Watch {
                path: dir.to_path_buf(),
                source,
            })?;
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|source| ConfigError::Watch {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            _watcher: watcher,
            rx,
        })
    }

    /// Waits for a change and then for `quiet` without further changes.
    /// `false` when the watch has ended.
    pub async fn changed(&mut self, quiet: Duration) -> bool {
        if self.rx.recv().await.is_none() {
            return false;
        }
        loop {
            match tokio::time::timeout(quiet, self.rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_do_not_count_as_changes() {
        assert!(!relevant(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!relevant(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(relevant(&EventKind::Modify(ModifyKind::Any)));
        assert!(relevant(&EventKind::Remove(
            notify::event::RemoveKind::File
        )));
    }
}
