//! Admin endpoint: `/` (the status page), `/api/overview` (its data as
//! JSON), `/healthz` (process alive), `/readyz` (listeners up and config
//! applied), `/metrics` (Prometheus: OpenMetrics when asked for, else text
//! format 0.0.4), `/config` (what is served), `/status` (Gateway API status
//! conditions), `/ratelimit` (penalty box, cluster store, quotas) and
//! `DELETE /ratelimit/penalties?prefix=...` (take a source out of the box),
//! `/cache` (response caches) and `DELETE /cache?policy=ns/name&prefix=/p`
//! (purge).
//!
//! Who may see what: `/metrics`, `/healthz` and `/readyz` are for anyone who
//! reaches a listener (Prometheus, kubelet probes on the node's address);
//! everything else — the served config, held Secret names, identities, the
//! status page and every call that changes something — only for clients on
//! loopback (the node itself), whatever address the listener is bound to.
//! `--metrics-addr` adds a listener that never serves more than the probes.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    control::status::Status,
    gateway::{full, Body},
    reload::Runtime,
    snapshot::Snapshot,
};

mod cache;
pub mod exposition;
pub mod overview;

/// The status page: one self-contained document (inline style and script,
/// no external assets) that renders `/api/overview` and polls it.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// State the admin endpoint reports on.
pub struct AdminState {
    pub registry: Registry,
    pub ready: AtomicBool,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Datapath in use, for `/config`.
    pub datapath: String,
    /// Warnings of the last applied config and the last rejection, for `/config`.
    pub config_notes: Arc<Mutex<ConfigNotes>>,
    /// Gateway API status of the applied configuration, for `/status`.
    pub status: Arc<Mutex<Status>>,
    /// Whether the config source (Kubernetes API) is reachable.
    pub source_health: Arc<SourceHealth>,
    /// Asks for an eBPF map drift check now (`POST /reconcile`); `None`
    /// without the eBPF datapath.
    pub request_drift_check: Option<Box<dyn Fn() + Send + Sync>>,
    /// Where the configuration comes from, for the status page.
    pub config_source: ConfigSource,
    /// The running agent, for the status page (weak: the admin state must
    /// not keep the kernel datapath alive after shutdown).
    pub runtime: Weak<Runtime>,
    /// Rate limits: penalties, cluster store, quotas (`/ratelimit`).
    pub rate_limits: Arc<crate::policy::ratelimit::RateLimitService>,
    /// When the agent started.
    pub started: SystemTime,
}

/// Where the configuration comes from.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ConfigSource {
    /// A directory of YAML documents.
    #[serde(rename_all = "camelCase")]
    Directory {
        path: PathBuf,
        /// Changes are applied while running.
        watched: bool,
    },
    /// The Kubernetes API.
    #[serde(rename_all = "camelCase")]
    Kubernetes {
        watch_namespace: Option<String>,
        node_name: String,
        gateway_selector: Option<String>,
    },
    /// Consul KV or etcd (`consul://…`, `etcd://…`); its position and
    /// outages are in [`SourceReport`].
    #[serde(rename_all = "camelCase")]
    Store { url: String },
}

/// Freshness of a remote config source. Readiness policy: the agent is ready
/// once it serves a configuration and stays ready while the source is
/// unreachable (it keeps serving the last good state, which is what
/// traffic needs); staleness is reported, not acted on.
#[derive(Debug, Default)]
pub struct SourceHealth {
    failing_since: Mutex<Option<Instant>>,
    /// What `/config` says about the source (stores outside Kubernetes).
    report: Mutex<SourceReport>,
}

/// The config source as `/config` shows it.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// `file:///…`, `consul://…`, `etcd://…` (no credentials).
    pub url: Option<String>,
    /// The store's position last read: `index N` (Consul), `revision N` (etcd).
    pub position: Option<String>,
    /// The last failure while the source is unreachable.
    pub outage: Option<String>,
    /// Why what the source holds now is not what is served (an empty or
    /// ACL-filtered read, an invalid document).
    pub not_applied: Option<String>,
}

impl SourceHealth {
    /// The source failed; staleness counts from the first failure.
    pub fn failed(&self) {
        self.failing_since
            .lock()
            .expect("health lock")
            .get_or_insert_with(Instant::now);
    }

    /// The source answered again.
    pub fn ok(&self) {
        *self.failing_since.lock().expect("health lock") = None;
        self.report.lock().expect("health lock").outage = None;
    }

    /// The source failed with `error` (shown on `/config` and `/readyz`).
    pub fn failed_with(&self, error: &str) {
        self.failed();
        self.report.lock().expect("health lock").outage = Some(error.to_owned());
    }

    /// Names the source on `/config`.
    pub fn set_url(&self, url: String) {
        self.report.lock().expect("health lock").url = Some(url);
    }

    /// The store's position last read.
    pub fn set_position(&self, position: String) {
        self.report.lock().expect("health lock").position = Some(position);
    }

    /// Why the source's current content is not served (`None`: it is).
    pub fn set_not_applied(&self, why: Option<String>) {
        self.report.lock().expect("health lock").not_applied = why;
    }

    /// What `/config` shows.
    pub fn report(&self) -> SourceReport {
        self.report.lock().expect("health lock").clone()
    }

    /// How long the source has been unreachable; zero while it is fine.
    pub fn stale_for(&self) -> Duration {
        self.failing_since
            .lock()
            .expect("health lock")
            .map_or(Duration::ZERO, |t| t.elapsed())
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ConfigNotes {
    pub warnings: Vec<String>,
    pub last_rejection: Option<String>,
    /// When a configuration was last applied (Unix seconds).
    pub last_applied_at: Option<f64>,
    /// When `last_rejection` happened (Unix seconds).
    pub last_rejected_at: Option<f64>,
    /// Objects of a per-object source (Kubernetes) left out as invalid,
    /// each with namespace/name and field.
    pub object_errors: Vec<String>,
    /// Kubernetes: what valid Ingresses ask for and is not served as
    /// written (ignored annotations, missing backends or TLS Secrets).
    pub ingress_warnings: Vec<String>,
    /// The shards' own socket addresses, by Gateway. With eBPF these are the
    /// loopback steering sockets, not the Gateway's addresses.
    pub sockets: std::collections::BTreeMap<String, Vec<SocketAddr>>,
    /// Namespace identity of sources in the applied configuration (agent
    /// config plus, with Kubernetes, this node's pods).
    pub identity: IdentityNotes,
    /// Kubernetes: the Secrets held in memory (only referenced ones).
    pub held_secrets: Vec<String>,
    /// Kubernetes: the ConfigMaps held in memory (only referenced CA bundles).
    pub held_config_maps: Vec<String>,
    /// Kubernetes: Gateways not served on this node (`sluice.dev/node-selector`).
    pub gateways_elsewhere: Vec<String>,
    /// Kubernetes: pods on this node whose cgroup was not found (yet).
    pub unresolved_pods: Vec<String>,
}

/// [`crate::config::NamespaceIdentity`] as `/config` shows it.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IdentityNotes {
    /// `[cidr, namespace]` pairs.
    pub sources: Vec<(String, String)>,
    /// `[cgroup id, namespace]` pairs.
    pub cgroups: Vec<(u64, String)>,
}

impl From<&crate::config::NamespaceIdentity> for IdentityNotes {
    fn from(id: &crate::config::NamespaceIdentity) -> Self {
        Self {
            sources: id
                .cidrs
                .iter()
                .map(|(net, ns)| (net.to_string(), ns.clone()))
                .collect(),
            cgroups: id.cgroups.clone(),
        }
    }
}

/// What a listener of the admin endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything to loopback clients; only the probes and metrics to others.
    Full,
    /// Only `/metrics`, `/healthz` and `/readyz`, to anyone.
    Probes,
}

/// Paths served to clients that are not on loopback, and on a
/// [`Scope::Probes`] listener.
const PUBLIC_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

impl Scope {
    /// Whether a client at `peer` gets `path` here: decided by where the
    /// client is, not by anything it sends.
    pub fn serves(self, peer: std::net::IpAddr, path: &str) -> bool {
        PUBLIC_PATHS.contains(&path) || (self == Scope::Full && peer.to_canonical().is_loopback())
    }
}

pub struct AdminServer {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AdminServer {
    pub async fn bind(
        addr: SocketAddr,
        state: Arc<AdminState>,
        scope: Scope,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = rx.changed() => break,
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            let resp = if scope.serves(peer.ip(), req.uri().path()) {
                                handle(&state, req)
                            } else {
                                refused()
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Which Gateways have refused requests for load (`/readyz` stays 200: a
/// flooded Gateway must not take the node's other Gateways out of service).
fn shedding_note(state: &AdminState) -> String {
    let Some(runtime) = state.runtime.upgrade() else {
        return String::new();
    };
    let shedding = runtime.proxy.shedding();
    if shedding.is_empty() {
        return String::new();
    }
    let list: Vec<String> = shedding
        .iter()
        .map(|(gw, shed, now, limit)| {
            format!("{gw}: {shed} requests refused, {now} of {limit} in flight now")
        })
        .collect();
    format!(" (shedding load since start: {})", list.join("; "))
}

/// The answer to a client outside loopback asking for more than the probes.
fn refused() -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        "only /metrics, /healthz and /readyz are served to clients outside loopback; \
         the rest of the admin endpoint is on the loopback admin address (--admin-addr)\n"
            .into(),
        "text/plain",
    )
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// The registry encoded as OpenMetrics.
fn encode_metrics(state: &AdminState) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &state.registry)?;
    Ok(out)
}

/// Whether the client asked for OpenMetrics (Prometheus does by default).
fn wants_openmetrics(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// `DELETE /ratelimit/penalties?prefix=10.0.0.7/32[&gateway=ns/name]`:
/// takes a source out of the penalty box (every Gateway's, or one).
fn remove_penalty(state: &AdminState, query: &str) -> Response<Body> {
    let mut prefix = None;
    let mut gateway = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("prefix", v)) => prefix = Some(v.replace("%2F", "/").replace("%2f", "/")),
            Some(("gateway", v)) => gateway = Some(v.replace("%2F", "/").replace("%2f", "/")),
            _ => {}
        }
    }
    let Some(raw) = prefix else {
        return text(
            StatusCode::BAD_REQUEST,
            "name the source: ?prefix=ADDRESS[/LEN][&gateway=NAMESPACE/NAME]\n".into(),
            "text/plain",
        );
    };
    let net = raw
        .parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    let Ok(net) = net else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("not an address or prefix: {raw:?}\n"),
            "text/plain",
        );
    };
    let n = state.rate_limits.penalties.remove(net, gateway.as_deref());
    text(
        if n > 0 {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        },
        format!(
            "removed {n} penalty entr{}\n",
            if n == 1 { "y" } else { "ies" }
        ),
        "text/plain",
    )
}

fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/" => {
            let mut r = text(
                StatusCode::OK,
                STATUS_PAGE.into(),
                "text/html; charset=utf-8",
            );
            // Enforces what the page promises: nothing is loaded from
            // anywhere but this agent, so it works offline and leaks nothing.
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
                ),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            r
        }
        "/api/overview" => match encode_metrics(state) {
            Ok(metrics) => {
                let samples = exposition::samples(&metrics);
                let body = overview::build(state, &samples);
                let mut r = text(
                    StatusCode::OK,
                    serde_json::to_string(&body).unwrap_or_default(),
                    "application/json",
                );
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-store"),
                );
                r
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
                "text/plain",
            ),
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            let stale = state.source_health.stale_for();
            // Degraded, not unready: the agent keeps serving (rate limits
            // follow their failureMode) and says so.
            let rate_limits = state
                .rate_limits
                .readiness_note()
                .map(|n| format!("{n}\n"))
                .unwrap_or_default();
            if state.ready.load(Ordering::Acquire) && stale > Duration::ZERO {
                let report = state.source_health.report();
                text(
                    StatusCode::OK,
                    format!(
                        "ready (serving the last good configuration; config source {}unreachable for {}s{}){}\n{rate_limits}",
                        report.url.map(|u| format!("{u} ")).unwrap_or_default(),
                        stale.as_secs(),
                        report.outage.map(|e| format!(": {e}")).unwrap_or_default(),
                        shedding_note(state),
                    ),
                    "text/plain",
                )
            } else if state.ready.load(Ordering::Acquire) {
                text(
                    StatusCode::OK,
                    format!("ready{}\n{rate_limits}", shedding_note(state)),
                    "text/plain",
                )
            } else {
                let report = state.source_health.report();
                let why = report.outage.or(report.not_applied);
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    match (report.url, why) {
                        (Some(url), Some(why)) => {
                            format!("not ready (no configuration applied from {url} yet: {why})\n")
                        }
                        (Some(url), None) => {
                            format!("not ready (waiting for the first configuration from {url})\n")
                        }
                        _ => "not ready\n".into(),
                    },
                    "text/plain",
                )
            }
        }
        "/metrics" => match encode_metrics(state) {
            Ok(out) if wants_openmetrics(&req) => text(
                StatusCode::OK,
                out,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            Ok(out) => text(
                StatusCode::OK,
                exposition::to_text_format(&out),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
                "text/plain",
            ),
        },
        "/reconcile" if req.method() == http::Method::POST => match &state.request_drift_check {
            Some(request) => {
                request();
                text(
                    StatusCode::ACCEPTED,
                    "eBPF map drift check requested; differences are logged and counted in \
                     sluice_bpf_map_drift_total\n"
                        .into(),
                    "text/plain",
                )
            }
            None => text(
                StatusCode::NOT_FOUND,
                "no eBPF datapath: nothing to reconcile\n".into(),
                "text/plain",
            ),
        },
        "/config" => {
            let snap = state.snapshot.load();
            let notes = state
                .config_notes
                .lock()
                .map(|n| n.clone())
                .unwrap_or_default();
            let shards: Vec<_> = snap
                .shards
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id,
                        "gateway": s.gateway.to_string(),
                        "addresses": s.addresses,
                        "ports": s.ports(),
                        // Bound as UDP sockets (not steered, no accept loop).
                        "udpPorts": s.udp_ports(),
                        "sockets": notes.sockets.get(&s.gateway.to_string()),
                        "listeners": s.listeners.iter().map(|l| serde_json::json!({
                            "name": &*l.name,
                            "port": l.port,
                            "hostname": l.hostname.as_ref().map(ToString::to_string),
                            // Connections relayed at layer 4 (TLSRoute,
                            // TCPRoute), or datagrams (UDPRoute).
                            "relay": l.l4.map(|m| m.as_str()),
                            "routes": l.routes.len(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let body = serde_json::json!({
                "generation": snap.generation,
                "datapath": state.datapath,
                "shards": shards,
                "warnings": notes.warnings,
                "lastRejection": notes.last_rejection,
                "objectErrors": notes.object_errors,
                "ingressWarnings": notes.ingress_warnings,
                "identity": notes.identity,
                "heldSecrets": notes.held_secrets,
                "heldConfigMaps": notes.held_config_maps,
                "gatewaysElsewhere": notes.gateways_elsewhere,
                "unresolvedPods": notes.unresolved_pods,
                "source": state.source_health.report(),
            });
            text(
                StatusCode::OK,
                serde_json::to_string_pretty(&body).unwrap_or_default(),
                "application/json",
            )
        }
        "/ratelimit" if req.method() == http::Method::GET => text(
            StatusCode::OK,
            serde_json::to_string_pretty(&state.rate_limits.admin_view()).unwrap_or_default(),
            "application/json",
        ),
        "/ratelimit/penalties" if req.method() == http::Method::DELETE => {
            remove_penalty(state, req.uri().query().unwrap_or(""))
        }
        "/cache" if req.method() == http::Method::GET => cache::view(state),
        "/cache" if req.method() == http::Method::DELETE => {
            cache::purge(state, req.uri().query().unwrap_or(""))
        }
        "/status" => {
            let status = state.status.lock().map(|s| s.clone()).unwrap_or_default();
            text(
                StatusCode::OK,
                serde_json::to_string_pretty(&status).unwrap_or_default(),
                "application/json",
            )
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_clients_of_the_full_listener_get_more_than_the_probes() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: std::net::IpAddr = "::1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let node: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        for path in ["/metrics", "/healthz", "/readyz"] {
            for peer in [lo, node] {
                assert!(Scope::Full.serves(peer, path));
                assert!(Scope::Probes.serves(peer, path));
            }
        }
        for path in [
            "/config",
            "/status",
            "/",
            "/api/overview",
            "/reconcile",
            "/nope",
        ] {
            assert!(Scope::Full.serves(lo, path), "{path}");
            assert!(Scope::Full.serves(lo6, path), "{path}");
            assert!(Scope::Full.serves(mapped, path), "{path}");
            assert!(!Scope::Full.serves(node, path), "{path}");
            assert!(!Scope::Probes.serves(lo, path), "{path}");
        }
    }
}
