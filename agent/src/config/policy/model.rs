//! Validated `SluicePolicy`: every field parsed and checked once (header
//! names, CIDRs, durations, patterns, templates). References to Secrets,
//! ConfigMaps and Services are kept as names; the control plane resolves
//! them, and an unresolvable one makes the policy fail closed.
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

use crate::config::{Cors, ObjectRef, PolicyTarget};
pub use crate::policy::{
    authz::Rule as AuthzRule,
    credential::CredentialSource,
    jwt::JwtMode,
    ratelimit::spec::{
        ClusterRuleSpec, FailureMode, HeaderStyle, KeySpec, LocalRuleSpec, PenaltySpec, QuotaKey,
        QuotaPeriod, QuotaSpec, RateLimitSection, Unit,
    },
    response_cache::CacheSpec,
    transform::HeaderOps,
    upstream::{CircuitBreakerSpec, HashOn, HealthCheckSpec, LoadBalancerSpec, OutlierSpec},
    Require,
};

/// A SluicePolicy.
#[derive(Debug, Clone, PartialEq)]
pub struct SluicePolicy {
    pub id: ObjectRef,
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`; the oldest policy wins a conflict.
    pub created: Option<(i64, u32)>,
    /// In the policy's namespace; kinds `Gateway` and `HTTPRoute` (others are
    /// kept so status can report them as not found).
    pub targets: Vec<PolicyTarget>,
    /// Sections given directly in the spec (GEP-713 defaults).
    pub defaults: PolicySections,
    /// `spec.override`.
    pub overrides: PolicySections,
    /// Set when the object did not validate (Kubernetes source: the object is
    /// kept so that its targets fail closed instead of losing protection).
    pub invalid: Option<String>,
}

/// The sections of one level (defaults or overrides) of a policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySections {
    pub jwt: Option<JwtSection>,
    pub api_keys: Option<ApiKeySection>,
    pub basic_auth: Option<BasicAuthSection>,
    pub ext_auth: Option<ExtAuthSection>,
    pub authentication: Option<Require>,
    pub authorization: Option<AuthorizationSection>,
    pub ip_allow: Option<Vec<IpNet>>,
    pub ip_deny: Option<Vec<IpNet>>,
    pub limits: Option<LimitsSection>,
    pub transform: Option<TransformSection>,
    pub cors: Option<Cors>,
    pub rate_limit: Option<RateLimitSection>,
    /// `cache`.
    pub cache: Option<CacheSpec>,
    pub load_balancer: Option<LoadBalancerSpec>,
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    pub outlier_detection: Option<OutlierSpec>,
    pub health_check: Option<HealthCheckSpec>,
    pub connection: Option<ConnectionSection>,
    pub access_log: Option<AccessLogSection>,
}

/// `accessLog`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AccessLogSection {
    /// 0..=100.
    pub sample_percent: u32,
    /// 0: every status.
    pub min_status: u16,
}

/// `connection`: a Gateway's client-side timeouts and limits (validated
/// ranges; `None` keeps the agent's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConnectionSection {
    pub header_timeout: Option<std::time::Duration>,
    pub body_idle_timeout: Option<std::time::Duration>,
    pub upstream_response_timeout: Option<std::time::Duration>,
    pub max_request_head_bytes: Option<usize>,
    pub max_request_headers: Option<usize>,
    pub max_uri_bytes: Option<usize>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub max_connections_per_source: Option<usize>,
    pub max_requests_in_flight: Option<usize>,
    pub merge_slashes: Option<bool>,
    pub escaped_slashes: Option<crate::policy::connection::EscapedSlashes>,
}

impl PolicySections {
    pub fn is_empty(&self) -> bool {
        *self == PolicySections::default()
    }
}

/// `jwt`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSection {
    pub mode: JwtMode,
    pub providers: Vec<JwtProviderSpec>,
    /// Never empty (default: `Authorization: Bearer`).
    pub token_sources: Vec<CredentialSource>,
    pub forward_token: bool,
}

/// One issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtProviderSpec {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Upper-case JOSE names, validated (`RS256`, `EdDSA`, ...); empty: every
    /// asymmetric algorithm.
    pub algorithms: Vec<String>,
    pub clock_skew: Duration,
    pub jwks: JwksSpec,
    pub claim_to_headers: Vec<(String, HeaderName)>,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwksSpec {
    Inline(String),
    Secret { name: String, key: String },
    ConfigMap { name: String, key: String },
    Remote(RemoteJwksSpec),
}

/// A JWKS endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteJwksSpec {
    pub uri: http::Uri,
    /// ConfigMaps (name, key) with CA bundles; empty: the platform CAs.
    pub ca_refs: Vec<(String, String)>,
    pub cache_duration: Duration,
    pub timeout: Duration,
}

/// `apiKeys`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeySection {
    /// Secret names in the policy's namespace.
    pub secrets: Vec<String>,
    pub source: CredentialSource,
    pub client_id_header: Option<HeaderName>,
    pub forward_key: bool,
}

/// `basicAuth`.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuthSection {
    pub secret: String,
    pub key: String,
    pub realm: String,
    pub username_header: Option<HeaderName>,
    pub forward_credentials: bool,
}

/// `extAuth` (HTTP protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthSection {
    /// The Service (namespace defaults to the policy's).
    pub service: ObjectRef,
    pub port: u16,
    /// Path prefix of the authorization request.
    pub path_prefix: String,
    /// Lower-case header names forwarded to the service (besides the fixed ones).
    pub allowed_headers: Vec<HeaderName>,
    pub allowed_response_headers: Vec<HeaderName>,
    /// Request body bytes buffered and sent along; 0: none.
    pub forward_body: u32,
    pub timeout: Duration,
    pub fail_open: bool,
}

/// `authorization`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizationSection {
    pub default_allow: bool,
    pub rules: Vec<AuthzRule>,
}

/// `limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitsSection {
    pub max_request_body_bytes: Option<u64>,
    pub max_request_headers_bytes: Option<u32>,
}

/// `transform`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TransformSection {
    pub request: HeaderOps,
    pub response: HeaderOps,
}
