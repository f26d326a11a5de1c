//! The writer thread: takes entries off the queue, formats them and writes
//! them in batches; reopens a file destination when asked. A thread of its
//! own rather than a task: file writes block, and a blocked writer must not
//! hold up any of the data path's runtimes.
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, TryRecvError},
        Arc,
    },
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;

use super::{AccessLogError, Entry, Format};

/// Entries formatted before one write.
const BATCH: usize = 256;
/// How often the writer drains the queue (and looks at the reopen flag).
/// Lines reach the file at most this late; the queue must hold what
/// arrives meanwhile (16,384 entries: 1.6 million requests per second).
const FLUSH_EVERY: Duration = Duration::from_millis(10);

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

pub(super) fn spawn(
    rx: Receiver<Box<Entry>>,
    mut sink: Sink,
    format: Format,
    written: Counter,
    reopen: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-access-log".into())
        .spawn(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut failing = false;
            loop {
                // Polled, never blocked on: a receiver waiting in `recv`
                // makes every sender wake it (a futex call and a context
                // switch per request, measured at ~40 % of the request
                // path's CPU). Entries wait up to FLUSH_EVERY in the queue.
                let mut n = 0;
                let mut gone = false;
                while n < BATCH {
                    match rx.try_recv() {
                        Ok(e) => {
                            n += 1;
                            match format {
                                Format::Json => super::write_json(&e, &mut buf),
                                Format::Text => super::write_text(&e, &mut buf),
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        // Every handle is gone: the agent is stopping.
                        Err(TryRecvError::Disconnected) => {
                            gone = true;
                            break;
                        }
                    }
                }
                if reopen.swap(false, Ordering::AcqRel) {
                    sink.reopen();
                }
                if n > 0 {
                    match sink.write(&buf) {
                        Ok(()) => {
                            written.inc_by(n as u64);
                            failing = false;
                        }
                        // Logged once per outage, not per batch.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "writing the access log failed; lines are lost until it works again");
                        }
                        Err(_) => {}
                    }
                    buf.clear();
                }
                if gone {
                    break;
                }
                // A full batch: more are probably waiting.
                if n < BATCH {
                    std::thread::sleep(FLUSH_EVERY);
                }
            }
        })
        .map(drop)
}
