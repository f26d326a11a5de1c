use anyhow::Context as _;
use clap::Parser as _;
use sluice::cli::{Cli, LogFormat};

/// mimalloc: a request allocates a few dozen small blocks (header maps,
/// buffers, futures); its thread-local free lists make each a fraction of
/// glibc malloc's cost (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// mimalloc as the global allocator, asked for plain blocks whenever the
/// alignment allows: `mi_malloc` is a thread-local free-list pop, while
/// `mi_malloc_aligned` (what the `mimalloc` crate calls for every block)
/// takes a slower generic path in mimalloc 3.
struct MiMalloc;

/// Every mimalloc block of at least this size is aligned to it (x86_64 and
/// aarch64: `MI_MAX_ALIGN_SIZE`); smaller blocks to their size class.
const MI_MIN_ALIGN: usize = 16;

impl MiMalloc {
    fn plain(layout: std::alloc::Layout) -> bool {
        layout.align() <= MI_MIN_ALIGN && layout.align() <= layout.size()
    }
}

// SAFETY: the mimalloc functions return blocks of at least the requested
// size and alignment (the plain ones only where `plain` holds), or null.
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        if Self::plain(layout) {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        if Self::plain(layout) {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        if layout.align() <= MI_MIN_ALIGN && layout.align() <= new_size {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match cli.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    let budget = sluice::cpus::CpuBudget::detect();
    let workers = match cli.worker_threads {
        Some(n) => {
            tracing::info!(
                worker_threads = n.get(),
                "runtime worker threads from --worker-threads"
            );
            n.get()
        }
        None => {
            let n = budget.threads();
            tracing::info!(
                worker_threads = n,
                affinity_cpus = ?budget.affinity,
                cgroup_quota_cpus = ?budget.quota.as_ref().map(|(q, _)| *q),
                quota_cgroup = ?budget.quota.as_ref().map(|(_, dir)| dir.display().to_string()),
                host_cpus = budget.host,
                "runtime worker threads from the CPUs this process may use (--worker-threads to override)"
            );
            n
        }
    };
    // Runtimes are single-threaded: no work stealing, no cross-thread
    // wake-ups or run-queue synchronisation, which the multi-thread scheduler
    // pays on every task switch even with one worker. One worker: everything
    // (accept loops, connections, the control plane) runs on this thread.
    // Several: a runtime per worker thread for the data path
    // (gateway::workers), the control plane on this one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the async runtime")?;
    let data_path = if workers > 1 {
        Some(
            sluice::gateway::workers::Workers::start(workers)
                .context("starting the data-path worker threads")?,
        )
    } else {
        None
    };
    let result = runtime.block_on(run(cli));
    if let Some(w) = data_path {
        w.stop();
    }
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings().context("reading the agent config")?;
    let app = sluice::app::build(settings)
        .await
        .context("sluice failed to start")?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    app.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
