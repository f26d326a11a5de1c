//! Distributed tracing: W3C Trace Context propagation and OpenTelemetry
//! spans exported over OTLP/HTTP (protobuf).
//!
//! Off by default (`--otlp-endpoint` turns it on). When on, every request
//! joins its caller's trace or starts one ([`context`]), and is forwarded
//! with a `traceparent` naming the gateway's span. A request the sampler
//! records (parent-based, `--trace-sample-ratio` for new traces) keeps its
//! span ids and attempt times in its access-log [`Entry`]; when the
//! response is done, the entry goes to a bounded queue like the access
//! log's (full: dropped and counted, never waited for), and an exporter
//! thread turns entries into spans ([`spans`]) and posts them in batches
//! ([`export`]). The request path never builds a protobuf message or
//! touches the network for tracing.
use std::{
    sync::{
        atomic::Ordering,
        mpsc::{SyncSender, TrySendError},
        Arc,
    },
    time::Duration,
};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use prometheus_client::{metrics::counter::Counter, registry::Registry};

use crate::access_log::Entry;

mod args;
pub mod context;
mod export;
pub mod spans;

pub use args::TracingArgs;
pub use context::{RequestTrace, Sampler, TraceParent};

/// Tracing settings of the agent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces`;
    /// `None` turns tracing off (propagation of received `traceparent`
    /// headers is then plain header forwarding).
    pub endpoint: Option<Uri>,
    /// Share of new traces recorded (0.0 to 1.0); requests that arrive in a
    /// trace follow their caller's decision.
    pub sample_ratio: f64,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Extra headers on every export request (e.g. an authorization token).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A batch is posted when it is this old or `max_batch` entries large.
    pub flush_interval: Duration,
    pub max_batch: usize,
    /// Recorded requests waiting for the exporter; past this, dropped.
    pub queue: usize,
    /// Bound of one export request.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            sample_ratio: 0.01,
            service_name: "sluice".into(),
            headers: Vec::new(),
            flush_interval: Duration::from_secs(1),
            max_batch: 512,
            queue: 4096,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Errors of starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("--otlp-endpoint {0}: must be an http:// or https:// URL with a host")]
    Endpoint(String),
    #[error("--otlp-endpoint {endpoint}: no CA certificates for TLS: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("starting the OTLP exporter thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Counters of the exporter (`sluice_trace_*`).
#[derive(Clone, Default)]
pub(crate) struct Stats {
    pub spans: Counter,
    pub dropped: Counter,
    pub failed: Counter,
}

/// The data path's handle: cheap to clone; disabled is one `None` check.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: SyncSender<Box<Entry>>,
    sampler: Sampler,
    stats: Stats,
    flush: Arc<export::Flush>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl Tracer {
    /// Starts the exporter thread when an endpoint is set; otherwise a
    /// handle that traces nothing. The thread ends when every handle is
    /// gone, after posting what it holds.
    pub fn start(settings: &Settings) -> Result<Self, TelemetryError> {
        let Some(endpoint) = &settings.endpoint else {
            return Ok(Self::default());
        };
        let stats = Stats::default();
        let exporter = export::Exporter::new(endpoint, settings, stats.clone())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let flush = Arc::new(export::Flush::default());
        export::spawn(rx, exporter, settings, flush.clone()).map_err(TelemetryError::Thread)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tx,
                sampler: Sampler::new(settings.sample_ratio),
                stats,
                flush,
            })),
        })
    }

    /// Posts what is queued now instead of at the next interval, and waits
    /// (at most `limit`) until it is posted: the agent calls it when it
    /// stops, after the last connections drained. `false` when the
    /// exporter did not get there in time (a slow collector).
    pub async fn flush(&self, limit: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        // The round under way may have begun before the request; the one
        // after it sees it.
        let until = inner.flush.rounds.load(Ordering::Acquire) + 2;
        inner.flush.asked.store(true, Ordering::Release);
        crate::access_log::rounds_reach(&inner.flush.rounds, until, limit).await
    }

    #[inline]
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Joins or starts the request's trace and sets the `traceparent` it is
    /// forwarded with; `None` when tracing is off.
    pub fn begin(&self, headers: &mut HeaderMap) -> Option<RequestTrace> {
        let inner = self.inner.as_ref()?;
        Some(RequestTrace::begin(&inner.sampler, headers))
    }

    /// Queues a finished, recorded request for export, or drops and counts
    /// it when the exporter is behind. Never blocks.
    pub fn send(&self, entry: Box<Entry>) {
        let Some(inner) = &self.inner else { return };
        match inner.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                inner.stats.dropped.inc();
            }
        }
    }

    /// Spans exported, requests dropped, failed export requests so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        self.inner.as_ref().map_or((0, 0, 0), |i| {
            (
                i.stats.spans.get(),
                i.stats.dropped.get(),
                i.stats.failed.get(),
            )
        })
    }

    /// `sluice_trace_spans_total`, `sluice_trace_dropped_total`,
    /// `sluice_trace_export_failures_total`.
    pub fn register(&self, registry: &mut Registry) {
        let s = self
            .inner
            .as_ref()
            .map_or_else(Stats::default, |i| i.stats.clone());
        registry.register("sluice_trace_spans", "Spans exported over OTLP", s.spans);
        registry.register(
            "sluice_trace_dropped",
            "Recorded requests not exported because the exporter was behind (requests are \
             never delayed for tracing)",
            s.dropped,
        );
        registry.register(
            "sluice_trace_export_failures",
            "OTLP export requests that failed (their spans are lost)",
            s.failed,
        );
    }
}
