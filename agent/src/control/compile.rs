//! Config → snapshot (for the L7 data path) and desired kernel state (for the
//! eBPF maps). Pure: the same input gives the same output, so both halves can
//! be tested without sockets or a kernel.
//!
//! A [`Compiler`] keeps what it compiled, so that the next compile recompiles
//! only the routes whose inputs changed ([`super::routes`]); [`compile`] and
//! [`compile_with`] compile from scratch. Both give the same result.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
    sync::Arc,
};

use sluice_common::{ListenerKey, ListenerValue, LISTENER_F_SOURCE_FILTER, MAX_SHARDS, PROTO_TCP};

use crate::{
    config::{Config, Gateway, ListenerProtocol, ObjectRef},
    kernel::{port_ranges::split, KernelDesired, PortBlock, SourceRule},
    snapshot::{L4Mode, ListenerRoutes, PortAlias, Shard, ShardId, Snapshot},
};

use super::{
    backend_tls::BackendTls,
    frontend_tls::FrontendTls,
    policy::{Policies, PolicyEnv},
    routes::{self, Cache, Slot},
    status::{ListenerProblem, ListenerProblems, Status},
    tls::Certificates,
};
use crate::snapshot::tls::{server_config, SniResolver};

pub use super::routes::CompileStats;
pub(super) use super::{
    attach::{effective_hostnames, namespace_allowed, parent_selects, NamespaceLabels},
    backends::BackendResolver,
};

/// The controllerName of GatewayClasses this agent implements.
pub const CONTROLLER_NAME: &str = "sluice.dev/gateway-controller";

/// Stable shard ids: a Gateway keeps its id across reloads (the eBPF maps and
/// SockMap slots are keyed by it); ids of removed Gateways are reused.
#[derive(Debug, Default, Clone)]
pub struct ShardIds {
    ids: BTreeMap<ObjectRef, ShardId>,
    /// Namespace ids of the isolation maps, stable the same way.
    namespaces: super::isolation::NamespaceIds,
}

impl ShardIds {
    /// Ids for exactly `gateways`, releasing those of Gateways that are gone.
    fn assign(&mut self, gateways: &[&Gateway]) -> Vec<Option<ShardId>> {
        let mut released = Vec::new();
        self.ids.retain(|k, v| {
            let keep = gateways.iter().any(|g| &g.id == k);
            if !keep {
                released.push(*v);
            }
            keep
        });
        gateways
            .iter()
            .map(|g| {
                if let Some(id) = self.ids.get(&g.id) {
                    return Some(*id);
                }
                // Prefer ids not released by this same change, so one id never
                // stands for two Gateways while a reload swaps them.
                let free = |i: &ShardId| !self.ids.values().any(|v| v == i);
                let id = (1..MAX_SHARDS)
                    .find(|i| free(i) && !released.contains(i))
                    .or_else(|| (1..MAX_SHARDS).find(free))?;
                self.ids.insert(g.id.clone(), id);
                Some(id)
            })
            .collect()
    }
}

/// Output of [`compile`].
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Snapshot,
    pub kernel: KernelDesired,
    /// Things that are not config errors but that an operator should see
    /// (Gateways of other classes, conflicting listeners, unusable certificates...).
    pub warnings: Vec<String>,
    /// Gateway API status conditions of what this agent is responsible for.
    pub status: Status,
    /// The policy-state compile to commit once this snapshot is published.
    pub policy_compile: u64,
}

/// [`compile_with`] with policy state that lives only for this compile and
/// counters registered nowhere: for status computations and tests.
pub fn compile(config: &Config, ids: &mut ShardIds, generation: u64) -> Compiled {
    let state = crate::policy::state::PolicyState::default();
    let run = state.compile();
    let metrics = crate::policy::PolicyMetrics::default();
    compile_with(
        config,
        ids,
        generation,
        &PolicyEnv {
            metrics: &metrics,
            state: &run,
        },
    )
}

/// Tests of incremental compiles: one [`Compiler`] with its shard ids and
/// policy state, compiling config after config.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Recompiles {
    pub compiler: Compiler,
    ids: ShardIds,
    state: crate::policy::state::PolicyState,
    metrics: crate::policy::PolicyMetrics,
    generation: u64,
}

#[cfg(test)]
impl Recompiles {
    pub fn compile(&mut self, config: &Config) -> Compiled {
        let run = self.state.compile();
        let env = PolicyEnv {
            metrics: &self.metrics,
            state: &run,
        };
        self.generation += 1;
        self.compiler
            .compile(config, &mut self.ids, self.generation, &env)
    }

    /// `config` with a new generation of the HTTPRoute `route` only.
    pub fn touched(config: &Config, route: &str) -> Config {
        let mut changed = config.clone();
        let i = changed
            .routes
            .iter()
            .position(|r| r.id.name == route)
            .unwrap_or_else(|| panic!("no HTTPRoute {route}"));
        let mut touched = crate::config::HttpRoute::clone(&changed.routes[i]);
        touched.generation = Some(touched.generation.unwrap_or(0) + 7);
        changed.routes[i] = std::sync::Arc::new(touched);
        changed
    }
}

/// Compiles `config` from scratch; policy sections count in `env.metrics`
/// and take the state that outlives reloads from `env.state` (commit it
/// once the snapshot is published).
pub fn compile_with(
    config: &Config,
    ids: &mut ShardIds,
    generation: u64,
    env: &PolicyEnv<'_>,
) -> Compiled {
    Compiler::default().compile(config, ids, generation, env)
}

/// A compiler that remembers its last compile: the next one recompiles only
/// the routes whose inputs changed and shares everything else (route entries,
/// rule actions, route tables, route status) with the previous result by
/// `Arc`. What a route's entries depend on — its own spec, its parent
/// Gateways and listeners, Namespace labels, ReferenceGrants, the Services
/// and EndpointSlices it references, BackendTLSPolicies, SluicePolicies and
/// their Secrets and ConfigMaps — is compared with the previous compile;
/// anything broad that changed (a Gateway, a grant, a policy...) makes it
/// compile everything again. Either way the result equals [`compile_with`]'s
/// for the same config.
#[derive(Default)]
pub struct Compiler {
    cache: Option<Box<Cache>>,
    stats: CompileStats,
    /// The routes the last delegation flatten made.
    delegated: super::delegation::Memo,
    /// Routes with ListenerSet parentRefs as the previous compile resolved them.
    listener_set_routes: super::listener_sets::Memo,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("cached", &self.cache.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Compiler {
    /// What the last compile did.
    pub fn stats(&self) -> CompileStats {
        self.stats
    }

    /// Forgets the previous compile: the next one compiles everything.
    pub fn reset(&mut self) {
        self.cache = None;
        self.delegated.clear();
        self.listener_set_routes.clear();
    }

    /// Compiles `config`, reusing what is unchanged since the previous call
    /// (whether or not that result was published: reuse depends only on the
    /// inputs). See [`compile_with`] for `env`.
    pub fn compile(
        &mut self,
        config: &Config,
        ids: &mut ShardIds,
        generation: u64,
        env: &PolicyEnv<'_>,
    ) -> Compiled {
        let mut warnings = Vec::new();
        // Delegated HTTPRoutes become ordinary routes of the root's Gateways.
        let flattened = super::delegation::flatten(config, &mut self.delegated);
        let config = flattened.as_ref().map_or(config, |f| &f.config);
        // ListenerSets become listeners of their Gateways: from here on,
        // `config` is the resolved one (delegated routes included).
        let (resolved, sets) = super::listener_sets::resolve(config, &mut self.listener_set_routes);
        let config: &Config = &resolved;
        let ours: Vec<&Gateway> = config
            .gateways
            .iter()
            .filter(|g| {
                let class = config
                    .gateway_classes
                    .iter()
                    .find(|c| c.name == g.class_name);
                match class {
                    Some(c) if c.controller_name == CONTROLLER_NAME => true,
                    Some(_) => false,
                    None => {
                        warnings.push(format!(
                            "Gateway {}: GatewayClass {:?} not found; not served",
                            g.id, g.class_name
                        ));
                        false
                    }
                }
            })
            .collect();
        // What the previous compile left that is still valid for this one.
        let mut reuse = routes::Reuse::check(self.cache.take(), config);
        let resolver = BackendResolver::with_previous(config, reuse.endpoints());
        let mut policies = Policies::new(config, &resolver, env);
        policies.reuse(reuse.policy_memo());
        let namespaces = NamespaceLabels::new(config);
        let certificates = Certificates::new(config);
        let backend_tls = BackendTls::new(config);
        backend_tls.reuse(reuse.backend_tls());
        let frontend_tls = FrontendTls::new(config);
        let mut problems = ListenerProblems::new();

        // A Gateway (or its class) naming parameters Sluice cannot resolve is not
        // accepted, so not served (status: InvalidParameters).
        let accepted: Vec<(usize, &Gateway)> = ours
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, g)| {
                let Some(why) = super::status::invalid_parameters(config, g) else {
                    return true;
                };
                warnings.push(format!("Gateway {}: {why}; not served", g.id));
                false
            })
            .collect();
        let accepted_refs: Vec<&Gateway> = accepted.iter().map(|(_, g)| *g).collect();

        // Gateways and their listeners first: which listeners are served (and
        // so get a route table) does not depend on routes.
        let mut drafts: Vec<ShardDraft> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        for (&(gi, gateway), id) in accepted.iter().zip(ids.assign(&accepted_refs)) {
            let Some(id) = id else {
                warnings.push(format!(
                    "Gateway {}: more than {} Gateways; not served",
                    gateway.id,
                    MAX_SHARDS - 1
                ));
                continue;
            };
            let mut listeners = Vec::new();
            // Listeners that are not distinct are all left out: the spec forbids
            // picking a winner among conflicted listeners.
            let conflicts = super::status::listener_conflicts(gateway);
            for (li, l) in gateway.listeners.iter().enumerate() {
                match &l.protocol {
                    p if p.is_served() => {}
                    other => {
                        warnings.push(format!(
                            "Gateway {} listener {}: protocol {other:?} is not served",
                            gateway.id, l.name
                        ));
                        continue;
                    }
                }
                if let Some(conflict) = conflicts.get(l.name.as_str()) {
                    warnings.push(format!(
                        "Gateway {} listener {}: conflicts with another listener on port {} \
                         ({conflict:?}); not served",
                        gateway.id, l.name, l.port
                    ));
                    problems.insert((gateway.id.clone(), l.name.clone()), conflict.clone());
                    continue;
                }
                let tls = match &l.protocol {
                    ListenerProtocol::Https | ListenerProtocol::TlsTerminate => {
                        match certificates.resolve(gateway, l).and_then(|key| {
                            frontend_tls.verifier(gateway, l.port).inspect_err(|u| {
                                problems.insert(
                                    (gateway.id.clone(), l.name.clone()),
                                    ListenerProblem::ClientValidation(u.clone()),
                                );
                            })?;
                            Ok(key)
                        }) {
                            Ok(key) => Some(key),
                            Err(u) => {
                                warnings.push(format!(
                                    "Gateway {} listener {}: not served: {u}",
                                    gateway.id, l.name
                                ));
                                problems
                                    .entry((gateway.id.clone(), l.name.clone()))
                                    .or_insert(ListenerProblem::Certificate(u));
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                listeners.push((li, slots.len(), tls));
                slots.push(Slot {
                    gateway: gi,
                    listener: li,
                });
            }
            drafts.push(ShardDraft {
                id,
                gateway: gi,
                listeners,
            });
        }

        // Routes: compiled per route, the changed ones only when the previous
        // compile can be reused.
        let ctx = routes::RouteCtx::new(
            config,
            &ours,
            &slots,
            &resolver,
            &namespaces,
            &backend_tls,
            CONTROLLER_NAME,
        );
        let mut routed = routes::compile_routes(&ctx, &mut policies, &mut reuse);

        let mut shards = Vec::new();
        let mut kernel = KernelDesired::default();
        for draft in drafts {
            let gateway = ours[draft.gateway];
            let mut listeners: Vec<ListenerRoutes> = draft
                .listeners
                .into_iter()
                .map(|(li, slot, tls)| {
                    let l = &gateway.listeners[li];
                    ListenerRoutes {
                        name: l.name.as_str().into(),
                        port: l.port,
                        hostname: l.hostname.clone(),
                        routes: routed.tables[slot].clone(),
                        l4: match l.protocol {
                            ListenerProtocol::TlsPassthrough => Some(L4Mode::TlsPassthrough),
                            ListenerProtocol::TlsTerminate => Some(L4Mode::TlsTerminate),
                            ListenerProtocol::Tcp => Some(L4Mode::Tcp),
                            ListenerProtocol::Udp => Some(L4Mode::Udp),
                            _ => None,
                        },
                        tls,
                        policy: policies.for_listener(gateway, l),
                    }
                })
                .collect();
            let mut tls = BTreeMap::new();
            let tls_ports: BTreeSet<u16> = listeners
                .iter()
                .filter(|l| l.tls.is_some())
                .map(|l| l.port)
                .collect();
            for port in tls_ports {
                let certs = listeners
                    .iter()
                    .filter(|l| l.port == port)
                    .filter_map(|l| Some((l.hostname.clone(), l.tls.clone()?)))
                    .collect();
                // Checked per listener above: only ports whose validation resolves get here.
                let client_auth = frontend_tls.verifier(gateway, port).ok().flatten();
                // HTTP is spoken on HTTPS ports only: a TLS Terminate port
                // offers no ALPN (its backend never learns of one).
                let http = listeners.iter().any(|l| l.port == port && l.l4.is_none());
                match server_config(SniResolver::new(certs), client_auth, http) {
                    Ok(c) => {
                        tls.insert(port, c);
                    }
                    Err(e) => {
                        // Only a broken build of rustls gets here; never serve
                        // plain text where TLS was asked for.
                        warnings.push(format!(
                            "Gateway {} port {port}: TLS setup failed: {e}; not served",
                            gateway.id
                        ));
                        listeners.retain(|l| l.port != port);
                    }
                }
            }
            // A range follows its listener: when the listener is not served (a
            // protocol conflict, no usable certificate), neither are its ports.
            let mut port_ranges = Vec::new();
            for r in &gateway.port_ranges {
                match listeners.iter().find(|l| *l.name == *r.listener) {
                    Some(l) => port_ranges.push(PortAlias {
                        first: r.first,
                        last: r.last,
                        port: l.port,
                    }),
                    None => warnings.push(format!(
                        "Gateway {}: port range {r} not served: listener {} is not served",
                        gateway.id, r.listener
                    )),
                }
            }
            // Whole-Gateway ipAllow/ipDeny also go to XDP: denies add up; an
            // annotation's allow list wins (L7 still enforces the policy's).
            let (policy_allow, policy_deny) = policies.xdp_sources(gateway);
            let source_allow = if gateway.source_allow.is_empty() {
                policy_allow
            } else {
                gateway.source_allow.clone()
            };
            let mut source_deny = gateway.source_deny.clone();
            source_deny.extend(
                policy_deny
                    .into_iter()
                    .filter(|n| !gateway.source_deny.contains(n)),
            );
            let shard = Shard {
                id: draft.id,
                gateway: gateway.id.clone(),
                name: Arc::from(gateway.id.to_string()),
                addresses: gateway.addresses.clone(),
                source_allow,
                source_deny,
                syn_budget: gateway.syn_budget,
                listeners,
                tls,
                port_ranges,
                connection: policies.connection(gateway),
            };
            program_kernel(&shard, &mut kernel, &mut warnings);
            shards.push(shard);
        }
        shards.sort_by_key(|s| s.id);
        let served_gateways: Vec<(ShardId, &Gateway)> = shards
            .iter()
            .filter_map(|s| ours.iter().find(|g| g.id == s.gateway).map(|g| (s.id, *g)))
            .collect();
        super::isolation::program(
            &config.identity,
            &served_gateways,
            &mut ids.namespaces,
            &mut kernel,
        );
        let served: HashSet<&ObjectRef> = shards
            .iter()
            .filter_map(|s| ours.iter().find(|g| g.id == s.gateway).map(|g| &g.id))
            .collect();
        let mut status = super::status::compute(
            config,
            CONTROLLER_NAME,
            &ours,
            &served,
            &problems,
            &routed.attached,
            routed.route_status.clone(),
            &sets,
        );
        if let Some(f) = &flattened {
            status.http_routes = f.patch_status(&status.http_routes);
            warnings.extend(f.warnings());
        }
        status.policies = backend_tls.status(config, &ours, CONTROLLER_NAME);
        status.policies.extend(super::policy::policy_status(
            config,
            &policies,
            &ours,
            CONTROLLER_NAME,
        ));
        warnings.extend(backend_tls.warnings());
        warnings.extend(policies.warnings());
        for g in &mut status.gateways {
            let gateway = ours
                .iter()
                .find(|x| x.id.namespace == g.namespace && x.id.name == g.name);
            if let Some(gateway) = gateway {
                g.conditions.extend(backend_tls.gateway_condition(gateway));
                g.conditions.extend(FrontendTls::gateway_condition(gateway));
            }
        }
        // Kept for the next compile: what this one built, while its inputs hold.
        routed.policy_memo = policies.into_memo();
        routed.backend_tls = backend_tls.into_built();
        routed.endpoints = resolver.into_endpoints();
        self.stats = routed.stats;
        self.cache = Some(routed.into_cache(config));
        Compiled {
            snapshot: Snapshot {
                generation,
                shards,
                identity: crate::snapshot::NamespaceLookup::new(&config.identity.cidrs),
            },
            kernel,
            warnings,
            status,
            policy_compile: env.state.id(),
        }
    }
}

/// A served Gateway before its routes are compiled: its accepted
/// listeners as (index in the Gateway, route-table slot, certificate).
struct ShardDraft {
    id: ShardId,
    /// Index into the Gateways of our classes.
    gateway: usize,
    listeners: Vec<(usize, usize, Option<Arc<rustls::sign::CertifiedKey>>)>,
}

/// Adds a shard's listeners and source rules to the desired kernel state.
fn program_kernel(shard: &Shard, kernel: &mut KernelDesired, warnings: &mut Vec<String>) {
    let addrs: Vec<[u8; 16]> = if shard.addresses.is_empty() {
        vec![[0; 16]]
    } else {
        shard
            .addresses
            .iter()
            .map(|a| crate::kernel::addr16(*a))
            .collect()
    };
    let filtered = !shard.source_allow.is_empty() || !shard.source_deny.is_empty();
    let value = ListenerValue {
        shard: shard.id,
        flags: if filtered {
            LISTENER_F_SOURCE_FILTER
        } else {
            0
        },
        syn_rate: shard.syn_budget.map_or(0, |b| b.rate),
        syn_burst: shard.syn_budget.map_or(0, |b| b.burst),
    };
    for port in shard.ports() {
        for a in &addrs {
            let key = ListenerKey::new(*a, port, PROTO_TCP);
            match kernel.listeners.get(&key) {
                Some(other) if other.shard != shard.id => warnings.push(format!(
                    "Gateway {}: {}:{port} is already served by shard {}; not programmed",
                    shard.gateway,
                    IpAddr::from(*a),
                    other.shard
                )),
                _ => {
                    kernel.listeners.insert(key, value);
                }
            }
        }
    }
    for range in &shard.port_ranges {
        for a in &addrs {
            for (port, bits) in split(range.first, range.last) {
                let block = PortBlock {
                    addr: *a,
                    proto: PROTO_TCP,
                    port,
                    bits,
                };
                // Validation keeps ranges of Gateways apart; a clash left
                // here (nested blocks of two shards) is refused, not merged.
                let clash = kernel.port_ranges.iter().find(|(b, v)| {
                    v.shard != shard.id
                        && b.addr == block.addr
                        && b.ports().0 <= block.ports().1
                        && block.ports().0 <= b.ports().1
                });
                if let Some((b, v)) = clash {
                    warnings.push(format!(
                        "Gateway {}: port range {}-{} overlaps {b} of shard {}; not programmed",
                        shard.gateway, range.first, range.last, v.shard
                    ));
                    continue;
                }
                kernel.port_ranges.insert(block, value);
            }
        }
    }
    if filtered {
        let allow: Vec<ipnet::IpNet> = if shard.source_allow.is_empty() {
            // Deny-only: everything else is allowed.
            vec!["::/0".parse().unwrap(), "0.0.0.0/0".parse().unwrap()]
        } else {
            shard.source_allow.clone()
        };
        for net in &allow {
            kernel
                .source_rules
                .insert(SourceRule::new(shard.id, *net), sluice_common::SOURCE_ALLOW);
        }
        for net in &shard.source_deny {
            kernel
                .source_rules
                .insert(SourceRule::new(shard.id, *net), sluice_common::SOURCE_DENY);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        config::parse_documents,
        snapshot::{BackendTarget, RouteEntry},
    };

    const CFG: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app, annotations: {sluice.dev/source-ranges: 10.0.0.0/8, sluice.dev/syn-rate: "50"}}
spec:
  gatewayClassName: sluice
  addresses: [{value: 10.9.0.1}, {value: "fd00::1"}]
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: admin, port: 81, protocol: HTTP, hostname: admin.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: app}
spec: {gatewayClassName: other, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - backendRefs: [{name: echo, port: 8080}, {name: missing, port: 1}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: app}
spec: {ports: [{name: http, port: 8080, targetPort: http}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: app, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}, {addresses: [127.0.0.2], conditions: {ready: false}}]
ports: [{name: http, port: 9000}]
"#;

    fn compiled() -> Compiled {
        let cfg = parse_documents([(Path::new("t.yaml"), CFG)]).unwrap();
        compile(&cfg, &mut ShardIds::default(), 1)
    }

    #[test]
    fn serves_only_own_class_and_attaches_by_section() {
        let c = compiled();
        assert_eq!(c.snapshot.shards.len(), 1);
        let shard = &c.snapshot.shards[0];
        assert_eq!(shard.gateway.to_string(), "app/gw");
        let http = shard.listener_for(80, "x").unwrap();
        assert_eq!(http.routes.len(), 1);
        let admin = shard.listener_for(81, "admin.example.com").unwrap();
        assert!(
            admin.routes.is_empty(),
            "sectionName http must not attach to admin"
        );
        assert!(shard.listener_for(81, "other.example.com").is_none());
    }

    #[test]
    fn resolves_named_target_port_and_skips_unready() {
        let c = compiled();
        let headers = http::HeaderMap::new();
        let req = crate::snapshot::RequestView::new(&http::Method::GET, "/", None, &headers);
        let e = c.snapshot.shards[0]
            .listener_for(80, "x")
            .unwrap()
            .routes
            .find("x", &req)
            .unwrap();
        let b = &e.action.backends.backends;
        match &b[0].target {
            BackendTarget::Endpoints(eps) => {
                assert_eq!(&eps[..], ["127.0.0.1:9000".parse().unwrap()])
            }
            t => panic!("{t:?}"),
        }
        assert!(matches!(&b[1].target, BackendTarget::Invalid(u) if u.reason == "BackendNotFound"));
    }

    #[test]
    fn a_udp_route_takes_the_udp_port_of_a_number_the_service_has_twice() {
        let cfg = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: udp, port: 53, protocol: UDP}
  - {name: tcp, port: 54, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: dns-udp, namespace: app}
spec: {parentRefs: [{name: gw, sectionName: udp}], rules: [{backendRefs: [{name: dns, port: 53}]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: dns-tcp, namespace: app}
spec: {parentRefs: [{name: gw, sectionName: tcp}], rules: [{backendRefs: [{name: dns, port: 53}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: app}
spec: {ports: [{name: dns-tcp, port: 53, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, namespace: app, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: dns, port: 5353, protocol: UDP}, {name: dns-tcp, port: 5354, protocol: TCP}]
"#;
        let cfg = parse_documents([(Path::new("t.yaml"), cfg)]).unwrap();
        let c = compile(&cfg, &mut ShardIds::default(), 1);
        let shard = &c.snapshot.shards[0];
        let headers = http::HeaderMap::new();
        let req = crate::snapshot::RequestView::new(&http::Method::GET, "/", None, &headers);
        let target = |l: &crate::snapshot::ListenerRoutes| -> Vec<std::net::SocketAddr> {
            match &l.routes.find("", &req).unwrap().action.backends.backends[0].target {
                BackendTarget::Endpoints(e) => e.to_vec(),
                t => panic!("{t:?}"),
            }
        };
        let udp = shard.udp_listener(53).expect("the UDP listener");
        assert_eq!(target(udp), ["127.0.0.1:5353".parse().unwrap()]);
        let tcp = shard.listeners.iter().find(|l| &*l.name == "tcp").unwrap();
        assert_eq!(target(tcp), ["127.0.0.1:5354".parse().unwrap()]);
    }

    #[test]
    fn kernel_state_has_listener_per_address_port_and_source_rules() {
        let c = compiled();
        assert_eq!(c.kernel.listeners.len(), 4); // 2 addresses x 2 ports
        assert!(c
            .kernel
            .listeners
            .values()
            .all(|v| v.flags & LISTENER_F_SOURCE_FILTER != 0));
        assert!(c
            .kernel
            .listeners
            .values()
            .all(|v| v.syn_rate == 50 && v.syn_burst == 50));
        assert_eq!(c.kernel.source_rules.len(), 1);
    }

    #[test]
    fn port_ranges_become_kernel_blocks_and_listener_aliases() {
        let text = CFG.replace(
            "sluice.dev/syn-rate: \"50\"}",
            "sluice.dev/syn-rate: \"50\", sluice.dev/port-ranges: \"30000-30100,admin=31000\"}",
        );
        let cfg = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
        let c = compile(&cfg, &mut ShardIds::default(), 1);
        let shard = &c.snapshot.shards[0];
        assert_eq!(shard.listener_port(30050), 80);
        assert_eq!(shard.listener_port(31000), 81);
        assert_eq!(shard.listener_port(81), 81, "exact ports are their own");
        assert_eq!(shard.listener_port(30101), 30101);
        assert_eq!(&*shard.listener_for(30000, "x").unwrap().name, "http");
        assert!(
            shard.listener_for(31000, "x").is_none(),
            "admin's hostname applies"
        );
        assert!(shard.listener_for(31000, "admin.example.com").is_some());

        // Both addresses get every block; every port of the ranges is
        // covered exactly once per address, with the shard's listener value.
        let blocks = &c.kernel.port_ranges;
        let listener = c.kernel.listeners.values().next().unwrap();
        assert!(blocks.values().all(|v| v == listener));
        for addr in shard.addresses.iter().map(|a| crate::kernel::addr16(*a)) {
            let mut ports: Vec<u32> = blocks
                .keys()
                .filter(|b| b.addr == addr)
                .flat_map(|b| {
                    let (first, last) = b.ports();
                    u32::from(first)..=u32::from(last)
                })
                .collect();
            ports.sort_unstable();
            let want: Vec<u32> = (30000..=30100).chain([31000]).collect();
            assert_eq!(ports, want);
        }
        assert!(blocks.len() < 20, "{} blocks", blocks.len());
    }

    #[test]
    fn shard_ids_are_stable_and_reused() {
        let cfg = parse_documents([(Path::new("t.yaml"), CFG)]).unwrap();
        let mut ids = ShardIds::default();
        let a = compile(&cfg, &mut ids, 1).snapshot.shards[0].id;
        let b = compile(&cfg, &mut ids, 2).snapshot.shards[0].id;
        assert_eq!(a, b);
    }

    const CROSS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {gw-access: "yes"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gw-access: "yes"}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: newer, namespace: team-a, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{backendRefs: [{name: svc, namespace: team-b, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: older, namespace: team-a, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{backendRefs: [{name: svc, namespace: team-b, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: outsider, namespace: team-c}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [outsider.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: team-b}
spec: {ports: [{port: 80}]}
"#;

    const GRANT: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-a, namespace: team-b}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team-a}]
  to: [{group: "", kind: Service}]
"#;

    fn first_entry(text: &str) -> (usize, RouteEntry) {
        let cfg = parse_documents([(Path::new("t.yaml"), text)]).unwrap();
        let c = compile(&cfg, &mut ShardIds::default(), 1);
        let headers = http::HeaderMap::new();
        let req = crate::snapshot::RequestView::new(&http::Method::GET, "/", None, &headers);
        let l = c.snapshot.shards[0].listener_for(80, "x").unwrap();
        (l.routes.len(), l.routes.find("x", &req).unwrap().clone())
    }

    #[test]
    fn selector_admits_labelled_namespaces_and_oldest_route_wins() {
        let (len, e) = first_entry(CROSS);
        assert_eq!(len, 2, "team-c is not selected");
        assert_eq!(e.route.name, "older");
    }

    #[test]
    fn cross_namespace_backend_needs_a_reference_grant() {
        let (_, e) = first_entry(CROSS);
        assert!(
            matches!(&e.action.backends.backends[0].target, BackendTarget::Invalid(u) if u.reason == "RefNotPermitted")
        );
        let (_, e) = first_entry(&format!("{CROSS}{GRANT}"));
        assert!(matches!(
            &e.action.backends.backends[0].target,
            BackendTarget::Endpoints(_)
        ));
        let wrong = GRANT.replace("namespace: team-a}", "namespace: team-x}");
        let (_, e) = first_entry(&format!("{CROSS}{wrong}"));
        assert!(matches!(
            &e.action.backends.backends[0].target,
            BackendTarget::Invalid(_)
        ));
    }
}
