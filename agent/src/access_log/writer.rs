//! Where lines wait, and the thread that writes them. The data path formats
//! a finished request's line on its own thread (the entry is hot in its
//! cache there, and its memory is freed where it was allocated) and appends
//! it to one shared buffer under a lock held for a copy only. The writer
//! thread swaps that buffer for an empty one every [`FLUSH_EVERY`] and
//! writes it with the lock released, so a slow disk or a stalled stdout
//! never holds up a request: once [`Pending`] holds the configured number
//! of lines, more are dropped and counted. A thread of its own rather than
//! a task: file writes block, and a blocked writer must not hold up any of
//! the data path's runtimes.
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;

use super::AccessLogError;

/// How often the writer takes the waiting lines (and looks at the reopen
/// flag). Lines reach the destination at most about this late; the
/// buffer must hold what arrives meanwhile (16,384 lines: 1.6 million
/// requests per second).
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Capacity a written buffer keeps: 10 ms of ~500-byte lines at 50,000
/// requests per second. A burst that grew it further gives the rest back,
/// so the agent's memory does not stay at its busiest moment.
const KEEP_BYTES: usize = 256 * 1024;

/// Lines formatted and waiting for the writer, in the order they were
/// finished.
#[derive(Default)]
pub(super) struct Pending {
    buf: Vec<u8>,
    lines: usize,
}

/// What the data path and the writer thread share.
pub(super) struct Shared {
    pending: Mutex<Pending>,
    /// Lines that may wait; past it, lines are dropped.
    capacity: usize,
    pub(super) reopen: AtomicBool,
    pub(super) written: Counter,
    /// Rounds of the writer completed (each takes what waits and writes
    /// it): a flush waits for two more.
    pub(super) rounds: AtomicU64,
}

impl Shared {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            pending: Mutex::default(),
            capacity: capacity.max(1),
            reopen: AtomicBool::new(false),
            written: Counter::default(),
            rounds: AtomicU64::new(0),
        }
    }

    /// Appends one formatted line; `false` (and nothing appended) when
    /// `capacity` lines are waiting already.
    pub(super) fn push(&self, line: &[u8]) -> bool {
        let mut p = self.lock();
        if p.lines >= self.capacity {
            return false;
        }
        p.buf.extend_from_slice(line);
        p.lines += 1;
        true
    }

    /// Swaps the waiting lines for the (empty) `spare`; their count.
    fn take(&self, spare: &mut Vec<u8>) -> usize {
        let mut p = self.lock();
        std::mem::swap(&mut p.buf, spare);
        std::mem::take(&mut p.lines)
    }

    // Nothing under the lock can leave the buffer inconsistent (a failed
    // allocation aborts), so a poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    pub(super) fn file(path: &Path) -> Result<Self, AccessLogError> {
        Ok(Self::File {
            path: path.to_owned(),
            file: open(path)?,
        })
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(buf),
        }
    }

    /// Reopens a file (the old one was moved away by log rotation); on
    /// failure keeps writing to the old one and says so.
    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open(path) {
                Ok(f) => {
                    *file = f;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "access log not reopened; still writing to the old file")
                }
            }
        }
    }
}

fn open(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Starts the writer thread. It ends, after writing what is left, once it
/// holds the last reference to `shared` (every handle is gone).
pub(super) fn spawn(shared: Arc<Shared>, mut sink: Sink) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-access-log".into())
        .spawn(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut failing = false;
            loop {
                // Read before taking: a handle dropped after this read
                // appended its lines before it went, so the take below
                // gets them.
                let last = Arc::strong_count(&shared) == 1;
                // Pairs with the release of the handles' last drop.
                std::sync::atomic::fence(Ordering::Acquire);
                if shared.reopen.swap(false, Ordering::AcqRel) {
                    sink.reopen();
                }
                // Polled, never waited for: a writer woken by every line
                // costs a futex call and a context switch per request.
                let n = shared.take(&mut buf);
                if n > 0 {
                    match sink.write(&buf) {
                        Ok(()) => {
                            shared.written.inc_by(n as u64);
                            failing = false;
                        }
                        // Logged once per outage, not per batch.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "writing the access log failed; lines are lost until it works again");
                        }
                        Err(_) => {}
                    }
                    recycle(&mut buf);
                }
                shared.rounds.fetch_add(1, Ordering::Release);
                if last {
                    break;
                }
                std::thread::sleep(FLUSH_EVERY);
            }
        })
        .map(drop)
}

/// Empties a written buffer for the next swap, giving back what a burst
/// made it grow past [`KEEP_BYTES`].
fn recycle(buf: &mut Vec<u8>) {
    buf.clear();
    buf.shrink_to(KEEP_BYTES);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_does_not_keep_its_memory() {
        let mut buf = vec![b'x'; 8 * 1024 * 1024];
        recycle(&mut buf);
        assert!(buf.is_empty());
        assert!(buf.capacity() <= KEEP_BYTES, "{}", buf.capacity());
        // A buffer of ordinary size keeps its room.
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"line\n");
        recycle(&mut buf);
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 64 * 1024);
    }

    #[test]
    fn lines_wait_in_order_up_to_the_capacity() {
        let s = Shared::new(2);
        assert!(s.push(b"a\n"));
        assert!(s.push(b"b\n"));
        assert!(!s.push(b"c\n"), "a third line past a capacity of two");
        let mut buf = Vec::new();
        assert_eq!(s.take(&mut buf), 2);
        assert_eq!(buf, b"a\nb\n");
        // Taking makes room again.
        assert!(s.push(b"d\n"));
        let mut buf = Vec::new();
        assert_eq!(s.take(&mut buf), 1);
        assert_eq!(buf, b"d\n");
    }
}
