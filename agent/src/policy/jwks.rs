//! Remote JWKS: a provider's key set fetched over HTTPS, cached, refreshed
//! in the background and refetched on demand when a token names a key the
//! set does not hold (the IdP rotated its keys).
//!
//! A [`RemoteKeySet`] is policy state: it lives in the
//! [`PolicyState`](super::state::PolicyState) under the policy's identity
//! and a fingerprint of its [`RemoteSpec`], so a reload that leaves the
//! provider unchanged keeps the fetched keys and never refetches them.
//!
//! - **Refresh.** With a runtime in the state, [`RemoteKeySet::start`] spawns
//!   a task that fetches at once and then every `cache_duration` (retrying
//!   failures with backoff). The task holds only a `Weak` and a stop signal
//!   the set owns, so it ends as soon as the set is dropped.
//! - **On demand.** A token whose `kid` is unknown (or a set never loaded)
//!   triggers [`RemoteKeySet::refetch`]: single-flight (concurrent callers
//!   share one fetch, including a refresh already running) and at most one
//!   such fetch per [`DEMAND_REFETCH_INTERVAL`], so tokens with made-up kids
//!   cannot make the gateway hammer the IdP.
//! - **Failure.** A failed fetch keeps the cached keys (the IdP being down
//!   does not take the API down); a set that never loaded makes requests
//!   fail closed with 503, never pass unchecked.
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    RootCertStore,
};
use tokio::sync::{oneshot, watch};

use super::{
    jose::{JwkError, KeySet},
    state::PolicyState,
};

/// Shortest time between two on-demand fetches of one key set.
pub const DEMAND_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// First retry delay after a failed background fetch (doubling up to
/// [`RETRY_MAX`], and never beyond the cache duration).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where and how a key set is fetched: the state fingerprint of a
/// [`RemoteKeySet`] (a different spec is a different key set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteSpec {
    pub uri: Uri,
    /// PEM CA bundle the endpoint must chain to; `None`: platform CAs.
    pub ca_pem: Option<Vec<u8>>,
    /// How long fetched keys are used before the background refresh.
    pub cache_duration: Duration,
    /// Bound on one fetch (connect, TLS, response and body).
    pub timeout: Duration,
}

/// Why a key set could not be set up or fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS URI {0} must be https (plain http is accepted only to a loopback address)")]
    Scheme(Uri),
    #[error("JWKS URI {0} has no host")]
    NoHost(Uri),
    #[error("the JWKS CA bundle has no usable certificate: {0}")]
    Ca(String),
    #[error("no platform CA certificates for the JWKS endpoint: {0}")]
    SystemRoots(String),
    #[error("TLS setup for the JWKS endpoint: {0}")]
    Tls(String),
    #[error("fetching {uri}: {message}")]
    Fetch { uri: Uri, message: String },
    #[error("fetching {uri}: no answer within {after:?}")]
    Timeout { uri: Uri, after: Duration },
    #[error("fetching {uri}: HTTP {status}")]
    Status { uri: Uri, status: StatusCode },
    #[error("reading {uri}: {message}")]
    Body { uri: Uri, message: String },
    #[error("{uri}: {source}")]
    Keys {
        uri: Uri,
        #[source]
        source: JwkError,
    },
}

/// Checks a spec before any state is made for it: an `https` URI with a
/// host, or `http` to a loopback address; a CA bundle with a certificate.
pub fn check_spec(spec: &RemoteSpec) -> Result<(), JwksError> {
    let host = spec
        .uri
        .host()
        .ok_or_else(|| JwksError::NoHost(spec.uri.clone()))?;
    match spec.uri.scheme_str() {
        Some("https") => {}
        // The config layer refuses other http URLs; a second check here
        // keeps keys from ever travelling in clear text off the node.
        Some("http") if is_loopback(host) => {}
        _ => return Err(JwksError::Scheme(spec.uri.clone())),
    }
    if let Some(pem) = &spec.ca_pem {
        roots_from_pem(pem)?;
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, JwksError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| JwksError::Ca(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(JwksError::Ca("no PEM CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// The platform's CA bundle, read once per process.
pub(crate) fn system_roots() -> Result<RootCertStore, JwksError> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!("none found ({})", errors.join("; ")));
            }
            Ok(roots)
        })
        .clone()
        .map_err(JwksError::SystemRoots)
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn https_client(spec: &RemoteSpec) -> Result<HttpsClient, JwksError> {
    let roots = match &spec.ca_pem {
        Some(pem) => roots_from_pem(pem)?,
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JwksError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(spec.timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    // Fetches are minutes apart: an idle pooled connection would only
    // linger.
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(https))
}

/// An error with its causes (hyper's errors say little on their own).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[derive(Debug, Default)]
struct Status {
    last_error: Option<String>,
    last_success: Option<Instant>,
    last_demand: Option<Instant>,
}

/// A fetched JWKS, shared by every snapshot that uses the same provider
/// spec.
pub struct RemoteKeySet {
    /// For logs and status (`SluicePolicy ns/name jwt provider idp`).
    name: String,
    spec: RemoteSpec,
    keys: ArcSwapOption<KeySet>,
    /// Built at the first fetch, so a compile makes no TLS setup.
    client: OnceLock<HttpsClient>,
    /// Held for the duration of every fetch: one fetch at a time.
    fetch_lock: tokio::sync::Mutex<()>,
    /// Completed fetch attempts; waiters watch it for the first one, and a
    /// caller that waited for the lock sees from it that a fetch happened.
    attempts: watch::Sender<u64>,
    /// HTTP fetches started (tests, admin).
    fetches: AtomicU64,
    status: Mutex<Status>,
    /// Set once the background task runs; dropping it (with the set) stops it.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl std::fmt::Debug for RemoteKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeySet")
            .field("name", &self.name)
            .field("uri", &self.spec.uri)
            .field("loaded", &self.is_loaded())
            .field("fetches", &self.fetch_count())
            .finish()
    }
}

impl RemoteKeySet {
    /// A key set that has not been fetched yet. Check the spec first
    /// ([`check_spec`]).
    pub fn new(name: String, spec: RemoteSpec) -> Self {
        Self {
            name,
            spec,
            keys: ArcSwapOption::empty(),
            client: OnceLock::new(),
            fetch_lock: tokio::sync::Mutex::new(()),
            attempts: watch::Sender::new(0),
            fetches: AtomicU64::new(0),
            status: Mutex::default(),
            stop: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> &RemoteSpec {
        &self.spec
    }

    /// The current keys; `None` until a fetch succeeded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Whether a fetch ever succeeded.
    pub fn is_loaded(&self) -> bool {
        self.keys.load().is_some()
    }

    /// HTTP fetches started so far.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Completed fetch attempts, successful or not.
    pub fn attempts(&self) -> u64 {
        *self.attempts.borrow()
    }

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.status().last_error.clone()
    }

    /// For a status condition: why this set has no keys.
    pub fn unavailable_reason(&self) -> String {
        format!(
            "{}: JWKS {} not loaded ({})",
            self.name,
            self.spec.uri,
            self.last_error()
                .unwrap_or_else(|| "first fetch pending".into())
        )
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().expect("jwks status lock")
    }

    /// Starts the background refresh on `runtime`, once: the first call
    /// returns the task (it ends when the set is dropped), later ones
    /// `None`. The first fetch starts at once.
    pub fn start(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut stop = self.stop.lock().expect("jwks stop lock");
        if stop.is_some() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        *stop = Some(tx);
        Some(runtime.spawn(refresh_loop(Arc::downgrade(self), rx)))
    }

    fn is_started(&self) -> bool {
        self.stop.lock().expect("jwks stop lock").is_some()
    }

    /// Returns once the first fetch attempt has completed (successfully or
    /// not). Without a background task, makes that attempt itself.
    pub async fn first_attempt(&self) {
        if self.is_started() {
            let mut rx = self.attempts.subscribe();
            // Fails only when the sender (in `self`) is gone: impossible here.
            let _ = rx.wait_for(|n| *n > 0).await;
        } else {
            let _fetching = self.fetch_lock.lock().await;
            if self.attempts() == 0 {
                self.fetch_locked().await;
            }
        }
    }

    /// An on-demand fetch (unknown `kid`, or never loaded). Returns whether
    /// the keys may have changed since the caller looked: `true` after a
    /// fetch (this caller's or one it waited for), `false` when the rate
    /// limit refused one.
    pub async fn refetch(&self) -> bool {
        let seen = self.attempts();
        let _fetching = self.fetch_lock.lock().await;
        if self.attempts() != seen {
            // Someone fetched while we waited for the lock: single flight.
            return true;
        }
        {
            let mut st = self.status();
            if st
                .last_demand
                .is_some_and(|t| t.elapsed() < DEMAND_REFETCH_INTERVAL)
            {
                return false;
            }
            st.last_demand = Some(Instant::now());
        }
        self.fetch_locked().await;
        true
    }

    /// One background tick: fetch, unless an on-demand fetch refreshed the
    /// keys recently. Returns the delay until the next tick.
    async fn refresh_tick(&self, failures: &mut u32) -> Duration {
        let period = self.spec.cache_duration.max(RETRY_FIRST);
        let _fetching = self.fetch_lock.lock().await;
        if self.is_loaded() {
            if let Some(at) = self.status().last_success {
                let age = at.elapsed();
                if age < period {
                    return period - age;
                }
            }
        }
        if self.fetch_locked().await {
            *failures = 0;
            period
        } else {
            *failures = failures.saturating_add(1);
            let backoff = RETRY_FIRST.saturating_mul(1 << (*failures - 1).min(5));
            backoff.min(RETRY_MAX).min(period)
        }
    }

    /// Fetches and stores the keys; the caller holds `fetch_lock`. A
    /// failure keeps the keys held so far.
    async fn fetch_locked(&self) -> bool {
        let ok = match self.fetch().await {
            Ok(set) => {
                let old = self.keys.load_full();
                if old.as_ref().is_none_or(|o| o.kids() != set.kids()) {
                    tracing::info!(jwks = %self.name, uri = %self.spec.uri, kids = ?set.kids(),
                        "JWKS loaded");
                    if !set.skipped.is_empty() {
                        tracing::warn!(jwks = %self.name, skipped = ?set.skipped,
                            "JWKS keys left out");
                    }
                }
                self.keys.store(Some(Arc::new(set)));
                let mut st = self.status();
                st.last_success = Some(Instant::now());
                st.last_error = None;
                true
            }
            Err(e) => {
                tracing::warn!(jwks = %self.name, error = %e, loaded = self.is_loaded(),
                    "JWKS fetch failed; cached keys (if any) stay in use");
                self.status().last_error = Some(e.to_string());
                false
            }
        };
        self.attempts.send_modify(|n| *n += 1);
        ok
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let client = match self.client.get() {
            Some(c) => c,
            None => {
                let c = https_client(&self.spec)?;
                self.client.get_or_init(|| c)
            }
        };
        let uri = &self.spec.uri;
        let req = Request::get(uri.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .body(Empty::new())
            .map_err(|e| JwksError::Fetch {
                uri: uri.clone(),
                message: e.to_string(),
            })?;
        let work = async {
            let resp = client.request(req).await.map_err(|e| JwksError::Fetch {
                uri: uri.clone(),
                message: chain(&e),
            })?;
            if !resp.status().is_success() {
                return Err(JwksError::Status {
                    uri: uri.clone(),
                    status: resp.status(),
                });
            }
            let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| JwksError::Body {
                    uri: uri.clone(),
                    message: chain(&*e),
                })?
                .to_bytes();
            KeySet::parse(&body, false).map_err(|source| JwksError::Keys {
                uri: uri.clone(),
                source,
            })
        };
        tokio::time::timeout(self.spec.timeout, work)
            .await
            .map_err(|_| JwksError::Timeout {
                uri: uri.clone(),
                after: self.spec.timeout,
            })?
    }
}

/// The background refresh of one key set: it ends when the set is dropped
/// (the stop sender goes with it), without waiting for its next tick.
async fn refresh_loop(set: Weak<RemoteKeySet>, mut stop: oneshot::Receiver<()>) {
    let mut failures = 0u32;
    let mut delay = Duration::ZERO;
    loop {
        if !delay.is_zero() {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let Some(set) = set.upgrade() else { return };
        delay = set.refresh_tick(&mut failures).await;
    }
}

/// After a compile: starts the background refresh of every remote key set
/// in `state` (when it has a runtime) and waits, at most `within`, for the
/// first fetch of those never fetched. Returns why sets are still without
/// keys (their providers answer 503 until they load), for status and logs.
///
/// Without a runtime in the state nothing runs in the background; the
/// first fetches are then made here.
pub async fn warm_up(state: &PolicyState, within: Duration) -> Vec<String> {
    let sets: Vec<Arc<RemoteKeySet>> = state
        .all::<RemoteKeySet>()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    if let Some(rt) = state.runtime() {
        for s in &sets {
            s.start(rt);
        }
    }
    let first = futures::future::join_all(sets.iter().map(|s| s.first_attempt()));
    let _ = tokio::time::timeout(within, first).await;
    sets.iter()
        .filter(|s| !s.is_loaded())
        .map(|s| s.unavailable_reason())
        .collect()
}

/// A local JWKS endpoint for tests: HTTPS with its own CA (or plain HTTP),
/// on 127.0.0.1, counting the requests it answers.
#[cfg(test)]
pub(crate) mod test_idp {
    use std::{
        net::SocketAddr,
        sync::{
            atomic::{AtomicBool, AtomicUsize, Ordering},
            Arc, Mutex,
        },
        time::Duration,
    };

    use bytes::Bytes;
    use http::{Response, StatusCode, Uri};
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use tokio::net::TcpListener;

    use super::RemoteSpec;

    /// The endpoint. Dropping it stops accepting connections.
    pub struct Idp {
        pub addr: SocketAddr,
        /// The CA that signed the server certificate (`None`: plain HTTP).
        pub ca_pem: Option<Vec<u8>>,
        jwks: Arc<Mutex<String>>,
        hits: Arc<AtomicUsize>,
        down: Arc<AtomicBool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Idp {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, Vec<u8>) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test IdP CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        (
            tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca.pem().into_bytes(),
        )
    }

    impl Idp {
        /// An HTTPS endpoint serving `jwks` at `/jwks`.
        pub async fn start(jwks: String) -> Self {
            Self::start_with(jwks, true).await
        }

        /// The same over plain HTTP (allowed to loopback only).
        pub async fn start_plain(jwks: String) -> Self {
            Self::start_with(jwks, false).await
        }

        async fn start_with(jwks: String, tls: bool) -> Self {
            let (acceptor, ca_pem) = if tls {
                let (a, ca) = tls_acceptor();
                (Some(a), Some(ca))
            } else {
                (None, None)
            };
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let jwks = Arc::new(Mutex::new(jwks));
            let hits = Arc::new(AtomicUsize::new(0));
            let down = Arc::new(AtomicBool::new(false));
            let (j, h, d) = (jwks.clone(), hits.clone(), down.clone());
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    if d.load(Ordering::SeqCst) {
                        // Down: the connection is dropped unanswered.
                        continue;
                    }
                    let (acceptor, j, h) = (acceptor.clone(), j.clone(), h.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            h.fetch_add(1, Ordering::SeqCst);
                            let resp = if req.uri().path() == "/jwks" {
                                let body = j.lock().unwrap().clone();
                                Response::new(Full::new(Bytes::from(body)))
                            } else {
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            };
                            async move { Ok::<_, std::convert::Infallible>(resp) }
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(a) => {
                                if let Ok(tls) = a.accept(tcp).await {
                                    let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                            }
                        }
                    });
                }
            });
            Self {
                addr,
                ca_pem,
                jwks,
                hits,
                down,
                task,
            }
        }

        pub fn uri(&self) -> Uri {
            let scheme = if self.ca_pem.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}/jwks", self.addr).parse().unwrap()
        }

        /// A spec for this endpoint; keys cached for an hour, so only
        /// explicit and on-demand fetches happen during a test.
        pub fn spec(&self) -> RemoteSpec {
            RemoteSpec {
                uri: self.uri(),
                ca_pem: self.ca_pem.clone(),
                cache_duration: Duration::from_secs(3600),
                timeout: Duration::from_secs(10),
            }
        }

        pub fn set_jwks(&self, jwks: String) {
            *self.jwks.lock().unwrap() = jwks;
        }

        /// Requests answered so far.
        pub fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        /// Down: connections are closed without an answer.
        pub fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{test_idp::Idp, *};

    fn jwks_with(kid: &str) -> String {
        use base64::Engine as _;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x}]})
            .to_string()
    }

    fn spec(uri: &str) -> RemoteSpec {
        RemoteSpec {
            uri: uri.parse().unwrap(),
            ca_pem: None,
            cache_duration: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://idp.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]/jwks",
            "http://localhost/jwks",
        ] {
            assert!(check_spec(&spec(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1.nip.io/jwks",
            "ftp://127.0.0.1/jwks",
        ] {
            assert!(
                matches!(check_spec(&spec(bad)), Err(JwksError::Scheme(_))),
                "{bad}"
            );
        }
        let mut s = spec("https://idp.example.com/jwks");
        s.ca_pem = Some(b"not a pem".to_vec());
        assert!(matches!(check_spec(&s), Err(JwksError::Ca(_))));
    }

    #[tokio::test]
    async fn fetches_over_https_with_the_given_ca_and_keeps_keys_on_failure() {
        let idp = Idp::start(jwks_with("k1")).await;
        let set = RemoteKeySet::new("test".into(), idp.spec());
        set.first_attempt().await;
        assert!(set.is_loaded(), "{:?}", set.last_error());
        assert_eq!(set.keys().unwrap().kids(), ["k1"]);
        assert_eq!((idp.hits(), set.fetch_count()), (1, 1));

        // A broken document and a down IdP: the keys stay.
        idp.set_jwks("{\"keys\": 5}".into());
        assert!(set.refetch().await);
        assert!(
            set.last_error().unwrap().contains("JWK set"),
            "{:?}",
            set.last_error()
        );
        idp.set_down(true);
        // Rate-limited: no second on-demand fetch within the interval.
        assert!(!set.refetch().await);
        assert_eq!(set.fetch_count(), 2);
        assert_eq!(set.keys().unwrap().kids(), ["k1"]);
    }

    #[tokio::test]
    async fn an_unknown_ca_and_an_unreachable_endpoint_leave_the_set_unloaded() {
        let idp = Idp::start(jwks_with("k1")).await;
        let other = Idp::start(jwks_with("k1")).await;
        let mut s = idp.spec();
        s.ca_pem = other.ca_pem.clone();
        let set = RemoteKeySet::new("wrong-ca".into(), s);
        set.first_attempt().await;
        assert!(!set.is_loaded());
        let reason = set.unavailable_reason();
        assert!(
            reason.contains("wrong-ca") && reason.contains("certificate"),
            "{reason}"
        );
        assert_eq!(idp.hits(), 0);

        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let set = RemoteKeySet::new(
            "gone".into(),
            spec(&format!("http://127.0.0.1:{port}/jwks")),
        );
        set.first_attempt().await;
        assert!(!set.is_loaded());
        assert_eq!(set.attempts(), 1);
        assert!(set
            .unavailable_reason()
            .contains("gone: JWKS http://127.0.0.1"));
    }

    #[tokio::test]
    async fn plain_http_to_loopback_works() {
        let idp = Idp::start_plain(jwks_with("p")).await;
        let set = RemoteKeySet::new("plain".into(), idp.spec());
        set.first_attempt().await;
        assert!(set.is_loaded(), "{:?}", set.last_error());
    }

    #[tokio::test]
    async fn warm_up_starts_refresh_and_the_task_ends_with_the_set() {
        let idp = Idp::start(jwks_with("k1")).await;
        let state = PolicyState::with_runtime(tokio::runtime::Handle::current());
        let compile = state.compile();
        let key = crate::policy::state::StateKey {
            policy: crate::policy::PolicyId::new("SluicePolicy", "ns", "p"),
            section: "jwt",
            item: "idp".into(),
            fingerprint: 1,
        };
        let set = compile.get_or_insert(key, || RemoteKeySet::new("ns/p idp".into(), idp.spec()));
        state.commit(compile.id());
        // Started here to keep the task's handle; warm-up starts nothing twice.
        let task = set.start(state.runtime().unwrap()).unwrap();
        assert!(set.start(state.runtime().unwrap()).is_none());
        let unavailable = warm_up(&state, Duration::from_secs(30)).await;
        assert!(unavailable.is_empty(), "{unavailable:?}");
        assert!(set.is_loaded());
        assert_eq!(idp.hits(), 1);
        let weak = Arc::downgrade(&set);
        // The next compile no longer uses it: dropped from the store...
        let c2 = state.compile();
        state.commit(c2.id());
        drop(set);
        // ...and nothing else holds it: the task holds only a Weak.
        assert!(weak.upgrade().is_none());
        // The task sleeps an hour between fetches: it ends now only
        // because the set's stop signal went with the set. The bound is
        // generous; a task that kept running would never end.
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the refresh task outlived its key set")
            .unwrap();
    }

    #[tokio::test]
    async fn warm_up_without_a_runtime_fetches_inline_and_reports_failures() {
        let idp = Idp::start(jwks_with("k1")).await;
        let state = PolicyState::default();
        let compile = state.compile();
        let mk = |item: &str| crate::policy::state::StateKey {
            policy: crate::policy::PolicyId::new("SluicePolicy", "ns", "p"),
            section: "jwt",
            item: item.into(),
            fingerprint: 1,
        };
        compile.get_or_insert(mk("good"), || RemoteKeySet::new("good".into(), idp.spec()));
        let mut bad = idp.spec();
        bad.uri = format!("https://{}/nope", idp.addr).parse().unwrap();
        compile.get_or_insert(mk("bad"), || RemoteKeySet::new("bad".into(), bad));
        let unavailable = warm_up(&state, Duration::from_secs(30)).await;
        assert_eq!(unavailable.len(), 1, "{unavailable:?}");
        assert!(
            unavailable[0].starts_with("bad: ") && unavailable[0].contains("404"),
            "{unavailable:?}"
        );
        // A second warm-up does not fetch again.
        warm_up(&state, Duration::from_secs(30)).await;
        assert_eq!(idp.hits(), 2);
    }
}
