//! What the agent knows of one endpoint of a backend: requests in flight,
//! failures in a row, ejection and health. Held by the backend's
//! [`super::BackendState`] (outside the snapshot) and shared by every
//! compiled backend that uses the endpoint, so it survives reloads.
use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
};

/// One endpoint's state. Times are milliseconds on the backend state's
/// clock ([`super::BackendState::now_ms`]).
#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    /// Requests in flight to it (LeastRequest).
    pub(super) in_flight: AtomicU32,
    pub(super) consecutive_5xx: AtomicU32,
    pub(super) consecutive_connect: AtomicU32,
    /// Out of the rotation (outlier detection) until `ejected_until`.
    pub(super) ejected: AtomicBool,
    pub(super) ejected_until: AtomicU64,
    /// Recent ejections: the multiplier of the ejection time.
    pub(super) ejections: AtomicU32,
    /// When it last came back from an ejection.
    pub(super) returned_at: AtomicU64,
    /// Active health checks' verdict (true without health checks).
    pub(super) healthy: AtomicBool,
    pub(super) check_successes: AtomicU32,
    pub(super) check_failures: AtomicU32,
}

impl EndpointState {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            in_flight: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_connect: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            check_successes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
        }
    }

    /// Whether load balancing may pick it at `now_ms`. An ejection that
    /// has run out ends here (the clock is only read for ejected endpoints
    /// by the callers that pass a lazily computed time).
    pub fn available(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected_at(now_ms)
    }

    /// Whether it is ejected at `now_ms`, ending an ejection that ran out.
    pub fn ejected_at(&self, now_ms: u64) -> bool {
        if !self.ejected.load(Ordering::Acquire) {
            return false;
        }
        if now_ms < self.ejected_until.load(Ordering::Acquire) {
            return true;
        }
        if self
            .ejected
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.returned_at.store(now_ms, Ordering::Relaxed);
        }
        false
    }

    /// Whether it is ejected (without ending a run-out ejection).
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Times ejected recently (the multiplier).
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Milliseconds of ejection left at `now_ms` (0 when not ejected).
    pub fn ejection_left(&self, now_ms: u64) -> u64 {
        if self.is_ejected() {
            self.ejected_until
                .load(Ordering::Acquire)
                .saturating_sub(now_ms)
        } else {
            0
        }
    }
}
