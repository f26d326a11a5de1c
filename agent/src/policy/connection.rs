//! `connection`: a Gateway's own client-side timeouts and limits, in place
//! of the agent-wide defaults (the `--client-header-timeout`, … flags).
//!
//! Unlike the other sections it is not a request phase: its settings apply
//! from the accept of a connection, before a listener or route is known, so
//! only a policy targeting a whole Gateway may set it (checked when the
//! policy is read). A connection keeps the settings it was accepted with;
//! a changed policy applies to the connections accepted after it.
use std::time::Duration;

/// The settings a Gateway's policy sets; `None` keeps the agent's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConnectionPolicy {
    /// Longest wait for a complete request head (HTTP/1.1), and for the
    /// first request of a connection.
    pub header_timeout: Option<Duration>,
    /// Longest a request body may go without a byte (`408`).
    pub body_idle_timeout: Option<Duration>,
    /// Upstream response timeout of routes without `timeouts` (`504`).
    pub upstream_response_timeout: Option<Duration>,
    /// Largest request head (`431`).
    pub max_request_head_bytes: Option<usize>,
    /// Most header fields in a request (`431`, HTTP/1.1).
    pub max_request_headers: Option<usize>,
    /// Longest request target (`414`).
    pub max_uri_bytes: Option<usize>,
    /// HTTP/2 streams a client may open at once on one connection.
    pub h2_max_concurrent_streams: Option<u32>,
    /// Open connections from one client address to the Gateway.
    pub max_connections_per_source: Option<usize>,
    /// Requests in flight through the Gateway (`503` beyond).
    pub max_requests_in_flight: Option<usize>,
    /// Whether `//` in request paths is merged into `/`.
    pub merge_slashes: Option<bool>,
    /// What happens to `%2F` and `%5C` in request paths.
    pub escaped_slashes: Option<EscapedSlashes>,
}

/// What the gateway does with an encoded slash (`%2F`) or backslash
/// (`%5C`) in a request path (see [`crate::path`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum EscapedSlashes {
    /// Forwarded as sent and matched as part of its segment.
    #[default]
    Keep,
    /// The request is refused with `400`.
    Reject,
    /// Decoded into `/` before the path is normalised, matched and forwarded.
    Unescape,
}
