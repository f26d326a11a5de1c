//! `SluicePolicy` wire → [`super::model`]: every field checked, every
//! problem reported with its path (`spec.jwt.providers[0].issuer`), the
//! same for files and API objects.
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use serde::Deserialize;

use super::{model, wire};
use crate::{
    config::{
        filter::cors_filter,
        model::{LocalRef, ObjectRef, PathMatch, Pattern, PolicyTarget, StringMatch},
        resources::{HttpCorsFilter, ObjectMeta},
        time::{parse_duration, parse_timestamp},
        validate::{ns, Doc, GATEWAY_GROUP},
    },
    policy::{credential::CredentialSource, template::Template, transform::HeaderOps},
};

/// The API group of Sluice's own kinds.
pub const SLUICE_GROUP: &str = "sluice.dev";
/// Versions of SluicePolicy read.
pub const POLICY_VERSIONS: [&str; 1] = ["sluice.dev/v1alpha1"];

/// A SluicePolicy document.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub metadata: ObjectMeta,
    pub spec: wire::SluicePolicySpec,
}

/// Default clock skew for `exp` / `nbf`.
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
const DEFAULT_JWKS_CACHE: Duration = Duration::from_secs(300);
const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_EXT_AUTH_TIMEOUT: Duration = Duration::from_secs(2);
/// JOSE algorithms a provider may accept.
const ALGORITHMS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

/// Converts one policy. Problems are reported to `doc`; `None` when there were any.
pub(in crate::config) fn sluice_policy(
    doc: &mut Doc<'_>,
    d: Document,
) -> Option<model::SluicePolicy> {
    let before = doc.errors.len();
    let namespace = ns(&d.metadata);
    let created = d.metadata.creation_timestamp.as_deref().and_then(|t| {
        let parsed = parse_timestamp(t);
        if parsed.is_none() {
            doc.err(
                "metadata.creationTimestamp",
                format!("not an RFC 3339 timestamp: {t:?}"),
            );
        }
        parsed
    });
    let targets = targets(doc, &d.spec.target_refs);
    let defaults = sections(doc, "spec", &namespace, &d.spec.defaults());
    let overrides = match &d.spec.overrides {
        Some(o) => {
            let s = sections(doc, "spec.override", &namespace, o);
            if s.is_empty() {
                doc.err("spec.override", "must configure at least one section");
            }
            s
        }
        None => model::PolicySections::default(),
    };
    if defaults.is_empty() && overrides.is_empty() && doc.errors.len() == before {
        doc.err(
            "spec",
            "a SluicePolicy must configure at least one section (jwt, apiKeys, basicAuth, \
             extAuth, authorization, ipAllow, ipDeny, limits, transform, cors, rateLimit, \
             loadBalancer, circuitBreaker, outlierDetection, healthCheck, connection, accessLog, \
             cache)",
        );
    }
    // Connection settings apply from the accept, before any listener or
    // route is known: only a whole Gateway can have them.
    if defaults.connection.is_some() || overrides.connection.is_some() {
        for (i, t) in targets.iter().enumerate() {
            if t.kind != "Gateway" || t.section_name.is_some() {
                doc.err(
                    format!("spec.targetRefs[{i}]"),
                    "a policy with a connection section can only target whole Gateways \
                     (kind Gateway, no sectionName): connections are accepted before a \
                     listener or route is known",
                );
            }
        }
    }
    (doc.errors.len() == before).then(|| model::SluicePolicy {
        id: ObjectRef::new(&namespace, &d.metadata.name),
        generation: d.metadata.generation,
        created,
        targets,
        defaults,
        overrides,
        invalid: None,
    })
}

/// The targets of a policy whose spec did not validate, read leniently, so
/// that what it meant to protect fails closed (Kubernetes source).
pub fn lenient_targets(spec: &serde_json::Value) -> Vec<PolicyTarget> {
    spec.get("targetRefs")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some(PolicyTarget {
                        group: t
                            .get("group")
                            .and_then(|g| g.as_str())
                            .unwrap_or(GATEWAY_GROUP)
                            .to_owned(),
                        kind: t.get("kind")?.as_str()?.to_owned(),
                        name: t.get("name")?.as_str()?.to_owned(),
                        section_name: t
                            .get("sectionName")
                            .and_then(|s| s.as_str())
                            .map(str::to_owned),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn targets(doc: &mut Doc<'_>, refs: &[wire::TargetRef]) -> Vec<PolicyTarget> {
    if refs.is_empty() {
        doc.err("spec.targetRefs", "at least one target is required");
    }
    let mut out: Vec<PolicyTarget> = Vec::new();
    for (i, t) in refs.iter().enumerate() {
        let at = format!("spec.targetRefs[{i}]");
        if t.group != GATEWAY_GROUP {
            doc.err(
                format!("{at}.group"),
                format!(
                    "unsupported group {:?} (supported: {GATEWAY_GROUP})",
                    t.group
                ),
            );
            continue;
        }
        if !matches!(t.kind.as_str(), "Gateway" | "HTTPRoute") {
            doc.err(
                format!("{at}.kind"),
                format!(
                    "unsupported kind {:?} (supported: Gateway, HTTPRoute)",
                    t.kind
                ),
            );
            continue;
        }
        if t.name.is_empty() {
            doc.err(format!("{at}.name"), "must not be empty");
            continue;
        }
        let target = PolicyTarget {
            group: t.group.clone(),
            kind: t.kind.clone(),
            name: t.name.clone(),
            section_name: t.section_name.clone(),
        };
        if out.contains(&target) {
            doc.err(at, "duplicate target");
            continue;
        }
        out.push(target);
    }
    out
}

fn sections(
    doc: &mut Doc<'_>,
    at: &str,
    namespace: &str,
    s: &wire::Sections,
) -> model::PolicySections {
    model::PolicySections {
        jwt: s
            .jwt
            .as_ref()
            .and_then(|j| jwt(doc, &format!("{at}.jwt"), j)),
        api_keys: s
            .api_keys
            .as_ref()
            .and_then(|k| api_keys(doc, &format!("{at}.apiKeys"), k)),
        basic_auth: s
            .basic_auth
            .as_ref()
            .and_then(|b| basic_auth(doc, &format!("{at}.basicAuth"), b)),
        ext_auth: s
            .ext_auth
            .as_ref()
            .and_then(|e| ext_auth(doc, &format!("{at}.extAuth"), e, namespace)),
        authentication: s.authentication.as_ref().and_then(|a| {
            match a.require.as_deref().unwrap_or("All") {
                "All" => Some(model::Require::All),
                "Any" => Some(model::Require::Any),
                other => {
                    doc.err(
                        format!("{at}.authentication.require"),
                        format!("must be All or Any, not {other:?}"),
                    );
                    None
                }
            }
        }),
        authorization: s
            .authorization
            .as_ref()
            .and_then(|a| authorization(doc, &format!("{at}.authorization"), a)),
        ip_allow: s
            .ip_allow
            .as_ref()
            .map(|v| cidrs(doc, &format!("{at}.ipAllow"), v)),
        ip_deny: s
            .ip_deny
            .as_ref()
            .map(|v| cidrs(doc, &format!("{at}.ipDeny"), v)),
        limits: s.limits.as_ref().and_then(|l| {
            if l.max_request_body_bytes.is_none() && l.max_request_headers_bytes.is_none() {
                doc.err(
                    format!("{at}.limits"),
                    "set maxRequestBodyBytes and/or maxRequestHeadersBytes",
                );
                return None;
            }
            if l.max_request_headers_bytes == Some(0) {
                doc.err(
                    format!("{at}.limits.maxRequestHeadersBytes"),
                    "must be at least 1",
                );
                return None;
            }
            Some(model::LimitsSection {
                max_request_body_bytes: l.max_request_body_bytes,
                max_request_headers_bytes: l.max_request_headers_bytes,
            })
        }),
        transform: s
            .transform
            .as_ref()
            .and_then(|t| transform(doc, &format!("{at}.transform"), t)),
        cors: s.cors.as_ref().and_then(|c| {
            cors_filter(
                doc,
                &format!("{at}.cors"),
                &HttpCorsFilter {
                    allow_origins: c.allow_origins.clone(),
                    allow_credentials: c.allow_credentials,
                    allow_methods: c.allow_methods.clone(),
                    allow_headers: c.allow_headers.clone(),
                    expose_headers: c.expose_headers.clone(),
                    max_age: c.max_age,
                },
            )
        }),
        rate_limit: s
            .rate_limit
            .as_ref()
            .and_then(|r| rate_limit(doc, &format!("{at}.rateLimit"), r)),
        load_balancer: s
            .load_balancer
            .as_ref()
            .and_then(|l| load_balancer(doc, &format!("{at}.loadBalancer"), l)),
        circuit_breaker: s
            .circuit_breaker
            .as_ref()
            .and_then(|c| circuit_breaker(doc, &format!("{at}.circuitBreaker"), c)),
        outlier_detection: s
            .outlier_detection
            .as_ref()
            .and_then(|o| outlier_detection(doc, &format!("{at}.outlierDetection"), o)),
        health_check: s
            .health_check
            .as_ref()
            .and_then(|h| health_check(doc, &format!("{at}.healthCheck"), h)),
        connection: s
            .connection
            .as_ref()
            .and_then(|c| connection(doc, &format!("{at}.connection"), c)),
        access_log: s.access_log.as_ref().and_then(|l| {
            let at = format!("{at}.accessLog");
            if l.sample_percent.is_none() && l.min_status.is_none() {
                doc.err(at, "set samplePercent and/or minStatus");
                return None;
            }
            if l.sample_percent.is_some_and(|p| p > 100) {
                doc.err(format!("{at}.samplePercent"), "must be between 0 and 100");
                return None;
            }
            if l.min_status.is_some_and(|s| !(100..=599).contains(&s)) {
                doc.err(format!("{at}.minStatus"), "must be between 100 and 599");
                return None;
            }
            Some(model::AccessLogSection {
                sample_percent: l.sample_percent.unwrap_or(100),
                min_status: l.min_status.map_or(0, |s| s as u16),
            })
        }),
        cache: s
            .cache
            .as_ref()
            .and_then(|c| cache(doc, &format!("{at}.cache"), c)),
    }
}

/// Converts a `cache` section.
fn cache(doc: &mut Doc<'_>, at: &str, c: &wire::Cache) -> Option<model::CacheSpec> {
    use crate::policy::response_cache as rc;
    let before = doc.errors.len();
    let default_ttl = c
        .default_ttl
        .as_deref()
        .map(|raw| duration(doc, &format!("{at}.defaultTtl"), Some(raw), Duration::ZERO));
    if default_ttl == Some(Duration::ZERO) && doc.errors.len() == before {
        doc.err(format!("{at}.defaultTtl"), "must be longer than 0s");
    }
    let coalesce_wait = duration(
        doc,
        &format!("{at}.coalesceWait"),
        c.coalesce_wait.as_deref(),
        rc::DEFAULT_COALESCE_WAIT,
    );
    let spec = model::CacheSpec {
        max_bytes: c.max_bytes.unwrap_or(rc::DEFAULT_MAX_BYTES),
        max_entry_bytes: c
            .max_entry_bytes
            .unwrap_or(rc::DEFAULT_MAX_ENTRY_BYTES.min(c.max_bytes.unwrap_or(u64::MAX))),
        default_ttl,
        coalesce_wait,
    };
    if let Err(e) = spec.validate() {
        doc.err(at, e.to_string());
    }
    (doc.errors.len() == before).then_some(spec)
}

/// Converts a `connection` section: every field within its range.
fn connection(
    doc: &mut Doc<'_>,
    at: &str,
    c: &wire::Connection,
) -> Option<model::ConnectionSection> {
    let before = doc.errors.len();
    let mut duration = |field: &str, raw: &Option<String>| {
        let raw = raw.as_ref()?;
        match parse_duration(raw) {
            Some(d) if (1..=3600).contains(&d.as_secs()) => Some(d),
            Some(_) => {
                doc.err(format!("{at}.{field}"), "must be between 1s and 1h");
                None
            }
            None => {
                doc.err(
                    format!("{at}.{field}"),
                    format!("{raw:?} is not a duration (e.g. 30s, 2m)"),
                );
                None
            }
        }
    };
    let header_timeout = duration("headerTimeout", &c.header_timeout);
    let body_idle_timeout = duration("bodyIdleTimeout", &c.body_idle_timeout);
    let upstream_response_timeout =
        duration("upstreamResponseTimeout", &c.upstream_response_timeout);
    use crate::policy::connection::EscapedSlashes;
    let escaped_slashes = match c.escaped_slashes.as_deref() {
        None => None,
        Some("Keep") => Some(EscapedSlashes::Keep),
        Some("Reject") => Some(EscapedSlashes::Reject),
        Some("Unescape") => Some(EscapedSlashes::Unescape),
        Some(other) => {
            doc.err(
                format!("{at}.escapedSlashes"),
                format!("must be Keep, Reject or Unescape, not {other:?}"),
            );
            None
        }
    };
    let mut ranged = |field: &str, v: Option<u32>, min: u32, max: u32| {
        let v = v?;
        if (min..=max).contains(&v) {
            Some(v)
        } else {
            doc.err(
                format!("{at}.{field}"),
                format!("must be between {min} and {max}, not {v}"),
            );
            None
        }
    };
    let section = model::ConnectionSection {
        merge_slashes: c.merge_slashes,
        escaped_slashes,
        header_timeout,
        body_idle_timeout,
        upstream_response_timeout,
        max_request_head_bytes: ranged(
            "maxRequestHeadBytes",
            c.max_request_head_bytes,
            1024,
            1 << 20,
        )
        .map(|v| v as usize),
        max_request_headers: ranged("maxRequestHeaders", c.max_request_headers, 1, 1000)
            .map(|v| v as usize),
        max_uri_bytes: ranged("maxUriBytes", c.max_uri_bytes, 256, 1 << 20).map(|v| v as usize),
        h2_max_concurrent_streams: ranged(
            "h2MaxConcurrentStreams",
            c.h2_max_concurrent_streams,
            1,
            10_000,
        ),
        max_connections_per_source: ranged(
            "maxConnectionsPerSource",
            c.max_connections_per_source,
            0,
            1_000_000,
        )
        .map(|v| v as usize),
        max_requests_in_flight: ranged(
            "maxRequestsInFlight",
            c.max_requests_in_flight,
            0,
            10_000_000,
        )
        .map(|v| v as usize),
    };
    if doc.errors.len() != before {
        return None;
    }
    if section == model::ConnectionSection::default() {
        doc.err(at, "set at least one field");
        return None;
    }
    Some(section)
}

/// Converts a `healthCheck` section.
fn health_check(
    doc: &mut Doc<'_>,
    at: &str,
    h: &wire::HealthCheck,
) -> Option<model::HealthCheckSpec> {
    let before = doc.errors.len();
    let path = match http::uri::PathAndQuery::try_from(h.path.as_str()) {
        Ok(p) if h.path.starts_with('/') => Some(p),
        _ => {
            doc.err(
                format!("{at}.path"),
                format!("not an absolute path: {:?}", h.path),
            );
            None
        }
    };
    let interval = duration(
        doc,
        &format!("{at}.interval"),
        h.interval.as_deref(),
        Duration::from_secs(5),
    );
    let timeout = duration(
        doc,
        &format!("{at}.timeout"),
        h.timeout.as_deref(),
        Duration::from_secs(1).min(interval),
    );
    if interval < Duration::from_millis(100) {
        doc.err(format!("{at}.interval"), "must be at least 100ms");
    }
    if timeout.is_zero() || timeout > interval {
        doc.err(
            format!("{at}.timeout"),
            format!("must be more than 0 and at most the interval ({interval:?})"),
        );
    }
    for (field, v) in [
        ("healthyThreshold", h.healthy_threshold),
        ("unhealthyThreshold", h.unhealthy_threshold),
    ] {
        if v == Some(0) {
            doc.err(format!("{at}.{field}"), "must be at least 1");
        }
    }
    for (i, s) in h.expected_statuses.iter().enumerate() {
        if !(100..=599).contains(s) {
            doc.err(
                format!("{at}.expectedStatuses[{i}]"),
                format!("not an HTTP status: {s}"),
            );
        }
    }
    let expected_statuses = if h.expected_statuses.is_empty() {
        vec![200]
    } else {
        // In range: checked above.
        h.expected_statuses.iter().map(|s| *s as u16).collect()
    };
    (doc.errors.len() == before).then(|| model::HealthCheckSpec {
        path: path.expect("checked"),
        interval,
        timeout,
        healthy_threshold: h.healthy_threshold.unwrap_or(1),
        unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3),
        expected_statuses,
    })
}

/// Converts a `loadBalancer` section.
fn load_balancer(
    doc: &mut Doc<'_>,
    at: &str,
    l: &wire::LoadBalancer,
) -> Option<model::LoadBalancerSpec> {
    let hash = l.consistent_hash.as_ref();
    match (l.kind.as_str(), hash) {
        ("RoundRobin", None) => Some(model::LoadBalancerSpec::RoundRobin),
        ("LeastRequest", None) => Some(model::LoadBalancerSpec::LeastRequest),
        ("RoundRobin" | "LeastRequest", Some(_)) => {
            doc.err(
                format!("{at}.consistentHash"),
                format!("only with type ConsistentHash, not {:?}", l.kind),
            );
            None
        }
        ("ConsistentHash", None) => {
            doc.err(
                format!("{at}.consistentHash"),
                "required with type ConsistentHash (header, cookie or sourceAddress)",
            );
            None
        }
        ("ConsistentHash", Some(h)) => {
            let at = format!("{at}.consistentHash");
            let given = usize::from(h.header.is_some())
                + usize::from(h.cookie.is_some())
                + usize::from(h.source_address.is_some());
            if given != 1 {
                doc.err(&at, "set exactly one of header, cookie, sourceAddress");
                return None;
            }
            if let Some(name) = &h.header {
                let name = header_name(doc, &format!("{at}.header"), name)?;
                return Some(model::LoadBalancerSpec::ConsistentHash(
                    model::HashOn::Header(name),
                ));
            }
            if let Some(c) = &h.cookie {
                // RFC 6265 cookie-name: an HTTP token.
                let token = !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token {
                    doc.err(format!("{at}.cookie"), format!("not a cookie name: {c:?}"));
                    return None;
                }
                return Some(model::LoadBalancerSpec::ConsistentHash(
                    model::HashOn::Cookie(c.clone()),
                ));
            }
            if h.source_address != Some(true) {
                doc.err(format!("{at}.sourceAddress"), "must be true when set");
                return None;
            }
            Some(model::LoadBalancerSpec::ConsistentHash(
                model::HashOn::SourceAddress,
            ))
        }
        (other, _) => {
            doc.err(
                format!("{at}.type"),
                format!("must be RoundRobin, LeastRequest or ConsistentHash, not {other:?}"),
            );
            None
        }
    }
}

/// Converts a `circuitBreaker` section.
fn circuit_breaker(
    doc: &mut Doc<'_>,
    at: &str,
    c: &wire::CircuitBreaker,
) -> Option<model::CircuitBreakerSpec> {
    let before = doc.errors.len();
    let d = model::CircuitBreakerSpec::default();
    let mut limit = |field: &str, v: Option<u32>, default: u32| match v {
        Some(0) => {
            doc.err(format!("{at}.{field}"), "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    };
    let spec = model::CircuitBreakerSpec {
        max_connections: limit("maxConnections", c.max_connections, d.max_connections),
        max_pending_requests: limit(
            "maxPendingRequests",
            c.max_pending_requests,
            d.max_pending_requests,
        ),
        max_requests: limit("maxRequests", c.max_requests, d.max_requests),
        max_retries: limit("maxRetries", c.max_retries, d.max_retries),
    };
    if *c == wire::CircuitBreaker::default() {
        doc.err(
            at,
            "set at least one of maxConnections, maxPendingRequests, maxRequests, maxRetries",
        );
    }
    (doc.errors.len() == before).then_some(spec)
}

/// Converts an `outlierDetection` section.
fn outlier_detection(
    doc: &mut Doc<'_>,
    at: &str,
    o: &wire::OutlierDetection,
) -> Option<model::OutlierSpec> {
    let before = doc.errors.len();
    let d = model::OutlierSpec::default();
    let interval = duration(
        doc,
        &format!("{at}.interval"),
        o.interval.as_deref(),
        d.interval,
    );
    let base = duration(
        doc,
        &format!("{at}.baseEjectionTime"),
        o.base_ejection_time.as_deref(),
        d.base_ejection_time,
    );
    for (field, v) in [("interval", interval), ("baseEjectionTime", base)] {
        if v < Duration::from_millis(100) {
            doc.err(format!("{at}.{field}"), "must be at least 100ms");
        }
    }
    if base > Duration::from_secs(300) {
        doc.err(format!("{at}.baseEjectionTime"), "must be at most 300s");
    }
    let percent = o.max_ejection_percent.unwrap_or(d.max_ejection_percent);
    if percent > 100 {
        doc.err(
            format!("{at}.maxEjectionPercent"),
            format!("must be 0-100, not {percent}"),
        );
    }
    let spec = model::OutlierSpec {
        consecutive_5xx: o.consecutive_5xx.unwrap_or(d.consecutive_5xx),
        consecutive_connect_failures: o
            .consecutive_connect_failures
            .unwrap_or(d.consecutive_connect_failures),
        interval,
        base_ejection_time: base,
        max_ejection_percent: percent,
    };
    if spec.consecutive_5xx == 0 && spec.consecutive_connect_failures == 0 {
        doc.err(
            at,
            "consecutive5xx and consecutiveConnectFailures are both 0: nothing would ever be ejected",
        );
    }
    (doc.errors.len() == before).then_some(spec)
}

/// Converts a `rateLimit` section.
fn rate_limit(doc: &mut Doc<'_>, at: &str, r: &wire::RateLimit) -> Option<model::RateLimitSection> {
    let before = doc.errors.len();
    let headers = r.headers.as_deref().and_then(|h| match h {
        "IETF" => Some(model::HeaderStyle::Ietf),
        "Legacy" => Some(model::HeaderStyle::Legacy),
        "Off" => Some(model::HeaderStyle::Off),
        other => {
            doc.err(
                format!("{at}.headers"),
                format!("must be IETF, Legacy or Off, not {other:?}"),
            );
            None
        }
    });
    if r.local.is_empty() && r.cluster.is_empty() && r.quotas.is_empty() {
        doc.err(at, "set at least one rule in local, cluster or quotas");
    }
    let mut names: Vec<(String, String)> = Vec::new();
    let mut name = |doc: &mut Doc<'_>, field: String, n: &str| {
        if n.is_empty() {
            doc.err(format!("{field}.name"), "must not be empty");
        } else if !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            // The name is a token of the RateLimit headers and a metric label.
            doc.err(
                format!("{field}.name"),
                format!("{n:?}: use letters, digits, '-', '_' and '.'"),
            );
        } else if let Some((_, first)) = names.iter().find(|(x, _)| *x == n) {
            doc.err(
                format!("{field}.name"),
                format!("duplicate rule name {n:?} (also {first})"),
            );
        } else {
            names.push((n.to_owned(), field));
        }
    };
    let unit = |doc: &mut Doc<'_>, field: String, u: &str| {
        model::Unit::parse(u).or_else(|| {
            doc.err(
                field,
                format!("must be Second, Minute, Hour or Day, not {u:?}"),
            );
            None
        })
    };
    let failure = |doc: &mut Doc<'_>, field: String, f: Option<&str>| match f {
        None | Some("Open") => model::FailureMode::Open,
        Some("Closed") => model::FailureMode::Closed,
        Some(other) => {
            doc.err(field, format!("must be Open or Closed, not {other:?}"));
            model::FailureMode::Open
        }
    };
    let mut local = Vec::new();
    for (i, l) in r.local.iter().enumerate() {
        let lat = format!("{at}.local[{i}]");
        name(doc, lat.clone(), &l.name);
        if l.requests == 0 {
            doc.err(format!("{lat}.requests"), "must be at least 1");
        }
        if l.burst == Some(0) {
            doc.err(format!("{lat}.burst"), "must be at least 1");
        }
        let u = unit(doc, format!("{lat}.unit"), &l.unit);
        let key = rate_limit_key(doc, &format!("{lat}.key"), l.key.as_ref());
        let penalty = l
            .penalty
            .as_ref()
            .and_then(|p| penalty(doc, &format!("{lat}.penalty"), p));
        if let (Some(unit), Some(key)) = (u, key) {
            local.push(model::LocalRuleSpec {
                name: l.name.clone(),
                requests: l.requests.max(1),
                unit,
                burst: l.burst.unwrap_or(l.requests).max(1),
                key,
                shared: l.shared.unwrap_or(false),
                shadow: l.shadow.unwrap_or(false),
                penalty,
            });
        }
    }
    let mut cluster = Vec::new();
    for (i, c) in r.cluster.iter().enumerate() {
        let cat = format!("{at}.cluster[{i}]");
        name(doc, cat.clone(), &c.name);
        if c.requests == 0 {
            doc.err(format!("{cat}.requests"), "must be at least 1");
        }
        let u = unit(doc, format!("{cat}.unit"), &c.unit);
        let key = rate_limit_key(doc, &format!("{cat}.key"), c.key.as_ref());
        let failure_mode = failure(doc, format!("{cat}.failureMode"), c.failure_mode.as_deref());
        let penalty = c
            .penalty
            .as_ref()
            .and_then(|p| penalty(doc, &format!("{cat}.penalty"), p));
        if let (Some(unit), Some(key)) = (u, key) {
            cluster.push(model::ClusterRuleSpec {
                name: c.name.clone(),
                requests: c.requests.max(1),
                unit,
                key,
                shared: c.shared.unwrap_or(false),
                shadow: c.shadow.unwrap_or(false),
                failure_mode,
                penalty,
            });
        }
    }
    let mut quotas = Vec::new();
    for (i, q) in r.quotas.iter().enumerate() {
        let qat = format!("{at}.quotas[{i}]");
        name(doc, qat.clone(), &q.name);
        if q.requests == 0 {
            doc.err(format!("{qat}.requests"), "must be at least 1");
        }
        let period = match q.period.as_str() {
            "Day" => Some(model::QuotaPeriod::Day),
            "Month" => Some(model::QuotaPeriod::Month),
            other => {
                doc.err(
                    format!("{qat}.period"),
                    format!("must be Day or Month, not {other:?}"),
                );
                None
            }
        };
        let key = match (q.key.api_key_client, q.key.claim.as_deref()) {
            (Some(true), None) => Some(model::QuotaKey::ApiKeyClient),
            (None | Some(false), Some(c)) if !c.is_empty() => {
                Some(model::QuotaKey::Claim(c.to_owned()))
            }
            _ => {
                doc.err(
                    format!("{qat}.key"),
                    "set exactly one of apiKeyClient: true or claim",
                );
                None
            }
        };
        let failure_mode = failure(doc, format!("{qat}.failureMode"), q.failure_mode.as_deref());
        if let (Some(period), Some(key)) = (period, key) {
            quotas.push(model::QuotaSpec {
                name: q.name.clone(),
                requests: q.requests.max(1),
                period,
                key,
                failure_mode,
            });
        }
    }
    (doc.errors.len() == before).then_some(model::RateLimitSection {
        headers,
        local,
        cluster,
        quotas,
    })
}

fn rate_limit_key(
    doc: &mut Doc<'_>,
    at: &str,
    k: Option<&wire::RateLimitKey>,
) -> Option<model::KeySpec> {
    let Some(k) = k else {
        return Some(model::KeySpec::default());
    };
    let before = doc.errors.len();
    let source = k.source_address.as_ref().map(|s| {
        let v4 = s.prefix_length.unwrap_or(32);
        let v6 = s.prefix_length_v6.unwrap_or(128);
        if v4 > 32 {
            doc.err(format!("{at}.sourceAddress.prefixLength"), "must be 0-32");
        }
        if v6 > 128 {
            doc.err(
                format!("{at}.sourceAddress.prefixLengthV6"),
                "must be 0-128",
            );
        }
        (v4.min(32) as u8, v6.min(128) as u8)
    });
    let header = k
        .header
        .as_ref()
        .and_then(|h| header_name(doc, &format!("{at}.header"), h));
    if k.claim.as_deref() == Some("") {
        doc.err(format!("{at}.claim"), "must not be empty");
    }
    (doc.errors.len() == before).then(|| model::KeySpec {
        source,
        header,
        claim: k.claim.clone(),
        api_key_client: k.api_key_client.unwrap_or(false),
        source_namespace: k.source_namespace.unwrap_or(false),
        method: k.method.unwrap_or(false),
        path: k.path.unwrap_or(false),
    })
}

/// Longest a penalty may block a source.
const MAX_PENALTY_BLOCK: Duration = Duration::from_secs(24 * 3600);

fn penalty(doc: &mut Doc<'_>, at: &str, p: &wire::Penalty) -> Option<model::PenaltySpec> {
    let before = doc.errors.len();
    if p.after == 0 {
        doc.err(format!("{at}.after"), "must be at least 1");
    }
    let within = duration(
        doc,
        &format!("{at}.within"),
        Some(&p.within),
        Duration::ZERO,
    );
    let block = duration(doc, &format!("{at}.block"), Some(&p.block), Duration::ZERO);
    if within.is_zero() {
        doc.err(format!("{at}.within"), "must be more than 0");
    }
    if block.is_zero() || block > MAX_PENALTY_BLOCK {
        doc.err(format!("{at}.block"), "must be more than 0 and at most 24h");
    }
    let prefix = |doc: &mut Doc<'_>, field: &str, raw: Option<&str>, default: u8, max: u8| {
        let Some(raw) = raw else {
            return default;
        };
        match raw.trim_start_matches('/').parse::<u8>() {
            // A penalty for a whole /0 would drop everyone: at least /8 (v4), /16 (v6).
            Ok(n) if n <= max && n >= max / 4 => n,
            _ => {
                doc.err(
                    format!("{at}.{field}"),
                    format!(
                        "must be a prefix length /{} to /{max}, not {raw:?}",
                        max / 4
                    ),
                );
                default
            }
        }
    };
    let prefix_v4 = prefix(doc, "prefix", p.prefix.as_deref(), 32, 32);
    let prefix_v6 = prefix(doc, "prefixV6", p.prefix_v6.as_deref(), 64, 128);
    (doc.errors.len() == before).then_some(model::PenaltySpec {
        after: p.after,
        within,
        block,
        prefix_v4,
        prefix_v6,
        on_auth_failure: p.on_auth_failure.unwrap_or(false),
    })
}

fn header_name(doc: &mut Doc<'_>, at: &str, raw: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(raw.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            doc.err(at, format!("invalid header name {raw:?}"));
            None
        }
    }
}

fn duration(doc: &mut Doc<'_>, at: &str, raw: Option<&str>, default: Duration) -> Duration {
    match raw {
        None => default,
        Some(r) => parse_duration(r).unwrap_or_else(|| {
            doc.err(
                at,
                format!("not a duration (1-4 groups of digits with h, m, s or ms): {r:?}"),
            );
            default
        }),
    }
}

fn cidrs(doc: &mut Doc<'_>, at: &str, raw: &[String]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let parsed = c
            .parse::<IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(n) => out.push(n.trunc()),
            Err(_) => doc.err(
                format!("{at}[{i}]"),
                format!("not a CIDR or address: {c:?}"),
            ),
        }
    }
    if raw.is_empty() {
        doc.err(at, "must list at least one CIDR");
    }
    out
}

fn credential_source(
    doc: &mut Doc<'_>,
    at: &str,
    s: &wire::TokenSource,
) -> Option<CredentialSource> {
    let set = [
        s.header.is_some(),
        s.cookie.is_some(),
        s.query_param.is_some(),
    ];
    if set.iter().filter(|x| **x).count() != 1 {
        doc.err(at, "exactly one of header, cookie, queryParam must be set");
        return None;
    }
    if let Some(h) = &s.header {
        let name = header_name(doc, &format!("{at}.header.name"), &h.name)?;
        let prefix = h.prefix.as_ref().map(|p| p.trim().to_owned());
        if prefix.as_deref() == Some("") {
            doc.err(
                format!("{at}.header.prefix"),
                "must not be empty (leave it out)",
            );
            return None;
        }
        return Some(CredentialSource::Header { name, prefix });
    }
    let (field, name, make): (&str, &String, fn(String) -> CredentialSource) =
        match (&s.cookie, &s.query_param) {
            (Some(c), _) => ("cookie", c, CredentialSource::Cookie),
            (_, Some(q)) => ("queryParam", q, CredentialSource::Query),
            _ => return None,
        };
    if name.is_empty() || name.contains(['=', ';', '&', ' ']) {
        doc.err(format!("{at}.{field}"), format!("invalid name {name:?}"));
        return None;
    }
    Some(make(name.clone()))
}

fn key_ref(
    doc: &mut Doc<'_>,
    at: &str,
    r: &wire::KeyRef,
    default_key: &str,
) -> Option<(String, String)> {
    if r.name.is_empty() {
        doc.err(format!("{at}.name"), "must not be empty");
        return None;
    }
    let key = r.key.clone().unwrap_or_else(|| default_key.to_owned());
    if key.is_empty() {
        doc.err(format!("{at}.key"), "must not be empty");
        return None;
    }
    Some((r.name.clone(), key))
}

fn jwt(doc: &mut Doc<'_>, at: &str, j: &wire::Jwt) -> Option<model::JwtSection> {
    let before = doc.errors.len();
    let mode = match j.mode.as_deref().unwrap_or("Strict") {
        "Strict" => model::JwtMode::Strict,
        "Optional" => model::JwtMode::Optional,
        "Permissive" => model::JwtMode::Permissive,
        other => {
            doc.err(
                format!("{at}.mode"),
                format!("must be Strict, Optional or Permissive, not {other:?}"),
            );
            model::JwtMode::Strict
        }
    };
    if j.providers.is_empty() {
        doc.err(
            format!("{at}.providers"),
            "at least one provider is required",
        );
    }
    let mut providers: Vec<model::JwtProviderSpec> = Vec::new();
    for (i, p) in j.providers.iter().enumerate() {
        let pat = format!("{at}.providers[{i}]");
        if p.name.is_empty() {
            doc.err(format!("{pat}.name"), "must not be empty");
        } else if j.providers[..i].iter().any(|o| o.name == p.name) {
            doc.err(
                format!("{pat}.name"),
                format!("duplicate provider {:?}", p.name),
            );
        }
        if p.issuer.is_empty() {
            doc.err(format!("{pat}.issuer"), "must not be empty");
        }
        for (k, a) in p.algorithms.iter().enumerate() {
            if !ALGORITHMS.contains(&a.as_str()) {
                doc.err(
                    format!("{pat}.algorithms[{k}]"),
                    format!(
                        "unsupported algorithm {a:?} (supported: {})",
                        ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        let clock_skew = duration(
            doc,
            &format!("{pat}.clockSkew"),
            p.clock_skew.as_deref(),
            DEFAULT_CLOCK_SKEW,
        );
        let jwks = jwks(doc, &format!("{pat}.jwks"), &p.jwks);
        let hmac = p.algorithms.iter().any(|a| a.starts_with("HS"));
        if hmac && !matches!(jwks, Some(model::JwksSpec::Secret { .. })) {
            doc.err(
                format!("{pat}.algorithms"),
                "HS256/384/512 need the keys in a Secret (jwks.secretRef): a shared secret \
                 must never come from a ConfigMap, inline text or a URL",
            );
        }
        let mut claim_to_headers = Vec::new();
        for (k, c) in p.claim_to_headers.iter().enumerate() {
            if c.claim.is_empty() {
                doc.err(
                    format!("{pat}.claimToHeaders[{k}].claim"),
                    "must not be empty",
                );
                continue;
            }
            if let Some(h) =
                header_name(doc, &format!("{pat}.claimToHeaders[{k}].header"), &c.header)
            {
                claim_to_headers.push((c.claim.clone(), h));
            }
        }
        if let Some(jwks) = jwks {
            providers.push(model::JwtProviderSpec {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                audiences: p.audiences.clone(),
                algorithms: p.algorithms.clone(),
                clock_skew,
                jwks,
                claim_to_headers,
            });
        }
    }
    let token_sources = match &j.token_sources {
        None => vec![CredentialSource::bearer()],
        Some(list) if list.is_empty() => {
            doc.err(
                format!("{at}.tokenSources"),
                "must not be empty (leave it out for the default)",
            );
            vec![]
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| credential_source(doc, &format!("{at}.tokenSources[{i}]"), s))
            .collect(),
    };
    (doc.errors.len() == before).then(|| model::JwtSection {
        mode,
        providers,
        token_sources,
        forward_token: j.forward_token.unwrap_or(false),
    })
}

fn jwks(doc: &mut Doc<'_>, at: &str, j: &wire::Jwks) -> Option<model::JwksSpec> {
    let set = [
        j.inline.is_some(),
        j.secret_ref.is_some(),
        j.config_map_ref.is_some(),
        j.remote.is_some(),
    ];
    if set.iter().filter(|x| **x).count() != 1 {
        doc.err(
            at,
            "exactly one of inline, secretRef, configMapRef, remote must be set",
        );
        return None;
    }
    if let Some(text) = &j.inline {
        if serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("keys").map(|k| k.is_array()))
            != Some(true)
        {
            doc.err(
                format!("{at}.inline"),
                "not a JWKS document (JSON with a \"keys\" array)",
            );
            return None;
        }
        return Some(model::JwksSpec::Inline(text.clone()));
    }
    if let Some(r) = &j.secret_ref {
        let (name, key) = key_ref(doc, &format!("{at}.secretRef"), r, "jwks.json")?;
        return Some(model::JwksSpec::Secret { name, key });
    }
    if let Some(r) = &j.config_map_ref {
        let (name, key) = key_ref(doc, &format!("{at}.configMapRef"), r, "jwks.json")?;
        return Some(model::JwksSpec::ConfigMap { name, key });
    }
    let r = j.remote.as_ref()?;
    let before = doc.errors.len();
    let uri: Option<http::Uri> = match r.uri.parse::<http::Uri>() {
        Ok(u) if u.host().is_some() => match u.scheme_str() {
            Some("https") => Some(u),
            Some("http") if is_loopback(u.host().unwrap_or_default()) => Some(u),
            Some("http") => {
                doc.err(
                    format!("{at}.remote.uri"),
                    "plain http is allowed only to loopback addresses; use https",
                );
                None
            }
            _ => {
                doc.err(format!("{at}.remote.uri"), "must be an https:// URL");
                None
            }
        },
        _ => {
            doc.err(
                format!("{at}.remote.uri"),
                format!("not a URL: {:?}", r.uri),
            );
            None
        }
    };
    let ca_refs: Vec<(String, String)> = r
        .ca_certificate_refs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            key_ref(
                doc,
                &format!("{at}.remote.caCertificateRefs[{i}]"),
                c,
                "ca.crt",
            )
        })
        .collect();
    let cache_duration = duration(
        doc,
        &format!("{at}.remote.cacheDuration"),
        r.cache_duration.as_deref(),
        DEFAULT_JWKS_CACHE,
    );
    let timeout = duration(
        doc,
        &format!("{at}.remote.timeout"),
        r.timeout.as_deref(),
        DEFAULT_JWKS_TIMEOUT,
    );
    if timeout.is_zero() {
        doc.err(format!("{at}.remote.timeout"), "must be more than 0");
    }
    (doc.errors.len() == before).then(|| {
        model::JwksSpec::Remote(model::RemoteJwksSpec {
            uri: uri.expect("checked"),
            ca_refs,
            cache_duration,
            timeout,
        })
    })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn api_keys(doc: &mut Doc<'_>, at: &str, k: &wire::ApiKeys) -> Option<model::ApiKeySection> {
    let before = doc.errors.len();
    if k.secret_refs.is_empty() {
        doc.err(
            format!("{at}.secretRefs"),
            "at least one Secret is required",
        );
    }
    for (i, s) in k.secret_refs.iter().enumerate() {
        if s.name.is_empty() {
            doc.err(format!("{at}.secretRefs[{i}].name"), "must not be empty");
        }
    }
    let source = match &k.source {
        Some(s) => credential_source(doc, &format!("{at}.source"), s),
        None => Some(CredentialSource::Header {
            name: HeaderName::from_static("x-api-key"),
            prefix: None,
        }),
    };
    let client_id_header = k
        .client_id_header
        .as_ref()
        .and_then(|h| header_name(doc, &format!("{at}.clientIdHeader"), h));
    (doc.errors.len() == before).then(|| model::ApiKeySection {
        secrets: k.secret_refs.iter().map(|s| s.name.clone()).collect(),
        source: source.expect("checked"),
        client_id_header,
        forward_key: k.forward_key.unwrap_or(false),
    })
}

fn basic_auth(doc: &mut Doc<'_>, at: &str, b: &wire::BasicAuth) -> Option<model::BasicAuthSection> {
    let before = doc.errors.len();
    let secret = key_ref(doc, &format!("{at}.secretRef"), &b.secret_ref, "auth");
    let username_header = b
        .username_header
        .as_ref()
        .and_then(|h| header_name(doc, &format!("{at}.usernameHeader"), h));
    let realm = b.realm.clone().unwrap_or_else(|| "sluice".into());
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        doc.err(
            format!("{at}.realm"),
            "must not contain quotes, backslashes or control characters",
        );
    }
    let (secret, key) = secret?;
    (doc.errors.len() == before).then(|| model::BasicAuthSection {
        secret,
        key,
        realm,
        username_header,
        forward_credentials: b.forward_credentials.unwrap_or(false),
    })
}

/// Converts an `extAuth` section or an HTTPRoute `ExternalAuth` filter.
pub(in crate::config) fn ext_auth(
    doc: &mut Doc<'_>,
    at: &str,
    e: &wire::ExtAuth,
    namespace: &str,
) -> Option<model::ExtAuthSection> {
    let before = doc.errors.len();
    if e.protocol != "HTTP" {
        doc.err(
            format!("{at}.protocol"),
            format!(
                "protocol {:?} is not supported (supported: HTTP; the gRPC ext_authz protocol \
                 is not implemented)",
                e.protocol
            ),
        );
    }
    let b = &e.backend_ref;
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        doc.err(
            format!("{at}.backendRef.kind"),
            format!("unsupported backend kind {group}/{kind} (supported: core Service)"),
        );
    }
    if b.port == 0 {
        doc.err(format!("{at}.backendRef.port"), "must be 1-65535");
    }
    let http = e.http.clone().unwrap_or_default();
    let path_prefix = http.path.clone().unwrap_or_default();
    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
        doc.err(format!("{at}.http.path"), "must start with /");
    }
    let names = |doc: &mut Doc<'_>, list: &str, items: &[String]| -> Vec<HeaderName> {
        items
            .iter()
            .enumerate()
            .filter_map(|(i, h)| header_name(doc, &format!("{at}.http.{list}[{i}]"), h))
            .collect()
    };
    let allowed_headers = names(doc, "allowedHeaders", &http.allowed_headers);
    let allowed_response_headers = names(
        doc,
        "allowedResponseHeaders",
        &http.allowed_response_headers,
    );
    let timeout = duration(
        doc,
        &format!("{at}.timeout"),
        e.timeout.as_deref(),
        DEFAULT_EXT_AUTH_TIMEOUT,
    );
    (doc.errors.len() == before).then(|| model::ExtAuthSection {
        service: ObjectRef::new(b.namespace.as_deref().unwrap_or(namespace), &b.name),
        port: b.port,
        path_prefix: path_prefix.trim_end_matches('/').to_owned(),
        allowed_headers,
        allowed_response_headers,
        forward_body: e.forward_body.as_ref().map_or(0, |f| f.max_size),
        timeout,
        fail_open: e.fail_open.unwrap_or(false),
    })
}

fn authorization(
    doc: &mut Doc<'_>,
    at: &str,
    a: &wire::Authorization,
) -> Option<model::AuthorizationSection> {
    let before = doc.errors.len();
    let action = |doc: &mut Doc<'_>, field: String, raw: &str| match raw {
        "Allow" => true,
        "Deny" => false,
        other => {
            doc.err(field, format!("must be Allow or Deny, not {other:?}"));
            false
        }
    };
    let default_allow = match &a.default_action {
        Some(d) => action(doc, format!("{at}.defaultAction"), d),
        None => false,
    };
    let mut rules = Vec::new();
    for (i, r) in a.rules.iter().enumerate() {
        let rat = format!("{at}.rules[{i}]");
        if let Some(n) = &r.name {
            if a.rules[..i].iter().any(|o| o.name.as_ref() == Some(n)) {
                doc.err(format!("{rat}.name"), format!("duplicate rule name {n:?}"));
            }
        }
        let allow = action(doc, format!("{rat}.action"), &r.action);
        let methods = r
            .methods
            .iter()
            .enumerate()
            .filter_map(|(k, m)| match Method::from_bytes(m.as_bytes()) {
                Ok(m) if m.as_str().bytes().all(|b| b.is_ascii_uppercase()) => Some(m),
                _ => {
                    doc.err(
                        format!("{rat}.methods[{k}]"),
                        format!("invalid method {m:?}"),
                    );
                    None
                }
            })
            .collect();
        let paths = r
            .paths
            .iter()
            .enumerate()
            .filter_map(|(k, p)| path_match(doc, &format!("{rat}.paths[{k}]"), p))
            .collect();
        let headers = r
            .headers
            .iter()
            .enumerate()
            .filter_map(|(k, h)| {
                let hat = format!("{rat}.headers[{k}]");
                let name = header_name(doc, &format!("{hat}.name"), &h.name)?;
                let value = match h.kind.as_deref().unwrap_or("Exact") {
                    "Exact" => StringMatch::Exact(h.value.clone()),
                    "RegularExpression" => match Pattern::new(&h.value) {
                        Ok(p) => StringMatch::Regex(p),
                        Err(e) => {
                            doc.err(
                                format!("{hat}.value"),
                                format!("invalid regular expression: {e}"),
                            );
                            return None;
                        }
                    },
                    other => {
                        doc.err(
                            format!("{hat}.type"),
                            format!("must be Exact or RegularExpression, not {other:?}"),
                        );
                        return None;
                    }
                };
                Some((name, value))
            })
            .collect();
        let claims = r
            .claims
            .iter()
            .enumerate()
            .filter_map(|(k, c)| {
                if c.name.is_empty() {
                    doc.err(format!("{rat}.claims[{k}].name"), "must not be empty");
                    return None;
                }
                if c.values.is_empty() {
                    doc.err(
                        format!("{rat}.claims[{k}].values"),
                        "at least one value is required",
                    );
                    return None;
                }
                Some((c.name.clone(), c.values.clone()))
            })
            .collect();
        let source_cidrs = if r.source_cidrs.is_empty() {
            vec![]
        } else {
            cidrs(doc, &format!("{rat}.sourceCIDRs"), &r.source_cidrs)
        };
        rules.push(model::AuthzRule {
            name: r.name.clone(),
            allow,
            methods,
            paths,
            headers,
            claims,
            api_key_clients: r.api_key_clients.clone(),
            users: r.users.clone(),
            source_cidrs,
            source_namespaces: r.source_namespaces.clone(),
        });
    }
    if a.default_action.is_none() && a.rules.is_empty() {
        doc.err(at, "set defaultAction and/or rules");
    }
    (doc.errors.len() == before).then_some(model::AuthorizationSection {
        default_allow,
        rules,
    })
}

fn path_match(doc: &mut Doc<'_>, at: &str, p: &wire::PathMatch) -> Option<PathMatch> {
    if !p.value.starts_with('/') && p.kind.as_deref() != Some("RegularExpression") {
        doc.err(format!("{at}.value"), "must start with /");
        return None;
    }
    match p.kind.as_deref().unwrap_or("PathPrefix") {
        "Exact" => Some(PathMatch::Exact(p.value.clone())),
        "PathPrefix" => {
            let trimmed = p.value.trim_end_matches('/');
            Some(PathMatch::Prefix(if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            }))
        }
        "RegularExpression" => match Pattern::new(&p.value) {
            Ok(r) => Some(PathMatch::Regex(r)),
            Err(e) => {
                doc.err(
                    format!("{at}.value"),
                    format!("invalid regular expression: {e}"),
                );
                None
            }
        },
        other => {
            doc.err(
                format!("{at}.type"),
                format!("must be Exact, PathPrefix or RegularExpression, not {other:?}"),
            );
            None
        }
    }
}

fn transform(doc: &mut Doc<'_>, at: &str, t: &wire::Transform) -> Option<model::TransformSection> {
    let before = doc.errors.len();
    let ops = |doc: &mut Doc<'_>, side: &str, h: &Option<wire::HeaderTransform>| -> HeaderOps {
        let Some(h) = h else {
            return HeaderOps::default();
        };
        let templated = |doc: &mut Doc<'_>, list: &str, items: &[wire::HeaderValue]| {
            let mut out: Vec<(HeaderName, Template)> = Vec::new();
            for (i, v) in items.iter().enumerate() {
                let vat = format!("{at}.{side}.{list}[{i}]");
                let Some(name) = header_name(doc, &format!("{vat}.name"), &v.name) else {
                    continue;
                };
                if is_hop_or_pseudo(&name) {
                    doc.err(
                        format!("{vat}.name"),
                        format!("header {name} cannot be changed"),
                    );
                    continue;
                }
                match Template::parse(&v.value) {
                    Ok(t) => out.push((name, t)),
                    Err(e) => doc.err(format!("{vat}.value"), e),
                }
            }
            out
        };
        let set = templated(doc, "set", &h.set);
        let add = templated(doc, "add", &h.add);
        let remove = h
            .remove
            .iter()
            .enumerate()
            .filter_map(|(i, n)| header_name(doc, &format!("{at}.{side}.remove[{i}]"), n))
            .collect();
        HeaderOps { set, add, remove }
    };
    let request = ops(doc, "request", &t.request);
    let response = ops(doc, "response", &t.response);
    if request.is_empty() && response.is_empty() && doc.errors.len() == before {
        doc.err(at, "set request and/or response changes");
    }
    (doc.errors.len() == before).then_some(model::TransformSection { request, response })
}

/// Headers a transform must not touch: connection framing and Host.
fn is_hop_or_pseudo(name: &HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        TRANSFER_ENCODING,
        CONTENT_LENGTH,
        HOST,
        UPGRADE,
        TE,
        TRAILER,
    ]
    .contains(name)
}

/// The `ref`s a policy makes to Secrets, ConfigMaps and Services (for the
/// Kubernetes source, which holds only referenced objects).
pub fn references(p: &model::SluicePolicy) -> (Vec<LocalRef>, Vec<LocalRef>) {
    let mut secrets = Vec::new();
    let mut maps = Vec::new();
    for s in [&p.defaults, &p.overrides] {
        if let Some(j) = &s.jwt {
            for pr in &j.providers {
                match &pr.jwks {
                    model::JwksSpec::Secret { name, .. } => secrets.push(local("Secret", name)),
                    model::JwksSpec::ConfigMap { name, .. } => maps.push(local("ConfigMap", name)),
                    model::JwksSpec::Remote(r) => {
                        maps.extend(r.ca_refs.iter().map(|(n, _)| local("ConfigMap", n)))
                    }
                    model::JwksSpec::Inline(_) => {}
                }
            }
        }
        if let Some(k) = &s.api_keys {
            secrets.extend(k.secrets.iter().map(|n| local("Secret", n)));
        }
        if let Some(b) = &s.basic_auth {
            secrets.push(local("Secret", &b.secret));
        }
    }
    (secrets, maps)
}

fn local(kind: &str, name: &str) -> LocalRef {
    LocalRef {
        group: String::new(),
        kind: kind.into(),
        name: name.into(),
    }
}
