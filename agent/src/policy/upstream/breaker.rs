//! `circuitBreaker`: per-backend limits on what the gateway asks of it at
//! once. Over a limit the request is answered `503` at once
//! ([`crate::policy::Reason::UpstreamOverflow`], flag `UO`) instead of
//! queueing behind a backend that is already saturated — the backend gets
//! room to recover and callers get a fast answer they can retry elsewhere.
//!
//! The counters live in the backend's [`super::BackendState`], outside the
//! snapshot, so a reload that leaves policy and backend unchanged does not
//! reset them (requests in flight across the reload still count).
use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

/// Envoy's default for each limit.
pub const DEFAULT_LIMIT: u32 = 1024;

/// The `circuitBreaker` section: limits per backend (per agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CircuitBreakerSpec {
    /// Connections open to the backend's endpoints.
    pub max_connections: u32,
    /// Requests waiting for a new connection to be established.
    pub max_pending_requests: u32,
    /// Requests in flight to the backend.
    pub max_requests: u32,
    /// Retries in flight to the backend (a retry budget).
    pub max_retries: u32,
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_LIMIT,
            max_pending_requests: DEFAULT_LIMIT,
            max_requests: DEFAULT_LIMIT,
            max_retries: DEFAULT_LIMIT,
        }
    }
}

/// Which limit refused a request (the `limit` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::PendingRequests => "max_pending_requests",
            Limit::Requests => "max_requests",
            Limit::Retries => "max_retries",
        }
    }
}

/// What is in flight to one backend now.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU32,
    pub pending: AtomicU32,
    pub requests: AtomicU32,
    pub retries: AtomicU32,
}

impl Counters {
    fn counter(&self, limit: Limit) -> &AtomicU32 {
        match limit {
            Limit::Connections => &self.connections,
            Limit::PendingRequests => &self.pending,
            Limit::Requests => &self.requests,
            Limit::Retries => &self.retries,
        }
    }

    /// Current value of a counter (admin, tests).
    pub fn get(&self, limit: Limit) -> u32 {
        self.counter(limit).load(Ordering::Relaxed)
    }
}

/// One unit of a counter, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    counters: Arc<super::BackendState>,
    limit: Limit,
}

impl Slot {
    /// Takes one unit of `limit` when it is below `max`.
    pub fn try_take(state: &Arc<super::BackendState>, limit: Limit, max: u32) -> Option<Slot> {
        let c = state.breaker.counter(limit);
        // Optimistic: add, and give back when over (a refused request never
        // holds a unit, so concurrent takers cannot all slip past the limit).
        if c.fetch_add(1, Ordering::AcqRel) >= max {
            c.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot {
            counters: state.clone(),
            limit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters
            .breaker
            .counter(self.limit)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::upstream::{BackendState, UpstreamMetrics};

    #[test]
    fn slots_are_refused_over_the_limit_and_given_back_on_drop() {
        let state = Arc::new(BackendState::new(
            "ns/svc:80".into(),
            &UpstreamMetrics::default(),
        ));
        let a = Slot::try_take(&state, Limit::Requests, 2).unwrap();
        let b = Slot::try_take(&state, Limit::Requests, 2).unwrap();
        assert!(Slot::try_take(&state, Limit::Requests, 2).is_none());
        assert_eq!(
            state.breaker.get(Limit::Requests),
            2,
            "a refusal holds nothing"
        );
        // Other limits count apart.
        assert!(Slot::try_take(&state, Limit::Retries, 1).is_some());
        drop(a);
        let c = Slot::try_take(&state, Limit::Requests, 2).unwrap();
        drop((b, c));
        assert_eq!(state.breaker.get(Limit::Requests), 0);
        assert!(Slot::try_take(&state, Limit::PendingRequests, 0).is_none());
    }
}
