//! The in-process L7 gateway (the data path). Reads snapshots only; never
//! touches config parsing or the kernel maps.
mod body_idle;
mod cached;
pub mod client_hello;
mod conn_watch;
mod deadline;
pub mod edge;
pub mod fair;
pub mod filters;
mod forward;
mod grpc_status;
pub mod host;
mod l4;
mod load;
mod logged;
mod mirror;
mod per_source;
mod pktinfo;
pub mod pool;
mod proxy;
mod retry;
mod server;
pub mod udp;
mod upgrade;
mod upstream_tls;
pub mod workers;

pub use edge::EdgeSettings;
pub use proxy::{request_host, ConnInfo, ConnectionGate, Proxy, TlsInfo};
pub use server::{ShardServer, ShardSocket};
pub use udp::UdpServer;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body of the gateway: streamed from upstream or generated here.
pub type Body = BoxBody<Bytes, BoxError>;

/// A small generated body (error pages, admin responses).
pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}
