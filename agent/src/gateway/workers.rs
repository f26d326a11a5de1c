//! Data-path workers for `--worker-threads N` with N > 1: one
//! single-threaded tokio runtime per worker thread (thread per core), each
//! running an accept loop on every shard socket and everything its
//! connections do — their requests, upstream connections (its own pool,
//! [`super::pool`]), mirrors — so a request never changes threads and no
//! scheduler synchronises between workers.
//!
//! The workers accept from the same listening sockets (each registers its
//! own handle of the socket with its own event loop), not from an
//! `SO_REUSEPORT` group: a connection goes to whichever worker accepts it
//! first, so a busy worker takes fewer, and the eBPF datapath is unchanged —
//! sk_lookup still steers to the one socket per shard in its SockMap.
//!
//! Without workers (one worker thread, the in-process tests) accept loops
//! run on the runtime that starts them.
use std::{sync::OnceLock, thread::JoinHandle};

use tokio::runtime::Handle;

/// The running workers' runtimes, set once at start-up.
static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

/// The workers' runtimes; empty when the agent runs without them.
pub fn handles() -> &'static [Handle] {
    WORKERS.get().map_or(&[], Vec::as_slice)
}

/// Worker threads, stopped (after the shards' servers have drained) by
/// [`Workers::stop`].
pub struct Workers {
    threads: Vec<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Workers {
    /// Starts `n` worker threads, each with a current-thread runtime, and
    /// makes them the data path's: shard servers started afterwards accept
    /// on them. Only the first call in a process registers its workers.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || {
                    super::pool::set_worker_index(i);
                    // Runs the worker's tasks until told to stop.
                    let _ = runtime.block_on(stopped);
                })?;
            threads.push((stop, thread));
        }
        if WORKERS.set(handles).is_err() {
            tracing::warn!("data-path workers already started; the new ones stay idle");
        }
        Ok(Self { threads })
    }

    /// Ends the worker threads (their remaining tasks are dropped).
    pub fn stop(self) {
        for (stop, thread) in self.threads {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}
