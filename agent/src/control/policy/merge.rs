//! GEP-713 merging of SluicePolicy sections along a route's levels
//! (Gateway < listener < HTTPRoute < rule):
//!
//! - **Defaults** are applied from the least to the most specific level: a
//!   more specific policy's section replaces a less specific one's.
//! - **Overrides** are then applied from the most to the least specific
//!   level: a Gateway's override wins over everything below it.
//! - The unit is the section; its named lists — `jwt.providers`,
//!   `authorization.rules`, the headers of `transform`, the rules of
//!   `rateLimit` (`local`, `cluster` and `quotas` each) — are merged by name
//!   (the winning side's entries first, then the other side's entries of
//!   other names — so an override's rules are evaluated first). Unnamed
//!   rules are never replaced.
//! - At one level, two policies setting the same section conflict: the
//!   oldest wins (then namespace/name) and the other is reported
//!   `Conflicted` for that target.
//! - `ipAllow` / `ipDeny` are the exception: source filters of every level
//!   apply together (a source must pass each), defaults and overrides alike,
//!   so no level can let in what a Gateway keeps out — which is also what
//!   lets a whole-Gateway list be enforced by XDP at the NIC.
use std::collections::BTreeMap;

use http::HeaderName;
use ipnet::IpNet;

use crate::config::{
    policy::{
        AuthorizationSection, HeaderOps, JwtSection, PolicySections, RateLimitSection,
        TransformSection,
    },
    ObjectRef, SluicePolicy,
};

/// The sections of a SluicePolicy, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionKind {
    IpAllow,
    IpDeny,
    Limits,
    Cors,
    Jwt,
    ApiKeys,
    BasicAuth,
    ExtAuth,
    Authentication,
    Authorization,
    RateLimit,
    Transform,
    /// Not a request phase: a whole Gateway's connection settings.
    Connection,
}

impl SectionKind {
    pub const ALL: [SectionKind; 13] = [
        SectionKind::IpAllow,
        SectionKind::IpDeny,
        SectionKind::Limits,
        SectionKind::Cors,
        SectionKind::Jwt,
        SectionKind::ApiKeys,
        SectionKind::BasicAuth,
        SectionKind::ExtAuth,
        SectionKind::Authentication,
        SectionKind::Authorization,
        SectionKind::RateLimit,
        SectionKind::Transform,
        SectionKind::Connection,
    ];

    /// The field name in the spec (and the `section` metric label).
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::IpAllow => "ipAllow",
            SectionKind::IpDeny => "ipDeny",
            SectionKind::Limits => "limits",
            SectionKind::Cors => "cors",
            SectionKind::Jwt => "jwt",
            SectionKind::ApiKeys => "apiKeys",
            SectionKind::BasicAuth => "basicAuth",
            SectionKind::ExtAuth => "extAuth",
            SectionKind::Authentication => "authentication",
            SectionKind::Authorization => "authorization",
            SectionKind::RateLimit => "rateLimit",
            SectionKind::Transform => "transform",
            SectionKind::Connection => "connection",
        }
    }

    pub fn is_set(self, s: &PolicySections) -> bool {
        match self {
            SectionKind::IpAllow => s.ip_allow.is_some(),
            SectionKind::IpDeny => s.ip_deny.is_some(),
            SectionKind::Limits => s.limits.is_some(),
            SectionKind::Cors => s.cors.is_some(),
            SectionKind::Jwt => s.jwt.is_some(),
            SectionKind::ApiKeys => s.api_keys.is_some(),
            SectionKind::BasicAuth => s.basic_auth.is_some(),
            SectionKind::ExtAuth => s.ext_auth.is_some(),
            SectionKind::Authentication => s.authentication.is_some(),
            SectionKind::Authorization => s.authorization.is_some(),
            SectionKind::RateLimit => s.rate_limit.is_some(),
            SectionKind::Transform => s.transform.is_some(),
            SectionKind::Connection => s.connection.is_some(),
        }
    }

    /// Copies this section from `from` into `into` (replacing), or merges
    /// its named list with `primary` winning.
    fn apply(self, into: &mut PolicySections, from: &PolicySections, from_wins_lists: bool) {
        match self {
            // Not merged: every level's source filter applies (see `effective`).
            SectionKind::IpAllow | SectionKind::IpDeny => {}
            SectionKind::Limits => into.limits = from.limits,
            SectionKind::Cors => into.cors = from.cors.clone(),
            SectionKind::Jwt => {
                into.jwt = merge_jwt(into.jwt.take(), from.jwt.clone(), from_wins_lists)
            }
            SectionKind::ApiKeys => into.api_keys = from.api_keys.clone(),
            SectionKind::BasicAuth => into.basic_auth = from.basic_auth.clone(),
            SectionKind::ExtAuth => into.ext_auth = from.ext_auth.clone(),
            SectionKind::Authentication => into.authentication = from.authentication,
            SectionKind::Authorization => {
                into.authorization =
                    merge_authz(into.authorization.take(), from.authorization.clone())
            }
            SectionKind::RateLimit => {
                into.rate_limit = merge_rate_limit(into.rate_limit.take(), from.rate_limit.clone())
            }
            SectionKind::Transform => {
                into.transform = merge_transform(into.transform.take(), from.transform.clone())
            }
            SectionKind::Connection => into.connection = from.connection.clone(),
        }
    }
}

/// `winner`'s providers first, then `other`'s of other names; the rest of
/// the section from `winner`.
fn merge_jwt(
    current: Option<JwtSection>,
    incoming: Option<JwtSection>,
    _incoming_wins: bool,
) -> Option<JwtSection> {
    match (current, incoming) {
        (Some(cur), Some(mut win)) => {
            for p in cur.providers {
                if !win.providers.iter().any(|w| w.name == p.name) {
                    win.providers.push(p);
                }
            }
            Some(win)
        }
        (cur, None) => cur,
        (None, win) => win,
    }
}

fn merge_authz(
    current: Option<AuthorizationSection>,
    incoming: Option<AuthorizationSection>,
) -> Option<AuthorizationSection> {
    match (current, incoming) {
        (Some(cur), Some(mut win)) => {
            for r in cur.rules {
                let replaced = r
                    .name
                    .as_ref()
                    .is_some_and(|n| win.rules.iter().any(|w| w.name.as_ref() == Some(n)));
                if !replaced {
                    win.rules.push(r);
                }
            }
            Some(win)
        }
        (cur, None) => cur,
        (None, win) => win,
    }
}

/// Each rule list merged by name (the winner's rules first), `headers`
/// from the winner when it says.
fn merge_rate_limit(
    current: Option<RateLimitSection>,
    incoming: Option<RateLimitSection>,
) -> Option<RateLimitSection> {
    fn by_name<T>(win: &mut Vec<T>, cur: Vec<T>, name: fn(&T) -> &str) {
        for r in cur {
            if !win.iter().any(|w| name(w) == name(&r)) {
                win.push(r);
            }
        }
    }
    match (current, incoming) {
        (Some(cur), Some(mut win)) => {
            // A name is one rule: a winner's local rule replaces a cluster
            // rule of the same name, too.
            let taken: Vec<String> = win.names().map(str::to_owned).collect();
            let keep = |n: &str| !taken.iter().any(|t| t == n);
            by_name(
                &mut win.local,
                cur.local.into_iter().filter(|r| keep(&r.name)).collect(),
                |r| &r.name,
            );
            by_name(
                &mut win.cluster,
                cur.cluster.into_iter().filter(|r| keep(&r.name)).collect(),
                |r| &r.name,
            );
            by_name(
                &mut win.quotas,
                cur.quotas.into_iter().filter(|r| keep(&r.name)).collect(),
                |r| &r.name,
            );
            win.headers = win.headers.or(cur.headers);
            Some(win)
        }
        (cur, None) => cur,
        (None, win) => win,
    }
}

fn merge_transform(
    current: Option<TransformSection>,
    incoming: Option<TransformSection>,
) -> Option<TransformSection> {
    match (current, incoming) {
        (Some(cur), Some(win)) => Some(TransformSection {
            request: merge_ops(cur.request, win.request),
            response: merge_ops(cur.response, win.response),
        }),
        (cur, None) => cur,
        (None, win) => win,
    }
}

/// Header changes merged by header name: a name the winner touches is the
/// winner's alone.
fn merge_ops(cur: HeaderOps, mut win: HeaderOps) -> HeaderOps {
    let named: Vec<HeaderName> = win
        .set
        .iter()
        .chain(&win.add)
        .map(|(n, _)| n.clone())
        .chain(win.remove.iter().cloned())
        .collect();
    win.set
        .extend(cur.set.into_iter().filter(|(n, _)| !named.contains(n)));
    win.add
        .extend(cur.add.into_iter().filter(|(n, _)| !named.contains(n)));
    win.remove
        .extend(cur.remove.into_iter().filter(|n| !named.contains(n)));
    win
}

/// Who contributed to an effective section.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Contribution {
    pub policy: ObjectRef,
    /// From `spec.override`.
    pub overriding: bool,
}

/// The source filter of one policy at one level (its `ipAllow` and
/// `ipDeny`, each from the oldest policy there that sets it).
#[derive(Debug, Clone, Default)]
pub struct IpLevel {
    pub allow: Option<(Contribution, Vec<IpNet>)>,
    pub deny: Option<(Contribution, Vec<IpNet>)>,
}

/// The merged sections of one route rule (or listener), with who
/// contributed what: the last contribution of a section is what it is
/// attributed to in metrics.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    /// Merged sections (`ip_allow` / `ip_deny` stay unset: see `ip`).
    pub sections: PolicySections,
    /// Source filters of every level, least specific first; all apply.
    pub ip: Vec<IpLevel>,
    pub sources: BTreeMap<SectionKind, Vec<Contribution>>,
    /// Invalid policies attached at one of the levels: fail closed.
    pub invalid: Vec<(ObjectRef, String)>,
}

impl Effective {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.invalid.is_empty()
    }
}

/// The oldest policy of `attached` that sets `kind` in `pick`'s sections.
fn winner<'p>(
    attached: &[&'p SluicePolicy],
    kind: SectionKind,
    pick: fn(&SluicePolicy) -> &PolicySections,
) -> Option<&'p SluicePolicy> {
    attached
        .iter()
        .copied()
        .find(|p| p.invalid.is_none() && kind.is_set(pick(p)))
}

/// Merges the policies attached at each level (least specific first).
pub fn effective(levels: &[&[&SluicePolicy]]) -> Effective {
    let mut eff = Effective::default();
    for attached in levels {
        for p in attached.iter() {
            if let Some(why) = &p.invalid {
                if !eff.invalid.iter().any(|(id, _)| *id == p.id) {
                    eff.invalid.push((p.id.clone(), why.clone()));
                }
            }
        }
    }
    let defaults: fn(&SluicePolicy) -> &PolicySections = |p| &p.defaults;
    let overrides: fn(&SluicePolicy) -> &PolicySections = |p| &p.overrides;
    for attached in levels {
        for (pick, overriding) in [(defaults, false), (overrides, true)] {
            let side = |kind: SectionKind| {
                winner(attached, kind, pick).map(|p| {
                    let c = Contribution {
                        policy: p.id.clone(),
                        overriding,
                    };
                    let list = match kind {
                        SectionKind::IpAllow => pick(p).ip_allow.clone(),
                        _ => pick(p).ip_deny.clone(),
                    };
                    (c, list.unwrap_or_default())
                })
            };
            let level = IpLevel {
                allow: side(SectionKind::IpAllow),
                deny: side(SectionKind::IpDeny),
            };
            for (kind, part) in [
                (SectionKind::IpAllow, &level.allow),
                (SectionKind::IpDeny, &level.deny),
            ] {
                if let Some((c, _)) = part {
                    eff.sources.entry(kind).or_default().push(c.clone());
                }
            }
            if level.allow.is_some() || level.deny.is_some() {
                eff.ip.push(level);
            }
        }
    }
    for attached in levels {
        for kind in SectionKind::ALL {
            if matches!(kind, SectionKind::IpAllow | SectionKind::IpDeny) {
                continue;
            }
            if let Some(p) = winner(attached, kind, defaults) {
                kind.apply(&mut eff.sections, &p.defaults, true);
                eff.sources.entry(kind).or_default().push(Contribution {
                    policy: p.id.clone(),
                    overriding: false,
                });
            }
        }
    }
    for attached in levels.iter().rev() {
        for kind in SectionKind::ALL {
            if matches!(kind, SectionKind::IpAllow | SectionKind::IpDeny) {
                continue;
            }
            if let Some(p) = winner(attached, kind, overrides) {
                kind.apply(&mut eff.sections, &p.overrides, true);
                eff.sources.entry(kind).or_default().push(Contribution {
                    policy: p.id.clone(),
                    overriding: true,
                });
            }
        }
    }
    eff
}

/// Policies at `attached` (one level) that lost `kind` to an older one,
/// with the winner: for `Conflicted` status.
pub fn conflicts<'p>(
    attached: &[&'p SluicePolicy],
) -> Vec<(&'p SluicePolicy, SectionKind, &'p SluicePolicy)> {
    let mut out = Vec::new();
    let blocks: [fn(&SluicePolicy) -> &PolicySections; 2] = [|p| &p.defaults, |p| &p.overrides];
    for pick in blocks {
        for kind in SectionKind::ALL {
            let mut setters = attached
                .iter()
                .copied()
                .filter(|p| p.invalid.is_none() && kind.is_set(pick(p)));
            if let Some(first) = setters.next() {
                for loser in setters {
                    out.push((loser, kind, first));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_documents;

    fn policies(yaml: &str) -> Vec<SluicePolicy> {
        parse_documents([(Path::new("p.yaml"), yaml)])
            .unwrap()
            .policies
    }

    const DOCS: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: gw-default, namespace: ns, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  targetRefs: [{kind: Gateway, name: gw}]
  limits: {maxRequestBodyBytes: 100}
  ipDeny: [192.0.2.0/24]
  authorization:
    defaultAction: Deny
    rules:
    - {name: ops, action: Allow, methods: [GET]}
    - {name: shared, action: Deny, methods: [DELETE]}
  transform:
    request: {set: [{name: x-a, value: gw}, {name: x-b, value: gw}]}
  override:
    ipAllow: [10.0.0.0/8]
    transform:
      response: {set: [{name: x-served-by, value: platform}]}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: route, namespace: ns, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  targetRefs: [{kind: HTTPRoute, name: r}]
  limits: {maxRequestBodyBytes: 5000}
  ipAllow: [0.0.0.0/0]
  authorization:
    defaultAction: Allow
    rules:
    - {name: shared, action: Allow, methods: [DELETE]}
    - {action: Deny, methods: [PUT]}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: route-newer, namespace: ns, creationTimestamp: "2024-03-01T00:00:00Z"}
spec:
  targetRefs: [{kind: HTTPRoute, name: r}]
  limits: {maxRequestBodyBytes: 1}
  cors: {allowOrigins: ["https://a.example.com"]}
  transform:
    request: {set: [{name: x-a, value: route}], remove: [x-c]}
"#;

    #[test]
    fn defaults_more_specific_wins_overrides_least_specific_wins_lists_merge_by_name() {
        let ps = policies(DOCS);
        let by = |n: &str| ps.iter().find(|p| p.id.name == n).unwrap();
        let gw = [by("gw-default")];
        let route = [by("route"), by("route-newer")];
        let eff = effective(&[&gw, &[], &route]);
        // Default: the route's limits win over the Gateway's; at the route
        // level the older policy wins the conflict.
        assert_eq!(
            eff.sections.limits.unwrap().max_request_body_bytes,
            Some(5000)
        );
        // Source filters of every level apply together: the Gateway's
        // default deny, its override allow and the route's allow.
        assert_eq!(eff.ip.len(), 3, "{:?}", eff.ip);
        assert!(eff.ip[0].deny.is_some() && eff.ip[0].allow.is_none());
        let (c, allow) = eff.ip[1].allow.as_ref().unwrap();
        assert!(c.overriding && c.policy.name == "gw-default");
        assert_eq!(allow, &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(eff.ip[2].allow.as_ref().unwrap().0.policy.name, "route");
        assert!(eff.sections.ip_allow.is_none() && eff.sections.ip_deny.is_none());
        assert!(
            eff.sections.cors.is_some(),
            "newer route policy's cors: no conflict"
        );
        // Rules merged by name: the route's first (more specific default),
        // `shared` replaced, `ops` kept; unnamed rules never replaced.
        let a = eff.sections.authorization.unwrap();
        assert!(a.default_allow);
        let names: Vec<_> = a.rules.iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, [Some("shared".into()), None, Some("ops".into())]);
        assert!(a.rules[0].allow);

        // Transforms merge by header name: the route's x-a replaces the
        // Gateway's, x-b is inherited, the override's response header stays.
        let t = eff.sections.transform.unwrap();
        let set: Vec<_> = t
            .request
            .set
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        assert_eq!(set.len(), 2, "{set:?}");
        let lit = |v: &str| crate::policy::template::Template::parse(v).unwrap();
        assert_eq!(set[0], ("x-a", lit("route")));
        assert_eq!(set[1], ("x-b", lit("gw")));
        assert_eq!(t.request.remove.len(), 1);
        assert_eq!(t.response.set.len(), 1);

        let c = conflicts(&route);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].0.id.name.as_str(), c[0].1, c[0].2.id.name.as_str()),
            ("route-newer", SectionKind::Limits, "route")
        );
    }

    #[test]
    fn an_invalid_policy_is_reported_for_fail_closed() {
        let mut ps = policies(DOCS);
        ps[0].invalid = Some("spec.jwt: broken".into());
        let gw = [&ps[0]];
        let eff = effective(&[&gw]);
        assert_eq!(eff.invalid.len(), 1);
        assert!(
            eff.sections.limits.is_none(),
            "an invalid policy contributes nothing"
        );
    }
}

#[cfg(test)]
mod rate_limit_tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_documents;

    fn policies(yaml: &str) -> Vec<SluicePolicy> {
        parse_documents([(Path::new("p.yaml"), yaml)])
            .unwrap_or_else(|e| panic!("{e}"))
            .policies
    }

    #[test]
    fn rate_limit_rules_merge_by_name_and_the_winner_comes_first() {
        let ps = policies(
            r#"
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: platform, namespace: ns}
spec:
  targetRefs: [{kind: Gateway, name: gw}]
  rateLimit:
    headers: Legacy
    local:
    - {name: per-source, requests: 100, unit: Second, key: {sourceAddress: {prefixLength: 24}}}
    - {name: total, requests: 1000, unit: Second, shared: true}
    quotas:
    - {name: monthly, requests: 10, period: Month, key: {apiKeyClient: true}}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: team, namespace: ns}
spec:
  targetRefs: [{kind: HTTPRoute, name: r}]
  rateLimit:
    local:
    - {name: per-source, requests: 5, unit: Minute, burst: 2, shadow: true}
    cluster:
    - {name: total, requests: 50, unit: Second, failureMode: Closed}
"#,
        );
        let gw = [&ps[0]];
        let route = [&ps[1]];
        let eff = effective(&[&gw, &route]);
        let r = eff.sections.rate_limit.unwrap();
        // The route's `per-source` replaces the Gateway's; the route's
        // cluster `total` replaces the Gateway's local one of that name;
        // the quota is inherited; headers too.
        assert_eq!(r.local.len(), 1);
        assert_eq!(r.local[0].requests, 5);
        assert_eq!(r.local[0].burst, 2);
        assert!(r.local[0].shadow);
        assert_eq!(r.cluster.len(), 1);
        assert_eq!(
            r.cluster[0].failure_mode,
            crate::config::policy::FailureMode::Closed
        );
        assert_eq!(r.quotas.len(), 1);
        assert_eq!(r.headers, Some(crate::config::policy::HeaderStyle::Legacy));
        let names: Vec<&str> = r.names().collect();
        assert_eq!(names, ["per-source", "total", "monthly"]);
    }

    #[test]
    fn rate_limit_conversion_reports_fields() {
        let err = parse_documents([(
            Path::new("p.yaml"),
            r#"
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: bad, namespace: ns}
spec:
  targetRefs: [{kind: Gateway, name: gw}]
  rateLimit:
    headers: Fancy
    local:
    - {name: a, requests: 0, unit: Fortnight}
    - name: a
      requests: 1
      unit: Second
      key: {sourceAddress: {prefixLength: 33}, header: "bad header"}
      penalty: {after: 0, within: 0s, block: 48h, prefix: /2}
    cluster:
    - {name: "b c", requests: 1, unit: Second, failureMode: Maybe}
    quotas:
    - {name: q, requests: 1, period: Year, key: {apiKeyClient: true, claim: sub}}
"#,
        )])
        .unwrap_err()
        .to_string();
        for want in [
            "spec.rateLimit.headers: must be IETF, Legacy or Off",
            "spec.rateLimit.local[0].requests: must be at least 1",
            "spec.rateLimit.local[0].unit: must be Second, Minute, Hour or Day",
            "spec.rateLimit.local[1].name: duplicate rule name \"a\"",
            "spec.rateLimit.local[1].key.sourceAddress.prefixLength: must be 0-32",
            "spec.rateLimit.local[1].key.header: invalid header name",
            "spec.rateLimit.local[1].penalty.after: must be at least 1",
            "spec.rateLimit.local[1].penalty.within: must be more than 0",
            "spec.rateLimit.local[1].penalty.block: must be more than 0 and at most 24h",
            "spec.rateLimit.local[1].penalty.prefix: must be a prefix length /8 to /32",
            "spec.rateLimit.cluster[0].name: \"b c\": use letters",
            "spec.rateLimit.cluster[0].failureMode: must be Open or Closed",
            "spec.rateLimit.quotas[0].period: must be Day or Month",
            "spec.rateLimit.quotas[0].key: set exactly one of apiKeyClient: true or claim",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }
}
