//! Time for the local limiters. Every limiter reads one agent-wide base
//! (elapsed time since the agent's rate-limit service started), so the
//! theoretical arrival times of all rules live in one frame and the shared
//! state store can tell an expired entry from a live one without knowing
//! which rule wrote it. Tests use a base they move by hand.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

#[derive(Debug)]
enum Source {
    Real(Instant),
    Fake(AtomicU64),
}

/// The time base: real (monotonic) or fake (moved by [`ClockBase::advance`]).
#[derive(Debug, Clone)]
pub struct ClockBase(Arc<Source>);

impl ClockBase {
    pub fn real() -> Self {
        Self(Arc::new(Source::Real(Instant::now())))
    }

    /// A base that only moves when told (tests).
    pub fn fake() -> Self {
        Self(Arc::new(Source::Fake(AtomicU64::new(0))))
    }

    /// Time since the base started.
    #[inline]
    pub fn now(&self) -> Duration {
        match &*self.0 {
            Source::Real(origin) => origin.elapsed(),
            Source::Fake(ns) => Duration::from_nanos(ns.load(Ordering::Acquire)),
        }
    }

    /// Moves a fake base forward; a real one ignores it.
    pub fn advance(&self, by: Duration) {
        if let Source::Fake(ns) = &*self.0 {
            ns.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
        }
    }
}

/// The clock of one governor limiter. A governor `RateLimiter` remembers
/// the clock's reading at construction as its start and measures from
/// there; this clock reads zero until [`LimiterClock::start`], so every
/// limiter's start is the base's origin and their states compare.
#[derive(Debug)]
pub struct LimiterClock {
    base: ClockBase,
    started: AtomicBool,
}

impl LimiterClock {
    pub fn new(base: ClockBase) -> Self {
        Self {
            base,
            started: AtomicBool::new(false),
        }
    }

    /// Called right after the limiter is built.
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn base(&self) -> &ClockBase {
        &self.base
    }
}

impl governor::clock::Clock for LimiterClock {
    type Instant = Duration;

    #[inline]
    fn now(&self) -> Duration {
        if self.started.load(Ordering::Acquire) {
            self.base.now()
        } else {
            Duration::ZERO
        }
    }
}
