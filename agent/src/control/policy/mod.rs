//! SluicePolicy attachment in the compile: which policies apply to each
//! route rule through each listener ([`attach`]), how they merge
//! ([`merge`]), what they compile to ([`sections`]), which whole-Gateway
//! source filters go to XDP, and the policy status ([`status`]).
pub mod attach;
pub mod merge;
#[cfg(test)]
mod resilience_tests;
mod sections;
mod status;

use std::{collections::HashMap, sync::Arc};

use ipnet::IpNet;

use self::{
    attach::{Level, TargetIndex},
    merge::{effective, Contribution, Effective, SectionKind},
    sections::SectionBuilder,
};
use super::{backends::BackendResolver, refgrant::Kind};
use crate::{
    config::{Config, Filter, Gateway, HttpRoute, Listener, ObjectRef, SluicePolicy},
    policy::{
        connection::ConnectionPolicy, cors::CorsPolicy, ext_auth::ExtAuth, metrics::PolicyMetrics,
        state::Compile, Authenticator, Broken, PolicyId, Reason, RoutePolicy,
    },
};

pub use status::jwks_conditions;
pub(super) use status::policy_status;

/// What the compile needs from the agent for policies: the metric
/// families sections count in, and the state that outlives reloads.
pub struct PolicyEnv<'a> {
    pub metrics: &'a PolicyMetrics,
    pub state: &'a Compile<'a>,
}

type EffKey = (Vec<(SectionKind, Vec<Contribution>)>, Vec<ObjectRef>);

/// Compiled policies by what they were merged from, kept from one compile
/// for the next (see [`Policies::reuse`]).
#[derive(Default)]
pub(super) struct PolicyMemo(HashMap<EffKey, Arc<RoutePolicy>>);

/// The policy of everything without one: one value for the whole process,
/// so that routes compiled at different times still share it.
fn empty_policy() -> Arc<RoutePolicy> {
    static EMPTY: std::sync::LazyLock<Arc<RoutePolicy>> =
        std::sync::LazyLock::new(|| Arc::new(RoutePolicy::default()));
    EMPTY.clone()
}

/// The policies of one compile.
pub(super) struct Policies<'a> {
    index: TargetIndex<'a, SluicePolicy>,
    builder: SectionBuilder<'a>,
    memo: HashMap<EffKey, Arc<RoutePolicy>>,
    /// Policies with rate limits bound to a Gateway and route: (policy
    /// pointer, Gateway, route) → bound copy.
    bound: HashMap<(usize, ObjectRef, Option<ObjectRef>), Arc<RoutePolicy>>,
    /// The unbound policies of `bound`'s keys, alive for this compile.
    keep: Vec<Arc<RoutePolicy>>,
    /// What the previous compile built from the same policies, Secrets and
    /// ConfigMaps: a rebuilt equal policy is replaced by it, so routes
    /// compiled at different times share one value.
    previous: HashMap<EffKey, Arc<RoutePolicy>>,
    empty: Arc<RoutePolicy>,
}

impl<'a> Policies<'a> {
    pub(super) fn new(
        config: &'a Config,
        resolver: &'a BackendResolver<'a>,
        env: &'a PolicyEnv<'a>,
    ) -> Self {
        Self {
            index: TargetIndex::new(&config.policies),
            builder: SectionBuilder::new(config, resolver, env.metrics, env.state),
            memo: HashMap::new(),
            bound: HashMap::new(),
            keep: Vec::new(),
            previous: HashMap::new(),
            empty: empty_policy(),
        }
    }

    /// Uses `memo`, built by the previous compile from the same policies,
    /// Secrets and ConfigMaps: every policy is still built (its errors,
    /// warnings and state are this compile's), then the previous equal value
    /// is kept instead of the new one.
    pub(super) fn reuse(&mut self, memo: PolicyMemo) {
        self.previous = memo.0;
    }

    /// What this compile built, for [`Policies::reuse`] by the next.
    pub(super) fn into_memo(self) -> PolicyMemo {
        PolicyMemo(self.memo)
    }

    fn merged(&self, levels: &[Level]) -> Effective {
        let attached: Vec<&[&SluicePolicy]> = levels.iter().map(|l| self.index.at(l)).collect();
        effective(&attached)
    }

    fn runtime(&mut self, eff: &Effective) -> Arc<RoutePolicy> {
        if eff.is_empty() {
            return self.empty.clone();
        }
        let key: EffKey = (
            eff.sources.iter().map(|(k, v)| (*k, v.clone())).collect(),
            eff.invalid.iter().map(|(id, _)| id.clone()).collect(),
        );
        if let Some(p) = self.memo.get(&key) {
            return p.clone();
        }
        let built = self.builder.route_policy(eff);
        let p = self
            .previous
            .remove(&key)
            .unwrap_or_else(|| Arc::new(built));
        self.memo.insert(key, p.clone());
        p
    }

    /// The policy of requests through `listener` that match no route.
    pub(super) fn for_listener(
        &mut self,
        gateway: &Gateway,
        listener: &Listener,
    ) -> Arc<RoutePolicy> {
        if self.index.is_empty() {
            return self.empty.clone();
        }
        let eff = self.merged(&Level::chain(gateway, listener, None));
        let p = self.runtime(&eff);
        self.bind(p, gateway, None)
    }

    /// `p` with its rate limits bound to `gateway` (penalties) and `route`
    /// (buckets are per route unless a rule is shared); `p` itself when it
    /// has none.
    fn bind(
        &mut self,
        p: Arc<RoutePolicy>,
        gateway: &Gateway,
        route: Option<&HttpRoute>,
    ) -> Arc<RoutePolicy> {
        let Some(rl) = &p.rate_limit else {
            return p;
        };
        let key = (
            Arc::as_ptr(&p) as usize,
            gateway.id.clone(),
            route.map(|r| (*r.id).clone()),
        );
        if let Some(b) = self.bound.get(&key) {
            return b.clone();
        }
        let mut copy = (*p).clone();
        copy.rate_limit = Some(Arc::new(rl.bind(
            &gateway.id.to_string(),
            route.map(|r| r.id.to_string()).as_deref(),
        )));
        let copy = Arc::new(copy);
        // Keeps `p` alive with the memo, so its address is not reused.
        self.bound.insert(key, copy.clone());
        self.memo_keepalive(p);
        copy
    }

    fn memo_keepalive(&mut self, p: Arc<RoutePolicy>) {
        self.keep.push(p);
    }

    /// The effective policy of rule `rule` of `route` through `listener`,
    /// including the rule's own CORS and ExternalAuth filters.
    pub(super) fn for_rule(
        &mut self,
        gateway: &Gateway,
        listener: &Listener,
        route: &HttpRoute,
        rule: usize,
    ) -> Arc<RoutePolicy> {
        let r = &route.rules[rule];
        let base = if self.index.is_empty() {
            self.empty.clone()
        } else {
            let mut levels = Level::chain(gateway, listener, Some((route, r.name.as_deref())));
            if let Some(d) = &route.delegation {
                // Delegated: the routes (and rules) above come between the
                // listener and the route itself, so their sections are the
                // defaults the route's own override.
                let above = Level::delegation(d.ancestors(rule));
                levels.splice(2..2, above);
            }
            let eff = self.merged(&levels);
            let overridden_cors = eff
                .sources
                .get(&SectionKind::Cors)
                .is_some_and(|s| s.iter().any(|c| c.overriding));
            let p = self.runtime(&eff);
            if overridden_cors {
                let p = self.with_filters(p, route, rule, false);
                return self.bind(p, gateway, Some(route));
            }
            p
        };
        let p = self.with_filters(base, route, rule, true);
        self.bind(p, gateway, Some(route))
    }

    /// Adds the rule's CORS filter (the most specific default) and
    /// ExternalAuth filter (an extra authentication) to `base`.
    fn with_filters(
        &mut self,
        base: Arc<RoutePolicy>,
        route: &HttpRoute,
        rule: usize,
        cors_applies: bool,
    ) -> Arc<RoutePolicy> {
        let filters = &route.rules[rule].filters;
        let cors = filters.iter().find_map(|f| match f {
            Filter::Cors(c) if cors_applies => Some(c),
            _ => None,
        });
        let ext = filters.iter().find_map(|f| match f {
            Filter::ExternalAuth(e) => Some(e),
            _ => None,
        });
        if cors.is_none() && ext.is_none() {
            return base;
        }
        let mut p = (*base).clone();
        if let Some(c) = cors {
            p.cors = Some(Arc::new(CorsPolicy {
                cors: (**c).clone(),
                meta: None,
            }));
        }
        if let Some(e) = ext {
            let id = PolicyId::new("HTTPRoute", &route.id.namespace, &route.id.name);
            let meta = Arc::new(self.builder_metrics().section(&id, "externalAuth"));
            match self
                .builder
                .ext_auth_config(Kind::HTTP_ROUTE, &route.id.namespace, e)
            {
                Ok(config) => p.authn.push(Authenticator::Ext(Arc::new(ExtAuth::compile(
                    config,
                    meta,
                    self.builder.state(),
                )))),
                Err(why) => {
                    p.broken.get_or_insert(Broken {
                        reason: Reason::PolicyInvalid,
                        message: format!("HTTPRoute {} ExternalAuth filter: {why}", route.id),
                        section: meta,
                    });
                }
            }
        }
        Arc::new(p)
    }

    fn builder_metrics(&self) -> &PolicyMetrics {
        self.builder.metrics()
    }

    /// Source CIDRs of whole-Gateway policies for XDP. Every level's
    /// source filter applies, so what a Gateway-level filter refuses is
    /// refused for every route of the Gateway and can be dropped at the NIC:
    /// all denies; one allow list (a source outside it fails at L7 too, so
    /// XDP never drops what L7 would accept).
    pub(super) fn xdp_sources(&self, gateway: &Gateway) -> (Vec<IpNet>, Vec<IpNet>) {
        let attached = self.index.at(&Level::Gateway(gateway.id.clone()));
        let eff = effective(&[attached]);
        if !eff.invalid.is_empty() {
            return (vec![], vec![]);
        }
        let allow = eff
            .ip
            .iter()
            .find_map(|l| l.allow.as_ref().map(|(_, v)| v.clone()))
            .unwrap_or_default();
        let deny = eff
            .ip
            .iter()
            .filter_map(|l| l.deny.as_ref())
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        (allow, deny)
    }

    /// The connection settings of a whole Gateway (oldest policy wins a
    /// conflict, an override wins over a default); `None` when no valid
    /// policy on the Gateway sets them, so the agent's defaults apply.
    pub(super) fn connection(&self, gateway: &Gateway) -> Option<Arc<ConnectionPolicy>> {
        let attached = self.index.at(&Level::Gateway(gateway.id.clone()));
        let eff = effective(&[attached]);
        let c = eff.sections.connection?;
        Some(Arc::new(ConnectionPolicy {
            header_timeout: c.header_timeout,
            body_idle_timeout: c.body_idle_timeout,
            upstream_response_timeout: c.upstream_response_timeout,
            max_request_head_bytes: c.max_request_head_bytes,
            max_request_headers: c.max_request_headers,
            max_uri_bytes: c.max_uri_bytes,
            h2_max_concurrent_streams: c.h2_max_concurrent_streams,
            max_connections_per_source: c.max_connections_per_source,
            max_requests_in_flight: c.max_requests_in_flight,
            merge_slashes: c.merge_slashes,
            escaped_slashes: c.escaped_slashes,
        }))
    }

    /// Problems found while building sections, per policy.
    pub(super) fn errors(&self) -> &std::collections::BTreeMap<ObjectRef, Vec<String>> {
        &self.builder.errors
    }

    /// Warnings for `/config` and the logs.
    pub(super) fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, list) in self.builder.errors.iter() {
            for e in list {
                out.push(format!(
                    "SluicePolicy {id}: {e}; its targets answer 500 (fail closed)"
                ));
            }
        }
        for (id, list) in self.builder.warnings.iter() {
            for w in list {
                out.push(format!("SluicePolicy {id}: {w}"));
            }
        }
        out
    }

    /// The compile's view of the policy state store (backend state).
    pub(super) fn state(&self) -> &'a Compile<'a> {
        self.builder.state()
    }

    pub(super) fn index(&self) -> &TargetIndex<'a, SluicePolicy> {
        &self.index
    }
}
