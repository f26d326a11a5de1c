//! W3C Trace Context (`traceparent`) and the sampling decision, made once
//! per request at the gateway.
//!
//! The gateway takes part in a trace as one server span per request and one
//! client span per upstream attempt. The upstream request carries a
//! `traceparent` naming the attempt's span as its parent, so the backend's
//! spans hang below the attempt that reached it; `tracestate` is vendor data
//! of the caller and travels unchanged (it is an ordinary header to the
//! proxy).
use std::{net::SocketAddr, time::SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent` (W3C Trace Context level 1).
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The sampled bit of the trace flags.
const SAMPLED: u8 = 0x01;

/// A parsed `traceparent`: version 00 layout, ids not all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses a header value. A higher version is read by the version 00
    /// layout, as the specification asks (its extra fields are ignored);
    /// version `ff`, bad hex, wrong lengths and all-zero ids are invalid.
    pub fn parse(v: &HeaderValue) -> Option<Self> {
        let b = v.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex_byte(b[0], b[1])?;
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, out) in trace_id.iter_mut().enumerate() {
            *out = hex_byte(b[3 + 2 * i], b[4 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, out) in parent_id.iter_mut().enumerate() {
            *out = hex_byte(b[36 + 2 * i], b[37 + 2 * i])?;
        }
        let flags = hex_byte(b[53], b[54])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    // Lower-case only: the specification forbids upper-case hex.
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(nibble(hi)? << 4 | nibble(lo)?)
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> HeaderValue {
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    hex_into(&mut out[3..35], trace_id);
    out[35] = b'-';
    hex_into(&mut out[36..52], span_id);
    out[52] = b'-';
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

/// A random-looking, never-zero 64-bit id, without a system call or lock.
fn next_id() -> u64 {
    crate::random::next_u64().max(1)
}

fn new_span_id() -> [u8; 8] {
    next_id().to_be_bytes()
}

fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_id().to_be_bytes());
    id[8..].copy_from_slice(&next_id().to_be_bytes());
    id
}

/// Parent-based sampling: a request that arrives in a trace follows its
/// caller's decision; a new trace is recorded with probability `ratio`,
/// decided by its trace id (so every hop deciding by the same rule agrees).
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Trace ids whose low 8 bytes are below this are sampled.
    threshold: u64,
    all: bool,
}

impl Sampler {
    pub fn new(ratio: f64) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        Self {
            // Exact for 0 and 1; the float product is fine in between.
            threshold: (ratio * u64::MAX as f64) as u64,
            all: ratio >= 1.0,
        }
    }

    fn new_trace(&self, trace_id: &[u8; 16]) -> bool {
        let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
        self.all || low < self.threshold
    }
}

/// One upstream attempt of a recorded request.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub span_id: [u8; 8],
    pub endpoint: SocketAddr,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    /// The backend's status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed, when it did (connect, timeout, …).
    pub error: Option<&'static str>,
}

/// The trace of one request at the gateway.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    pub trace_id: [u8; 16],
    /// The caller's span, when the request carried a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The gateway's server span.
    pub span_id: [u8; 8],
    /// Recorded and exported (otherwise only propagated).
    pub sampled: bool,
    /// Client spans, one per upstream attempt (recorded requests only).
    pub attempts: Vec<Attempt>,
}

impl RequestTrace {
    /// Joins the caller's trace (a valid `traceparent`) or starts one, and
    /// sets the `traceparent` the request is forwarded with: this span as
    /// the parent, with the sampling decision, so the backend follows it.
    pub fn begin(sampler: &Sampler, headers: &mut HeaderMap) -> Self {
        let caller = headers.get(&TRACEPARENT).and_then(TraceParent::parse);
        let (trace_id, parent, sampled) = match caller {
            Some(p) => (p.trace_id, Some(p.parent_id), p.sampled()),
            None => {
                let id = new_trace_id();
                (id, None, sampler.new_trace(&id))
            }
        };
        let span_id = new_span_id();
        headers.insert(
            TRACEPARENT.clone(),
            format_traceparent(&trace_id, &span_id, sampled),
        );
        Self {
            trace_id,
            parent,
            span_id,
            sampled,
            attempts: Vec::new(),
        }
    }

    /// An upstream attempt starts: recorded requests get a client span,
    /// named in the attempt's `traceparent`.
    pub fn start_attempt(&mut self, headers: &mut HeaderMap, endpoint: SocketAddr) {
        if !self.sampled {
            return;
        }
        let span_id = new_span_id();
        headers.insert(
            TRACEPARENT.clone(),
            format_traceparent(&self.trace_id, &span_id, true),
        );
        self.attempts.push(Attempt {
            span_id,
            endpoint,
            start: SystemTime::now(),
            end: None,
            status: None,
            error: None,
        });
    }

    /// The current attempt ended with the backend's status or an error.
    pub fn end_attempt(&mut self, status: Option<u16>, error: Option<&'static str>) {
        if let Some(a) = self.attempts.last_mut().filter(|a| a.end.is_none()) {
            a.end = Some(SystemTime::now());
            a.status = status;
            a.error = error;
        }
    }

    /// The trace id in lower-case hex (for the access log).
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&mut out, &self.trace_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn parses_the_specification_example() {
        let p = TraceParent::parse(&hv(VALID)).unwrap();
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.trace_id[15], 0x36);
        assert_eq!(
            p.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(p.sampled());
        assert_eq!(
            format_traceparent(&p.trace_id, &p.parent_id, true),
            hv(VALID)
        );
    }

    #[test]
    fn refuses_invalid_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(&hv(bad)).is_none(), "{bad}");
        }
        // A future version is read by the 00 layout, extra fields ignored.
        let future = format!("01{}-what-ever", &VALID[2..]);
        assert!(TraceParent::parse(&hv(&future)).is_some());
    }

    #[test]
    fn a_caller_in_a_trace_keeps_its_trace_and_decision() {
        let never = Sampler::new(0.0);
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, hv(VALID));
        let t = RequestTrace::begin(&never, &mut h);
        assert!(t.sampled, "the caller sampled it");
        assert_eq!(
            t.parent,
            Some(TraceParent::parse(&hv(VALID)).unwrap().parent_id)
        );
        let forwarded = TraceParent::parse(&h[&TRACEPARENT]).unwrap();
        assert_eq!(forwarded.trace_id, t.trace_id);
        assert_eq!(
            forwarded.parent_id, t.span_id,
            "the gateway's span is the parent"
        );

        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, hv(&VALID.replace("-01", "-00")));
        let always = Sampler::new(1.0);
        let t = RequestTrace::begin(&always, &mut h);
        assert!(!t.sampled, "an unsampled caller is followed");
        assert!(!TraceParent::parse(&h[&TRACEPARENT]).unwrap().sampled());
    }

    #[test]
    fn new_traces_follow_the_ratio() {
        let mut h = HeaderMap::new();
        let t = RequestTrace::begin(&Sampler::new(1.0), &mut h);
        assert!(t.sampled && t.parent.is_none());
        assert!(TraceParent::parse(&h[&TRACEPARENT]).unwrap().sampled());
        let quarter = Sampler::new(0.25);
        let sampled = (0..20_000)
            .filter(|_| RequestTrace::begin(&quarter, &mut HeaderMap::new()).sampled)
            .count();
        // 5,000 expected; the ids are well mixed, so this is far from the bound.
        assert!((4_000..6_000).contains(&sampled), "{sampled}");
        assert!(!RequestTrace::begin(&Sampler::new(0.0), &mut HeaderMap::new()).sampled);
    }

    #[test]
    fn attempts_are_client_spans_named_in_the_upstream_traceparent() {
        let mut h = HeaderMap::new();
        let mut t = RequestTrace::begin(&Sampler::new(1.0), &mut h);
        let ep: SocketAddr = "127.0.0.1:80".parse().unwrap();
        t.start_attempt(&mut h, ep);
        t.end_attempt(None, Some("connect"));
        t.start_attempt(&mut h, ep);
        t.end_attempt(Some(200), None);
        assert_eq!(t.attempts.len(), 2);
        assert_ne!(t.attempts[0].span_id, t.attempts[1].span_id);
        let sent = TraceParent::parse(&h[&TRACEPARENT]).unwrap();
        assert_eq!(sent.parent_id, t.attempts[1].span_id);
        assert_eq!(t.attempts[0].error, Some("connect"));
        assert_eq!(t.attempts[1].status, Some(200));
        // Unsampled requests record nothing.
        let mut fresh = HeaderMap::new();
        let mut u = RequestTrace::begin(&Sampler::new(0.0), &mut fresh);
        u.start_attempt(&mut fresh, ep);
        assert!(u.attempts.is_empty());
    }
}
