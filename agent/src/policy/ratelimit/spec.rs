//! The validated form of a `rateLimit` section: what the config model
//! holds and the compile turns into runtime limiters. Plain data (hashable,
//! so that state can be keyed by a fingerprint of the spec).
use std::time::Duration;

use http::HeaderName;

/// The period `requests` refer to, for local and cluster rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        })
    }

    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s {
            "Second" => Unit::Second,
            "Minute" => Unit::Minute,
            "Hour" => Unit::Hour,
            "Day" => Unit::Day,
            _ => return None,
        })
    }
}

/// The window of a quota: calendar periods in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    Day,
    Month,
}

/// What a rate-limit key is made of. Every given part is part of the key;
/// none given: one bucket for every request the rule governs. A part the
/// request does not have (no such header, no claim, no namespace) is a value
/// of its own: all such requests share a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KeySpec {
    /// The client address, truncated to these prefix lengths (IPv4, IPv6).
    pub source: Option<(u8, u8)>,
    pub header: Option<HeaderName>,
    /// A claim of the verified JWT (nested with dots).
    pub claim: Option<String>,
    pub api_key_client: bool,
    /// The caller's namespace from the pod identity.
    pub source_namespace: bool,
    pub method: bool,
    pub path: bool,
}

/// `penalty`: a source (prefix) rejected `after` times within `within` is
/// dropped for `block` — by XDP at the NIC, or at accept in userspace mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PenaltySpec {
    pub after: u32,
    pub within: Duration,
    pub block: Duration,
    /// Prefix lengths the penalty covers (IPv4, IPv6).
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Authentication failures (401s) of the governed routes count too.
    pub on_auth_failure: bool,
}

/// What a cluster rule or quota does while the cluster store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailureMode {
    /// Keep serving: each agent enforces the limit on what it knows (the
    /// last fleet total it read plus its own admissions since).
    #[default]
    Open,
    /// Refuse the governed requests with 503 until the store is back.
    Closed,
}

/// A per-node GCRA rule (`rateLimit.local[]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalRuleSpec {
    pub name: String,
    pub requests: u32,
    pub unit: Unit,
    /// Requests allowed at once (the bucket size); default `requests`.
    pub burst: u32,
    pub key: KeySpec,
    /// One bucket per key for every route the rule governs (default: per route).
    pub shared: bool,
    /// Count and log, never reject.
    pub shadow: bool,
    pub penalty: Option<PenaltySpec>,
}

/// A fleet-wide rule (`rateLimit.cluster[]`): fixed windows of `unit`,
/// counted in the cluster store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterRuleSpec {
    pub name: String,
    pub requests: u64,
    pub unit: Unit,
    pub key: KeySpec,
    pub shared: bool,
    pub shadow: bool,
    pub failure_mode: FailureMode,
    pub penalty: Option<PenaltySpec>,
}

/// Whose quota a request uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QuotaKey {
    ApiKeyClient,
    Claim(String),
}

/// A quota of an API product (`rateLimit.quotas[]`): requests per UTC day
/// or month per client, kept in the cluster store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaSpec {
    pub name: String,
    pub requests: u64,
    pub period: QuotaPeriod,
    pub key: QuotaKey,
    pub failure_mode: FailureMode,
}

/// Which rate-limit response headers are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft, structured fields).
    #[default]
    Ietf,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` of the
    /// most constrained rule (the older draft many clients read).
    Legacy,
    /// None (429 still carries `Retry-After`).
    Off,
}

/// A `rateLimit` section.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RateLimitSection {
    /// `None`: not said here (merging keeps what a less specific level said).
    pub headers: Option<HeaderStyle>,
    pub local: Vec<LocalRuleSpec>,
    pub cluster: Vec<ClusterRuleSpec>,
    pub quotas: Vec<QuotaSpec>,
}

impl RateLimitSection {
    /// The rule names, in evaluation order (local, cluster, quotas).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.local
            .iter()
            .map(|r| r.name.as_str())
            .chain(self.cluster.iter().map(|r| r.name.as_str()))
            .chain(self.quotas.iter().map(|q| q.name.as_str()))
    }
}
