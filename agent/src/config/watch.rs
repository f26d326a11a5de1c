//! Watching the configuration directory (inotify through `notify`). Changes
//! are coalesced: [`DirWatcher::changed`] returns once the directory has been
//! quiet for a while, so an editor's save or a GitOps sync that touches many
//! files causes one reload, not one per file.
use std::{path::Path, time::Duration};

use notify::{
    event::{AccessKind, AccessMode, CreateKind, MetadataKind, ModifyKind},
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
/// trigger the next. A file being written counts when the writer closes it
/// (or renames it into place), not at its creation or at each write: a
/// reload then never reads a half-written file, so the quiet period before
/// a reload can be short.
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(ModifyKind::Data(_)) => false,
        EventKind::Create(CreateKind::File) => false,
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

    /// Waits for a change and then for `quiet` without further changes, but
    /// no longer than ten times `quiet` in all, so a directory that never
    /// stops changing is still reloaded. `false` when the watch has ended.
    pub async fn changed(&mut self, quiet: Duration) -> bool {
        self.notified().await && self.settle(quiet).await
    }

    /// Waits for the first event of a change; `false` when the watch has
    /// ended. Cancel-safe: dropped before it returns, no event is lost.
    pub async fn notified(&mut self) -> bool {
        self.rx.recv().await.is_some()
    }

    /// After [`notified`](Self::notified): waits until the directory has been
    /// quiet for `quiet` (at most ten times `quiet`). `false` when the watch
    /// has ended.
    pub async fn settle(&mut self, quiet: Duration) -> bool {
        settle(&mut self.rx, quiet, quiet * 10).await
    }
}

/// After a change was signalled on `rx`: waits until `quiet` passes without
/// another signal, but no longer than `max` in all, so that a source that
/// never stops changing (a stream of status echoes, a directory being
/// written to) still gets its changes applied. `false` when `rx` has ended.
pub async fn settle(rx: &mut mpsc::Receiver<()>, quiet: Duration, max: Duration) -> bool {
    let give_up = tokio::time::Instant::now() + max;
    loop {
        let until = (tokio::time::Instant::now() + quiet).min(give_up);
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(())) if tokio::time::Instant::now() < give_up => continue,
            Ok(Some(())) => return true,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watcher fed by hand.
    fn fake() -> (mpsc::Sender<()>, DirWatcher) {
        let (tx, rx) = mpsc::channel(1);
        let watcher = notify::recommended_watcher(|_: notify::Result<notify::Event>| {}).unwrap();
        (
            tx,
            DirWatcher {
                _watcher: watcher,
                rx,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_waits_for_quiet_but_not_forever() {
        let quiet = Duration::from_millis(100);
        let (tx, mut w) = fake();
        tx.send(()).await.unwrap();
        let start = tokio::time::Instant::now();
        assert!(w.changed(quiet).await);
        assert_eq!(start.elapsed(), quiet, "returns after one quiet period");

        // A change every 50 ms never leaves 100 ms of quiet: the cap ends the wait.
        let feeder = tokio::spawn(async move {
            loop {
                if tx.send(()).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = tokio::time::Instant::now();
        assert!(w.changed(quiet).await);
        assert!(
            start.elapsed() <= quiet * 10 + Duration::from_millis(50),
            "{:?}",
            start.elapsed()
        );
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_signals_waits_at_most_max() {
        // The Kubernetes source's case: a 20 ms quiet period, echoes every
        // 5 ms for seconds; the change must go through after 100 ms.
        let (quiet, max) = (Duration::from_millis(20), Duration::from_millis(100));
        let (tx, mut rx) = mpsc::channel(1);
        let feeder = tokio::spawn(async move {
            for _ in 0..1_000 {
                if tx.send(()).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let start = tokio::time::Instant::now();
        assert!(settle(&mut rx, quiet, max).await);
        let waited = start.elapsed();
        assert!(
            waited >= max && waited <= max + Duration::from_millis(5),
            "{waited:?}"
        );
        feeder.abort();
        // Alone, a signal waits one quiet period; an ended channel says so.
        let (tx, mut rx) = mpsc::channel(1);
        tx.send(()).await.unwrap();
        let start = tokio::time::Instant::now();
        assert!(settle(&mut rx, quiet, max).await);
        assert_eq!(start.elapsed(), quiet);
        drop(tx);
        assert!(!settle(&mut rx, quiet, max).await);
    }

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
        assert!(relevant(&EventKind::Modify(ModifyKind::Name(
            notify::event::RenameMode::To
        ))));
        // A write in progress: its close (or rename into place) counts.
        assert!(!relevant(&EventKind::Modify(ModifyKind::Data(
            notify::event::DataChange::Content
        ))));
        assert!(!relevant(&EventKind::Create(CreateKind::File)));
        assert!(relevant(&EventKind::Create(CreateKind::Folder)));
        assert!(relevant(&EventKind::Remove(
            notify::event::RemoveKind::File
        )));
    }
}
