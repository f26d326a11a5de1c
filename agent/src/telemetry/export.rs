//! The OTLP/HTTP exporter: a thread of its own that batches recorded
//! requests, turns them into spans and posts
//! `ExportTraceServiceRequest`s (protobuf) to the collector.
//!
//! Like the access log writer it polls its queue (every 10 ms) rather than
//! sleeping in `recv`, so a request never pays for waking it. A failed post
//! is counted and logged (at most once a minute while failures go on); its
//! spans are dropped rather than held, so an unreachable collector costs
//! bounded memory. A [`Flush`] makes it post what is queued at once (the
//! agent asks when it stops).
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, TryRecvError},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans},
};
use prost::Message;

use super::{spans, Settings, Stats, TelemetryError};
use crate::access_log::Entry;

const POLL: Duration = Duration::from_millis(10);
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

pub(super) struct Exporter {
    endpoint: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    resource: Resource,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    stats: Stats,
    last_failure_log: Option<Instant>,
}

impl Exporter {
    pub(super) fn new(
        endpoint: &Uri,
        settings: &Settings,
        stats: Stats,
    ) -> Result<Self, TelemetryError> {
        let scheme = endpoint.scheme_str();
        if !matches!(scheme, Some("http" | "https")) || endpoint.host().is_none() {
            return Err(TelemetryError::Endpoint(endpoint.to_string()));
        }
        let roots = if scheme == Some("https") {
            crate::policy::jwks::system_roots().map_err(|e| TelemetryError::Tls {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?
        } else {
            rustls::RootCertStore::empty()
        };
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TelemetryError::Tls {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(3)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            endpoint: endpoint.clone(),
            headers: settings.headers.clone(),
            resource: resource(&settings.service_name),
            client,
            timeout: settings.timeout,
            stats,
            last_failure_log: None,
        })
    }

    /// Posts the spans of `batch` (emptied).
    // The entries arrive boxed from the queue; unboxing them would copy each.
    #[allow(clippy::vec_box)]
    async fn export(&mut self, batch: &mut Vec<Box<Entry>>) {
        let spans: Vec<_> = batch.drain(..).flat_map(|e| spans::of_entry(&e)).collect();
        if spans.is_empty() {
            return;
        }
        let n = spans.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "sluice".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        match self.post(body).await {
            Ok(()) => {
                self.stats.spans.inc_by(n);
                if self.last_failure_log.take().is_some() {
                    tracing::info!(endpoint = %self.endpoint, "OTLP export works again");
                }
            }
            Err(reason) => {
                self.stats.failed.inc();
                let quiet = self
                    .last_failure_log
                    .is_some_and(|t| t.elapsed() < FAILURE_LOG_EVERY);
                if !quiet {
                    self.last_failure_log = Some(Instant::now());
                    tracing::warn!(endpoint = %self.endpoint, %reason, spans = n, "OTLP export failed; spans dropped");
                }
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let mut req = Request::post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| chain(&e))?;
            let status = resp.status();
            // Read the answer so the connection can be reused.
            let answer = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!(
                    "collector answered {status}: {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                ))
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

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

fn resource(service: &str) -> Resource {
    let string = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v)),
        }),
    };
    let mut attributes = vec![
        string("service.name", service.to_owned()),
        string("service.version", env!("CARGO_PKG_VERSION").to_owned()),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        attributes.push(string("host.name", host.trim().to_owned()));
    }
    if let Ok(node) = std::env::var("NODE_NAME") {
        attributes.push(string("k8s.node.name", node));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// A request to post everything queued now, and the rounds the exporter
/// completed (a flush waits for two more than it saw).
#[derive(Default)]
pub(super) struct Flush {
    pub(super) asked: AtomicBool,
    pub(super) rounds: AtomicU64,
}

/// Starts the exporter thread.
pub(super) fn spawn(
    rx: Receiver<Box<Entry>>,
    mut exporter: Exporter,
    settings: &Settings,
    flush: Arc<Flush>,
) -> std::io::Result<()> {
    let interval = settings.flush_interval;
    let max = settings.max_batch.max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sluice-otlp".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(max);
            let mut oldest: Option<Instant> = None;
            loop {
                // Before draining: whatever was queued before the request
                // is then in this round's batches.
                let forced = flush.asked.swap(false, Ordering::AcqRel);
                let mut closed = false;
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(e) => {
                            oldest.get_or_insert_with(Instant::now);
                            batch.push(e);
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let due = oldest.is_some_and(|t| t.elapsed() >= interval);
                if !batch.is_empty() && (closed || due || forced || batch.len() >= max) {
                    let full = batch.len() >= max;
                    runtime.block_on(exporter.export(&mut batch));
                    oldest = None;
                    // A full batch when flushing: more may wait; the next
                    // round takes them before counting as done.
                    if forced && full {
                        flush.asked.store(true, Ordering::Release);
                        continue;
                    }
                }
                flush.rounds.fetch_add(1, Ordering::Release);
                if closed {
                    return;
                }
                std::thread::sleep(POLL);
            }
        })?;
    Ok(())
}
