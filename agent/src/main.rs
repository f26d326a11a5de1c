use anyhow::Context as _;
use clap::Parser as _;
use sluice::cli::{Cli, Command, LogFormat};

/// mimalloc: a request allocates a few dozen small blocks (header maps,
/// buffers, futures); its thread-local free lists make each a fraction of
/// glibc malloc's cost (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: sluice::alloc::MiMalloc = sluice::alloc::MiMalloc;

/// mimalloc's options, set before anything allocates (see
/// `sluice::alloc::configure`); priority 101, the first one not reserved.
#[used]
#[unsafe(link_section = ".init_array.00101")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = sluice::alloc::configure;

fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    // One-shot commands: no agent, no log setup beyond errors.
    match &cli.command {
        Some(Command::CheckConfig { dir }) => {
            let url = sluice::cli::source_arg(dir).map_err(anyhow::Error::msg)?;
            std::process::exit(check(&cli, &url));
        }
        Some(Command::Push { dir, url }) => {
            let report = small_runtime()?
                .block_on(sluice::sources::push::push(dir, url, &cli.store_settings()))
                .with_context(|| format!("pushing {} to {}", dir.display(), url.describe()))?;
            for key in &report.written {
                println!("written  {key}");
            }
            for key in &report.deleted {
                println!("deleted  {key}");
            }
            println!(
                "{}: {} written, {} unchanged, {} deleted",
                url.describe(),
                report.written.len(),
                report.unchanged,
                report.deleted.len()
            );
            return Ok(());
        }
        Some(Command::Detach) => {
            match sluice::kernel::pins::detach(&cli.bpffs).with_context(|| {
                format!("removing the pinned datapath under {}", cli.bpffs.display())
            })? {
                Some(dir) => println!("removed the pinned eBPF datapath {}", dir.display()),
                None => println!(
                    "no pinned eBPF datapath for this network namespace under {}",
                    cli.bpffs.display()
                ),
            }
            return Ok(());
        }
        None if cli.check => {
            let url = cli
                .check_target()
                .context("nothing to check: give --config-dir or --config-source")?;
            std::process::exit(check(&cli, &url));
        }
        None => {}
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match cli.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    sluice::gateway::fair::set_enabled(cli.shard_fairness == sluice::cli::Switch::On);
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

/// Turns transparent huge pages off for this process, unless
/// `MIMALLOC_ALLOW_THP` says otherwise. mimalloc's arenas are eligible for
/// them, and then every first touch of a 2 MB range faults in and zeroes a
/// whole huge page: a config of thousands of routes (a heap of many small
/// blocks, much of it freed again after the load) ended up with its RSS in
/// partly used huge pages and a fifth of the start-up's CPU time in the
/// kernel clearing them (`cargo xtask bench routes`, 5,000 routes: 47.7 →
/// 27.8 MB anonymous RSS, 0.28 → 0.19 s CPU to ready; README). What 4 kB
/// pages cost the request path (more TLB misses) is not measured yet;
/// `MIMALLOC_ALLOW_THP=1` brings huge pages back.
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's address
    // space; it takes no pointers. Failure (an old kernel) changes nothing.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// A current-thread runtime for the one-shot commands.
fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the async runtime")
}

/// Validates `url` as the agent would; prints the verdict and every error.
/// Exit status: 0 valid, 1 invalid, 2 unreadable.
fn check(cli: &Cli, url: &sluice::sources::SourceUrl) -> i32 {
    let rt = match small_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e:#}");
            return 2;
        }
    };
    match rt.block_on(sluice::sources::push::check(url, &cli.store_settings())) {
        Ok(cfg) => {
            println!(
                "{}: configuration valid: {} GatewayClass(es), {} Gateway(s), {} ListenerSet(s), \
                 {} HTTPRoute(s), {} Service(s), {} SluicePolicy(ies)",
                url.describe(),
                cfg.gateway_classes.len(),
                cfg.gateways.len(),
                cfg.listener_sets.len(),
                cfg.routes.len(),
                cfg.services.len(),
                cfg.policies.len()
            );
            0
        }
        Err(e @ sluice::sources::push::PushError::Invalid(_)) => {
            eprintln!("{}: {e}", url.describe());
            1
        }
        Err(e) => {
            eprintln!("{}: {e}", url.describe());
            2
        }
    }
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
