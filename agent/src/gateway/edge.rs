//! Client-side timeouts and limits of the gateway's listeners (the edge):
//! what a client may take and send before the gateway gives up on it. The
//! defaults follow what nginx, Envoy and HAProxy ship with, so the gateway is
//! safe in front of hostile clients without any configuration.
use std::{sync::Arc, time::Duration};

use hyper_util::{rt::TokioTimer, server::conn::auto};

use super::fair::ShardExecutor;
use crate::{path::PathRules, policy::connection::ConnectionPolicy, snapshot::ShardId};

/// Timeouts and limits of client connections (agent-wide; `--client-*`,
/// `--max-*` flags; a Gateway's SluicePolicy `connection` section replaces
/// some of them for that Gateway, [`EdgeSettings::with`]). Every field has a
/// documented default ([`EdgeSettings::default`]); see the README's "Limits
/// and timeouts".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    /// Longest wait for a complete request head: from the connection's
    /// start (or the end of the previous response on a keep-alive
    /// connection) to the last header byte. Covers clients that send
    /// nothing, trickle bytes, or keep an idle connection open. HTTP/1.1.
    pub header_timeout: Duration,
    /// Longest a request body may go without sending a byte while the
    /// gateway waits for it (not the whole body's time); answered `408`
    /// when the backend has not answered yet.
    pub body_idle_timeout: Duration,
    /// Upstream response timeout of routes without `timeouts`: from the
    /// request being sent to the backend until its response head arrives.
    /// Routes with a `backendRequest` or `request` timeout use theirs.
    pub upstream_response_timeout: Duration,
    /// TLS (Passthrough and Terminate) and TCP listeners: a relayed connection without a
    /// byte in either direction for this long is closed (agent-wide).
    pub l4_idle_timeout: Duration,
    /// UDP listeners: a session (one per client address) without a
    /// datagram in either direction for this long is closed (agent-wide).
    pub udp_idle_timeout: Duration,
    /// UDP listeners: most open sessions per listener socket; a new
    /// client's datagrams are dropped (and counted) while it is full.
    pub udp_max_sessions: usize,
    /// HTTP/2: a PING is sent after this long without frames from the
    /// client; a client that does not acknowledge it within
    /// [`h2_keepalive_timeout`](Self::h2_keepalive_timeout) is disconnected.
    pub h2_keepalive_interval: Duration,
    /// HTTP/2: how long the PING acknowledgement may take.
    pub h2_keepalive_timeout: Duration,
    /// Largest request head (request line and headers): `431` beyond it
    /// (HTTP/1.1; HTTP/2: the header list size advertised and enforced).
    pub max_head_bytes: usize,
    /// Most header fields in a request: `431` beyond it (HTTP/1.1).
    pub max_headers: usize,
    /// Longest request target (path and query, or the absolute form): `414`.
    pub max_uri_bytes: usize,
    /// HTTP/2: concurrent streams a client may open on one connection.
    pub h2_max_concurrent_streams: u32,
    /// Requests a client may abandon before their answer (HTTP/2 stream
    /// resets: the rapid-reset attack, CVE-2023-44487) per connection, over
    /// its lifetime, before the gateway closes the connection; also the
    /// limit of streams h2 resets because the client broke the protocol
    /// ("MadeYouReset"), past which h2 sends GOAWAY `ENHANCE_YOUR_CALM`.
    pub h2_max_resets: usize,
    /// Open connections from one client address to one shard (Gateway);
    /// more are closed at accept and counted. `0`: no per-source limit.
    /// Peers in `--trusted-proxies` are exempt (they carry many clients).
    pub max_connections_per_source: usize,
    /// Requests in flight per shard (Gateway) until their response head;
    /// more are answered `503` with `Retry-After`. `0`: no limit.
    pub max_in_flight_per_shard: usize,
    /// Open client connections of the whole agent, all Gateways together;
    /// more are closed at accept and counted. `0`: derived from the process's
    /// descriptor limit ([`EdgeSettings::resolved`]), so that the agent
    /// sheds load before `accept` and backend connects fail with `EMFILE`.
    pub max_client_connections: usize,
    /// How request paths are normalised before routing ([`super::path`]).
    pub path: PathRules,
}

/// The settings a shard's connections are accepted with, and the hyper
/// builder made of them, kept by each accept loop until the shard's
/// `connection` policy changes.
pub(super) struct ShardEdge {
    /// The policy these were made from (compared by pointer).
    policy: Option<Arc<ConnectionPolicy>>,
    pub settings: Arc<EdgeSettings>,
    pub builder: auto::Builder<ShardExecutor>,
}

impl ShardEdge {
    pub(super) fn new(
        shard: ShardId,
        base: &EdgeSettings,
        policy: Option<Arc<ConnectionPolicy>>,
    ) -> Self {
        let settings = match &policy {
            Some(p) => base.with(p),
            None => base.clone(),
        };
        Self {
            builder: settings.builder(shard),
            settings: Arc::new(settings),
            policy,
        }
    }

    /// Whether a Gateway policy set these (else they are the agent's).
    pub(super) fn policy_set(&self) -> bool {
        self.policy.is_some()
    }

    /// Whether these were made from `policy` (the same compiled value).
    pub(super) fn is_for(&self, policy: Option<&Arc<ConnectionPolicy>>) -> bool {
        match (&self.policy, policy) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

/// hyper allocates the header array on the heap for every request when a
/// header count is configured; at its built-in count it uses the stack.
const HYPER_STACK_HEADERS: usize = 100;
/// hyper's smallest read buffer, and so the smallest head limit it can enforce.
const HYPER_MIN_BUFFER: usize = 8192;

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            // nginx client_header_timeout (60 s) and HAProxy's usual
            // `timeout http-request 10s` bracket it.
            header_timeout: Duration::from_secs(30),
            // nginx client_body_timeout.
            body_idle_timeout: Duration::from_secs(60),
            // nginx proxy_read_timeout.
            upstream_response_timeout: Duration::from_secs(60),
            // Envoy's tcp_proxy idle_timeout; nginx's stream proxy_timeout
            // is 10 min, which cuts quiet database sessions users expect to keep.
            l4_idle_timeout: Duration::from_secs(3600),
            // Envoy's udp_proxy idle_timeout; DNS-like request/response
            // flows are long done by then, streams keep sending.
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_sessions: 16_384,
            h2_keepalive_interval: Duration::from_secs(60),
            h2_keepalive_timeout: Duration::from_secs(20),
            // HAProxy's 16 KiB buffer holds a head; nginx allows 4 × 8 KiB
            // lines, Envoy 60 KiB. 32 KiB passes real browsers' cookies.
            max_head_bytes: 32 * 1024,
            max_headers: HYPER_STACK_HEADERS,
            // nginx: a request line must fit one 8 KiB buffer.
            max_uri_bytes: 8 * 1024,
            // nginx http2_max_concurrent_streams.
            h2_max_concurrent_streams: 128,
            h2_max_resets: 200,
            max_connections_per_source: 1024,
            max_in_flight_per_shard: 10_000,
            max_client_connections: 0,
            // nginx merges slashes by default; dot segments are always removed.
            path: PathRules::default(),
        }
    }
}

impl EdgeSettings {
    /// With `max_client_connections` worked out when it is `0`: half of
    /// the descriptors left after a reserve (each client connection may need
    /// a backend connection too; the reserve is for listeners, maps, the
    /// admin endpoint and stores).
    pub fn resolved(mut self) -> Self {
        if self.max_client_connections == 0 {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid rlimit pointer.
            let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
            let nofile = if ok && lim.rlim_cur != libc::RLIM_INFINITY {
                lim.rlim_cur as usize
            } else {
                1 << 20
            };
            self.max_client_connections = (nofile.saturating_sub(256) / 2).max(64);
        }
        self
    }

    /// These settings with a Gateway's `connection` policy applied.
    pub fn with(&self, p: &ConnectionPolicy) -> EdgeSettings {
        EdgeSettings {
            header_timeout: p.header_timeout.unwrap_or(self.header_timeout),
            body_idle_timeout: p.body_idle_timeout.unwrap_or(self.body_idle_timeout),
            upstream_response_timeout: p
                .upstream_response_timeout
                .unwrap_or(self.upstream_response_timeout),
            max_head_bytes: p.max_request_head_bytes.unwrap_or(self.max_head_bytes),
            max_headers: p.max_request_headers.unwrap_or(self.max_headers),
            max_uri_bytes: p.max_uri_bytes.unwrap_or(self.max_uri_bytes),
            h2_max_concurrent_streams: p
                .h2_max_concurrent_streams
                .unwrap_or(self.h2_max_concurrent_streams),
            max_connections_per_source: p
                .max_connections_per_source
                .unwrap_or(self.max_connections_per_source),
            max_in_flight_per_shard: p
                .max_requests_in_flight
                .unwrap_or(self.max_in_flight_per_shard),
            path: PathRules {
                merge_slashes: p.merge_slashes.unwrap_or(self.path.merge_slashes),
                escaped_slashes: p.escaped_slashes.unwrap_or(self.path.escaped_slashes),
            },
            ..self.clone()
        }
    }

    /// The connection builder for HTTP/1.1 and HTTP/2 connections with these
    /// settings in effect (hyper enforces its timeouts only with a timer).
    /// HTTP/2 streams of `shard`'s connections run as its [`Fair`](super::fair::Fair) tasks.
    pub(super) fn builder(&self, shard: ShardId) -> auto::Builder<ShardExecutor> {
        let mut builder = auto::Builder::new(ShardExecutor(shard));
        let mut h1 = builder.http1();
        h1.timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            // The read buffer bounds the head: a head that does not fit is
            // answered 431 by hyper.
            .max_buf_size(self.max_head_bytes.max(HYPER_MIN_BUFFER));
        if self.max_headers != HYPER_STACK_HEADERS {
            h1.max_headers(self.max_headers);
        }
        let mut h2 = builder.http2();
        h2.timer(TokioTimer::new())
            .keep_alive_interval(self.h2_keepalive_interval)
            .keep_alive_timeout(self.h2_keepalive_timeout)
            .max_header_list_size(u32::try_from(self.max_head_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(self.h2_max_concurrent_streams)
            // Resets of streams not yet accepted by the service are h2's
            // own business; resets of forwarded streams are counted by the
            // gateway ([`super::conn_watch`]).
            .max_pending_accept_reset_streams(self.h2_max_resets.min(20))
            .max_local_error_reset_streams(self.h2_max_resets);
        builder
    }
}
