//! `outlierDetection` (passive health): an endpoint that answers 5xx (or
//! cannot be connected to) too many times in a row is *ejected* — load
//! balancing skips it — for `baseEjectionTime` × the number of times it was
//! ejected recently, then it returns on its own. Each `interval` an endpoint
//! spends back in the rotation takes one off that multiplier. Never more
//! than `maxEjectionPercent` of a backend's endpoints are out at once
//! (at least one may always be ejected).
//!
//! Everything is decided where requests finish; no timer task: an ejected
//! endpoint's return is noticed by the next pick that looks at it.
use std::{sync::atomic::Ordering, time::Duration};

use super::endpoint::EndpointState;

/// Longest ejection, whatever the multiplier (Envoy's default).
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// The `outlierDetection` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutlierSpec {
    /// 5xx answers (or timeouts) in a row that eject; 0: never.
    pub consecutive_5xx: u32,
    /// Failed connection attempts in a row that eject; 0: never.
    pub consecutive_connect_failures: u32,
    /// Time back in the rotation that takes one off the ejection multiplier.
    pub interval: Duration,
    pub base_ejection_time: Duration,
    /// Percent of a backend's endpoints that may be ejected at once.
    pub max_ejection_percent: u32,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_connect_failures: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
        }
    }
}

/// How one attempt on an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500.
    Success,
    /// A 5xx answer, or no answer in time.
    ServerError,
    /// No connection could be made.
    ConnectFailure,
}

/// Why an endpoint was ejected (the `cause` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Consecutive5xx,
    ConsecutiveConnectFailure,
}

impl Cause {
    pub fn label(self) -> &'static str {
        match self {
            Cause::Consecutive5xx => "consecutive_5xx",
            Cause::ConsecutiveConnectFailure => "consecutive_connect_failure",
        }
    }
}

impl OutlierSpec {
    /// Records `outcome` on `ep`; `Some(cause)` when the endpoint has now
    /// reached a threshold (the caller decides whether it may be ejected).
    pub fn record(&self, ep: &EndpointState, outcome: Outcome) -> Option<Cause> {
        match outcome {
            Outcome::Success => {
                // Plain stores only when something is to be reset: the
                // common case stays read-only on a shared cache line.
                if ep.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                    ep.consecutive_5xx.store(0, Ordering::Relaxed);
                }
                if ep.consecutive_connect.load(Ordering::Relaxed) != 0 {
                    ep.consecutive_connect.store(0, Ordering::Relaxed);
                }
                None
            }
            Outcome::ServerError => {
                let n = ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                (self.consecutive_5xx > 0 && n >= self.consecutive_5xx)
                    .then_some(Cause::Consecutive5xx)
            }
            Outcome::ConnectFailure => {
                let n = ep.consecutive_connect.fetch_add(1, Ordering::Relaxed) + 1;
                (self.consecutive_connect_failures > 0 && n >= self.consecutive_connect_failures)
                    .then_some(Cause::ConsecutiveConnectFailure)
            }
        }
    }

    /// Endpoints of `total` that may be out at once.
    pub fn max_ejected(&self, total: usize) -> usize {
        (total * self.max_ejection_percent as usize / 100).max(1)
    }

    /// Ejects `ep` at `now_ms` unless it is out already; the ejection's
    /// length when it did.
    pub fn eject(&self, ep: &EndpointState, now_ms: u64) -> Option<Duration> {
        if ep
            .ejected
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        // Time spent back in the rotation earns the multiplier down.
        let back_for = now_ms.saturating_sub(ep.returned_at.load(Ordering::Relaxed));
        let earned = back_for / (self.interval.as_millis().max(1) as u64);
        let before = u64::from(ep.ejections.load(Ordering::Relaxed));
        let times = before.saturating_sub(earned) + 1;
        ep.ejections.store(times as u32, Ordering::Relaxed);
        let length = self
            .base_ejection_time
            .saturating_mul(times as u32)
            .min(MAX_EJECTION_TIME.max(self.base_ejection_time));
        ep.ejected_until
            .store(now_ms + length.as_millis() as u64, Ordering::Release);
        ep.consecutive_5xx.store(0, Ordering::Relaxed);
        ep.consecutive_connect.store(0, Ordering::Relaxed);
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> EndpointState {
        EndpointState::new("10.0.0.1:80".parse().unwrap())
    }

    fn spec() -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: 3,
            consecutive_connect_failures: 2,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn thresholds_count_in_a_row_and_a_success_resets() {
        let (s, e) = (spec(), ep());
        assert_eq!(s.record(&e, Outcome::ServerError), None);
        assert_eq!(s.record(&e, Outcome::ServerError), None);
        assert_eq!(s.record(&e, Outcome::Success), None);
        assert_eq!(s.record(&e, Outcome::ServerError), None);
        assert_eq!(s.record(&e, Outcome::ServerError), None);
        assert_eq!(
            s.record(&e, Outcome::ServerError),
            Some(Cause::Consecutive5xx)
        );
        assert_eq!(s.record(&e, Outcome::ConnectFailure), None);
        assert_eq!(
            s.record(&e, Outcome::ConnectFailure),
            Some(Cause::ConsecutiveConnectFailure)
        );
        let off = OutlierSpec {
            consecutive_5xx: 0,
            ..spec()
        };
        for _ in 0..10 {
            assert_eq!(off.record(&e, Outcome::ServerError), None);
        }
    }

    #[test]
    fn ejection_time_grows_with_repeated_ejections_and_decays_with_time_back() {
        let (s, e) = (spec(), ep());
        assert_eq!(s.eject(&e, 0), Some(Duration::from_secs(30)));
        assert_eq!(s.eject(&e, 1), None, "already out");
        assert!(!e.available(29_999));
        assert!(e.available(30_000), "back after its ejection time");
        // Ejected again 5 s after returning: twice as long.
        assert_eq!(s.eject(&e, 35_000), Some(Duration::from_secs(60)));
        assert!(e.available(95_000));
        // 25 s back (two intervals) earns the multiplier down from 2 to 0.
        assert_eq!(s.eject(&e, 120_000), Some(Duration::from_secs(30)));
        // Capped.
        let long = OutlierSpec {
            base_ejection_time: Duration::from_secs(200),
            ..spec()
        };
        let f = ep();
        assert_eq!(long.eject(&f, 0), Some(Duration::from_secs(200)));
        assert!(f.available(200_000));
        assert_eq!(long.eject(&f, 200_001), Some(MAX_EJECTION_TIME));
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected() {
        let s = OutlierSpec {
            max_ejection_percent: 10,
            ..spec()
        };
        assert_eq!(s.max_ejected(3), 1);
        assert_eq!(s.max_ejected(20), 2);
        assert_eq!(spec().max_ejected(4), 2);
    }
}
