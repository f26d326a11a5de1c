//! Metrics of the resilience sections: breaker refusals, ejections, health
//! checks and panic mode, per backend (`namespace/service:port`). Label
//! values are resolved once per backend state, so counting is one atomic
//! add.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::metrics::Name;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: Name,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverflowLabels {
    pub backend: Name,
    /// `max_connections`, `max_pending_requests`, `max_requests`, `max_retries`.
    pub limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EjectionLabels {
    pub backend: Name,
    /// `consecutive_5xx` or `consecutive_connect_failure`.
    pub cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub backend: Name,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// The families; cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct UpstreamMetrics {
    pub overflow: Family<OverflowLabels, Counter>,
    pub ejections: Family<EjectionLabels, Counter>,
    pub ejected: Family<BackendLabels, Gauge>,
    pub health_checks: Family<CheckLabels, Counter>,
    pub unhealthy: Family<BackendLabels, Gauge>,
    pub panic: Family<BackendLabels, Gauge>,
    pub panic_requests: Family<BackendLabels, Counter>,
}

impl UpstreamMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_upstream_overflow",
            "Requests answered 503 (flag UO) because a circuitBreaker limit of the backend was reached, by limit",
            self.overflow.clone(),
        );
        registry.register(
            "sluice_upstream_ejections",
            "Endpoints ejected by outlierDetection, by cause",
            self.ejections.clone(),
        );
        registry.register(
            "sluice_upstream_ejected_endpoints",
            "Endpoints of the backend ejected now",
            self.ejected.clone(),
        );
        registry.register(
            "sluice_upstream_health_checks",
            "Active health checks of the backend's endpoints, by result",
            self.health_checks.clone(),
        );
        registry.register(
            "sluice_upstream_unhealthy_endpoints",
            "Endpoints of the backend that active health checks hold out of the rotation now",
            self.unhealthy.clone(),
        );
        registry.register(
            "sluice_upstream_panic_mode",
            "1 while every endpoint of the backend is unhealthy or ejected, so all are used (panic mode)",
            self.panic.clone(),
        );
        registry.register(
            "sluice_upstream_panic_requests",
            "Requests sent in panic mode (every endpoint unhealthy or ejected)",
            self.panic_requests.clone(),
        );
    }
}
