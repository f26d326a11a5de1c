//! HTTPRoute delegation, flattened before routes are compiled.
//!
//! A rule of a route attached to a Gateway (the root) may name HTTPRoutes
//! as backendRefs (`group: gateway.networking.k8s.io, kind: HTTPRoute`,
//! name `*` for every route of a namespace). Each such child is compiled
//! as an ordinary route attached to the root's Gateway parents, under its
//! own namespace/name (for status, metrics and policy), whose rules are
//! the child's rules constrained by the delegating rule: the path must lie
//! within the parent's path, the parent's method, header and query matches
//! are added, the parent rule's header modifiers run before the child's
//! filters. A child may delegate further. The data path sees ordinary
//! routes; route precedence is the Gateway API's over the effective matches.
//!
//! What is refused (cycles, references without a ReferenceGrant, unknown
//! routes, children that pick other parents) is reported on the delegating
//! route's ResolvedRefs; what a child loses (rules outside the parent's
//! path, hostnames outside the parent's) on the child, whose status names
//! its parent routes (parentRef kind HTTPRoute). See docs/delegation.md.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use super::refgrant::{Kind, ReferenceGrants};
use crate::config::{
    Ancestor, Config, Delegation, Filter, Hostname, HttpRoute, ObjectRef, ParentRef, PathMatch,
    PathModifier, RouteKind, RouteMatch, RouteRule, Timeouts, DELEGATE_ALL, DELEGATION_KIND,
};

mod matches;
mod status;
#[cfg(test)]
mod tests;

use matches::{constrain, intersect_hostnames, show_hostnames};

/// `ResolvedRefs` reason of a delegation that would close a cycle.
pub const REASON_CYCLE: &str = "DelegationCycle";
/// The reason of a refusal past [`MAX_DEPTH`] or the walk's budget.
pub const REASON_LIMIT: &str = "DelegationLimit";

/// A config with its delegation trees flattened, and what to report.
pub(super) struct Flattened {
    pub config: Config,
    report: Report,
}

#[derive(Default, Debug)]
struct Report {
    warnings: Vec<String>,
    /// Delegating routes whose references were (partly) refused: the first
    /// reason and every message.
    refused: BTreeMap<ObjectRef, (&'static str, Vec<String>)>,
    children: BTreeMap<ObjectRef, ChildReport>,
}

#[derive(Default, Debug)]
struct ChildReport {
    /// The root this child was first reached from (whose status tells
    /// whether the tree is ours at all).
    root: Option<ObjectRef>,
    /// Parent routes, in the order found, with why the parent was not
    /// taken (`Accepted=False`), if it was not.
    parents: Vec<(ObjectRef, Option<(&'static str, String)>)>,
    /// Rules or matches not served, with why.
    dropped: Vec<String>,
    /// Rules served, by the parent route they came through.
    served: HashMap<ObjectRef, usize>,
}

impl ChildReport {
    fn parent(&mut self, parent: &ObjectRef, refused: Option<(&'static str, String)>) {
        match self.parents.iter_mut().find(|(p, _)| p == parent) {
            // A refusal on one path does not undo another path's acceptance.
            Some((_, r)) => {
                if refused.is_none() {
                    *r = None;
                }
            }
            None => self.parents.push((parent.clone(), refused)),
        }
    }
}

/// A flattened child being assembled.
struct Out {
    parents: Box<[ParentRef]>,
    hostnames: Vec<Hostname>,
    rules: Vec<RouteRule>,
    chains: Vec<Arc<[Ancestor]>>,
}

/// Where a walk down a delegation tree is.
#[derive(Clone)]
struct Path<'c> {
    root: &'c HttpRoute,
    /// Effective hostnames so far; empty: any.
    hostnames: Vec<Hostname>,
    /// Routes from the root down to the current one, for cycles.
    stack: Vec<&'c ObjectRef>,
    chain: Vec<Ancestor>,
}

/// Whether a route has a parentRef to a Gateway of Sluice's controller
/// (directly or through a ListenerSet): only those are roots. A tree under
/// another controller's Gateway is that controller's to serve, and walking
/// it would let its (older) root claim children Sluice's roots share.
fn on_our_gateways(config: &Config) -> impl Fn(&HttpRoute) -> bool + '_ {
    let ours: HashSet<&ObjectRef> = config
        .gateways
        .iter()
        .filter(|g| {
            config.gateway_classes.iter().any(|c| {
                c.name == g.class_name && c.controller_name == super::compile::CONTROLLER_NAME
            })
        })
        .map(|g| &g.id)
        .collect();
    let set_gateway: HashMap<&ObjectRef, &ObjectRef> = config
        .listener_sets
        .iter()
        .map(|s| (&s.id, &s.parent))
        .collect();
    move |route| {
        route
            .parents
            .iter()
            .any(|p| match p.listener_set.as_deref() {
                Some(set) => set_gateway.get(set).is_some_and(|g| ours.contains(g)),
                None => ours.contains(&p.gateway),
            })
    }
}

/// Whether `route` has a rule that delegates.
fn delegates(route: &HttpRoute) -> bool {
    route.rules.iter().any(is_delegating)
}

fn is_delegating(rule: &RouteRule) -> bool {
    rule.backends
        .iter()
        .any(|b| b.unsupported_kind.as_deref() == Some(DELEGATION_KIND))
}

/// The routes the previous flatten made, by namespace/name: an unchanged
/// one is handed out again as the same allocation, so the incremental
/// compile ([`super::routes`], which tells routes apart by address) reuses
/// its entries instead of compiling every delegated route on every change.
pub(super) type Memo = HashMap<ObjectRef, Arc<HttpRoute>>;

/// Flattens every delegation tree of `config`; `None` when no route takes
/// part in delegation (the config is compiled as it is).
pub(super) fn flatten(config: &Config, memo: &mut Memo) -> Option<Flattened> {
    if !config.routes.iter().any(|r| {
        r.kind == RouteKind::Http
            && (delegates(r)
                || r.delegation
                    .as_ref()
                    .is_some_and(|d| !d.parent_routes.is_empty()))
    }) {
        memo.clear();
        return None;
    }
    let mut by_id: HashMap<&ObjectRef, &HttpRoute> = HashMap::new();
    for r in config.routes.iter().filter(|r| r.kind == RouteKind::Http) {
        by_id.entry(&r.id).or_insert(r);
    }
    let mut f = Flattener {
        config,
        // Bounded: a tenant's routes delegating to `*` of their own
        // namespace would otherwise make the walk (and every Gateway's
        // compile) grow with the number of paths through them.
        budget: MAX_DELEGATIONS_BASE + 2 * config.routes.len(),
        by_id,
        grants: ReferenceGrants::new(config),
        report: Report::default(),
        out: BTreeMap::new(),
    };
    let on_ours = on_our_gateways(config);
    let mut roots: Vec<&HttpRoute> = config
        .routes
        .iter()
        .filter(|r| r.kind == RouteKind::Http && delegates(r) && on_ours(r))
        .map(|r| &**r)
        .collect();
    // The older root wins a child that two trees claim (then namespace/name),
    // not the order the source listed them in (random from Kubernetes).
    roots.sort_by(|a, b| {
        (a.created.is_none(), a.created, &a.id).cmp(&(b.created.is_none(), b.created, &b.id))
    });
    for root in &roots {
        let path = Path {
            root,
            hostnames: root.hostnames.to_vec(),
            stack: vec![&root.id],
            chain: Vec::new(),
        };
        for rule in root.rules.iter().filter(|r| is_delegating(r)) {
            f.delegate(root, rule, &path);
        }
    }
    let Flattener {
        out, mut report, ..
    } = f;
    let mut next = Memo::new();
    let mut made = |route: HttpRoute| {
        let route = match memo.get(&route.id) {
            Some(previous) if **previous == route => previous.clone(),
            _ => Arc::new(route),
        };
        next.insert((*route.id).clone(), route.clone());
        route
    };
    let mut flat = config.clone();
    flat.routes = config
        .routes
        .iter()
        .map(|r| {
            if r.kind != RouteKind::Http {
                return r.clone();
            }
            if !r.parents.is_empty() && delegates(r) {
                // The root keeps its own rules; the delegating ones became
                // the children's.
                let mut root = HttpRoute::clone(r);
                let mut rules = std::mem::take(&mut root.rules).into_vec();
                rules.retain(|rule| !is_delegating(rule));
                root.rules = rules.into_boxed_slice();
                return made(root);
            }
            match out.get(&r.id) {
                Some(o) if r.parents.is_empty() => {
                    let parent_routes = r
                        .delegation
                        .as_ref()
                        .map(|d| d.parent_routes.clone())
                        .unwrap_or_default();
                    made(HttpRoute {
                        id: r.id.clone(),
                        kind: r.kind,
                        generation: r.generation,
                        created: r.created,
                        parents: o.parents.clone(),
                        hostnames: o.hostnames.as_slice().into(),
                        rules: o.rules.as_slice().into(),
                        delegation: Some(Arc::new(Delegation {
                            parent_routes,
                            foreign_parents: false,
                            chains: o.chains.clone(),
                        })),
                    })
                }
                _ => r.clone(),
            }
        })
        .collect();
    *memo = next;
    for (id, c) in &mut report.children {
        // A chain ends with the parent the rule came through.
        for chain in out.get(id).map_or(&[][..], |o| &o.chains) {
            if let Some(parent) = chain.last() {
                *c.served.entry(parent.route.clone()).or_default() += 1;
            }
        }
    }
    Some(Flattened {
        config: flat,
        report,
    })
}

/// Delegation levels below a root at most (platform → team → sub-team is 2).
const MAX_DEPTH: usize = 8;
/// Delegations (parent rule → child) one compile walks at most, besides 2
/// per route of the config (a legitimate tree visits each child about once
/// per delegating rule above it).
const MAX_DELEGATIONS_BASE: usize = 2_000;

struct Flattener<'c> {
    config: &'c Config,
    /// Delegations left to walk (see [`MAX_DELEGATIONS_BASE`]).
    budget: usize,
    by_id: HashMap<&'c ObjectRef, &'c HttpRoute>,
    grants: ReferenceGrants<'c>,
    report: Report,
    out: BTreeMap<ObjectRef, Out>,
}

impl<'c> Flattener<'c> {
    fn refuse(&mut self, parent: &ObjectRef, reason: &'static str, message: String) {
        self.report
            .warnings
            .push(format!("HTTPRoute {parent}: delegation refused: {message}"));
        let e = self
            .report
            .refused
            .entry(parent.clone())
            .or_insert((reason, Vec::new()));
        if !e.1.contains(&message) {
            e.1.push(message);
        }
    }

    /// The children that a delegating backendRef to `target` selects, or
    /// the reason it selects none.
    fn children(&mut self, parent: &HttpRoute, target: &ObjectRef) -> Vec<&'c HttpRoute> {
        if target.name == DELEGATE_ALL {
            // Every route of the namespace that could be a child of this
            // parent; the others are not meant (no refusal to report).
            let mut v: Vec<&HttpRoute> = self
                .config
                .routes
                .iter()
                .filter(|r| {
                    r.kind == RouteKind::Http
                        && r.id.namespace == target.namespace
                        && r.id != parent.id
                        && r.parents.is_empty()
                        && Delegation::may_be_child(r.delegation.as_deref())
                        && r.delegation.as_ref().is_none_or(|d| {
                            d.parent_routes.is_empty() || d.parent_routes.contains(&parent.id)
                        })
                })
                .map(|r| &**r)
                .collect();
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v.dedup_by(|a, b| a.id == b.id);
            return v;
        }
        let Some(child) = self.by_id.get(target).copied() else {
            self.refuse(
                &parent.id,
                "BackendNotFound",
                format!("HTTPRoute {target} not found"),
            );
            return Vec::new();
        };
        if !child.parents.is_empty() {
            self.refuse(
                &parent.id,
                "RefNotPermitted",
                format!(
                    "HTTPRoute {target} is attached to a Gateway itself; a delegated route has \
                     no Gateway parentRefs"
                ),
            );
            return Vec::new();
        }
        if !Delegation::may_be_child(child.delegation.as_deref()) {
            self.refuse(
                &parent.id,
                "RefNotPermitted",
                format!(
                    "HTTPRoute {target} has parentRefs of a kind Sluice does not serve (a \
                     Service, another controller's parent); a delegated route has parentRefs \
                     of kind HTTPRoute only"
                ),
            );
            return Vec::new();
        }
        if let Some(d) = &child.delegation {
            if !d.parent_routes.is_empty() && !d.parent_routes.contains(&parent.id) {
                self.refuse(
                    &parent.id,
                    "RefNotPermitted",
                    format!(
                        "HTTPRoute {target} accepts delegation only from {}",
                        d.parent_routes
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return Vec::new();
            }
        }
        vec![child]
    }

    /// Delegates the (effective) rule `prule` of `parent` to its children.
    fn delegate(&mut self, parent: &'c HttpRoute, prule: &RouteRule, path: &Path<'c>) {
        // Filters that would act in the parent's namespace, or that change
        // what the child's match means, cannot be handed down.
        if let Some(f) = prule.filters.iter().find(|f| {
            matches!(
                f,
                Filter::Redirect(_)
                    | Filter::Rewrite(_)
                    | Filter::Mirror(_)
                    | Filter::ExternalAuth(_)
            )
        }) {
            let kind = match f {
                Filter::Redirect(_) => "RequestRedirect",
                Filter::Rewrite(_) => "URLRewrite",
                Filter::Mirror(_) => "RequestMirror",
                _ => "ExternalAuth",
            };
            self.refuse(
                &parent.id,
                "UnsupportedValue",
                format!(
                    "a delegating rule cannot have a {kind} filter (only header modifiers and \
                     CORS are handed down; attach a SluicePolicy to the route instead)"
                ),
            );
            return;
        }
        if prule
            .backends
            .iter()
            .any(|b| b.unsupported_kind.as_deref() != Some(DELEGATION_KIND))
        {
            self.report.warnings.push(format!(
                "HTTPRoute {}: a delegating rule's other backendRefs are ignored",
                parent.id
            ));
        }
        let mut chain = path.chain.clone();
        chain.push(Ancestor {
            route: (*parent.id).clone(),
            rule: prule.name.clone(),
        });
        let chain: Arc<[Ancestor]> = chain.into();
        for b in prule
            .backends
            .iter()
            .filter(|b| b.unsupported_kind.as_deref() == Some(DELEGATION_KIND))
        {
            // A cycle is the reason to give even where the child would
            // refuse this parent anyway.
            if b.service.name != DELEGATE_ALL && self.cycle(parent, path, &b.service) {
                continue;
            }
            for child in self.children(parent, &b.service) {
                self.delegate_to(parent, prule, path, &chain, child);
            }
        }
    }

    /// Whether delegating to `child` would close a cycle (refused if so).
    fn cycle(&mut self, parent: &HttpRoute, path: &Path<'c>, child: &ObjectRef) -> bool {
        if !path.stack.contains(&child) {
            return false;
        }
        let cycle: Vec<String> = path
            .stack
            .iter()
            .skip_while(|id| **id != child)
            .map(ToString::to_string)
            .chain([child.to_string()])
            .collect();
        self.refuse(
            &parent.id,
            REASON_CYCLE,
            format!("delegation cycle {}", cycle.join(" -> ")),
        );
        true
    }

    fn delegate_to(
        &mut self,
        parent: &'c HttpRoute,
        prule: &RouteRule,
        path: &Path<'c>,
        chain: &Arc<[Ancestor]>,
        child: &'c HttpRoute,
    ) {
        if self.cycle(parent, path, &child.id) {
            return;
        }
        if path.stack.len() > MAX_DEPTH {
            self.refuse(
                &parent.id,
                REASON_LIMIT,
                format!("delegation deeper than {MAX_DEPTH} levels below the root"),
            );
            return;
        }
        if self.budget == 0 {
            self.refuse(
                &parent.id,
                REASON_LIMIT,
                "the delegation trees of this config name more routes than one compile \
                 walks; delegate to fewer routes (a `*` of a namespace whose routes delegate \
                 to `*` again multiplies)"
                    .to_owned(),
            );
            return;
        }
        self.budget -= 1;
        if !self.grants.allows(
            Kind::HTTP_ROUTE,
            &parent.id.namespace,
            Kind::HTTP_ROUTE,
            &child.id,
        ) {
            self.refuse(
                &parent.id,
                "RefNotPermitted",
                format!(
                    "HTTPRoute {}: no ReferenceGrant in namespace {} lets HTTPRoutes of {} \
                     delegate to it",
                    child.id, child.id.namespace, parent.id.namespace
                ),
            );
            return;
        }
        let report = self.report.children.entry((*child.id).clone()).or_default();
        report.root.get_or_insert_with(|| (*path.root.id).clone());
        let hostnames = match intersect_hostnames(&path.hostnames, &child.hostnames) {
            Some(h) => h,
            None => {
                let why = format!(
                    "none of its hostnames is within the parent's ({})",
                    show_hostnames(&path.hostnames)
                );
                self.report.warnings.push(format!(
                    "HTTPRoute {}: not served through {}: {why}",
                    child.id, parent.id
                ));
                report.parent(&parent.id, Some(("NoMatchingParent", why)));
                return;
            }
        };
        if self
            .out
            .get(&child.id)
            .is_some_and(|o| o.parents != path.root.parents || o.hostnames != hostnames)
        {
            self.refuse_second_tree(child, parent);
            return;
        }
        let report = self.report.children.entry((*child.id).clone()).or_default();
        report.parent(&parent.id, None);
        let mut next = path.clone();
        next.hostnames = hostnames;
        next.stack.push(&child.id);
        next.chain = chain.to_vec();
        // CORS of the child's own wins; the parent's header modifiers run
        // first, so the child's `set` has the last word.
        let handed_down: Vec<&Filter> = prule
            .filters
            .iter()
            .filter(|f| {
                matches!(
                    f,
                    Filter::RequestHeaders(_) | Filter::ResponseHeaders(_) | Filter::Cors(_)
                )
            })
            .collect();
        for (ri, crule) in child.rules.iter().enumerate() {
            let mut matches = Vec::new();
            for (mi, cm) in crule.matches.iter().enumerate() {
                // Dropped only when no match of the parent rule admits it.
                let mut why = None;
                let before = matches.len();
                for pm in &prule.matches {
                    match constrain(pm, cm) {
                        Ok(m) => matches.push(m),
                        Err(e) => {
                            why.get_or_insert(e);
                        }
                    }
                }
                if let (true, Some(why)) = (matches.len() == before, why) {
                    let msg = format!("spec.rules[{ri}].matches[{mi}]: {why}");
                    self.report.warnings.push(format!(
                        "HTTPRoute {}: not served through {}: {msg}",
                        child.id, parent.id
                    ));
                    self.report
                        .children
                        .get_mut(&child.id)
                        .expect("entry made above")
                        .dropped
                        .push(msg);
                }
            }
            if matches.is_empty() {
                continue;
            }
            // ReplacePrefixMatch replaces the matched prefix: valid only when
            // the rule still matches its own single PathPrefix (a parent's
            // Exact or regex path, or a rule without matches taking the
            // parent's prefix, would rewrite another part of the path).
            let replaces_prefix = crule.filters.iter().any(|f| {
                let path = match f {
                    Filter::Rewrite(r) => r.path.as_ref(),
                    Filter::Redirect(r) => r.path.as_ref(),
                    _ => None,
                };
                matches!(path, Some(PathModifier::ReplacePrefixMatch(_)))
            });
            if replaces_prefix {
                let own = match &*crule.matches {
                    [m] if !Arc::ptr_eq(m, &RouteMatch::any_path()) => Some(&m.path),
                    _ => None,
                };
                let kept = own.is_some_and(|own| {
                    matches!(own, PathMatch::Prefix(_)) && matches.iter().all(|m| m.path == *own)
                });
                if !kept {
                    let msg = format!(
                        "spec.rules[{ri}]: a ReplacePrefixMatch filter needs the rule's own single \
                         PathPrefix match, which delegation under {} would change",
                        parent.id
                    );
                    self.report.warnings.push(format!(
                        "HTTPRoute {}: not served through {}: {msg}",
                        child.id, parent.id
                    ));
                    self.report
                        .children
                        .get_mut(&child.id)
                        .expect("entry made above")
                        .dropped
                        .push(msg);
                    continue;
                }
            }
            let own_cors = crule.filters.iter().any(|f| matches!(f, Filter::Cors(_)));
            let mut filters: Vec<Filter> = handed_down
                .iter()
                .filter(|f| !(own_cors && matches!(f, Filter::Cors(_))))
                .map(|f| (*f).clone())
                .collect();
            filters.extend(crule.filters.iter().cloned());
            let rule = RouteRule {
                name: crule.name.clone(),
                matches: matches.into_boxed_slice(),
                filters: filters.into(),
                backends: crule.backends.clone(),
                timeouts: Timeouts {
                    request: crule.timeouts.request.or(prule.timeouts.request),
                    backend_request: crule
                        .timeouts
                        .backend_request
                        .or(prule.timeouts.backend_request),
                },
                retry: crule.retry.clone().or_else(|| prule.retry.clone()),
            };
            if is_delegating(crule) {
                self.delegate(child, &rule, &next);
            } else {
                self.emit(child, parent, rule, chain.clone(), &next);
            }
        }
    }

    /// Refuses `child` under `parent`: one route has one set of parents and
    /// hostnames for all of its rules, so a second tree with others cannot
    /// be merged into what an earlier one made of it.
    fn refuse_second_tree(&mut self, child: &HttpRoute, parent: &HttpRoute) {
        let why = "delegated to again through other Gateways or hostnames; only the first \
                   delegation is served"
            .to_owned();
        self.report.warnings.push(format!(
            "HTTPRoute {}: not served through {}: {why}",
            child.id, parent.id
        ));
        self.report
            .children
            .entry((*child.id).clone())
            .or_default()
            .parent(&parent.id, Some(("NotAllowedByParents", why)));
    }

    /// Adds a served rule to the flattened `child`.
    fn emit(
        &mut self,
        child: &HttpRoute,
        parent: &HttpRoute,
        rule: RouteRule,
        chain: Arc<[Ancestor]>,
        path: &Path<'c>,
    ) {
        let out = self.out.entry((*child.id).clone()).or_insert_with(|| Out {
            parents: path.root.parents.clone(),
            hostnames: path.hostnames.clone(),
            rules: Vec::new(),
            chains: Vec::new(),
        });
        if out.parents != path.root.parents || out.hostnames != path.hostnames {
            self.refuse_second_tree(child, parent);
            return;
        }
        if out
            .rules
            .iter()
            .zip(&out.chains)
            .any(|(r, c)| *r == rule && *c == chain)
        {
            return; // the same delegation named twice (a name and `*`)
        }
        out.rules.push(rule);
        out.chains.push(chain);
    }
}
