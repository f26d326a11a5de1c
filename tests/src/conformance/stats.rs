//! Statistical checks, with upstream's request counts and tolerances:
//! weighted backends (`httproute-weight`, upstream `weight.TestWeightedDistribution`),
//! per-backend header filters (`httproute-request-header-modifier-backend-weights`)
//! and percentage mirrors (`httproute-request-percentage-mirror`).
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::{
    cases::{BackendHeader, Case},
    client::{Clients, Outgoing},
    compare::{compare, EchoBody},
    runner::{converge, futures_join_all},
};
use crate::echo::RequestLog;

/// Upstream's batch size and parallelism for the distribution checks.
const REQUESTS: usize = 500;
const CONCURRENCY: usize = 10;

/// A small xorshift generator: the checks need varied, not secret, values.
pub(super) struct Jitter(pub(super) u64);

impl Jitter {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The backend of a pod name: the name without its last two `-` parts
/// (upstream `extractBackendName`).
pub fn backend_of(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    if parts.len() < 3 {
        return pod.to_owned();
    }
    parts[..parts.len() - 2].join("-")
}

/// Judges one batch of the weighted distribution (upstream's rules: only
/// listed backends, exactly the backends with weight > 0 receive traffic,
/// each share within ±0.05 of its weight).
pub fn judge_weights(
    counts: &BTreeMap<String, usize>,
    weights: &BTreeMap<String, u32>,
    total: usize,
) -> Result<(), String> {
    const TOLERANCE: f64 = 0.05;
    let mut problems = Vec::new();
    for b in counts.keys() {
        if !weights.contains_key(b) {
            problems.push(format!("unexpected backend {b}"));
        }
    }
    let active = weights.values().filter(|w| **w > 0).count();
    if counts.len() != active {
        problems.push(format!(
            "expected {active} backends to receive traffic, got {}",
            counts.len()
        ));
    }
    for (b, w) in weights {
        let got = counts.get(b).copied().unwrap_or(0);
        let frac = got as f64 / total as f64;
        if (frac - f64::from(*w) / 100.0).abs() > TOLERANCE {
            problems.push(format!(
                "{b}: {:.1}% of requests, expected {w}%",
                frac * 100.0
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The weighted-distribution check of `httproute-weight` (see its `check`):
/// up to 10 batches of 500 requests, half of them with an `X-Jitter` header.
pub async fn check_weights(c: &Case, out: &Outgoing, clients: &Clients) -> Result<(), String> {
    let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15);
    let mut last = String::new();
    for _batch in 0..10 {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut failure = None;
        for _chunk in 0..REQUESTS / CONCURRENCY {
            let mut reqs = Vec::new();
            for _ in 0..CONCURRENCY {
                let n = jitter.next();
                let mut o = out.clone();
                if n.is_multiple_of(2) {
                    o.headers
                        .insert("X-Jitter".into(), (n % 10_000).to_string());
                }
                reqs.push(o);
            }
            let results = futures_join_all(reqs.iter().map(|o| clients.round_trip(o))).await;
            for r in results {
                match r.and_then(|o| compare(c, &BTreeMap::new(), &o)) {
                    Ok(EchoBody { pod, .. }) => *counts.entry(backend_of(&pod)).or_default() += 1,
                    Err(e) => failure = Some(e),
                }
            }
        }
        last = match failure {
            Some(e) => e,
            None => match judge_weights(&counts, &c.weights, REQUESTS) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
        };
    }
    Err(format!("weighted distribution: {last}"))
}

/// Upstream sends the request `requests` times one after the other; a
/// transport error fails, the status is not checked; each echoed request
/// must carry exactly one `name` header (as the echo server names it) and
/// the answering pod must start with its value.
pub async fn check_backend_header(
    check: &BackendHeader,
    out: &Outgoing,
    clients: &Clients,
) -> Result<(), String> {
    for i in 0..check.requests {
        let o = clients
            .round_trip(out)
            .await
            .map_err(|e| format!("request {}: {e}", i + 1))?;
        let echo: EchoBody = serde_json::from_slice(&o.body).unwrap_or_default();
        let values = echo.headers.get(&check.name).cloned().unwrap_or_default();
        let [value] = values.as_slice() else {
            return Err(format!(
                "request {}: expected one {} header at the backend, got {values:?}",
                i + 1,
                check.name
            ));
        };
        if !echo.pod.starts_with(value.as_str()) {
            return Err(format!(
                "request {}: {} header says {value:?} but pod {:?} answered",
                i + 1,
                check.name,
                echo.pod
            ));
        }
    }
    Ok(())
}

/// Upstream's acceptance band for a mirror share `percent` of `total`
/// requests: total·p ± 3·sqrt(total·p·(1−p)).
pub fn mirror_band(percent: f64, total: usize) -> (f64, f64) {
    let p = percent / 100.0;
    let n = total as f64;
    let margin = 3.0 * (n * p * (1.0 - p)).sqrt();
    (n * p - margin, n * p + margin)
}

/// One percentage-mirror target: its log and expected percent.
pub struct MirrorTarget<'a> {
    pub label: String,
    pub log: &'a RequestLog,
    pub percent: f64,
}

/// The percentage-mirror check (see the case's `check`): up to 5 rounds of
/// 500 requests (10 at a time, each retried until it passes once) under a
/// fresh request id, then each mirror backend's count of that request-URI
/// must lie in [`mirror_band`].
pub async fn check_percentage_mirrors(
    c: &Case,
    out: &Outgoing,
    clients: &Clients,
    targets: &[MirrorTarget<'_>],
    round_id: impl Fn(usize) -> String,
    max_time: Duration,
) -> Result<(), String> {
    const ROUNDS: usize = 5;
    let mut last = String::new();
    for round in 0..ROUNDS {
        let id = round_id(round);
        let (c, out) = with_request_id(c, out, &id);
        for _chunk in 0..REQUESTS / CONCURRENCY {
            let results = futures_join_all(
                (0..CONCURRENCY).map(|_| converge(&c, &out, clients, max_time, 1)),
            )
            .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(format!("round {}: {e}", round + 1));
            }
        }
        let mut problems = Vec::new();
        for t in targets {
            let got = settled_count(t.log, &out.path).await;
            let (min, max) = mirror_band(t.percent, REQUESTS);
            if (got as f64) < min || (got as f64) > max {
                problems.push(format!(
                    "{} received {got} of {REQUESTS} mirrored requests, expected {min:.1}..{max:.1} ({}%)",
                    t.label, t.percent
                ));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        last = problems.join("; ");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(format!("percentage mirror: {last}"))
}

/// The case and request with `gateway-api-conformance-request-id=<id>`
/// appended to the request path and the expected path (upstream
/// `AddRequestIDQueryParam`).
pub fn with_request_id(c: &Case, out: &Outgoing, id: &str) -> (Case, Outgoing) {
    let add = |p: &str| {
        let sep = if p.contains('?') { '&' } else { '?' };
        format!("{p}{sep}gateway-api-conformance-request-id={id}")
    };
    let mut c = c.clone();
    let mut out = out.clone();
    c.request.path = add(&c.request.path);
    out.path = add(&out.path);
    if let Some(p) = c.expected_request.as_mut().and_then(|e| e.path.as_mut()) {
        *p = add(p);
    }
    (c, out)
}

/// How many times `log` holds `uri`, once mirrors still in flight have
/// arrived: the count must stay the same for 500 ms (at most 5 s).
async fn settled_count(log: &RequestLog, uri: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = log.count(uri);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = log.count(uri);
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_drop_two_generated_parts() {
        assert_eq!(
            backend_of("infra-backend-v1-5c9d7f8b4-conf0"),
            "infra-backend-v1"
        );
        assert_eq!(backend_of("a-b"), "a-b");
    }

    #[test]
    fn weights_are_judged_as_upstream() {
        let w: BTreeMap<String, u32> = [("v1", 70), ("v2", 30), ("v3", 0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let counts = |v: &[(&str, usize)]| -> BTreeMap<String, usize> {
            v.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
        };
        assert!(judge_weights(&counts(&[("v1", 340), ("v2", 160)]), &w, 500).is_ok());
        // Off by more than 5 points.
        assert!(judge_weights(&counts(&[("v1", 400), ("v2", 100)]), &w, 500).is_err());
        // A weight-0 backend got traffic, even within the tolerance.
        let e =
            judge_weights(&counts(&[("v1", 345), ("v2", 150), ("v3", 5)]), &w, 500).unwrap_err();
        assert!(e.contains("expected 2 backends"), "{e}");
        assert!(judge_weights(&counts(&[("v1", 350), ("other", 150)]), &w, 500).is_err());
    }

    #[test]
    fn mirror_band_is_three_sigma() {
        let (lo, hi) = mirror_band(20.0, 500);
        // 100 ± 3·sqrt(80) = 100 ± 26.83
        assert!(
            (lo - 73.17).abs() < 0.01 && (hi - 126.83).abs() < 0.01,
            "{lo} {hi}"
        );
        let (lo, hi) = mirror_band(50.0, 500);
        assert!(
            (lo - 216.46).abs() < 0.01 && (hi - 283.54).abs() < 0.01,
            "{lo} {hi}"
        );
    }
}
