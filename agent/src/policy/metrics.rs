//! `sluice_policy_decisions_total{namespace,policy,section,decision,reason}`:
//! one count per section per request it decided on. Each compiled section
//! holds its allow counter, resolved once at compile time, so the common
//! path costs one atomic add; deny counters are looked up when they happen.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{PolicyId, Reason};
use crate::metrics::Name;

/// Labels of one decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub namespace: Name,
    pub policy: Name,
    pub section: &'static str,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// A [`Reason`] label for denials; `ok` for allows.
    pub reason: &'static str,
}

/// The policy metric families.
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    pub decisions: Family<DecisionLabels, Counter>,
    /// The rate-limit machinery (store health, tables, penalty box).
    pub ratelimit: super::ratelimit::metrics::RateLimitMetrics,
    /// The resilience sections (breakers, ejections, panic mode).
    pub upstream: super::upstream::UpstreamMetrics,
}

impl PolicyMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_policy_decisions",
            "Policy decisions per section: allow, or deny with the reason",
            self.decisions.clone(),
        );
        self.ratelimit.register(registry);
        self.upstream.register(registry);
    }

    /// The handle of one section of one policy.
    pub fn section(&self, policy: &PolicyId, section: &'static str) -> SectionMeta {
        let allow = self
            .decisions
            .get_or_create(&DecisionLabels {
                namespace: Name(policy.namespace.clone()),
                policy: Name(policy.name.clone()),
                section,
                decision: "allow",
                reason: "ok",
            })
            .clone();
        SectionMeta {
            policy: policy.clone(),
            section,
            allow,
            metrics: self.clone(),
        }
    }
}

/// Who a compiled section belongs to, and its decision counters.
#[derive(Debug, Clone)]
pub struct SectionMeta {
    pub policy: PolicyId,
    /// The section name as written in the spec (`jwt`, `apiKeys`, ...).
    pub section: &'static str,
    allow: Counter,
    metrics: PolicyMetrics,
}

impl SectionMeta {
    /// A section handle that counts nowhere (tests).
    pub fn detached(policy: PolicyId, section: &'static str) -> Self {
        PolicyMetrics::default().section(&policy, section)
    }

    pub fn allowed(&self) {
        self.allow.inc();
    }

    /// An allow for a reason other than a passed check (a fail-open).
    pub fn allowed_because(&self, reason: Reason) {
        self.count("allow", reason);
    }

    pub fn denied(&self, reason: Reason) {
        self.count("deny", reason);
    }

    fn count(&self, decision: &'static str, reason: Reason) {
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                namespace: Name(self.policy.namespace.clone()),
                policy: Name(self.policy.name.clone()),
                section: self.section,
                decision,
                reason: reason.label(),
            })
            .inc();
    }

    /// Allows counted so far (tests and the admin page).
    pub fn allowed_count(&self) -> u64 {
        self.allow.get()
    }
}
