//! The resilience sections of a SluicePolicy — `loadBalancer`,
//! `circuitBreaker`, `outlierDetection`, `healthCheck` — which apply to
//! every backend of the rules a policy governs (the model of Envoy
//! Gateway's BackendTrafficPolicy). One file per section ([`balance`],
//! [`breaker`], [`outlier`], [`health`]); they share the per-endpoint state
//! of [`endpoint`].
//!
//! Compiled in two steps: the control plane merges the sections of a rule
//! into one [`UpstreamPolicy`], then makes a [`BackendPolicy`] of it for
//! each backend of the rule ([`UpstreamPolicy::for_backend`]): the endpoint
//! list with each endpoint's state, and the hash ring when hashing. The
//! snapshot's backend holds it; a backend without these sections holds
//! nothing and keeps the plain round robin (no extra work per request).
//!
//! State that must outlive reloads — requests in flight, breaker counters,
//! failures in a row, ejections — lives in a [`BackendState`] kept in the
//! policy state store ([`crate::policy::state::PolicyState`]) under the
//! policy's identity, the backend and a fingerprint of the sections; the
//! endpoints' states are kept in it by address. A reload that leaves policy
//! and backend unchanged finds the same state; an endpoint that joins gets
//! fresh state without disturbing the others'.
pub mod balance;
pub mod breaker;
pub mod endpoint;
pub mod health;
pub mod metrics;
pub mod outlier;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use http::HeaderMap;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

pub use balance::{HashOn, LoadBalancerSpec};
pub use breaker::{CircuitBreakerSpec, Limit, Slot};
pub use endpoint::EndpointState;
pub use health::HealthCheckSpec;
pub use metrics::UpstreamMetrics;
pub use outlier::{Outcome, OutlierSpec};

use super::{
    state::{Compile, StateKey},
    PolicyId, Reason, Rejection, SectionMeta,
};
use crate::metrics::Name;

/// A merged section with the policy it is attributed to.
#[derive(Debug, Clone)]
pub struct Section<T> {
    pub spec: T,
    pub meta: Arc<SectionMeta>,
}

/// The resilience sections in effect for a rule's backends.
#[derive(Debug)]
pub struct UpstreamPolicy {
    pub load_balancer: Option<Section<LoadBalancerSpec>>,
    pub circuit_breaker: Option<Section<CircuitBreakerSpec>>,
    pub outlier: Option<Section<OutlierSpec>>,
    pub health: Option<Section<HealthCheckSpec>>,
    /// The policy the backends' state is kept under.
    pub owner: PolicyId,
    /// Digest of who contributed what: other sections, other state.
    pub fingerprint: u64,
    pub metrics: UpstreamMetrics,
}

impl UpstreamPolicy {
    /// The sections' handles (admin: which policies govern a route).
    pub fn sections(&self) -> impl Iterator<Item = &SectionMeta> {
        let lb = self.load_balancer.as_ref().map(|s| &*s.meta);
        let cb = self.circuit_breaker.as_ref().map(|s| &*s.meta);
        let od = self.outlier.as_ref().map(|s| &*s.meta);
        let hc = self.health.as_ref().map(|s| &*s.meta);
        lb.into_iter().chain(cb).chain(od).chain(hc)
    }

    /// The compiled form for one backend (`namespace/service:port`) with
    /// these endpoints; its state comes from (or goes into) the store.
    pub fn for_backend(
        self: &Arc<Self>,
        backend: &str,
        endpoints: &[SocketAddr],
        compile: &Compile<'_>,
    ) -> BackendPolicy {
        let key = StateKey {
            policy: self.owner.clone(),
            section: "upstream",
            item: backend.to_owned(),
            fingerprint: self.fingerprint,
        };
        let state = compile.get_or_insert(key, || BackendState::new(backend.into(), &self.metrics));
        let states = state.endpoints(endpoints);
        if let (Some(hc), Some(rt)) = (&self.health, compile.state().runtime()) {
            BackendState::check(&state, &hc.spec, &states, rt);
        }
        let ring = match self.load_balancer.as_ref().map(|s| &s.spec) {
            Some(LoadBalancerSpec::ConsistentHash(_)) => Some(state.ring(endpoints)),
            _ => None,
        };
        BackendPolicy {
            policy: self.clone(),
            state,
            endpoints: states,
            ring,
            next: AtomicU64::new(0),
        }
    }
}

/// Counters of one backend state, resolved once.
#[derive(Debug)]
struct Counted {
    overflow: [Counter; 4],
    ejections: [Counter; 2],
    ejected: Gauge,
    /// Health checks passed and failed.
    checks: [Counter; 2],
    unhealthy: Gauge,
    panic: Gauge,
    panic_requests: Counter,
}

/// What outlives reloads for one backend under one policy: its endpoints'
/// state and the breaker's counters.
#[derive(Debug)]
pub struct BackendState {
    /// `namespace/service:port`.
    pub name: Arc<str>,
    epoch: Instant,
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointState>>>,
    pub breaker: breaker::Counters,
    /// Every endpoint is out, so all are used.
    panic: AtomicBool,
    counted: Counted,
    /// The health-check task of each checked endpoint.
    checkers: Mutex<HashMap<SocketAddr, tokio::task::AbortHandle>>,
    /// The hash ring of the last endpoint list (ConsistentHash), shared by
    /// every rule that uses the backend.
    ring: Mutex<Option<SharedRing>>,
}

/// A hash ring and the endpoint list it was built from.
type SharedRing = (Box<[SocketAddr]>, Arc<balance::Ring>);

impl BackendState {
    pub fn new(name: Arc<str>, metrics: &UpstreamMetrics) -> Self {
        let label = Name(name.clone());
        let overflow = [
            Limit::Connections,
            Limit::PendingRequests,
            Limit::Requests,
            Limit::Retries,
        ]
        .map(|l| {
            metrics
                .overflow
                .get_or_create(&metrics::OverflowLabels {
                    backend: label.clone(),
                    limit: l.label(),
                })
                .clone()
        });
        let ejections = [
            outlier::Cause::Consecutive5xx,
            outlier::Cause::ConsecutiveConnectFailure,
        ]
        .map(|c| {
            metrics
                .ejections
                .get_or_create(&metrics::EjectionLabels {
                    backend: label.clone(),
                    cause: c.label(),
                })
                .clone()
        });
        let checks = ["success", "failure"].map(|result| {
            metrics
                .health_checks
                .get_or_create(&metrics::CheckLabels {
                    backend: label.clone(),
                    result,
                })
                .clone()
        });
        let backend = metrics::BackendLabels { backend: label };
        Self {
            name,
            epoch: Instant::now(),
            endpoints: Mutex::default(),
            breaker: breaker::Counters::default(),
            panic: AtomicBool::new(false),
            checkers: Mutex::default(),
            ring: Mutex::default(),
            counted: Counted {
                overflow,
                ejections,
                ejected: metrics.ejected.get_or_create(&backend).clone(),
                checks,
                unhealthy: metrics.unhealthy.get_or_create(&backend).clone(),
                panic: metrics.panic.get_or_create(&backend).clone(),
                panic_requests: metrics.panic_requests.get_or_create(&backend).clone(),
            },
        }
    }

    /// Milliseconds since the state was made (its clock).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The states of `endpoints`, in order: kept ones for known addresses,
    /// fresh ones for new; addresses no longer listed are forgotten.
    fn endpoints(&self, endpoints: &[SocketAddr]) -> Box<[Arc<EndpointState>]> {
        let mut map = self.endpoints.lock().expect("endpoint states");
        let out: Box<[Arc<EndpointState>]> = endpoints
            .iter()
            .map(|a| {
                map.entry(*a)
                    .or_insert_with(|| Arc::new(EndpointState::new(*a)))
                    .clone()
            })
            .collect();
        let gone: Vec<SocketAddr> = map
            .keys()
            .filter(|a| !endpoints.contains(a))
            .copied()
            .collect();
        for a in gone {
            map.remove(&a);
        }
        out
    }

    /// The hash ring of `endpoints`, built once per endpoint list.
    fn ring(&self, endpoints: &[SocketAddr]) -> Arc<balance::Ring> {
        let mut held = self.ring.lock().expect("hash ring");
        if let Some((list, ring)) = &*held {
            if **list == *endpoints {
                return ring.clone();
            }
        }
        let ring = Arc::new(balance::Ring::new(endpoints));
        *held = Some((endpoints.into(), ring.clone()));
        ring
    }

    /// Every endpoint's state (admin).
    pub fn endpoint_states(&self) -> Vec<Arc<EndpointState>> {
        let mut v: Vec<_> = self
            .endpoints
            .lock()
            .expect("endpoint states")
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|e| e.addr);
        v
    }

    /// Sets the ejected-endpoints gauge from the endpoints' state at
    /// `now_ms` (ending ejections that ran out).
    fn recount_ejected(&self, now_ms: u64) {
        let n = self
            .endpoints
            .lock()
            .expect("endpoint states")
            .values()
            .filter(|e| e.ejected_at(now_ms))
            .count();
        self.counted.ejected.set(n as i64);
    }

    /// Starts a health-check task for each of `endpoints` that has none
    /// and stops those of endpoints no longer listed.
    fn check(
        this: &Arc<Self>,
        spec: &HealthCheckSpec,
        endpoints: &[Arc<EndpointState>],
        rt: &tokio::runtime::Handle,
    ) {
        let mut checkers = this.checkers.lock().expect("health checkers");
        checkers.retain(|addr, task| {
            let listed = endpoints.iter().any(|e| e.addr == *addr);
            if !listed {
                task.abort();
            }
            listed
        });
        for ep in endpoints {
            checkers.entry(ep.addr).or_insert_with(|| {
                rt.spawn(health::run(spec.clone(), ep.clone(), Arc::downgrade(this)))
                    .abort_handle()
            });
        }
    }

    /// Sets the unhealthy-endpoints gauge from the endpoints' state.
    fn recount_unhealthy(&self) {
        let n = self
            .endpoints
            .lock()
            .expect("endpoint states")
            .values()
            .filter(|e| !e.is_healthy())
            .count();
        self.counted.unhealthy.set(n as i64);
    }

    /// Whether every endpoint is out, so all are used.
    pub fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// The state of endpoint `addr`, if the backend has it.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<Arc<EndpointState>> {
        self.endpoints
            .lock()
            .expect("endpoint states")
            .get(&addr)
            .cloned()
    }
}

impl Drop for BackendState {
    fn drop(&mut self) {
        // Gauges of a backend that is no longer governed this way; a state
        // that replaces this one starts with nothing ejected.
        let ejected = self
            .endpoints
            .get_mut()
            .map(|m| m.values().any(|e| e.is_ejected()))
            .unwrap_or(false);
        if ejected {
            self.counted.ejected.set(0);
        }
        if self.panic.load(Ordering::Relaxed) {
            self.counted.panic.set(0);
        }
        let checkers = self
            .checkers
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for task in checkers.into_values() {
            task.abort();
        }
        let unhealthy = self
            .endpoints
            .get_mut()
            .map(|m| m.values().any(|e| !e.is_healthy()))
            .unwrap_or(false);
        if unhealthy {
            self.counted.unhealthy.set(0);
        }
    }
}

/// A backend's resilience sections compiled with its endpoints. Indexes
/// are positions in the backend's endpoint list.
#[derive(Debug)]
pub struct BackendPolicy {
    pub policy: Arc<UpstreamPolicy>,
    pub state: Arc<BackendState>,
    endpoints: Box<[Arc<EndpointState>]>,
    ring: Option<Arc<balance::Ring>>,
    next: AtomicU64,
}

/// One request's hold on its backend: the breaker's request slot and the
/// attempt's in-flight count on its endpoint. Dropped when the response
/// (body included) is done.
#[derive(Debug, Default)]
pub struct Hold {
    request: Option<Slot>,
    retries: Vec<Slot>,
    attempt: Option<InFlight>,
}

impl Hold {
    /// Moves the in-flight count to endpoint `i` (a new attempt).
    pub fn attempt(&mut self, policy: &BackendPolicy, i: usize) {
        self.attempt = None;
        let ep = policy.endpoints[i].clone();
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        self.attempt = Some(InFlight(ep));
    }
}

/// One request in flight on an endpoint.
#[derive(Debug)]
struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BackendPolicy {
    pub fn endpoint(&self, i: usize) -> SocketAddr {
        self.endpoints[i].addr
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoint for a request: among those in the rotation (not
    /// ejected, not unhealthy) by the load-balancing policy; when none is,
    /// among all of them (panic mode: better a chance than a certain 503).
    pub fn pick(&self, headers: &HeaderMap, peer: IpAddr) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        match self.choose(headers, peer) {
            Ok(i) => {
                if self.state.panic.load(Ordering::Relaxed)
                    && self.state.panic.swap(false, Ordering::Relaxed)
                {
                    self.state.counted.panic.set(0);
                    tracing::info!(backend = %self.state.name, "backend out of panic mode: endpoints are back in the rotation");
                }
                Some(i)
            }
            Err(fallback) => {
                if !self.state.panic.swap(true, Ordering::Relaxed) {
                    self.state.counted.panic.set(1);
                    tracing::warn!(backend = %self.state.name, endpoints = n, "panic mode: every endpoint is unhealthy or ejected, using all of them");
                }
                self.state.counted.panic_requests.inc();
                Some(fallback)
            }
        }
    }

    /// An endpoint for a retry of an attempt on `i`: another one in the
    /// rotation; another one at all when none is; `i` when it is the only one.
    pub fn pick_other(&self, i: usize) -> usize {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        let others = || (0..n).map(|k| (start + k) % n).filter(|&j| j != i);
        others()
            .find(|&j| self.usable(j))
            .or_else(|| others().next())
            .unwrap_or(i)
    }

    /// Whether endpoint `i` is in the rotation (not ejected, not unhealthy).
    fn usable(&self, i: usize) -> bool {
        let e = &self.endpoints[i];
        // The clock is read only for an endpoint that is ejected.
        e.is_healthy() && !(e.is_ejected() && e.ejected_at(self.state.now_ms()))
    }

    /// The policy's choice among the usable endpoints, or `Err` with its
    /// choice among all of them when none is usable (the same draw, so the
    /// rotation advances once per request either way).
    fn choose(&self, headers: &HeaderMap, peer: IpAddr) -> Result<usize, usize> {
        let n = self.endpoints.len();
        let usable = |i: usize| self.usable(i);
        let round_robin = || {
            let start = self.next.fetch_add(1, Ordering::Relaxed) as usize % n;
            (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| usable(i))
                .ok_or(start)
        };
        match self.policy.load_balancer.as_ref().map(|s| &s.spec) {
            None | Some(LoadBalancerSpec::RoundRobin) => round_robin(),
            Some(LoadBalancerSpec::LeastRequest) => {
                let load = |i: usize| self.endpoints[i].in_flight();
                balance::least_request(n, usable, load)
                    .ok_or_else(|| balance::least_request(n, |_| true, load).unwrap_or(0))
            }
            Some(LoadBalancerSpec::ConsistentHash(on)) => match (on.key(headers, peer), &self.ring)
            {
                (Some(k), Some(ring)) => ring
                    .pick(k, usable)
                    .ok_or_else(|| ring.pick(k, |_| true).unwrap_or(0)),
                // No key: spread like round robin.
                _ => round_robin(),
            },
        }
    }

    /// Admits a request under the breaker's `maxRequests`: a hold to keep
    /// until the response is done, or the 503 to answer at once.
    pub fn admit(&self) -> Result<Hold, Rejection> {
        let mut hold = Hold::default();
        if let Some(cb) = &self.policy.circuit_breaker {
            hold.request = Some(self.take(Limit::Requests, cb.spec.max_requests, cb)?);
        }
        Ok(hold)
    }

    /// A unit of the retry budget for one more attempt; `false` when the
    /// budget is used up (the retry is not made; counted).
    pub fn retry(&self, hold: &mut Hold) -> bool {
        let Some(cb) = &self.policy.circuit_breaker else {
            return true;
        };
        match self.take(Limit::Retries, cb.spec.max_retries, cb) {
            Ok(slot) => {
                hold.retries.push(slot);
                true
            }
            Err(_) => false,
        }
    }

    fn take(
        &self,
        limit: Limit,
        max: u32,
        cb: &Section<CircuitBreakerSpec>,
    ) -> Result<Slot, Rejection> {
        Slot::try_take(&self.state, limit, max).ok_or_else(|| self.overflow(limit, cb))
    }

    /// The answer to a request refused by `limit` (counted).
    fn overflow(&self, limit: Limit, cb: &Section<CircuitBreakerSpec>) -> Rejection {
        self.state.counted.overflow[limit as usize].inc();
        cb.meta.denied(Reason::UpstreamOverflow);
        Rejection::new(
            Reason::UpstreamOverflow,
            format!(
                "backend {}: circuit breaker {} reached",
                self.state.name,
                limit.label()
            ),
        )
        .by(&cb.meta)
    }

    /// A pending-connection slot and the connection slot the pool needs to
    /// open a new connection under `maxPendingRequests`/`maxConnections`;
    /// `Ok(None)` without a breaker.
    pub fn connect_slots(&self) -> Result<Option<(Slot, Slot)>, Rejection> {
        let Some(cb) = &self.policy.circuit_breaker else {
            return Ok(None);
        };
        let pending = self.take(Limit::PendingRequests, cb.spec.max_pending_requests, cb)?;
        let conn = self.take(Limit::Connections, cb.spec.max_connections, cb)?;
        Ok(Some((pending, conn)))
    }

    /// Records how an attempt on endpoint `i` ended (outlier detection).
    pub fn record(&self, i: usize, outcome: Outcome) {
        let Some(od) = &self.policy.outlier else {
            return;
        };
        let ep = &self.endpoints[i];
        let Some(cause) = od.spec.record(ep, outcome) else {
            return;
        };
        let now = self.state.now_ms();
        let out = self
            .endpoints
            .iter()
            .filter(|e| e.is_ejected() && e.ejected_at(now))
            .count();
        if out >= od.spec.max_ejected(self.endpoints.len()) {
            tracing::debug!(backend = %self.state.name, endpoint = %ep.addr, "not ejected: maxEjectionPercent reached");
            return;
        }
        if let Some(length) = od.spec.eject(ep, now) {
            self.state.counted.ejections[cause as usize].inc();
            self.state.recount_ejected(now);
            tracing::warn!(
                backend = %self.state.name,
                endpoint = %ep.addr,
                cause = cause.label(),
                seconds = length.as_secs_f64(),
                "endpoint ejected"
            );
            // The gauge comes down when the ejection ends, whether or not
            // a pick looks at the endpoint then.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let state = Arc::downgrade(&self.state);
                rt.spawn(async move {
                    tokio::time::sleep(length).await;
                    if let Some(s) = state.upgrade() {
                        s.recount_ejected(s.now_ms());
                    }
                });
            }
        }
    }
}
