//! Access logs: one structured line per request, written off the request
//! path.
//!
//! The data path fills an [`Entry`] (shared names, a few small copies) as
//! the request goes; when the response ends, the line is formatted on the
//! same thread and appended to a bounded buffer ([`writer`]). When the
//! writer falls behind, lines are dropped and counted
//! (`sluice_access_log_dropped_total`), so a slow disk or a stalled stdout
//! never delays a request. A writer thread writes the waiting lines in one
//! piece every few milliseconds, and reopens a file destination when asked
//! (SIGHUP, for log rotation).
//!
//! The response flag ([`flag`]) is a short code for answers the gateway made
//! itself, in the spirit of Envoy's response flags, so `grep ' UT '` finds
//! the upstream timeouts without knowing status codes.
use std::{
    cell::{Cell, RefCell},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use http::{HeaderValue, Method, Uri};
use prometheus_client::{metrics::counter::Counter, registry::Registry};

use crate::policy::Reason;

mod escape;
mod format;
pub mod request_id;
mod writer;

pub use format::{write_json, write_text};

/// A filled-in entry for other modules' tests.
#[cfg(test)]
pub(crate) use format::tests::entry as sample_entry;

/// Where access log lines go (`--access-log`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Destination {
    /// No access log (the default: a node agent's stdout is usually the
    /// node's journal or the container log, which the operator opts into).
    #[default]
    Off,
    Stdout,
    /// A file, appended to; reopened on SIGHUP (after `logrotate` moved it).
    File(PathBuf),
}

impl std::str::FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "stdout" | "-" => Ok(Self::Stdout),
            "" => Err("an empty access log destination; use off, stdout or a file path".into()),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// The line format (`--access-log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// Space-separated fields in a fixed order, `-` for absent ones.
    Text,
}

/// What is logged of the query string (`--access-log-query`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QueryMode {
    /// The path with its query as received.
    Keep,
    /// Parameter names kept, values replaced by `REDACTED` (tokens and
    /// e-mail addresses travel in query strings).
    #[default]
    Redact,
    /// The path only.
    Drop,
}

/// Access log settings of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub destination: Destination,
    pub format: Format,
    pub query: QueryMode,
    /// Only requests answered with at least this status are logged (e.g.
    /// 400 for errors only); 0 logs everything.
    pub min_status: u16,
    /// Lines waiting for the writer; past this, lines are dropped.
    pub queue: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            destination: Destination::Off,
            format: Format::Json,
            query: QueryMode::Redact,
            min_status: 0,
            queue: 16_384,
        }
    }
}

/// Errors of opening the access log.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("opening the access log file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the access log writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The data path's handle: cheap to clone, `enabled()` is one load.
#[derive(Clone, Default)]
pub struct AccessLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    shared: Arc<writer::Shared>,
    format: Format,
    min_status: u16,
    query: QueryMode,
    dropped: Counter,
    /// Left out by a policy's `accessLog` filter.
    filtered: Counter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl AccessLog {
    /// Opens the destination and starts the writer thread; `Off` gives a
    /// handle that logs nothing. The thread ends when every handle is gone.
    pub fn start(settings: &Settings) -> Result<Self, AccessLogError> {
        let sink = match &settings.destination {
            Destination::Off => return Ok(Self::default()),
            Destination::Stdout => writer::Sink::Stdout,
            Destination::File(path) => writer::Sink::file(path)?,
        };
        let shared = Arc::new(writer::Shared::new(settings.queue));
        writer::spawn(shared.clone(), sink).map_err(AccessLogError::Thread)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                shared,
                format: settings.format,
                min_status: settings.min_status,
                query: settings.query,
                dropped: Counter::default(),
                filtered: Counter::default(),
            })),
        })
    }

    /// Whether requests are logged at all (the data path collects nothing
    /// otherwise).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// What is logged of query strings.
    pub fn query_mode(&self) -> QueryMode {
        self.inner.as_ref().map_or(QueryMode::Drop, |i| i.query)
    }

    /// Formats `entry`'s line and leaves it for the writer, or drops and
    /// counts it when the writer is behind. Never blocks: the lock it
    /// takes is only ever held for a copy.
    pub fn send(&self, entry: &Entry) {
        let Some(inner) = &self.inner else { return };
        if entry.status < inner.min_status {
            return;
        }
        if entry.filter.is_some_and(|f| !f.keeps(entry.status)) {
            inner.filtered.inc();
            return;
        }
        thread_local! {
            // Formatted here first: the shared buffer's lock is then held
            // for one copy, not for the formatting.
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
        }
        let kept = LINE.with_borrow_mut(|line| {
            line.clear();
            match inner.format {
                Format::Json => write_json(entry, line),
                Format::Text => write_text(entry, line),
            }
            inner.shared.push(line)
        });
        if !kept {
            inner.dropped.inc();
        }
    }

    /// Waits (at most `limit`) until the lines of requests finished before
    /// the call are written: the agent calls it when it stops, after the
    /// last connections drained, so their lines are not lost with the
    /// process. `false` when the writer did not get there in time (a
    /// stalled destination).
    pub async fn flush(&self, limit: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        // The round under way may have taken the buffer before the last
        // lines came; the one after it takes them.
        let until = inner.shared.rounds.load(Ordering::Acquire) + 2;
        rounds_reach(&inner.shared.rounds, until, limit).await
    }

    /// Asks the writer to reopen a file destination (after rotation).
    pub fn reopen(&self) {
        if let Some(inner) = &self.inner {
            inner.shared.reopen.store(true, Ordering::Release);
        }
    }

    /// Lines written and entries dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        self.inner
            .as_ref()
            .map_or((0, 0), |i| (i.shared.written.get(), i.dropped.get()))
    }

    /// `sluice_access_log_lines_total` and `sluice_access_log_dropped_total`.
    pub fn register(&self, registry: &mut Registry) {
        let (written, dropped, filtered) = match &self.inner {
            Some(i) => (
                i.shared.written.clone(),
                i.dropped.clone(),
                i.filtered.clone(),
            ),
            None => Default::default(),
        };
        registry.register(
            "sluice_access_log_filtered",
            "Requests left out of the access log by a SluicePolicy accessLog section \
             (samplePercent, minStatus)",
            filtered,
        );
        registry.register(
            "sluice_access_log_lines",
            "Access log lines written",
            written,
        );
        registry.register(
            "sluice_access_log_dropped",
            "Access log entries dropped because the writer was behind (requests are never \
             delayed for the log)",
            dropped,
        );
    }
}

/// Waits (at most `limit`) until a background thread's count of completed
/// `rounds` reaches `until`; `false` when it did not in time. The access
/// log writer's and the trace exporter's flushes.
pub(crate) async fn rounds_reach(
    rounds: &std::sync::atomic::AtomicU64,
    until: u64,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    while rounds.load(Ordering::Acquire) < until {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// One request, as logged. Filled by the gateway as the request goes;
/// formatted when its response ends.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request head was received.
    pub time: SystemTime,
    /// The shard's Gateway, `namespace/name`.
    pub gateway: Arc<str>,
    pub listener: Option<Arc<str>>,
    /// The matched route, `namespace/name`.
    pub route: Option<Arc<str>>,
    /// Index of the matched rule within the route.
    pub rule: Option<u32>,
    pub method: Method,
    /// The `Host` header, when the request target has no authority (which
    /// the entry has in `uri` then): read it with [`Entry::authority`].
    pub authority: Option<HeaderValue>,
    /// Path and query as received (formatting applies the query mode).
    pub uri: Uri,
    pub query: QueryMode,
    pub version: http::Version,
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Request head received → response body finished (or abandoned).
    pub duration: Duration,
    /// The backend endpoint of the last attempt, when one was chosen.
    pub upstream: Option<SocketAddr>,
    /// First attempt sent → response head received from the backend.
    pub upstream_time: Option<Duration>,
    pub retries: u32,
    /// TLS-terminated connections: the negotiated version.
    pub tls_version: Option<&'static str>,
    pub sni: Option<Arc<str>>,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client as the gateway sees it (the nearest untrusted
    /// `X-Forwarded-For` hop when the peer is a trusted proxy).
    pub client: IpAddr,
    pub x_forwarded_for: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    /// The W3C trace id of the request's `traceparent`, when it has one.
    pub trace_id: Option<[u8; 32]>,
    /// The authenticated principal (JWT `sub`, API-key client id, user).
    pub principal: Option<String>,
    /// The policy and section that rejected the request.
    pub policy: Option<(String, &'static str)>,
    /// The metric reason (`upstream`, or why the gateway answered).
    pub reason: &'static str,
    /// Short response flag ([`flag`]).
    pub flag: &'static str,
    /// The response body ended early (client gone, upstream reset).
    pub incomplete: bool,
    /// The request's trace, when tracing is on and it is recorded: the
    /// exporter makes spans of the entry.
    pub trace: Option<crate::telemetry::RequestTrace>,
    /// The matched route's (or listener's) SluicePolicy `accessLog`
    /// filter, applied when the entry is sent.
    pub filter: Option<crate::policy::log_sampling::LogFilter>,
}

impl Entry {
    /// The request's authority: the target's (HTTP/2, absolute form) or
    /// the `Host` header's.
    pub fn authority(&self) -> Option<&[u8]> {
        match self.uri.authority() {
            Some(a) => Some(a.as_str().as_bytes()),
            None => self.authority.as_ref().map(HeaderValue::as_bytes),
        }
    }
}

/// The short code of a response: `-` when the backend answered, else why
/// the gateway answered itself. Stable; listed in the README ("Access logs and request ids").
pub fn flag(reason: Option<Reason>, answered: &str) -> &'static str {
    use Reason::*;
    let Some(reason) = reason else {
        return match answered {
            "redirect" => "RD",
            "cors_preflight" => "CP",
            "cache_hit" => "CH",
            _ => "-",
        };
    };
    match reason {
        NoGateway | NoRoute => "NR",
        MissingHost | BadRequest => "BR",
        Misdirected => "MD",
        NoBackends | BackendNotResolvable => "NB",
        NoReadyEndpoints => "UH",
        RequestTimeout => "RT",
        UpstreamTimeout => "UT",
        UpstreamConnect => "UF",
        UpstreamError => "UR",
        PolicyInvalid | PolicyUnavailable => "PE",
        SourceDenied => "SD",
        HeadersTooLarge | UriTooLong => "HL",
        RequestBodyTimeout => "BT",
        Overloaded => "OL",
        BodyTooLarge => "BL",
        JwtMissing | JwtMalformed | JwtSignature | JwtExpired | JwtClaims | ApiKeyMissing
        | ApiKeyInvalid | BasicAuthMissing | BasicAuthInvalid => "UA",
        ExtAuthDenied | Forbidden => "FB",
        ExtAuthUnavailable => "EA",
        // (A shadow refusal never answers; listed for completeness.)
        RateLimited | QuotaExceeded | RateLimitShadow => "RL",
        RateLimitUnavailable => "RU",
        // Envoy's flag for a circuit breaker's overflow.
        UpstreamOverflow => "UO",
    }
}

/// The wall-clock time of `at` (an instant of this thread's recent past or
/// future), from a pair of clock readings this thread took within the last
/// second: a request's arrival is logged without reading the clock again.
/// A step of the wall clock shows within a second.
pub fn wall_clock(at: Instant) -> SystemTime {
    const FRESH: Duration = Duration::from_secs(1);
    thread_local! {
        static BASE: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
    }
    BASE.with(|base| {
        if let Some((then, wall)) = base.get() {
            match at.checked_duration_since(then) {
                Some(after) if after < FRESH => return wall + after,
                Some(_) => {}
                // An instant taken before the readings (a request that
                // began before another refreshed them).
                None => {
                    let before = then.duration_since(at);
                    if before < FRESH {
                        return wall.checked_sub(before).unwrap_or(wall);
                    }
                }
            }
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        base.set(Some((now, wall)));
        match at.checked_duration_since(now) {
            Some(after) => wall + after,
            None => wall.checked_sub(now - at).unwrap_or(wall),
        }
    })
}

/// The trace id (32 lower-case hex digits) of a W3C `traceparent`, when it
/// is valid by [`TraceParent::parse`](crate::telemetry::TraceParent::parse).
pub fn trace_id(traceparent: &HeaderValue) -> Option<[u8; 32]> {
    let parsed = crate::telemetry::TraceParent::parse(traceparent)?;
    let mut out = [0u8; 32];
    crate::telemetry::context::hex_into(&mut out, &parsed.trace_id);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_only_from_well_formed_traceparents() {
        let ok =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            trace_id(&ok).map(|i| String::from_utf8(i.to_vec()).unwrap()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned())
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(trace_id(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }

    #[test]
    fn flags_tell_gateway_answers_apart() {
        assert_eq!(flag(None, "upstream"), "-");
        assert_eq!(flag(None, "redirect"), "RD");
        assert_eq!(flag(None, "cache_hit"), "CH");
        assert_eq!(flag(Some(Reason::NoRoute), ""), "NR");
        assert_eq!(flag(Some(Reason::UpstreamTimeout), ""), "UT");
        assert_eq!(flag(Some(Reason::UpstreamConnect), ""), "UF");
        assert_eq!(flag(Some(Reason::JwtExpired), ""), "UA");
        assert_eq!(flag(Some(Reason::Forbidden), ""), "FB");
        assert_eq!(flag(Some(Reason::NoReadyEndpoints), ""), "UH");
    }

    #[test]
    fn wall_clock_times_match_the_clock() {
        let close = |a: SystemTime, b: SystemTime| {
            let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
            assert!(d < Duration::from_millis(50), "{a:?} vs {b:?}");
        };
        let now = Instant::now();
        close(wall_clock(now), SystemTime::now());
        // From the same readings: later and earlier instants.
        let later = now + Duration::from_millis(300);
        assert_eq!(
            wall_clock(later).duration_since(wall_clock(now)).unwrap(),
            Duration::from_millis(300)
        );
        let earlier = now.checked_sub(Duration::from_millis(200)).unwrap();
        assert_eq!(
            wall_clock(now).duration_since(wall_clock(earlier)).unwrap(),
            Duration::from_millis(200)
        );
        // Past the second the readings are taken again.
        let much_later = now + Duration::from_secs(5);
        close(
            wall_clock(much_later),
            SystemTime::now() + Duration::from_secs(5),
        );
        close(wall_clock(Instant::now()), SystemTime::now());
    }

    #[test]
    fn destinations_parse() {
        assert_eq!("off".parse::<Destination>(), Ok(Destination::Off));
        assert_eq!("stdout".parse::<Destination>(), Ok(Destination::Stdout));
        assert_eq!(
            "/var/log/sluice/access.log".parse::<Destination>(),
            Ok(Destination::File("/var/log/sluice/access.log".into()))
        );
        assert!("".parse::<Destination>().is_err());
    }

    /// A log to `a.log` in a directory of its own (removed by the caller),
    /// with room for `queue` lines; the directory and the file.
    fn file_log(name: &str, queue: usize) -> (AccessLog, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("sluice-al-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let log = AccessLog::start(&Settings {
            destination: Destination::File(path.clone()),
            queue,
            ..Settings::default()
        })
        .unwrap();
        (log, dir, path)
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_also_after_the_last_handle_goes() {
        let (log, dir, path) = file_log("mt", Settings::default().queue);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let mut e = format::tests::entry();
                        e.bytes_in = t * 1_000 + i;
                        log.send(&e);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // The writer writes what is waiting when the last handle is gone,
        // then ends.
        drop(log);
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() >= 2_000 || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut seen: Vec<u64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a whole JSON line");
                v["bytes_in"].as_u64().unwrap()
            })
            .collect();
        seen.sort_unstable();
        let sent: Vec<u64> = (0..4)
            .flat_map(|t| (0..500).map(move |i| t * 1_000 + i))
            .collect();
        assert_eq!(seen, sent, "every line once, none torn");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_flush_returns_once_the_lines_are_written() {
        let (log, dir, path) = file_log("flush", Settings::default().queue);
        for round in 0..20 {
            log.send(&format::tests::entry());
            assert!(log.flush(Duration::from_secs(10)).await);
            // Read at once: no waiting for the writer here.
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), round + 1, "{text}");
        }
        std::fs::remove_dir_all(&dir).ok();
        // Nothing to wait for without a log.
        assert!(AccessLog::default().flush(Duration::ZERO).await);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        // A writer that cannot keep up: a pipe nobody reads would do, but
        // room for one line, taken every 10 ms, is enough to see drops.
        let (log, dir, _) = file_log("full", 1);
        let start = std::time::Instant::now();
        for _ in 0..10_000 {
            log.send(&format::tests::entry());
        }
        // 10,000 sends into a queue of one cannot all have waited for a
        // disk write each; the generous bound only catches blocking.
        assert!(start.elapsed() < Duration::from_secs(5));
        let (_, dropped) = log.counts();
        assert!(
            dropped > 0,
            "a queue of one must drop some of 10,000 entries"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
