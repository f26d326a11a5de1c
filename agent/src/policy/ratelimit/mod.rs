//! `rateLimit`: per-node GCRA limits, fleet-wide limits and quotas in a
//! cluster store, the rate-limit response headers, and the penalty box.
//!
//! Phase: after authorization, before the request transform (see
//! [`crate::policy`]). Rules run in order — local, cluster, quotas — and the
//! first that refuses answers: 429 `rate_limited` / `quota_exceeded` with
//! `Retry-After` and the RateLimit headers, or 503 `rate_limit_unavailable`
//! when a `Closed` cluster rule cannot reach the store. A request refused by
//! a later rule still counts against the earlier ones (as with any chain of
//! independent limiters); quotas come last so that a request another rule
//! refuses never uses a client's quota.
//!
//! - Local rules ([`LocalRule`]): governor's GCRA over the agent-wide
//!   bounded [`store::GcraStore`]; a key is a keyed hash of rule, route
//!   (unless `shared`) and the request's key parts ([`key`]).
//! - Cluster rules and quotas: [`cluster::ClusterStore`] (batched sync, no
//!   store round trip on the request path).
//! - Penalties: refusals (and, where asked, authentication failures) are
//!   counted per source prefix ([`penalty::PenaltyTracker`]); the `after`-th
//!   within `within` puts the prefix into the [`penalty::PenaltyBox`].
//!
//! State that outlives reloads lives in [`RateLimitService`] (one per
//! agent): buckets are keyed by a fingerprint of the declaring policy and
//! the rule's spec, so a reload that leaves a rule unchanged keeps its
//! buckets, and a changed rule starts fresh.
pub mod clock;
pub mod cluster;
pub mod key;
pub mod metrics;
pub mod penalty;
pub mod report;
mod service;
pub mod spec;
pub mod store;

pub use service::*;

use std::{
    hash::{BuildHasher, Hasher, RandomState},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{middleware::StateInformationMiddleware, Quota, RateLimiter};
use http::{header, request::Parts, HeaderValue};

use self::{
    clock::{ClockBase, LimiterClock},
    cluster::{ClusterStore, CounterLabel, Decision, StoreSettings, WallClock, Window},
    key::{describe_key, write_key},
    metrics::{RateLimitMetrics, TableLabels},
    penalty::{PenaltyBox, PenaltyCause, PenaltyTracker},
    report::{Item, Report},
    spec::{
        ClusterRuleSpec, FailureMode, HeaderStyle, LocalRuleSpec, PenaltySpec, QuotaKey,
        QuotaPeriod, QuotaSpec, RateLimitSection,
    },
    store::{GcraStore, SharedStore},
};
use super::{state::fingerprint, PolicyId, Reason, Rejection, RequestCtx, SectionMeta};

type Limiter = RateLimiter<u64, SharedStore, LimiterClock, StateInformationMiddleware>;

/// A compiled local rule.
struct LocalRule {
    spec: LocalRuleSpec,
    /// Identity of the rule's buckets: declaring policy and spec.
    id: u64,
    name: Arc<str>,
    /// `namespace/policy rule`, for logs and the penalty box.
    by: String,
    limiter: Limiter,
    /// Nanoseconds per request (the emission interval).
    t_ns: u64,
    last_shadow_log: AtomicU64,
}

/// A compiled cluster rule or quota.
struct FleetRule {
    name: Arc<str>,
    by: String,
    policy: String,
    /// Hashed into every counter id of the rule (policy, rule, window).
    seed: Vec<u8>,
    window: Window,
    limit: u64,
    failure_mode: FailureMode,
    shadow: bool,
    shared: bool,
    cluster: Option<ClusterRuleSpec>,
    quota: Option<QuotaKey>,
    penalty: Option<PenaltySpec>,
    id: u64,
    last_shadow_log: AtomicU64,
}

/// A compiled `rateLimit` section.
pub struct RateLimit {
    pub meta: Arc<SectionMeta>,
    style: HeaderStyle,
    local: Vec<LocalRule>,
    fleet: Vec<FleetRule>,
    service: Arc<RateLimitService>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field(
                "local",
                &self.local.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .field(
                "fleet",
                &self.fleet.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn quota(spec: &LocalRuleSpec) -> Quota {
    let per = spec.unit.duration().as_nanos() as u64 / u64::from(spec.requests.max(1));
    Quota::with_period(Duration::from_nanos(per.max(1)))
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(spec.burst.max(1)).expect("non-zero burst"))
}

fn sha16(parts: &[&[u8]]) -> [u8; 16] {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        c.update(&(p.len() as u32).to_le_bytes());
        c.update(p);
    }
    let d = c.finish();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

fn secs_ceil_ms(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Logs at most once a second per rule (shadow refusals can be many).
fn log_sampled(last: &AtomicU64, now_ms: u64) -> bool {
    let prev = last.load(Ordering::Relaxed);
    now_ms >= prev + 1000
        && last
            .compare_exchange(prev, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
}

impl RateLimit {
    /// Compiles a merged section. `owner` names the policy that declared
    /// each rule (merged sections mix rules of several policies).
    pub fn compile(
        section: &RateLimitSection,
        owner: impl Fn(&str) -> PolicyId,
        meta: Arc<SectionMeta>,
        service: Arc<RateLimitService>,
    ) -> Self {
        let by =
            |policy: &PolicyId, rule: &str| format!("{}/{} {rule}", policy.namespace, policy.name);
        let local = section
            .local
            .iter()
            .map(|r| {
                let policy = owner(&r.name);
                let limiter = RateLimiter::new(
                    quota(r),
                    SharedStore(service.store.clone()),
                    LimiterClock::new(service.base.clone()),
                );
                limiter.clock().start();
                LocalRule {
                    id: fingerprint(&(&policy, "local", r)),
                    name: Arc::from(r.name.as_str()),
                    by: by(&policy, &r.name),
                    t_ns: (r.unit.duration().as_nanos() as u64 / u64::from(r.requests.max(1)))
                        .max(1),
                    limiter,
                    spec: r.clone(),
                    last_shadow_log: AtomicU64::new(0),
                }
            })
            .collect();
        let mut fleet: Vec<FleetRule> = Vec::new();
        for c in &section.cluster {
            let policy = owner(&c.name);
            let window = Window::Fixed(c.unit.duration().as_millis() as u64);
            fleet.push(FleetRule {
                name: Arc::from(c.name.as_str()),
                by: by(&policy, &c.name),
                policy: format!("{}/{}", policy.namespace, policy.name),
                seed: fleet_seed(&policy, "cluster", &c.name, window),
                window,
                limit: c.requests,
                failure_mode: c.failure_mode,
                shadow: c.shadow,
                shared: c.shared,
                penalty: c.penalty.clone(),
                id: fingerprint(&(&policy, "cluster", c)),
                cluster: Some(c.clone()),
                quota: None,
                last_shadow_log: AtomicU64::new(0),
            });
        }
        for q in &section.quotas {
            let policy = owner(&q.name);
            let window = match q.period {
                QuotaPeriod::Day => Window::Day,
                QuotaPeriod::Month => Window::Month,
            };
            fleet.push(quota_rule(&policy, q, window, by(&policy, &q.name)));
        }
        Self {
            meta,
            style: section.headers.unwrap_or_default(),
            local,
            fleet,
            service,
        }
    }

    /// The service the section uses.
    pub fn service(&self) -> &Arc<RateLimitService> {
        &self.service
    }
}

fn fleet_seed(policy: &PolicyId, kind: &str, rule: &str, window: Window) -> Vec<u8> {
    // The counter follows the rule's identity, not its limit: raising a
    // quota keeps what was used of it.
    format!(
        "{kind}\0{}\0{}\0{rule}\0{window:?}",
        policy.namespace, policy.name
    )
    .into_bytes()
}

fn quota_rule(policy: &PolicyId, q: &QuotaSpec, window: Window, by: String) -> FleetRule {
    FleetRule {
        name: Arc::from(q.name.as_str()),
        by,
        policy: format!("{}/{}", policy.namespace, policy.name),
        seed: fleet_seed(policy, "quota", &q.name, window),
        window,
        limit: q.requests,
        failure_mode: q.failure_mode,
        shadow: false,
        // A quota is the client's, whichever route it calls.
        shared: true,
        penalty: None,
        id: fingerprint(&(policy, "quota", q)),
        cluster: None,
        quota: Some(q.key.clone()),
        last_shadow_log: AtomicU64::new(0),
    }
}

/// A compiled section bound to where it applies: the route (buckets are per
/// route unless a rule is `shared`) and the Gateway (penalties are per
/// Gateway).
#[derive(Debug, Clone)]
pub struct Bound {
    pub section: Arc<RateLimit>,
    /// `namespace/name` of the HTTPRoute; `None` for requests matching no route.
    pub route: Option<Arc<str>>,
    /// `namespace/name` of the Gateway.
    pub gateway: Option<Arc<str>>,
}

/// How a request fared, for the one decision the section counts.
#[derive(Default)]
struct Tally {
    shadowed: bool,
    degraded: bool,
}

impl Bound {
    pub fn new(section: Arc<RateLimit>) -> Self {
        Self {
            section,
            route: None,
            gateway: None,
        }
    }

    /// The same section, bound to `gateway` and `route`.
    pub fn bind(&self, gateway: &str, route: Option<&str>) -> Self {
        Self {
            section: self.section.clone(),
            route: route.map(Arc::from),
            gateway: Some(Arc::from(gateway)),
        }
    }

    /// Runs every rule; on success the report for the response headers.
    pub async fn check(&self, ctx: &RequestCtx<'_>, parts: &Parts) -> Result<Report, Rejection> {
        let s = &*self.section;
        let svc = &*s.service;
        let mut report = Report::new(s.style);
        let mut tally = Tally::default();
        for r in &s.local {
            let mut h = svc.hasher.build_hasher();
            h.write_u64(r.id);
            if !r.spec.shared {
                if let Some(route) = &self.route {
                    h.write(route.as_bytes());
                }
            }
            write_key(&r.spec.key, ctx, parts, &mut |b| h.write(b));
            let key = h.finish();
            let window_s = r.spec.unit.duration().as_secs();
            match r.limiter.check_key(&key) {
                Ok(snap) => {
                    let remaining = u64::from(snap.remaining_burst_capacity());
                    let empty = u64::from(r.spec.burst).saturating_sub(remaining);
                    report.items.push(Item {
                        name: r.name.clone(),
                        limit: u64::from(r.spec.requests),
                        window_s,
                        remaining,
                        reset_s: (empty * r.t_ns).div_ceil(1_000_000_000),
                    });
                }
                Err(not_until) => {
                    let wait =
                        not_until.wait_time_from(governor::clock::Clock::now(r.limiter.clock()));
                    let item = Item {
                        name: r.name.clone(),
                        limit: u64::from(r.spec.requests),
                        window_s,
                        remaining: 0,
                        reset_s: (u64::from(r.spec.burst) * r.t_ns).div_ceil(1_000_000_000),
                    };
                    if r.spec.shadow {
                        tally.shadowed = true;
                        self.shadow_log(&r.last_shadow_log, &r.by, ctx);
                        report.items.push(item);
                        continue;
                    }
                    self.refused(r.id, r.spec.penalty.as_ref(), &r.by, ctx);
                    report.items.push(item);
                    return Err(self.reject(
                        Reason::RateLimited,
                        format!("rate limit {:?} exceeded", &*r.name),
                        wait.as_millis() as u64,
                        report,
                    ));
                }
            }
        }
        for f in &s.fleet {
            // Quotas are per client: without the identity they do not apply.
            let quota_key: Option<String> = match &f.quota {
                None => None,
                Some(QuotaKey::ApiKeyClient) => match ctx.identity.api_client.as_deref() {
                    Some(c) => Some(c.to_owned()),
                    None => continue,
                },
                Some(QuotaKey::Claim(c)) => match ctx.identity.claim(c) {
                    Some(serde_json::Value::String(v)) => Some(v.clone()),
                    Some(v) => Some(v.to_string()),
                    None => continue,
                },
            };
            let id = match (&f.cluster, &quota_key) {
                (Some(c), _) => {
                    let mut bytes = Vec::with_capacity(64);
                    write_key(&c.key, ctx, parts, &mut |b| bytes.extend_from_slice(b));
                    let route = if f.shared {
                        &b""[..]
                    } else {
                        self.route.as_deref().map_or(&b"-"[..], str::as_bytes)
                    };
                    sha16(&[&f.seed, route, &bytes])
                }
                (None, Some(k)) => sha16(&[&f.seed, k.as_bytes()]),
                (None, None) => continue,
            };
            let counter = svc.cluster.counter(id, f.window, || CounterLabel {
                kind: if f.quota.is_some() {
                    "quota"
                } else {
                    "cluster"
                },
                policy: f.policy.clone(),
                rule: f.name.to_string(),
                key: match (&f.cluster, &quota_key) {
                    (Some(c), _) => describe_key(&c.key, ctx, parts),
                    (None, Some(k)) => match &f.quota {
                        Some(QuotaKey::Claim(c)) => format!("claim.{c}={k}"),
                        _ => format!("client={k}"),
                    },
                    (None, None) => String::new(),
                },
            });
            let store_up = svc.cluster.is_up();
            let decision = if svc.cluster.is_naive() {
                svc.cluster.acquire_naive(&counter, f.limit).await
            } else {
                svc.cluster.acquire(&counter, f.limit, f.failure_mode)
            };
            let now = svc.cluster.wall().unix_ms();
            let w = f.window.id(now);
            let window_s = (f.window.end_ms(w) - f.window.start_ms(w)) / 1000;
            let reason = if f.quota.is_some() {
                Reason::QuotaExceeded
            } else {
                Reason::RateLimited
            };
            match decision {
                Decision::Allowed {
                    remaining,
                    reset_ms,
                } => {
                    tally.degraded |= !store_up;
                    report.items.push(Item {
                        name: f.name.clone(),
                        limit: f.limit,
                        window_s,
                        remaining,
                        reset_s: secs_ceil_ms(reset_ms),
                    });
                }
                Decision::Limited {
                    retry_after_ms,
                    reset_ms,
                } => {
                    let item = Item {
                        name: f.name.clone(),
                        limit: f.limit,
                        window_s,
                        remaining: 0,
                        reset_s: secs_ceil_ms(reset_ms),
                    };
                    report.items.push(item);
                    if f.shadow {
                        tally.shadowed = true;
                        self.shadow_log(&f.last_shadow_log, &f.by, ctx);
                        continue;
                    }
                    self.refused(f.id, f.penalty.as_ref(), &f.by, ctx);
                    let what = if f.quota.is_some() {
                        "quota"
                    } else {
                        "rate limit"
                    };
                    return Err(self.reject(
                        reason,
                        format!("{what} {:?} exceeded", &*f.name),
                        retry_after_ms,
                        report,
                    ));
                }
                Decision::Unavailable => {
                    if f.shadow {
                        tally.degraded = true;
                        continue;
                    }
                    s.meta.denied(Reason::RateLimitUnavailable);
                    return Err(Rejection::new(
                        Reason::RateLimitUnavailable,
                        format!(
                            "rate limit {:?} cannot be checked: the cluster store is unreachable",
                            &*f.name
                        ),
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                    .by(&s.meta));
                }
            }
        }
        if tally.degraded {
            s.meta.allowed_because(Reason::RateLimitUnavailable);
        } else if tally.shadowed {
            s.meta.allowed_because(Reason::RateLimitShadow);
        } else {
            s.meta.allowed();
        }
        Ok(report)
    }

    fn reject(&self, reason: Reason, message: String, wait_ms: u64, report: Report) -> Rejection {
        let s = &*self.section;
        s.meta.denied(reason);
        let mut r = Rejection::new(reason, message)
            .with_header(
                header::RETRY_AFTER,
                HeaderValue::from(secs_ceil_ms(wait_ms).max(1)),
            )
            .by(&s.meta);
        report.apply(r.headers_mut());
        r
    }

    fn shadow_log(&self, last: &AtomicU64, by: &str, ctx: &RequestCtx) {
        let now = self.section.service.base.now().as_millis() as u64;
        if log_sampled(last, now) {
            tracing::info!(
                rule = by,
                client = %ctx.client_ip,
                "rate limit exceeded in shadow mode (request served; logged at most once a second)"
            );
        }
    }

    /// A refusal of rule `rule` towards its penalty.
    fn refused(&self, rule: u64, penalty: Option<&PenaltySpec>, by: &str, ctx: &RequestCtx) {
        self.count_towards_penalty(rule, penalty, by, ctx, PenaltyCause::RateLimit);
    }

    fn count_towards_penalty(
        &self,
        rule: u64,
        penalty: Option<&PenaltySpec>,
        by: &str,
        ctx: &RequestCtx,
        cause: PenaltyCause,
    ) {
        let (Some(p), Some(gw)) = (penalty, &self.gateway) else {
            return;
        };
        let svc = &*self.section.service;
        if svc.tracker.refused(rule, gw, ctx.client_ip, p) {
            svc.penalties.penalize(gw, ctx.client_ip, p, by, cause);
        }
    }

    /// An authentication failure (401) on a governed route: counts towards
    /// the penalties of rules that say `onAuthFailure`.
    pub fn auth_failed(&self, ctx: &RequestCtx) {
        let s = &*self.section;
        for r in &s.local {
            if r.spec.penalty.as_ref().is_some_and(|p| p.on_auth_failure) {
                self.count_towards_penalty(
                    r.id,
                    r.spec.penalty.as_ref(),
                    &r.by,
                    ctx,
                    PenaltyCause::AuthFailure,
                );
            }
        }
        for f in &s.fleet {
            if f.penalty.as_ref().is_some_and(|p| p.on_auth_failure) {
                self.count_towards_penalty(
                    f.id,
                    f.penalty.as_ref(),
                    &f.by,
                    ctx,
                    PenaltyCause::AuthFailure,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
