//! Echo backend for tests, conformance runs and the quickstart.
use clap::Parser;
use sluice_tests::echo::{serve, Identity};

/// HTTP echo server answering like the Gateway API conformance echo backend.
#[derive(Parser)]
struct Args {
    /// Address to listen on (repeatable).
    #[arg(long = "listen", required = true)]
    listen: Vec<std::net::SocketAddr>,
    /// Pod name reported in responses.
    #[arg(long, env = "POD_NAME", default_value = "echo")]
    pod: String,
    /// Namespace reported in responses.
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    namespace: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut tasks = Vec::new();
    for addr in &args.listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("sluice-echo listening on {}", listener.local_addr()?);
        tasks.push(tokio::spawn(serve(
            listener,
            Identity {
                pod: args.pod.clone(),
                namespace: args.namespace.clone(),
            },
        )));
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
