//! The resilience sections (`loadBalancer`, `circuitBreaker`,
//! `outlierDetection`, `healthCheck`) through conversion and merging.
use std::{path::Path, time::Duration};

use super::merge::effective;
use crate::config::{
    parse_documents,
    policy::{HashOn, LoadBalancerSpec},
    SluicePolicy,
};

fn policies(yaml: &str) -> Vec<SluicePolicy> {
    parse_documents([(Path::new("p.yaml"), yaml)])
        .unwrap_or_else(|e| panic!("{e}"))
        .policies
}

#[test]
fn every_field_is_checked_with_its_path() {
    let err = parse_documents([(
        Path::new("p.yaml"),
        r#"
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: bad, namespace: ns}
spec:
  targetRefs: [{kind: Gateway, name: gw}]
  loadBalancer: {type: Random}
  circuitBreaker: {maxRequests: 0}
  outlierDetection: {consecutive5xx: 0, consecutiveConnectFailures: 0, interval: 1ms, baseEjectionTime: 10m, maxEjectionPercent: 101}
  healthCheck: {path: healthz, interval: 1s, timeout: 2s, unhealthyThreshold: 0, expectedStatuses: [700]}
  override:
    loadBalancer: {type: ConsistentHash, consistentHash: {header: "bad header"}}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: bad2, namespace: ns}
spec:
  targetRefs: [{kind: Gateway, name: gw}]
  loadBalancer: {type: ConsistentHash, consistentHash: {header: x-user, cookie: s}}
  circuitBreaker: {}
  override:
    loadBalancer: {type: LeastRequest, consistentHash: {sourceAddress: true}}
    outlierDetection: {baseEjectionTime: soon}
"#,
    )])
    .unwrap_err()
    .to_string();
    for want in [
        "spec.loadBalancer.type: must be RoundRobin, LeastRequest or ConsistentHash, not \"Random\"",
        "spec.circuitBreaker.maxRequests: must be at least 1",
        "spec.outlierDetection.interval: must be at least 100ms",
        "spec.outlierDetection.baseEjectionTime: must be at most 300s",
        "spec.outlierDetection.maxEjectionPercent: must be 0-100, not 101",
        "spec.outlierDetection: consecutive5xx and consecutiveConnectFailures are both 0",
        "spec.healthCheck.path: not an absolute path: \"healthz\"",
        "spec.healthCheck.timeout: must be more than 0 and at most the interval",
        "spec.healthCheck.unhealthyThreshold: must be at least 1",
        "spec.healthCheck.expectedStatuses[0]: not an HTTP status: 700",
        "spec.override.loadBalancer.consistentHash.header: invalid header name",
        "spec.loadBalancer.consistentHash: set exactly one of header, cookie, sourceAddress",
        "spec.circuitBreaker: set at least one of maxConnections",
        "spec.override.loadBalancer.consistentHash: only with type ConsistentHash",
        "spec.override.outlierDetection.baseEjectionTime: not a duration",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn defaults_are_filled_in() {
    let ps = policies(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: p, namespace: ns}
spec:
  targetRefs: [{kind: HTTPRoute, name: r}]
  loadBalancer: {type: ConsistentHash, consistentHash: {cookie: session}}
  circuitBreaker: {maxRequests: 7}
  outlierDetection: {consecutive5xx: 2}
  healthCheck: {path: /healthz}
"#,
    );
    let s = &ps[0].defaults;
    assert_eq!(
        s.load_balancer,
        Some(LoadBalancerSpec::ConsistentHash(HashOn::Cookie(
            "session".into()
        )))
    );
    let cb = s.circuit_breaker.unwrap();
    assert_eq!((cb.max_requests, cb.max_connections), (7, 1024));
    let od = s.outlier_detection.unwrap();
    assert_eq!(od.consecutive_5xx, 2);
    assert_eq!(od.consecutive_connect_failures, 5);
    assert_eq!(od.base_ejection_time, Duration::from_secs(30));
    assert_eq!(od.max_ejection_percent, 10);
    let hc = s.health_check.clone().unwrap();
    assert_eq!(hc.path.as_str(), "/healthz");
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(5), Duration::from_secs(1))
    );
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (1, 3));
    assert_eq!(hc.expected_statuses, [200]);
}

#[test]
fn sections_merge_whole_with_defaults_and_overrides() {
    let ps = policies(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: platform, namespace: ns}
spec:
  targetRefs: [{kind: Gateway, name: gw}]
  loadBalancer: {type: LeastRequest}
  outlierDetection: {consecutive5xx: 9}
  override:
    circuitBreaker: {maxRequests: 100}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: team, namespace: ns}
spec:
  targetRefs: [{kind: HTTPRoute, name: r}]
  loadBalancer: {type: ConsistentHash, consistentHash: {sourceAddress: true}}
  circuitBreaker: {maxRequests: 5000}
  healthCheck: {path: /ready}
"#,
    );
    let gw = [&ps[0]];
    let route = [&ps[1]];
    let eff = effective(&[&gw, &route]);
    let s = &eff.sections;
    // The team's default replaces the platform's default...
    assert_eq!(
        s.load_balancer,
        Some(LoadBalancerSpec::ConsistentHash(HashOn::SourceAddress))
    );
    // ...but not the platform's override.
    assert_eq!(s.circuit_breaker.unwrap().max_requests, 100);
    // Sections only one level sets are inherited.
    assert_eq!(s.outlier_detection.unwrap().consecutive_5xx, 9);
    assert_eq!(s.health_check.as_ref().unwrap().path.as_str(), "/ready");
}
