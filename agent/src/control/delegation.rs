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
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use super::{
    refgrant::{Kind, ReferenceGrants, GATEWAY_GROUP},
    route_status::{RouteOutcome, RouteStatuses},
    status::{Condition, ParentRefStatus, RouteParentStatus, RouteStatus},
};
use crate::config::{
    Ancestor, Config, Delegation, Filter, Hostname, HttpRoute, ObjectRef, ParentRef, PathMatch,
    RouteKind, RouteMatch, RouteRule, Timeouts, DELEGATE_ALL, DELEGATION_KIND,
};

/// `ResolvedRefs` reason of a delegation that would close a cycle.
pub const REASON_CYCLE: &str = "DelegationCycle";

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
    /// Rules served.
    served: usize,
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
    parents: Vec<ParentRef>,
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

/// Whether `route` has a rule that delegates.
fn delegates(route: &HttpRoute) -> bool {
    route.rules.iter().any(is_delegating)
}

fn is_delegating(rule: &RouteRule) -> bool {
    rule.backends
        .iter()
        .any(|b| b.unsupported_kind.as_deref() == Some(DELEGATION_KIND))
}

/// Flattens every delegation tree of `config`; `None` when no route takes
/// part in delegation (the config is compiled as it is).
pub(super) fn flatten(config: &Config) -> Option<Flattened> {
    if !config
        .routes
        .iter()
        .any(|r| r.kind == RouteKind::Http && r.delegation.is_some())
    {
        return None;
    }
    let mut by_id: HashMap<&ObjectRef, &HttpRoute> = HashMap::new();
    for r in config.routes.iter().filter(|r| r.kind == RouteKind::Http) {
        by_id.entry(&r.id).or_insert(r);
    }
    let mut f = Flattener {
        config,
        by_id,
        grants: ReferenceGrants::new(config),
        report: Report::default(),
        out: BTreeMap::new(),
    };
    let roots: Vec<&HttpRoute> = config
        .routes
        .iter()
        .filter(|r| r.kind == RouteKind::Http && !r.parents.is_empty() && delegates(r))
        .map(|r| &**r)
        .collect();
    for root in &roots {
        let path = Path {
            root,
            hostnames: root.hostnames.clone(),
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
                root.rules.retain(|rule| !is_delegating(rule));
                return Arc::new(root);
            }
            match out.get(&r.id) {
                Some(o) if r.parents.is_empty() => {
                    let parent_routes = r
                        .delegation
                        .as_ref()
                        .map(|d| d.parent_routes.clone())
                        .unwrap_or_default();
                    Arc::new(HttpRoute {
                        id: r.id.clone(),
                        kind: r.kind,
                        generation: r.generation,
                        created: r.created,
                        parents: o.parents.clone(),
                        hostnames: o.hostnames.clone(),
                        rules: o.rules.clone(),
                        delegation: Some(Arc::new(Delegation {
                            parent_routes,
                            chains: o.chains.clone(),
                        })),
                    })
                }
                _ => r.clone(),
            }
        })
        .collect();
    for (id, c) in &mut report.children {
        c.served = out.get(id).map_or(0, |o| o.rules.len());
    }
    Some(Flattened {
        config: flat,
        report,
    })
}

struct Flattener<'c> {
    config: &'c Config,
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
            route: parent.id.clone(),
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
        let report = self.report.children.entry(child.id.clone()).or_default();
        report.root.get_or_insert_with(|| path.root.id.clone());
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
            let own_cors = crule.filters.iter().any(|f| matches!(f, Filter::Cors(_)));
            let mut filters: Vec<Filter> = handed_down
                .iter()
                .filter(|f| !(own_cors && matches!(f, Filter::Cors(_))))
                .map(|f| (*f).clone())
                .collect();
            filters.extend(crule.filters.iter().cloned());
            let rule = RouteRule {
                name: crule.name.clone(),
                matches,
                filters,
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

    /// Adds a served rule to the flattened `child`.
    fn emit(
        &mut self,
        child: &HttpRoute,
        parent: &HttpRoute,
        rule: RouteRule,
        chain: Arc<[Ancestor]>,
        path: &Path<'c>,
    ) {
        let out = self.out.entry(child.id.clone()).or_insert_with(|| Out {
            parents: path.root.parents.clone(),
            hostnames: path.hostnames.clone(),
            rules: Vec::new(),
            chains: Vec::new(),
        });
        if out.parents != path.root.parents || out.hostnames != path.hostnames {
            // One route has one set of parents and hostnames for all of its
            // rules: a second tree with others cannot be merged in.
            let why = "delegated to again through other Gateways or hostnames; only the first \
                       delegation is served"
                .to_owned();
            self.report.warnings.push(format!(
                "HTTPRoute {}: not served through {}: {why}",
                child.id, parent.id
            ));
            let report = self.report.children.entry(child.id.clone()).or_default();
            report.parent(&parent.id, Some(("NotAllowedByParents", why)));
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

/// The hostnames a child serves under a parent: the pairwise intersections
/// (either side empty: the other); `None` when they do not meet.
fn intersect_hostnames(parent: &[Hostname], child: &[Hostname]) -> Option<Vec<Hostname>> {
    if parent.is_empty() {
        return Some(child.to_vec());
    }
    if child.is_empty() {
        return Some(parent.to_vec());
    }
    let mut v: Vec<Hostname> = parent
        .iter()
        .flat_map(|p| child.iter().filter_map(|c| Hostname::intersect(p, c)))
        .collect();
    v.sort();
    v.dedup();
    (!v.is_empty()).then_some(v)
}

fn show_hostnames(h: &[Hostname]) -> String {
    h.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_path(p: &PathMatch) -> String {
    match p {
        PathMatch::Exact(s) => format!("Exact {s}"),
        PathMatch::Prefix(s) => format!("PathPrefix {s}"),
        PathMatch::Regex(r) => format!("RegularExpression {}", r.as_str()),
    }
}

/// Whether `path` lies within the element-wise prefix `prefix`.
fn within(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The effective match of child match `child` under parent match `parent`:
/// the child's path when it lies within the parent's, with both sides'
/// method, header and query conditions; an error when they contradict. A
/// child rule written without matches takes the parent's match.
fn constrain(parent: &Arc<RouteMatch>, child: &Arc<RouteMatch>) -> Result<Arc<RouteMatch>, String> {
    if Arc::ptr_eq(child, &RouteMatch::any_path()) {
        return Ok(parent.clone());
    }
    let outside = || {
        format!(
            "path {} is not within the parent's {}",
            show_path(&child.path),
            show_path(&parent.path)
        )
    };
    let path = match (&parent.path, &child.path) {
        (PathMatch::Prefix(p), PathMatch::Prefix(c) | PathMatch::Exact(c)) if within(p, c) => {
            child.path.clone()
        }
        (PathMatch::Exact(p), PathMatch::Exact(c)) if p == c => child.path.clone(),
        (PathMatch::Exact(p), PathMatch::Prefix(c)) if within(c, p) => parent.path.clone(),
        (PathMatch::Regex(p), PathMatch::Regex(c)) if p == c => child.path.clone(),
        (_, PathMatch::Regex(_)) => {
            return Err(format!(
                "{} (a regular expression cannot be checked against the parent's path)",
                outside()
            ))
        }
        _ => return Err(outside()),
    };
    let method = match (&parent.method, &child.method) {
        (Some(p), Some(c)) if p != c => {
            return Err(format!("method {c} contradicts the parent's method {p}"))
        }
        (p, c) => c.clone().or_else(|| p.clone()),
    };
    let mut headers = child.headers.clone();
    for ph in &parent.headers {
        match headers.iter().find(|h| h.name == ph.name) {
            Some(h) if h.value != ph.value => {
                return Err(format!("header match {} contradicts the parent's", ph.name))
            }
            Some(_) => {}
            None => headers.push(ph.clone()),
        }
    }
    let mut query_params = child.query_params.clone();
    for pq in &parent.query_params {
        match query_params.iter().find(|q| q.name == pq.name) {
            Some(q) if q.value != pq.value => {
                return Err(format!(
                    "query parameter match {} contradicts the parent's",
                    pq.name
                ))
            }
            Some(_) => {}
            None => query_params.push(pq.clone()),
        }
    }
    Ok(Arc::new(RouteMatch {
        path,
        method,
        headers,
        query_params,
        grpc: None,
    }))
}

impl Flattened {
    pub(super) fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.report.warnings.iter().cloned()
    }

    /// Route status as delegation tells it: children name their parent
    /// routes, delegating routes with refused references do not resolve.
    pub(super) fn patch_status(&self, statuses: &RouteStatuses) -> RouteStatuses {
        let mut changed: BTreeMap<(String, String), RouteStatus> = BTreeMap::new();
        for (id, c) in &self.report.children {
            let Some(root) = &c.root else { continue };
            if statuses.get(&root.namespace, &root.name).is_none() {
                continue; // a tree under Gateways of other controllers
            }
            let Some(route) = self.config.routes.iter().find(|r| r.id == *id) else {
                continue;
            };
            let computed = statuses.get(&id.namespace, &id.name);
            changed.insert(
                (id.namespace.clone(), id.name.clone()),
                child_status(route, c, computed.as_ref()),
            );
        }
        for (id, (reason, messages)) in &self.report.refused {
            let key = (id.namespace.clone(), id.name.clone());
            let Some(mut s) = changed
                .remove(&key)
                .or_else(|| statuses.get(&id.namespace, &id.name))
            else {
                continue;
            };
            for p in &mut s.parents {
                for cond in &mut p.conditions {
                    if cond.kind == "ResolvedRefs" {
                        cond.status = "False";
                        cond.reason = reason;
                        cond.message = messages.join("; ");
                    }
                }
            }
            changed.insert(key, s);
        }
        let removed: Vec<(&str, &str)> = changed
            .keys()
            .filter(|(ns, n)| statuses.get(ns, n).is_some())
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
            .collect();
        statuses.patch(
            &removed,
            changed
                .values()
                .cloned()
                .map(|s| RouteOutcome::Given(Box::new(s)))
                .collect(),
        )
    }
}

/// The status of a delegated route: one entry per parent route.
fn child_status(route: &HttpRoute, c: &ChildReport, computed: Option<&RouteStatus>) -> RouteStatus {
    let cond = |kind, ok: bool, reason, message: String| Condition {
        kind,
        status: if ok { "True" } else { "False" },
        reason,
        message,
        observed_generation: route.generation,
    };
    // Through the root's Gateways: accepted when one of them accepted it.
    let through: Vec<&Vec<Condition>> = computed
        .map(|s| s.parents.iter().map(|p| &p.conditions).collect())
        .unwrap_or_default();
    let find = |kind: &str| {
        through
            .iter()
            .flat_map(|cs| cs.iter())
            .filter(|c| c.kind == kind)
            .max_by_key(|c| c.status == "True")
            .cloned()
    };
    let gateway_accepted = find("Accepted");
    let resolved = find("ResolvedRefs")
        .map(|mut r| {
            r.observed_generation = route.generation;
            r
        })
        .unwrap_or_else(|| cond("ResolvedRefs", true, "ResolvedRefs", String::new()));
    let parents = c
        .parents
        .iter()
        .map(|(parent, refused)| {
            let accepted = match (refused, &gateway_accepted) {
                (Some((reason, why)), _) => cond("Accepted", false, reason, why.clone()),
                (None, _) if c.served == 0 => cond(
                    "Accepted",
                    false,
                    "UnsupportedValue",
                    format!("no rule is served: {}", c.dropped.join("; ")),
                ),
                (None, Some(a)) if a.status != "True" => Condition {
                    observed_generation: route.generation,
                    ..a.clone()
                },
                (None, _) => cond("Accepted", true, "Accepted", String::new()),
            };
            let mut conditions = vec![accepted, resolved.clone()];
            if !c.dropped.is_empty() && c.served > 0 {
                conditions.push(cond(
                    "PartiallyInvalid",
                    true,
                    "UnsupportedValue",
                    c.dropped.join("; "),
                ));
            }
            RouteParentStatus {
                parent_ref: ParentRefStatus {
                    group: GATEWAY_GROUP,
                    kind: "HTTPRoute",
                    namespace: parent.namespace.clone(),
                    name: parent.name.clone(),
                    section_name: None,
                    port: None,
                },
                controller_name: super::CONTROLLER_NAME,
                conditions,
            }
        })
        .collect();
    RouteStatus {
        kind: "HTTPRoute",
        namespace: route.id.namespace.clone(),
        name: route.id.name.clone(),
        parents,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{
        config::parse_documents,
        control::{compile, status::RouteStatus, Compiled, ShardIds},
        snapshot::{RequestView, RouteEntry},
    };

    const GATEWAY: &str = include_str!("../../../examples/delegation/gateway.yaml");
    const TEAMS: &str = include_str!("../../../examples/delegation/teams.yaml");
    const BACKENDS: &str = include_str!("../../../examples/delegation/backends.yaml");

    /// The example with `edit` applied to the teams' file.
    fn compiled(edit: impl FnOnce(&str) -> String) -> Compiled {
        let teams = edit(TEAMS);
        let cfg = parse_documents([
            (Path::new("gateway.yaml"), GATEWAY),
            (Path::new("teams.yaml"), teams.as_str()),
            (Path::new("backends.yaml"), BACKENDS),
        ])
        .unwrap();
        compile(&cfg, &mut ShardIds::default(), 1)
    }

    fn example() -> Compiled {
        compiled(str::to_owned)
    }

    /// The entry a request to api.example.com selects.
    fn route<'c>(
        c: &'c Compiled,
        method: &http::Method,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> Option<&'c RouteEntry> {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        let req = RequestView::new(method, path, None, &h);
        c.snapshot.shards[0]
            .listener_for(8080, "api.example.com")
            .unwrap()
            .routes
            .find("api.example.com", &req)
    }

    /// Namespace/name of the route a GET selects.
    fn served_by(c: &Compiled, path: &str, headers: &[(&'static str, &str)]) -> Option<String> {
        route(c, &http::Method::GET, path, headers).map(|e| e.route.to_string())
    }

    fn status(c: &Compiled, ns: &str, name: &str) -> RouteStatus {
        c.status.http_routes.get(ns, name).unwrap()
    }

    /// (kind, status, reason) of each condition of the first parent.
    fn conditions(s: &RouteStatus) -> Vec<(&'static str, &'static str, &'static str)> {
        s.parents[0]
            .conditions
            .iter()
            .map(|c| (c.kind, c.status, c.reason))
            .collect()
    }

    #[test]
    fn child_rules_outside_the_parent_prefix_are_not_served() {
        let c = example();
        assert_eq!(
            served_by(&c, "/orders/42", &[]).as_deref(),
            Some("orders/orders")
        );
        assert_eq!(
            served_by(&c, "/orders", &[]).as_deref(),
            Some("orders/orders")
        );
        // The child's /admin rule is outside /orders.
        assert_eq!(served_by(&c, "/admin", &[]), None);
        // Element-wise: /ordersx is not within /orders.
        assert_eq!(served_by(&c, "/ordersx", &[]), None);
        let s = status(&c, "orders", "orders");
        let partly = s.parents[0]
            .conditions
            .iter()
            .find(|c| c.kind == "PartiallyInvalid")
            .expect("PartiallyInvalid condition");
        assert!(
            partly.message.contains("spec.rules[2].matches[0]")
                && partly
                    .message
                    .contains("not within the parent's PathPrefix /orders"),
            "{}",
            partly.message
        );
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("HTTPRoute orders/orders: not served through platform/api")));
    }

    #[test]
    fn parent_header_and_method_matches_are_added_and_contradictions_dropped() {
        let c = example();
        // The payments rule has no matches: it takes the parent's, header included.
        assert_eq!(
            served_by(&c, "/payments/1", &[("x-api-version", "v2")]).as_deref(),
            Some("payments/payments")
        );
        assert_eq!(served_by(&c, "/payments/1", &[]), None);
        assert_eq!(
            served_by(&c, "/payments/1", &[("x-api-version", "v1")]),
            None
        );
        // A child asking for another value of the parent's header contradicts it.
        let c = compiled(|t| {
            t.replace(
                "  rules:\n  - backendRefs:\n    - {name: payments, port: 80}",
                "  rules:\n  - matches: [{path: {value: /payments/a}, headers: [{name: x-api-version, value: v1}]}]\n    backendRefs:\n    - {name: payments, port: 80}\n  - matches: [{path: {value: /payments/b}, method: POST}]\n    backendRefs:\n    - {name: payments, port: 80}",
            )
        });
        assert_eq!(
            served_by(&c, "/payments/a", &[("x-api-version", "v1")]),
            None
        );
        assert_eq!(
            served_by(&c, "/payments/a", &[("x-api-version", "v2")]),
            None
        );
        let post = route(
            &c,
            &http::Method::POST,
            "/payments/b",
            &[("x-api-version", "v2")],
        );
        assert_eq!(post.unwrap().route.to_string(), "payments/payments");
        assert!(route(&c, &http::Method::POST, "/payments/b", &[]).is_none());
        let s = status(&c, "payments", "payments");
        assert!(
            format!("{s:?}").contains("header match x-api-version contradicts"),
            "{s:?}"
        );
    }

    #[test]
    fn three_levels_are_flattened() {
        let c = example();
        let e = route(&c, &http::Method::GET, "/orders/returns/7", &[]).unwrap();
        assert_eq!(e.route.to_string(), "returns/returns");
        // The platform's header modifier is handed down both levels.
        assert!(
            e.action.filters.iter().any(|f| matches!(f,
                crate::config::Filter::RequestHeaders(m)
                    if m.set.iter().any(|(n, v)| n == "x-platform-tenant" && v == "orders"))),
            "{:?}",
            e.action.filters
        );
        let s = status(&c, "returns", "returns");
        assert_eq!(s.parents.len(), 1);
        assert_eq!(s.parents[0].parent_ref.kind, "HTTPRoute");
        assert_eq!(s.parents[0].parent_ref.namespace, "orders");
        assert_eq!(s.parents[0].parent_ref.name, "orders");
        // The platform's own rule keeps serving.
        assert_eq!(
            served_by(&c, "/healthz", &[]).as_deref(),
            Some("platform/api")
        );
    }

    #[test]
    fn status_names_parent_routes_and_refused_references() {
        let c = example();
        let s = status(&c, "orders", "orders");
        assert_eq!(s.parents.len(), 1);
        let p = &s.parents[0].parent_ref;
        assert_eq!(
            (p.group, p.kind),
            ("gateway.networking.k8s.io", "HTTPRoute")
        );
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("platform", "api"));
        let conds = conditions(&s);
        assert!(
            conds.contains(&("Accepted", "True", "Accepted")),
            "{conds:?}"
        );
        assert!(
            conds.contains(&("ResolvedRefs", "True", "ResolvedRefs")),
            "{conds:?}"
        );
        let parent = status(&c, "platform", "api");
        assert_eq!(parent.parents[0].parent_ref.kind, "Gateway");
        assert!(conditions(&parent).contains(&("ResolvedRefs", "True", "ResolvedRefs")));
        // A reference to a route that does not exist.
        let c = compiled(|t| {
            t.replace(
                "name: returns, namespace: returns}",
                "name: gone, namespace: returns}",
            )
        });
        let team = status(&c, "orders", "orders");
        assert!(conditions(&team).contains(&("ResolvedRefs", "False", "BackendNotFound")));
        assert!(conditions(&team).contains(&("Accepted", "True", "Accepted")));
        assert_eq!(
            served_by(&c, "/orders/returns/1", &[]).as_deref(),
            Some("orders/orders")
        );
    }

    #[test]
    fn a_reference_without_consent_is_refused() {
        let c = compiled(|t| {
            t.replace(
                "name: from-orders\n  namespace: returns",
                "name: from-orders\n  namespace: elsewhere",
            )
        });
        let team = status(&c, "orders", "orders");
        assert!(
            conditions(&team).contains(&("ResolvedRefs", "False", "RefNotPermitted")),
            "{team:?}"
        );
        assert!(format!("{team:?}").contains("no ReferenceGrant in namespace returns"));
        // /orders/returns falls back to the team's /orders rule.
        assert_eq!(
            served_by(&c, "/orders/returns/1", &[]).as_deref(),
            Some("orders/orders")
        );
        assert!(c.status.http_routes.get("returns", "returns").is_none());
        // A child that names another parent is not taken either.
        let c = compiled(|t| {
            t.replace(
                "kind: HTTPRoute, name: orders, namespace: orders}\n  rules",
                "kind: HTTPRoute, name: someone-else, namespace: orders}\n  rules",
            )
        });
        assert!(conditions(&status(&c, "orders", "orders")).contains(&(
            "ResolvedRefs",
            "False",
            "RefNotPermitted"
        )));
        assert_eq!(
            served_by(&c, "/orders/returns/1", &[]).as_deref(),
            Some("orders/orders")
        );
    }

    #[test]
    fn a_cycle_is_refused_and_the_rest_keeps_serving() {
        // returns delegates back to orders: orders -> returns -> orders.
        let c = compiled(|t| {
            format!(
                "{}\n---\n{}",
                t.replace(
                    "    - path: {type: PathPrefix, value: /orders/returns}\n    backendRefs:\n    - {name: returns, port: 80}",
                    "    - path: {type: PathPrefix, value: /orders/returns}\n    backendRefs:\n    - {name: returns, port: 80}\n  - matches: [{path: {value: /orders/returns/loop}}]\n    backendRefs:\n    - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders, namespace: orders}",
                ),
                "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: back, namespace: orders}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: returns}]\n  to: [{group: gateway.networking.k8s.io, kind: HTTPRoute}]\n"
            )
        });
        let r = status(&c, "returns", "returns");
        let resolved = r.parents[0]
            .conditions
            .iter()
            .find(|c| c.kind == "ResolvedRefs")
            .unwrap();
        assert_eq!(
            (resolved.status, resolved.reason),
            ("False", super::REASON_CYCLE)
        );
        assert!(
            resolved
                .message
                .contains("orders/orders -> returns/returns -> orders/orders"),
            "{}",
            resolved.message
        );
        assert_eq!(
            served_by(&c, "/orders/returns/1", &[]).as_deref(),
            Some("returns/returns")
        );
        assert_eq!(
            served_by(&c, "/orders/1", &[]).as_deref(),
            Some("orders/orders")
        );
        assert!(c.warnings.iter().any(|w| w.contains("delegation cycle")));
    }

    #[test]
    fn parent_policy_is_the_default_and_a_child_policy_replaces_it() {
        let c = example();
        let max_body = |e: &RouteEntry| e.action.policy.limits.as_ref().and_then(|l| l.max_body);
        let orders = route(&c, &http::Method::GET, "/orders/1", &[]).unwrap();
        assert_eq!(max_body(orders), Some(1024));
        let returns = route(&c, &http::Method::GET, "/orders/returns/1", &[]).unwrap();
        assert_eq!(max_body(returns), Some(1024));
        let payments = route(
            &c,
            &http::Method::GET,
            "/payments",
            &[("x-api-version", "v2")],
        )
        .unwrap();
        assert_eq!(max_body(payments), Some(64));
        // Without delegation there is nothing to inherit.
        let c = compiled(|t| {
            t.replace(
                "name: from-platform\n  namespace: orders",
                "name: from-platform\n  namespace: nowhere",
            )
        });
        assert_eq!(served_by(&c, "/orders/1", &[]), None);
    }

    #[test]
    fn an_incremental_compile_agrees_with_a_fresh_one() {
        let config = |teams: &str| {
            parse_documents([
                (Path::new("gateway.yaml"), GATEWAY),
                (Path::new("teams.yaml"), teams),
                (Path::new("backends.yaml"), BACKENDS),
            ])
            .unwrap()
        };
        let state = crate::policy::state::PolicyState::default();
        let run = state.compile();
        let metrics = crate::policy::PolicyMetrics::default();
        let env = crate::control::PolicyEnv {
            metrics: &metrics,
            state: &run,
        };
        let mut compiler = crate::control::Compiler::default();
        let mut ids = ShardIds::default();
        compiler.compile(&config(TEAMS), &mut ids, 1, &env);
        let withdrawn = TEAMS.replace(
            "name: from-orders\n  namespace: returns",
            "name: from-orders\n  namespace: elsewhere",
        );
        let second = compiler.compile(&config(&withdrawn), &mut ids, 2, &env);
        let fresh = compiled(|_| withdrawn.clone());
        let paths = ["/orders/1", "/orders/returns/1", "/healthz", "/admin"];
        for p in paths {
            assert_eq!(served_by(&second, p, &[]), served_by(&fresh, p, &[]), "{p}");
        }
        assert_eq!(
            served_by(&second, "/orders/returns/1", &[]).as_deref(),
            Some("orders/orders")
        );
        let statuses = |c: &Compiled| format!("{:?}", c.status.http_routes);
        assert_eq!(statuses(&second), statuses(&fresh));
        assert_eq!(second.warnings, fresh.warnings);
    }

    #[test]
    fn a_config_without_delegation_is_compiled_as_it_is() {
        let cfg = parse_documents([(
            Path::new("g.yaml"),
            GATEWAY.split("\n---\n# Every").next().unwrap(),
        )])
        .unwrap();
        let cfg = crate::config::Config {
            routes: Vec::new(),
            ..cfg
        };
        assert!(super::flatten(&cfg).is_none());
    }
}
