//! HTTPRoutes → route tables of the served listeners, attached-route counts
//! and route status, one route at a time, so that a compile can redo only
//! the routes whose inputs changed.
//!
//! Each route compiles to a [`RouteUnit`] (kept by the [`super::Compiler`]
//! between compiles) plus its table entries and status. The next compile
//! reuses a unit when the route is the same `Arc` (the sources keep unchanged
//! objects by `Arc`), none of the Services it references changed, and nothing
//! broad changed ([`Reuse::check`]: Gateways, classes, Namespaces,
//! ReferenceGrants, BackendTLSPolicies, SluicePolicies and their
//! Secrets/ConfigMaps, the Services SluicePolicies call). Routes that carry
//! per-route policy state (a SluicePolicy targets them, or an ExternalAuth
//! filter) are compiled every time, which keeps that state and the policy
//! errors exactly as a full compile makes them. The tables and the status
//! list are then patched instead of rebuilt ([`RouteTable::update`],
//! [`RouteStatuses::patch`]).
//!
//! Finding what changed must not touch every route: at 50,000 routes each
//! pass over the routes' own memory costs milliseconds in cache misses. The
//! new route list is walked against the previous one, pointer by pointer;
//! only where they differ are routes looked up. A property test checks that
//! incremental and full compiles agree.
use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    net::SocketAddr,
    sync::Arc,
};

use super::{
    attach::{effective_hostnames, namespace_allowed, parent_selects, NamespaceLabels},
    backend_tls::{BackendTls, BuiltTls},
    backends::BackendResolver,
    kind_conflict::KindConflicts,
    policy::{Policies, PolicyMemo},
    route_status::{RouteOutcome, RouteStatuses},
};
use crate::{
    config::{
        BackendTlsPolicy, Config, ConfigMap, EndpointSlice, Filter, Gateway, GatewayClass,
        Hostname, HttpRoute, Namespace, ObjectRef, ReferenceGrant, RouteKind, Secret, Service,
        SluicePolicy,
    },
    snapshot::{created_key, BackendTarget, RouteEntry, RouteTable, RuleAction},
};

/// A listener that is served, so has a route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    /// Index into the Gateways of our classes.
    pub gateway: usize,
    /// Index into that Gateway's listeners.
    pub listener: usize,
}

/// What the last compile did, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Only changed routes were compiled.
    pub incremental: bool,
    /// Why everything was compiled (`None` when incremental).
    pub full_reason: Option<&'static str>,
    /// Routes in the config.
    pub routes: usize,
    /// Routes compiled by this compile (all of them unless incremental).
    pub compiled: usize,
    /// Route objects that left since the previous compile (a changed route
    /// counts its old version; incremental only).
    pub removed: usize,
}

/// What a compile keeps of one route. Its entries, attachments and status
/// are not kept: they are computed again from the route when it leaves
/// (the inputs they depend on are the same, or the compile is a full one).
struct RouteUnit {
    /// Keeps the route alive, so its address identifies it while cached.
    route: Arc<HttpRoute>,
    /// Backend TLS built for it: (Gateway, BackendTLSPolicy index).
    tls: Box<[(u32, u32)]>,
    /// The compile that last found the route by lookup.
    seen: u64,
}

/// The inputs broad enough that any change to them recompiles every route.
#[derive(Clone, PartialEq)]
struct Context {
    gateway_classes: Vec<GatewayClass>,
    gateways: Vec<Gateway>,
    namespaces: Vec<Namespace>,
    reference_grants: Vec<ReferenceGrant>,
    backend_tls_policies: Vec<BackendTlsPolicy>,
    policies: Vec<SluicePolicy>,
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
}

impl Context {
    fn of(c: &Config) -> Self {
        Context {
            gateway_classes: c.gateway_classes.clone(),
            gateways: c.gateways.clone(),
            namespaces: c.namespaces.clone(),
            reference_grants: c.reference_grants.clone(),
            backend_tls_policies: c.backend_tls_policies.clone(),
            policies: c.policies.clone(),
            secrets: c.secrets.clone(),
            config_maps: c.config_maps.clone(),
        }
    }

    fn matches(&self, c: &Config) -> bool {
        self.gateway_classes == c.gateway_classes
            && self.gateways == c.gateways
            && self.namespaces == c.namespaces
            && self.reference_grants == c.reference_grants
            && self.backend_tls_policies == c.backend_tls_policies
            && self.policies == c.policies
            && self.secrets == c.secrets
            && self.config_maps == c.config_maps
    }
}

/// A Service as routes see it: its ports and its EndpointSlices.
#[derive(Clone, PartialEq)]
struct ServiceState {
    service: Option<Service>,
    slices: Vec<EndpointSlice>,
}

type ServiceStates<'a> = HashMap<&'a ObjectRef, (Option<&'a Service>, Vec<&'a EndpointSlice>)>;

fn service_states(config: &Config) -> ServiceStates<'_> {
    let mut out: ServiceStates<'_> = HashMap::new();
    for s in &config.services {
        out.entry(&s.id).or_default().0.get_or_insert(s);
    }
    for s in &config.endpoint_slices {
        out.entry(&s.service).or_default().1.push(s);
    }
    out
}

fn owned_states(config: &Config) -> HashMap<ObjectRef, ServiceState> {
    service_states(config)
        .into_iter()
        .map(|(id, (service, slices))| {
            (
                id.clone(),
                ServiceState {
                    service: service.cloned(),
                    slices: slices.into_iter().cloned().collect(),
                },
            )
        })
        .collect()
}

/// What a compile keeps for the next one.
pub(super) struct Cache {
    context: Context,
    services: HashMap<ObjectRef, ServiceState>,
    /// Gateway id and listener name of each slot.
    slots: Vec<(ObjectRef, String)>,
    units: hashbrown::HashMap<usize, RouteUnit>,
    /// The addresses of the routes, in config order.
    order: Vec<usize>,
    /// Routes compiled every time (see [`RouteCtx::volatile`]).
    volatile: Vec<usize>,
    /// GRPCRoutes in the config.
    grpc_routes: usize,
    /// GRPCRoute/HTTPRoute conflicts the routes were compiled with.
    conflicts: KindConflicts,
    /// Routes per hash of their namespace/name (a collision only makes an
    /// incremental compile fall back to a full one).
    id_counts: hashbrown::HashMap<u64, u32>,
    /// Two routes share a namespace/name (or one route object is listed
    /// twice): precedence between them follows config order, which only a
    /// full compile sees.
    duplicates: bool,
    tables: Vec<RouteTable>,
    attached: Vec<Vec<u32>>,
    route_status: RouteStatuses,
    policy_memo: PolicyMemo,
    backend_tls: BuiltTls,
    endpoints: EndpointMemo,
    stamp: u64,
}

/// Resolved endpoints by Service and port, shared by every backend of them.
/// Endpoints by Service, port and whether it is the UDP port of that number.
pub(super) type EndpointMemo = HashMap<(ObjectRef, u16, bool), Arc<[SocketAddr]>>;

/// What of the previous compile this one may use, decided before it starts.
pub(super) struct Reuse {
    cache: Option<Box<Cache>>,
    /// The broad inputs did not change.
    context_same: bool,
    /// Services (with their slices) added, removed or changed.
    changed_services: HashSet<ObjectRef>,
    /// Why a full compile, when it is one already known.
    full_reason: Option<&'static str>,
    endpoints: EndpointMemo,
}

impl Reuse {
    /// Compares `config` with what `cache` was compiled from.
    pub(super) fn check(cache: Option<Box<Cache>>, config: &Config) -> Reuse {
        let Some(mut cache) = cache else {
            return Reuse {
                cache: None,
                context_same: false,
                changed_services: HashSet::new(),
                full_reason: Some("first compile"),
                endpoints: EndpointMemo::new(),
            };
        };
        let endpoints = std::mem::take(&mut cache.endpoints);
        let now = service_states(config);
        let mut changed = HashSet::new();
        cache.services.retain(|id, old| match now.get(id) {
            Some((service, slices))
                if old.service.as_ref() == *service
                    && old.slices.len() == slices.len()
                    && old.slices.iter().zip(slices).all(|(a, b)| a == *b) =>
            {
                true
            }
            _ => {
                changed.insert(id.clone());
                false
            }
        });
        for (id, (service, slices)) in now {
            if !cache.services.contains_key(id) {
                changed.insert(id.clone());
                cache.services.insert(
                    id.clone(),
                    ServiceState {
                        service: service.cloned(),
                        slices: slices.into_iter().cloned().collect(),
                    },
                );
            }
        }
        let context_same = cache.context.matches(config);
        // SluicePolicies that call a Service (extAuth) depend on it broadly.
        let policy_service_changed = config.policies.iter().any(|p| {
            [&p.defaults, &p.overrides]
                .iter()
                .filter_map(|s| s.ext_auth.as_ref())
                .any(|e| changed.contains(&e.service))
        });
        let full_reason = if !context_same {
            Some("Gateways, Namespaces, grants or policies changed")
        } else if policy_service_changed {
            Some("a Service a SluicePolicy calls changed")
        } else if cache.duplicates {
            Some("two HTTPRoutes share a namespace/name")
        } else {
            None
        };
        Reuse {
            cache: Some(cache),
            context_same,
            changed_services: changed,
            full_reason,
            endpoints,
        }
    }

    /// Endpoints resolved before: equal lists are shared, not copied.
    pub(super) fn endpoints(&mut self) -> EndpointMemo {
        std::mem::take(&mut self.endpoints)
    }

    /// Compiled policies of the previous compile; only valid for the same
    /// policies, Secrets and ConfigMaps.
    pub(super) fn policy_memo(&mut self) -> PolicyMemo {
        match (&mut self.cache, self.context_same) {
            (Some(c), true) => std::mem::take(&mut c.policy_memo),
            _ => PolicyMemo::default(),
        }
    }

    /// Backend TLS built by the previous compile, under the same condition.
    pub(super) fn backend_tls(&mut self) -> BuiltTls {
        match (&mut self.cache, self.context_same) {
            (Some(c), true) => std::mem::take(&mut c.backend_tls),
            _ => BuiltTls::default(),
        }
    }
}

/// Everything compiling one route needs, for one compile.
pub(super) struct RouteCtx<'c, 'a> {
    config: &'a Config,
    ours: &'c [&'a Gateway],
    ours_by_id: HashMap<&'a ObjectRef, usize>,
    slots: &'c [Slot],
    slot_of: HashMap<(usize, usize), usize>,
    resolver: &'c BackendResolver<'a>,
    namespaces: &'c NamespaceLabels<'a>,
    backend_tls: &'c BackendTls<'a>,
    controller: &'static str,
    /// HTTPRoutes a SluicePolicy targets (the route or one of its rules).
    targeted: HashSet<ObjectRef>,
    /// Gateways a SluicePolicy with resilience sections targets: their
    /// routes' backends hold per-backend state that every compile must
    /// find again in the policy state store, so those routes are compiled
    /// every time.
    resilient_gateways: HashSet<ObjectRef>,
    /// Set once per compile, before any route is compiled
    /// ([`RouteCtx::init_conflicts`]).
    conflicts: std::cell::OnceCell<KindConflicts>,
}

impl<'c, 'a> RouteCtx<'c, 'a> {
    pub(super) fn new(
        config: &'a Config,
        ours: &'c [&'a Gateway],
        slots: &'c [Slot],
        resolver: &'c BackendResolver<'a>,
        namespaces: &'c NamespaceLabels<'a>,
        backend_tls: &'c BackendTls<'a>,
        controller: &'static str,
    ) -> Self {
        let targeted = config
            .policies
            .iter()
            .flat_map(|p| {
                p.targets
                    .iter()
                    .filter(|t| t.group == super::refgrant::GATEWAY_GROUP && t.kind == "HTTPRoute")
                    .map(|t| ObjectRef::new(&p.id.namespace, &t.name))
            })
            .collect();
        let resilient_gateways = config
            .policies
            .iter()
            .filter(|p| {
                [&p.defaults, &p.overrides].iter().any(|s| {
                    s.load_balancer.is_some()
                        || s.circuit_breaker.is_some()
                        || s.outlier_detection.is_some()
                        || s.health_check.is_some()
                })
            })
            .flat_map(|p| {
                p.targets
                    .iter()
                    .filter(|t| t.group == super::refgrant::GATEWAY_GROUP && t.kind == "Gateway")
                    .map(|t| ObjectRef::new(&p.id.namespace, &t.name))
            })
            .collect();
        RouteCtx {
            config,
            ours,
            ours_by_id: ours.iter().enumerate().map(|(i, g)| (&g.id, i)).collect(),
            slots,
            slot_of: slots
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.gateway, s.listener), i))
                .collect(),
            resolver,
            namespaces,
            backend_tls,
            controller,
            targeted,
            resilient_gateways,
            conflicts: std::cell::OnceCell::new(),
        }
    }

    /// Finds the GRPCRoute/HTTPRoute conflicts, given how many GRPCRoutes
    /// the config has: without any there are none, and the (whole-config)
    /// search is skipped.
    fn init_conflicts(&self, grpc_routes: usize) -> &KindConflicts {
        self.conflicts.get_or_init(|| {
            if grpc_routes == 0 {
                KindConflicts::default()
            } else {
                KindConflicts::compute(&self.config.routes, self.ours, self.namespaces)
            }
        })
    }

    fn conflicts(&self) -> &KindConflicts {
        self.conflicts
            .get()
            .expect("conflicts are found before routes are compiled")
    }

    /// Whether the route holds per-route policy state and so is compiled
    /// every time.
    fn volatile(&self, route: &HttpRoute) -> bool {
        self.targeted.contains(&route.id)
            || (!self.resilient_gateways.is_empty()
                && route
                    .parents
                    .iter()
                    .any(|p| self.resilient_gateways.contains(&p.gateway)))
            || route.rules.iter().any(|r| {
                r.filters
                    .iter()
                    .any(|f| matches!(f, Filter::ExternalAuth(_)))
            })
    }

    /// The listeners `route` attaches to, as (Gateway, listener) indexes,
    /// with its effective hostnames there. The same rules as the status's
    /// `Accepted` (and `attachedRoutes`).
    fn attachments(&self, route: &HttpRoute) -> Vec<(usize, usize, Vec<Option<Hostname>>)> {
        let mut gateways: Vec<usize> = route
            .parents
            .iter()
            .filter_map(|p| self.ours_by_id.get(&p.gateway).copied())
            .collect();
        gateways.sort_unstable();
        gateways.dedup();
        let mut out = Vec::new();
        for gi in gateways {
            let gateway = self.ours[gi];
            for (li, listener) in gateway.listeners.iter().enumerate() {
                let selected = route
                    .parents
                    .iter()
                    .any(|p| parent_selects(p, gateway, listener));
                if !selected
                    || !namespace_allowed(listener, gateway, route, self.namespaces)
                    || self
                        .conflicts()
                        .loses_to(route, gateway, &listener.name)
                        .is_some()
                {
                    continue;
                }
                let hosts = effective_hostnames(listener.hostname.as_ref(), &route.hostnames);
                if !hosts.is_empty() {
                    out.push((gi, li, hosts));
                }
            }
        }
        out
    }

    fn slot_ids(&self) -> Vec<(ObjectRef, String)> {
        self.slots
            .iter()
            .map(|s| {
                let g = self.ours[s.gateway];
                (g.id.clone(), g.listeners[s.listener].name.clone())
            })
            .collect()
    }
}

/// Whether `route` references one of `services` (backends, mirrors).
fn references(route: &HttpRoute, services: &HashSet<ObjectRef>) -> bool {
    !services.is_empty()
        && route.rules.iter().any(|r| {
            r.backends.iter().any(|b| services.contains(&b.service))
                || r.filters.iter().any(|f| match f {
                    Filter::Mirror(m) => services.contains(&m.service),
                    _ => false,
                })
        })
}

fn id_hash(id: &ObjectRef) -> u64 {
    // Fixed keys: the counts are compared across compiles.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

fn key(route: &Arc<HttpRoute>) -> usize {
    Arc::as_ptr(route) as usize
}

/// One route's contribution to a compile.
struct Compiled {
    unit: RouteUnit,
    /// (slot, hostname, entry).
    entries: Vec<(u32, Option<Hostname>, RouteEntry)>,
    /// (Gateway, listener) it counts as attached to.
    attached: Vec<(usize, usize)>,
    status: Option<RouteOutcome>,
    volatile: bool,
}

/// Compiles one route.
fn compile_route(
    ctx: &RouteCtx<'_, '_>,
    policies: &mut Policies<'_>,
    route: &Arc<HttpRoute>,
    stamp: u64,
) -> Compiled {
    let id = route.id.clone();
    let mut name: Option<Arc<str>> = None;
    let created = created_key(route.created);
    let (mut attached, mut tls, mut entries) = (vec![], vec![], vec![]);
    for (gi, li, hosts) in ctx.attachments(route) {
        attached.push((gi, li));
        let Some(&slot) = ctx.slot_of.get(&(gi, li)) else {
            continue;
        };
        let (gateway, listener) = (ctx.ours[gi], &ctx.ours[gi].listeners[li]);
        let route_name = name
            .get_or_insert_with(|| Arc::from(route.id.to_string()))
            .clone();
        for (ri, rule) in route.rules.iter().enumerate() {
            let mut backends = ctx.resolver.group(route, rule);
            for b in &mut backends.backends {
                if let Some(p) = ctx.backend_tls.apply(gateway, b) {
                    tls.push((gi as u32, p as u32));
                }
            }
            let mut mirrors = ctx.resolver.mirrors(route, rule);
            for m in &mut mirrors {
                if let Some(p) = ctx.backend_tls.apply(gateway, &mut m.backend) {
                    tls.push((gi as u32, p as u32));
                }
            }
            let policy = policies.for_rule(gateway, listener, route, ri);
            if let Some(up) = &policy.upstream {
                for b in &mut backends.backends {
                    if let BackendTarget::Endpoints(e) = &b.target {
                        let name = format!("{}:{}", b.service, b.port);
                        b.resilience = Some(Arc::new(up.for_backend(&name, e, policies.state())));
                    }
                }
            }
            let action = Arc::new(RuleAction {
                filters: rule.filters.clone(),
                backends,
                timeouts: rule.timeouts,
                retry: rule.retry.clone(),
                mirrors: mirrors.into_boxed_slice(),
                policy,
                metrics: Default::default(),
            });
            for (mi, m) in rule.matches.iter().enumerate() {
                for h in &hosts {
                    entries.push((
                        slot as u32,
                        h.clone(),
                        RouteEntry {
                            route: id.clone(),
                            route_name: route_name.clone(),
                            created,
                            rule: ri as u32,
                            match_index: mi as u32,
                            matcher: m.clone(),
                            action: action.clone(),
                        },
                    ));
                }
            }
        }
    }
    tls.sort_unstable();
    tls.dedup();
    Compiled {
        unit: RouteUnit {
            route: route.clone(),
            tls: tls.into(),
            seen: stamp,
        },
        entries,
        attached,
        status: super::status::route_outcome(
            route,
            ctx.ours,
            ctx.namespaces,
            ctx.resolver,
            ctx.conflicts(),
        ),
        volatile: ctx.volatile(route),
    }
}

/// The route side of a compile.
pub(super) struct Routed {
    /// Per slot.
    pub tables: Vec<RouteTable>,
    /// Attached routes per Gateway of ours, per listener.
    pub attached: Vec<Vec<u32>>,
    pub route_status: RouteStatuses,
    pub stats: CompileStats,
    /// Set by the caller before [`Routed::into_cache`].
    pub policy_memo: PolicyMemo,
    pub backend_tls: BuiltTls,
    pub endpoints: EndpointMemo,
    units: hashbrown::HashMap<usize, RouteUnit>,
    order: Vec<usize>,
    volatile: Vec<usize>,
    grpc_routes: usize,
    conflicts: KindConflicts,
    id_counts: hashbrown::HashMap<u64, u32>,
    duplicates: bool,
    context: Option<Context>,
    services: Option<HashMap<ObjectRef, ServiceState>>,
    slots: Vec<(ObjectRef, String)>,
    stamp: u64,
}

impl Routed {
    /// What the next compile may reuse.
    pub(super) fn into_cache(self, config: &Config) -> Box<Cache> {
        Box::new(Cache {
            context: self.context.unwrap_or_else(|| Context::of(config)),
            services: self.services.unwrap_or_else(|| owned_states(config)),
            slots: self.slots,
            units: self.units,
            order: self.order,
            volatile: self.volatile,
            grpc_routes: self.grpc_routes,
            conflicts: self.conflicts,
            id_counts: self.id_counts,
            duplicates: self.duplicates,
            tables: self.tables,
            attached: self.attached,
            route_status: self.route_status,
            policy_memo: self.policy_memo,
            backend_tls: self.backend_tls,
            endpoints: self.endpoints,
            stamp: self.stamp,
        })
    }
}

/// Compiles the routes of `ctx.config`: incrementally when `reuse` allows
/// it, else all of them.
pub(super) fn compile_routes(
    ctx: &RouteCtx<'_, '_>,
    policies: &mut Policies<'_>,
    reuse: &mut Reuse,
) -> Routed {
    let mut reason = reuse.full_reason;
    if reason.is_none() {
        let cache = reuse.cache.as_ref().expect("no reason means a cache");
        if cache.slots != ctx.slot_ids() {
            reason = Some("served listeners changed");
        }
    }
    if reason.is_none() {
        let cache = reuse.cache.take().expect("checked");
        match incremental(ctx, policies, cache, &reuse.changed_services) {
            Ok(routed) => return routed,
            Err(why) => reason = Some(why),
        }
    }
    // A full compile keeps the service states the check already brought up to date.
    let (services, stamp, context) = match reuse.cache.take() {
        Some(c) => (
            Some(c.services),
            c.stamp + 1,
            reuse.context_same.then_some(c.context),
        ),
        None => (None, 1, None),
    };
    let mut routed = full(ctx, policies, stamp);
    routed.services = services;
    routed.context = context;
    routed.stats.full_reason = reason;
    routed
}

fn empty_attached(ctx: &RouteCtx<'_, '_>) -> Vec<Vec<u32>> {
    ctx.ours
        .iter()
        .map(|g| vec![0; g.listeners.len()])
        .collect()
}

fn full(ctx: &RouteCtx<'_, '_>, policies: &mut Policies<'_>, stamp: u64) -> Routed {
    let routes = &ctx.config.routes;
    let mut per_slot: Vec<Vec<(Option<Hostname>, RouteEntry)>> = vec![Vec::new(); ctx.slots.len()];
    let mut attached = empty_attached(ctx);
    let mut statuses = Vec::new();
    let mut units = hashbrown::HashMap::with_capacity(routes.len());
    let mut volatile = Vec::new();
    let mut id_counts: hashbrown::HashMap<u64, u32> =
        hashbrown::HashMap::with_capacity(routes.len());
    let mut ids: HashSet<&ObjectRef> = HashSet::with_capacity(routes.len());
    let mut duplicates = false;
    let grpc_routes = routes.iter().filter(|r| r.kind == RouteKind::Grpc).count();
    let conflicts = ctx.init_conflicts(grpc_routes).clone();
    for route in routes {
        duplicates |= !ids.insert(&route.id);
        *id_counts.entry(id_hash(&route.id)).or_default() += 1;
        let c = compile_route(ctx, policies, route, stamp);
        for (slot, host, e) in c.entries {
            per_slot[slot as usize].push((host, e));
        }
        for (g, l) in c.attached {
            attached[g][l] += 1;
        }
        statuses.extend(c.status);
        if c.volatile {
            volatile.push(key(route));
        }
        // The same route object twice would share one unit: count it as a
        // duplicate so that the next compile is a full one too.
        duplicates |= units.insert(key(route), c.unit).is_some();
    }
    // Stable: twins keep config order, as every other part of a full compile.
    statuses.sort_by(|a, b| a.key().cmp(&b.key()));
    Routed {
        tables: per_slot.into_iter().map(RouteTable::build).collect(),
        attached,
        route_status: RouteStatuses::build(ctx.controller, statuses),
        stats: CompileStats {
            incremental: false,
            full_reason: None,
            routes: routes.len(),
            compiled: routes.len(),
            removed: 0,
        },
        policy_memo: PolicyMemo::default(),
        backend_tls: BuiltTls::default(),
        endpoints: EndpointMemo::new(),
        units,
        order: routes.iter().map(key).collect(),
        volatile,
        grpc_routes,
        conflicts,
        id_counts,
        duplicates,
        context: None,
        services: None,
        slots: ctx.slot_ids(),
        stamp,
    }
}

/// Which routes of the config are new, known, or gone since `cache`.
struct Delta<'r> {
    /// Not compiled before.
    new: Vec<&'r Arc<HttpRoute>>,
    /// Compiled before, to compile again.
    again: Vec<usize>,
    /// Compiled before and no longer in the config.
    gone: Vec<usize>,
}

/// Walks the new route list against the previous one: equal addresses in
/// the same order are unchanged without a lookup; only the rest is looked
/// up. Fails when a route object appears twice.
fn delta<'r>(
    routes: &'r [Arc<HttpRoute>],
    cache: &mut Cache,
    stamp: u64,
) -> Result<Delta<'r>, &'static str> {
    let old = std::mem::take(&mut cache.order);
    let (mut i, mut j) = (0, 0);
    let mut new = Vec::new();
    // Old routes passed over by the walk: gone unless found out of order.
    let mut skipped = Vec::new();
    while i < routes.len() {
        let p = key(&routes[i]);
        if j < old.len() && old[j] == p {
            i += 1;
            j += 1;
            continue;
        }
        // One old route left out: skip it.
        if j + 1 < old.len() && old[j + 1] == p {
            skipped.push(old[j]);
            j += 1;
            continue;
        }
        match cache.units.get_mut(&p) {
            Some(u) if u.seen == stamp => return Err("the same route object twice"),
            Some(u) => u.seen = stamp,
            None => new.push(&routes[i]),
        }
        // Unless this one was put in before the old route (which then
        // follows), the old route is passed over.
        let inserted = i + 1 < routes.len() && j < old.len() && key(&routes[i + 1]) == old[j];
        if !inserted && j < old.len() {
            skipped.push(old[j]);
            j += 1;
        }
        i += 1;
    }
    skipped.extend_from_slice(&old[j.min(old.len())..]);
    let gone: Vec<usize> = skipped
        .into_iter()
        .filter(|p| cache.units.get(p).is_some_and(|u| u.seen != stamp))
        .collect();
    // Every route object is one unit: more routes than units means one of
    // them is listed twice (matched in order and found again).
    if routes.len() != cache.units.len() - gone.len() + new.len() {
        return Err("the same route object twice");
    }
    cache.order = old;
    Ok(Delta {
        new,
        again: Vec::new(),
        gone,
    })
}

/// Recompiles the changed routes into `cache`'s tables, or says why a full
/// compile is needed instead (before changing anything that matters).
fn incremental(
    ctx: &RouteCtx<'_, '_>,
    policies: &mut Policies<'_>,
    mut cache: Box<Cache>,
    changed_services: &HashSet<ObjectRef>,
) -> Result<Routed, &'static str> {
    let stamp = cache.stamp + 1;
    let routes = &ctx.config.routes;
    let mut d = delta(routes, &mut cache, stamp)?;
    let grpc_routes = cache.grpc_routes
        + d.new.iter().filter(|r| r.kind == RouteKind::Grpc).count()
        - d.gone
            .iter()
            .filter(|p| cache.units[*p].route.kind == RouteKind::Grpc)
            .count();
    if *ctx.init_conflicts(grpc_routes) != cache.conflicts {
        // Routes that start or stop losing are not among the changed ones.
        return Err("GRPCRoute/HTTPRoute hostname conflicts changed");
    }
    let gone: HashSet<usize> = d.gone.iter().copied().collect();
    // Known routes compiled again: those with per-route state, and those
    // that reference a changed Service (this pass touches every route, but
    // only when Services changed).
    d.again
        .extend(cache.volatile.iter().filter(|p| !gone.contains(p)));
    if !changed_services.is_empty() {
        d.again.extend(
            cache
                .units
                .iter()
                .filter(|(p, u)| !gone.contains(p) && references(&u.route, changed_services))
                .map(|(p, _)| *p),
        );
        d.again.sort_unstable();
        d.again.dedup();
    }
    // Past this share, rebuilding the tables is cheaper than patching them.
    if d.new.len() + d.gone.len() + d.again.len() > (routes.len() / 4).max(256) {
        return Err("too many routes changed");
    }
    for p in &d.gone {
        let c = cache
            .id_counts
            .get_mut(&id_hash(&cache.units[p].route.id))
            .expect("counted");
        *c -= 1;
    }
    for route in &d.new {
        let c = cache.id_counts.entry(id_hash(&route.id)).or_default();
        *c += 1;
        if *c > 1 {
            return Err("two HTTPRoutes may share a namespace/name");
        }
    }

    // Take out what leaves: the removed routes and the old versions of
    // those compiled again. Their entries, attachments and status are
    // found from the route itself: the inputs are the same as when it was
    // compiled.
    let mut removed: HashMap<usize, Vec<(Option<Hostname>, ObjectRef)>> = HashMap::new();
    let mut added: HashMap<usize, Vec<(Option<Hostname>, RouteEntry)>> = HashMap::new();
    let mut status_out: Vec<(String, String)> = Vec::new();
    let mut status_in: Vec<RouteOutcome> = Vec::new();
    let mut again_routes = Vec::new();
    for p in d.gone.iter().chain(&d.again) {
        let unit = cache.units.remove(p).expect("known unit");
        for (gi, li, hosts) in ctx.attachments(&unit.route) {
            cache.attached[gi][li] -= 1;
            if let Some(&slot) = ctx.slot_of.get(&(gi, li)) {
                let out = removed.entry(slot).or_default();
                out.extend(hosts.into_iter().map(|h| (h, (*unit.route.id).clone())));
            }
        }
        if unit
            .route
            .parents
            .iter()
            .any(|p| ctx.ours_by_id.contains_key(&p.gateway))
        {
            status_out.push((unit.route.id.namespace.clone(), unit.route.id.name.clone()));
        }
        again_routes.push(unit.route);
    }
    let again_routes = &again_routes[d.gone.len()..];
    let gone_volatile: Vec<usize> = cache
        .volatile
        .iter()
        .filter(|p| gone.contains(p))
        .copied()
        .collect();
    cache.volatile.retain(|p| !gone_volatile.contains(p));
    let mut compiled = 0;
    for route in d.new.iter().copied().chain(again_routes) {
        compiled += 1;
        let c = compile_route(ctx, policies, route, stamp);
        for (slot, host, e) in c.entries {
            added.entry(slot as usize).or_default().push((host, e));
        }
        for (g, l) in c.attached {
            cache.attached[g][l] += 1;
        }
        status_in.extend(c.status);
        if c.volatile && !cache.volatile.contains(&key(route)) {
            cache.volatile.push(key(route));
        }
        cache.units.insert(key(route), c.unit);
    }
    // Backend TLS the unchanged routes use is still built (its warnings).
    if ctx.backend_tls.has_policies() {
        for unit in cache.units.values() {
            for &(g, p) in unit.tls.iter() {
                ctx.backend_tls.touch(ctx.ours[g as usize], p as usize);
            }
        }
    }
    let mut tables = std::mem::take(&mut cache.tables);
    let touched: HashSet<usize> = removed.keys().chain(added.keys()).copied().collect();
    for slot in touched {
        let out = removed.remove(&slot).unwrap_or_default();
        let into = added.remove(&slot).unwrap_or_default();
        tables[slot] = tables[slot].update(&out, into);
    }
    let out: Vec<(&str, &str)> = status_out
        .iter()
        .map(|(n, m)| (n.as_str(), m.as_str()))
        .collect();
    let route_status = cache.route_status.patch(&out, status_in);
    let order = routes.iter().map(key).collect();
    let removed_count = d.gone.len();
    let Cache {
        context,
        services,
        slots,
        units,
        volatile,
        id_counts,
        attached,
        conflicts,
        ..
    } = *cache;
    Ok(Routed {
        tables,
        attached,
        route_status,
        stats: CompileStats {
            incremental: true,
            full_reason: None,
            routes: routes.len(),
            compiled,
            removed: removed_count,
        },
        policy_memo: PolicyMemo::default(),
        backend_tls: BuiltTls::default(),
        endpoints: EndpointMemo::new(),
        units,
        order,
        volatile,
        grpc_routes,
        conflicts,
        id_counts,
        duplicates: false,
        context: Some(context),
        services: Some(services),
        slots,
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use std::{fmt::Write as _, path::Path};

    use super::*;
    use crate::{
        config::parse_documents,
        control::{compile, Compiled, Compiler, PolicyEnv, ShardIds},
        policy::{state::PolicyState, PolicyMetrics},
    };

    const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {env: dev}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw-a, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: api, port: 80, protocol: HTTP, hostname: api.example.com, allowedRoutes: {namespaces: {from: All}}}
  - name: web
    port: 81
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {env: prod}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw-b, namespace: team-a}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: missing}]}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: to-b, namespace: team-b}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team-a}]
  to: [{group: "", kind: Service}]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: gw-limits, namespace: infra}
spec:
  targetRefs: [{kind: Gateway, name: gw-a}]
  limits: {maxRequestBodyBytes: 1000}
  ipAllow: [0.0.0.0/0]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: svc-1-tls, namespace: team-a}
spec:
  targetRefs: [{group: "", kind: Service, name: svc-1}]
  validation: {hostname: svc-1.internal, caCertificateRefs: [{group: "", kind: ConfigMap, name: no-such-ca}]}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: bad-keys, namespace: team-b}
spec:
  targetRefs: [{kind: HTTPRoute, name: r4}]
  apiKeys:
    secretRefs: [{name: no-such-secret}]
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: r3-only, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: r3}]
  ipDeny: [10.0.0.0/8]
"#;

    /// A small deterministic generator (xorshift), so failures replay.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    fn service(ns: &str, name: &str, endpoints: &[&str]) -> String {
        let eps: Vec<String> = endpoints
            .iter()
            .map(|a| format!("{{addresses: [\"{a}\"]}}"))
            .collect();
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{ports: [{{name: http, port: 8080}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nendpoints: [{}]\nports: [{{name: http, port: 9000}}]\n",
            eps.join(", ")
        )
    }

    fn route_yaml(rng: &mut Rng, name: &str) -> String {
        let ns = *rng.pick(&["team-a", "team-a", "team-b", "infra"]);
        let parents = [
            "{name: gw-a, namespace: infra}",
            "{name: gw-a, namespace: infra, sectionName: web}",
            "{name: gw-a, namespace: infra, port: 80}",
            "{name: gw-b, namespace: team-a}",
            "{name: elsewhere, namespace: infra}",
        ];
        let mut ps: Vec<&str> = (0..1 + rng.below(2)).map(|_| *rng.pick(&parents)).collect();
        ps.dedup();
        let hosts = [
            "a.example.com",
            "b.example.com",
            "\"*.example.com\"",
            "api.example.com",
            "other.org",
        ];
        let hs: Vec<&str> = (0..rng.below(3)).map(|_| *rng.pick(&hosts)).collect();
        let created = match rng.below(4) {
            0 => String::new(),
            n => format!(", creationTimestamp: \"2024-01-0{n}T00:00:00Z\""),
        };
        let mut rules = String::new();
        for _ in 0..1 + rng.below(3) {
            let path = *rng.pick(&["/", "/a", "/a/b", "/b"]);
            let kind = *rng.pick(&["PathPrefix", "Exact"]);
            let header = if rng.chance(30) {
                ", headers: [{name: x-v, value: \"1\"}]"
            } else {
                ""
            };
            let matches = if rng.chance(20) {
                String::new()
            } else {
                format!("    matches: [{{path: {{type: {kind}, value: {path}}}{header}}}]\n")
            };
            let svc = *rng.pick(&[
                "{name: svc-0, namespace: team-a, port: 8080}",
                "{name: svc-1, namespace: team-a, port: 8080, weight: 3}",
                "{name: svc-2, namespace: team-a, port: 8080}",
                "{name: svc-x, namespace: team-b, port: 8080}",
                "{name: nope, namespace: team-a, port: 8080}",
            ]);
            let filters = if rng.chance(20) {
                "    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc-2, namespace: team-a, port: 8080}}}]\n"
            } else if rng.chance(20) {
                "    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-r, value: v}]}}]\n"
            } else {
                ""
            };
            write!(rules, "  - backendRefs: [{svc}]\n{matches}{filters}").unwrap();
        }
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: {ns}, generation: {}{created}}}\n\
             spec:\n  parentRefs: [{}]\n  hostnames: [{}]\n  rules:\n{rules}",
            rng.below(5),
            ps.join(", "),
            hs.join(", ")
        )
    }

    fn parse(text: &str) -> Config {
        parse_documents([(Path::new("t.yaml"), text)]).expect("generated config is valid")
    }

    fn route(rng: &mut Rng, name: &str) -> Arc<HttpRoute> {
        parse(&route_yaml(rng, name)).routes[0].clone()
    }

    /// A policy without its metric handles (whose maps print in any order).
    fn policy(p: &crate::policy::RoutePolicy) -> String {
        format!(
            "broken {:?} ip {:?} limits {:?} cors {:?} require {:?} authn {} authz {} transform {}",
            p.broken.as_ref().map(|b| &b.message),
            p.ip.iter()
                .map(|i| i.meta.policy.clone())
                .collect::<Vec<_>>(),
            p.limits.as_ref().map(|l| (l.max_body, l.max_headers)),
            p.cors.as_ref().map(|c| &c.cors),
            p.require,
            p.authn.len(),
            p.authz.is_some(),
            p.transform.is_some()
        )
    }

    fn action(a: &RuleAction) -> String {
        let backends: Vec<String> = a
            .backends
            .backends
            .iter()
            .map(|b| {
                format!(
                    "{} {} {} {:?} {:?} {:?} tls {}",
                    b.service,
                    b.port,
                    b.weight,
                    b.target,
                    b.filters,
                    b.protocol,
                    b.tls.is_some()
                )
            })
            .collect();
        let mirrors: Vec<String> = a
            .mirrors
            .iter()
            .map(|m| {
                format!(
                    "{} {:?} {}/{}",
                    m.backend.service, m.backend.target, m.numerator, m.denominator
                )
            })
            .collect();
        format!(
            "filters {:?} backends {backends:?} timeouts {:?} retry {:?} mirrors {mirrors:?} policy {}",
            a.filters,
            a.timeouts,
            a.retry,
            policy(&a.policy)
        )
    }

    /// Everything a compile produced, in a canonical text form.
    fn dump(c: &Compiled) -> String {
        let mut out = String::new();
        for s in &c.snapshot.shards {
            writeln!(
                out,
                "shard {} {} {:?} {:?}",
                s.id, s.gateway, s.source_allow, s.source_deny
            )
            .unwrap();
            for l in &s.listeners {
                writeln!(
                    out,
                    " listener {} {} {:?} policy {}",
                    l.name,
                    l.port,
                    l.hostname,
                    policy(&l.policy)
                )
                .unwrap();
                assert_eq!(
                    l.routes.len(),
                    l.routes
                        .groups()
                        .iter()
                        .map(|(_, v)| v.len())
                        .sum::<usize>()
                );
                for (host, entries) in l.routes.groups() {
                    writeln!(out, "  {host:?}").unwrap();
                    for e in entries {
                        writeln!(
                            out,
                            "   {} {} {:?} {}/{} {:?} {}",
                            e.route,
                            e.route_name,
                            e.created,
                            e.rule,
                            e.match_index,
                            e.matcher,
                            action(&e.action)
                        )
                        .unwrap();
                    }
                }
            }
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&c.status).unwrap()).unwrap();
        writeln!(out, "{:#?}", c.warnings).unwrap();
        writeln!(out, "{:?}", c.kernel).unwrap();
        out
    }

    fn config_of(base: &Config, routes: &[Arc<HttpRoute>]) -> Config {
        let mut c = base.clone();
        c.routes = routes.to_vec();
        c
    }

    #[test]
    fn incremental_and_full_compiles_agree_over_random_edits() {
        for seed in [7u64, 1234, 0x5eed_cafe, 99_991] {
            let mut rng = Rng(seed);
            let mut services = String::new();
            for i in 0..3 {
                services.push_str(&service("team-a", &format!("svc-{i}"), &["10.1.0.1"]));
            }
            services.push_str(&service("team-b", "svc-x", &["10.2.0.1"]));
            let mut base = parse(&format!("{BASE}{services}"));
            let mut routes: Vec<Arc<HttpRoute>> =
                (0..30).map(|i| route(&mut rng, &format!("r{i}"))).collect();
            let mut next_name = 30;

            let state = PolicyState::default();
            let metrics = PolicyMetrics::default();
            let mut compiler = Compiler::default();
            let mut ids = ShardIds::default();
            let (mut incremental, mut steps) = (0, 0);
            let mut had_twins = true;
            for step in 0..120 {
                let mut seen = HashSet::new();
                let twin = routes.iter().position(|r| !seen.insert(r.id.clone()));
                let gateway_before = base.gateways.clone();
                match rng.below(20) {
                    // Twins go again soon (the later one).
                    _ if twin.is_some() && rng.chance(50) => {
                        routes.remove(twin.expect("checked"));
                    }
                    0..=3 | 6..=7 if !routes.is_empty() => {
                        let i = rng.below(routes.len());
                        let name = routes[i].id.name.clone();
                        routes[i] = route(&mut rng, &name);
                    }
                    8..=10 => {
                        let r = route(&mut rng, &format!("r{next_name}"));
                        next_name += 1;
                        let at = rng.below(routes.len() + 1);
                        routes.insert(at, r);
                    }
                    11..=12 if !routes.is_empty() => {
                        routes.remove(rng.below(routes.len()));
                    }
                    13..=14 => {
                        // Endpoints of a Service change.
                        let i = rng.below(base.endpoint_slices.len());
                        let addr = format!("10.9.0.{}", rng.below(4)).parse().unwrap();
                        base.endpoint_slices[i].addresses = vec![addr];
                    }
                    15 => {
                        // A Service comes or goes.
                        if base.services.iter().any(|s| s.id.name == "svc-2") {
                            base.services.retain(|s| s.id.name != "svc-2");
                        } else {
                            base.services
                                .extend(parse(&service("team-a", "svc-2", &["10.1.0.9"])).services);
                        }
                    }
                    4 if routes.len() > 3 => {
                        // Several changes at once, and a reordering.
                        for _ in 0..2 + rng.below(4) {
                            let i = rng.below(routes.len());
                            match rng.below(3) {
                                0 => {
                                    let name = routes[i].id.name.clone();
                                    routes[i] = route(&mut rng, &name);
                                }
                                1 => {
                                    let r = route(&mut rng, &format!("r{next_name}"));
                                    next_name += 1;
                                    routes.insert(i, r);
                                }
                                _ => {
                                    routes.remove(i);
                                }
                            }
                        }
                        let (a, b) = (rng.below(routes.len()), rng.below(routes.len()));
                        routes.swap(a, b);
                    }
                    5 if !routes.is_empty() => {
                        // The very same route object listed twice.
                        let i = rng.below(routes.len());
                        let at = rng.below(routes.len() + 1);
                        routes.insert(at, routes[i].clone());
                    }
                    16 => {
                        // A Gateway changes: everything is compiled again.
                        let l = &mut base.gateways[0].listeners[1];
                        l.port = if l.port == 80 { 82 } else { 80 };
                    }
                    17 if !routes.is_empty() => {
                        // A second route with an existing namespace/name.
                        let i = rng.below(routes.len());
                        let twin = parse(&route_yaml(&mut rng, &routes[i].id.name.clone()));
                        let mut twin = HttpRoute::clone(&twin.routes[0]);
                        twin.id = routes[i].id.clone();
                        routes.push(Arc::new(twin));
                    }

                    _ => {}
                }
                let config = config_of(&base, &routes);
                let run = state.compile();
                let env = PolicyEnv {
                    metrics: &metrics,
                    state: &run,
                };
                let got = compiler.compile(&config, &mut ids, step, &env);
                state.commit(run.id());
                let want = compile(&config, &mut ids.clone(), step);
                let (got, want) = (dump(&got), dump(&want));
                if got != want {
                    let line = got
                        .lines()
                        .zip(want.lines())
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    panic!(
                        "seed {seed} step {step} ({:?}): first difference at line {line}:\n \
                         incremental: {:?}\n full:        {:?}",
                        compiler.stats(),
                        got.lines().nth(line),
                        want.lines().nth(line)
                    );
                }
                steps += 1;
                let stats = compiler.stats();
                incremental += usize::from(stats.incremental);
                // Without twins now or before and with the same Gateways,
                // nothing justifies a full compile.
                let mut seen = HashSet::new();
                let twins = !routes.iter().all(|r| seen.insert(r.id.clone()));
                if step > 0 && !had_twins && !twins && base.gateways == gateway_before {
                    assert!(stats.incremental, "seed {seed} step {step}: {stats:?}");
                }
                had_twins = twins;
            }
            // The edits above are mostly route and endpoint changes: most
            // compiles must have been incremental, or this tested nothing.
            assert!(
                incremental * 2 > steps,
                "seed {seed}: only {incremental} of {steps} compiles were incremental"
            );
        }
    }

    #[test]
    fn a_one_route_change_compiles_one_route_and_shares_the_rest() {
        let mut rng = Rng(42);
        let base = parse(&format!(
            "{BASE}{}",
            service("team-a", "svc-0", &["10.1.0.1"])
        ));
        let mut routes: Vec<Arc<HttpRoute>> = (0..50)
            .map(|i| {
                parse(&format!(
                    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                     metadata: {{name: r{i}, namespace: team-a}}\n\
                     spec:\n  parentRefs: [{{name: gw-b}}]\n  hostnames: [h{i}.example.com]\n  \
                     rules: [{{backendRefs: [{{name: svc-0, port: 8080}}]}}]\n"
                ))
                .routes[0]
                    .clone()
            })
            .collect();
        let state = PolicyState::default();
        let metrics = PolicyMetrics::default();
        let run = state.compile();
        let env = PolicyEnv {
            metrics: &metrics,
            state: &run,
        };
        let mut compiler = Compiler::default();
        let mut ids = ShardIds::default();
        let first = compiler.compile(&config_of(&base, &routes), &mut ids, 1, &env);
        assert!(!compiler.stats().incremental);
        routes[7] = route(&mut rng, "r7");
        let second = compiler.compile(&config_of(&base, &routes), &mut ids, 2, &env);
        let stats = compiler.stats();
        assert!(stats.incremental, "{stats:?}");
        // r7 (the old one left, the new one compiled) and r3, which a
        // SluicePolicy targets and so is compiled every time.
        assert_eq!((stats.routes, stats.compiled, stats.removed), (50, 2, 1));
        // Route r5's entry is the very same allocation in both snapshots.
        let entry = |c: &Compiled| {
            let l = c
                .snapshot
                .shards
                .iter()
                .find(|s| s.gateway.name == "gw-b")
                .unwrap();
            let (_, v) = l.listeners[0]
                .routes
                .groups()
                .into_iter()
                .find(|(h, _)| *h == Some(Hostname::Exact("h5.example.com".into())))
                .unwrap();
            v[0].action.clone()
        };
        assert!(Arc::ptr_eq(&entry(&first), &entry(&second)));
        let status = |c: &Compiled| c.status.http_routes.get("team-a", "r5").unwrap();
        assert_eq!(status(&first), status(&second));
    }
}
