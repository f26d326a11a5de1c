//! Delegation over the example in examples/delegation, compiled.
use std::path::Path;

use crate::{
    config::parse_documents,
    control::{compile, status::RouteStatus, Compiled, ShardIds},
    snapshot::{RequestView, RouteEntry},
};

const GATEWAY: &str = include_str!("../../../../examples/delegation/gateway.yaml");
const TEAMS: &str = include_str!("../../../../examples/delegation/teams.yaml");
const BACKENDS: &str = include_str!("../../../../examples/delegation/backends.yaml");

/// The example with `edit` applied to the teams' file.
fn compiled(edit: impl FnOnce(&str) -> String) -> Compiled {
    compiled_with(GATEWAY, edit)
}

/// The example with `gateway` for the platform's file.
fn compiled_with(gateway: &str, edit: impl FnOnce(&str) -> String) -> Compiled {
    let teams = edit(TEAMS);
    let cfg = parse_documents([
        (Path::new("gateway.yaml"), gateway),
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
fn a_root_with_only_delegating_rules_keeps_its_status() {
    let healthz = "  # The platform's own endpoint.\n  - matches:\n    - path: {type: Exact, value: /healthz}\n    backendRefs:\n    - {name: status, port: 80}\n";
    assert!(GATEWAY.contains(healthz));
    let c = compiled_with(&GATEWAY.replace(healthz, ""), str::to_owned);
    assert_eq!(served_by(&c, "/healthz", &[]), None);
    assert_eq!(
        served_by(&c, "/orders/1", &[]).as_deref(),
        Some("orders/orders")
    );
    let root = status(&c, "platform", "api");
    assert!(conditions(&root).contains(&("Accepted", "True", "Accepted")));
}

#[test]
fn a_route_attached_to_a_gateway_is_not_a_child() {
    let c = compiled(|t| {
        t.replace(
            "  name: returns\n  namespace: returns\nspec:\n  parentRefs:\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders, namespace: orders}",
            "  name: returns\n  namespace: returns\nspec:\n  parentRefs:\n  - {name: public, namespace: platform}",
        )
    });
    let team = status(&c, "orders", "orders");
    assert!(
        conditions(&team).contains(&("ResolvedRefs", "False", "RefNotPermitted")),
        "{team:?}"
    );
    assert!(format!("{team:?}").contains("is attached to a Gateway itself"));
    // Served on its own (the listener admits only the platform's namespace).
    let own = status(&c, "returns", "returns");
    assert_eq!(own.parents[0].parent_ref.kind, "Gateway");
    assert!(conditions(&own).contains(&("Accepted", "False", "NotAllowedByListeners")));
}

#[test]
fn unchanged_delegated_routes_are_not_compiled_again() {
    let base = parse_documents([
        (Path::new("gateway.yaml"), GATEWAY),
        (Path::new("teams.yaml"), TEAMS),
        (Path::new("backends.yaml"), BACKENDS),
    ])
    .unwrap();
    // Only the team's route object changes (a new generation).
    let mut runs = crate::control::compile::Recompiles::default();
    let first = runs.compile(&base);
    let changed = crate::control::compile::Recompiles::touched(&base, "orders");
    let second = runs.compile(&changed);
    let stats = runs.compiler.stats();
    assert!(stats.incremental, "{stats:?}");
    // orders/orders, and the two routes a SluicePolicy targets (compiled
    // every time); not returns/returns.
    assert_eq!(stats.compiled, 3, "{stats:?}");
    let returns = |c: &Compiled| {
        route(c, &http::Method::GET, "/orders/returns/1", &[])
            .unwrap()
            .action
            .clone()
    };
    assert!(std::sync::Arc::ptr_eq(&returns(&first), &returns(&second)));
    assert_eq!(
        status(&second, "orders", "orders").parents[0].conditions[0].observed_generation,
        Some(7)
    );
}

#[test]
fn a_second_tree_with_other_hostnames_is_refused_on_the_child() {
    let c = compiled(|t| {
        format!(
            "{t}\n---\n{}",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: api2, namespace: platform}\n\
             spec:\n  parentRefs: [{name: public}]\n  hostnames: [other.example.com]\n  rules:\n\
             \x20 - matches: [{path: {value: /payments}}]\n\
             \x20   backendRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: \"*\", namespace: payments}]\n"
        )
    });
    // Served through the first tree only.
    assert_eq!(
        served_by(&c, "/payments/1", &[("x-api-version", "v2")]).as_deref(),
        Some("payments/payments")
    );
    let other = c.snapshot.shards[0]
        .listener_for(8080, "other.example.com")
        .unwrap();
    let h = http::HeaderMap::new();
    let req = RequestView::new(&http::Method::GET, "/payments/1", None, &h);
    assert!(other.routes.find("other.example.com", &req).is_none());
    let s = status(&c, "payments", "payments");
    let parents: Vec<(&str, &str)> = s
        .parents
        .iter()
        .map(|p| {
            let accepted = p.conditions.iter().find(|c| c.kind == "Accepted").unwrap();
            (p.parent_ref.name.as_str(), accepted.reason)
        })
        .collect();
    assert_eq!(
        parents,
        [("api", "Accepted"), ("api2", "NotAllowedByParents")]
    );
}

#[test]
fn a_policy_on_a_named_parent_rule_is_inherited_through_that_rule_only() {
    let c = compiled(|t| {
        format!(
            "{t}\n---\napiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\n\
             metadata: {{name: orders-rule, namespace: platform}}\n\
             spec:\n  targetRefs: [{{kind: HTTPRoute, name: api, sectionName: orders}}]\n  \
             limits: {{maxRequestBodyBytes: 512}}\n"
        )
    });
    let max_body = |path: &str, headers: &[(&'static str, &str)]| {
        route(&c, &http::Method::GET, path, headers)
            .unwrap()
            .action
            .policy
            .limits
            .as_ref()
            .and_then(|l| l.max_body)
    };
    // The rule's policy is more specific than the route's.
    assert_eq!(max_body("/orders/1", &[]), Some(512));
    assert_eq!(max_body("/orders/returns/1", &[]), Some(512));
    // The payments rule is another rule: the route's default, and payments' own.
    assert_eq!(
        max_body("/payments/1", &[("x-api-version", "v2")]),
        Some(64)
    );
    assert_eq!(max_body("/healthz", &[]), Some(1024));
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
    let mut memo = super::Memo::new();
    assert!(super::flatten(&cfg, &mut memo).is_none());
}

/// A mesh (GAMMA) route, with a Service parentRef, is not a child: `*`
/// does not put it on the Gateway, and naming it is refused.
#[test]
fn routes_with_parent_refs_of_other_kinds_are_not_children() {
    let mesh = "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: internal, namespace: payments}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: payments}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /payments/internal}}]\n    backendRefs: [{name: payments, port: 80}]\n";
    let c = compiled(|t| format!("{t}{mesh}"));
    assert_eq!(
        served_by(&c, "/payments/internal", &[("x-api-version", "v2")]).as_deref(),
        Some("payments/payments"),
        "the mesh route must not be served through the platform's `*`"
    );
    assert!(c.status.http_routes.get("payments", "internal").is_none());
    // Named explicitly: refused on the parent's status.
    let named = GATEWAY.replace(
        "name: \"*\", namespace: payments}",
        "name: internal, namespace: payments}",
    );
    assert_ne!(named, GATEWAY, "the example names payments/*");
    let c = compiled_with(&named, |t| format!("{t}{mesh}"));
    let platform = status(&c, "platform", "api");
    let resolved = platform.parents[0]
        .conditions
        .iter()
        .find(|c| c.kind == "ResolvedRefs")
        .unwrap();
    assert_eq!(
        (resolved.status, resolved.reason),
        ("False", "RefNotPermitted")
    );
    assert!(
        resolved.message.contains("parentRefs of a kind"),
        "{}",
        resolved.message
    );
}

/// Routes of one namespace that all delegate to `*` of that namespace: the
/// paths through them multiply (10 routes, 10! orders), so the walk is
/// bounded — refused with `DelegationLimit` — and the rest still serves.
#[test]
fn a_walk_through_many_paths_is_bounded() {
    let mut team = String::new();
    for i in 0..10 {
        team.push_str(&format!(
            "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: payments}}\nspec:\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /payments/r{i}}}}}]\n    backendRefs: [{{name: orders, port: 80}}]\n  - matches: [{{path: {{type: PathPrefix, value: /payments}}}}]\n    backendRefs:\n    - {{group: gateway.networking.k8s.io, kind: HTTPRoute, name: \"*\", namespace: payments}}\n"
        ));
    }
    let c = compiled(|t| format!("{t}{team}"));
    let limited = c.status.http_routes.iter().any(|s| {
        s.parents
            .iter()
            .flat_map(|p| p.conditions.iter())
            .any(|c| c.reason == super::REASON_LIMIT)
    });
    assert!(
        limited,
        "{:?}",
        c.warnings.iter().take(3).collect::<Vec<_>>()
    );
    // The other teams' trees are unaffected.
    assert_eq!(
        served_by(&c, "/orders/42", &[]).as_deref(),
        Some("orders/orders")
    );
}

/// ReplacePrefixMatch replaces the rule's own prefix: a child rule keeps it
/// when delegation leaves its PathPrefix as it is, and is dropped when the
/// effective match would be the parent's (a rule without matches).
#[test]
fn replace_prefix_match_needs_the_rules_own_prefix() {
    let c = compiled(|t| {
        t.replace(
            "  # Outside /orders: not served (the route's status says so).\n",
            "  - matches: [{path: {type: PathPrefix, value: /orders/v1}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]\n    backendRefs: [{name: orders, port: 80}]\n  - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /legacy}}}]\n    backendRefs: [{name: orders, port: 80}]\n  # Outside /orders: not served (the route's status says so).\n",
        )
    });
    let e = route(&c, &http::Method::GET, "/orders/v1/x", &[]).unwrap();
    assert_eq!(e.route.to_string(), "orders/orders");
    assert!(
        e.action
            .filters
            .iter()
            .any(|f| format!("{f:?}").contains("/v2")),
        "{:?}",
        e.action.filters
    );
    // The rule without matches would have rewritten /orders → /legacy.
    let e = route(&c, &http::Method::GET, "/orders/1", &[]).unwrap();
    assert!(
        !e.action
            .filters
            .iter()
            .any(|f| format!("{f:?}").contains("/legacy")),
        "{:?}",
        e.action.filters
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("ReplacePrefixMatch") && w.contains("orders/orders")),
        "{:?}",
        c.warnings
    );
}

/// Of two trees claiming one child, the older root's is served, wherever
/// the source lists it.
#[test]
fn the_older_root_wins_a_shared_child() {
    let c = compiled(|t| {
        format!(
            "{t}\n---\n{}",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: api2, namespace: platform, creationTimestamp: \"2020-01-01T00:00:00Z\"}\n\
             spec:\n  parentRefs: [{name: public}]\n  hostnames: [other.example.com]\n  rules:\n\
             \x20 - matches: [{path: {value: /payments}}]\n\
             \x20   backendRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: \"*\", namespace: payments}]\n"
        )
    });
    let other = c.snapshot.shards[0]
        .listener_for(8080, "other.example.com")
        .unwrap();
    let h = http::HeaderMap::new();
    let req = RequestView::new(&http::Method::GET, "/payments/1", None, &h);
    assert_eq!(
        other
            .routes
            .find("other.example.com", &req)
            .map(|e| e.route.to_string())
            .as_deref(),
        Some("payments/payments")
    );
    assert_eq!(
        served_by(&c, "/payments/1", &[("x-api-version", "v2")]),
        None
    );
}

#[test]
fn a_root_on_another_controllers_gateway_claims_no_child() {
    // An older root of the same hostnames on a Gateway of another class:
    // walked, it would take the payments child first and ours would be
    // refused as a second tree.
    let c = compiled(|t| {
        format!(
            "{t}\n---\n{}",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
             metadata: {name: other}\nspec: {controllerName: example.com/other}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: theirs, namespace: platform}\n\
             spec: {gatewayClassName: other, listeners: [{name: http, port: 9090, protocol: HTTP}]}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: foreign, namespace: platform, creationTimestamp: \"2020-01-01T00:00:00Z\"}\n\
             spec:\n  parentRefs: [{name: theirs}]\n  hostnames: [other.example.com]\n  rules:\n\
             \x20 - matches: [{path: {value: /payments}}]\n\
             \x20   backendRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: \"*\", namespace: payments}]\n"
        )
    });
    assert_eq!(
        served_by(&c, "/payments/1", &[("x-api-version", "v2")]).as_deref(),
        Some("payments/payments")
    );
    assert!(
        c.warnings.iter().all(|w| !w.contains("platform/foreign")),
        "{:#?}",
        c.warnings
    );
}

#[test]
fn accepted_is_per_parent_route() {
    // payments/refunds serves /payments/refunds through platform/api, and
    // nothing through platform/legacy (its /legacy prefix holds none of
    // the child's paths): Accepted on the first parent only.
    let c = compiled(|t| {
        format!(
            "{t}\n---\n{}",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: refunds, namespace: payments}\n\
             spec:\n  rules:\n\
             \x20 - matches: [{path: {value: /payments/refunds}}]\n\
             \x20   backendRefs: [{name: payments, port: 80}]\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: legacy, namespace: platform, creationTimestamp: \"2030-01-01T00:00:00Z\"}\n\
             spec:\n  parentRefs: [{name: public}]\n  hostnames: [api.example.com]\n  rules:\n\
             \x20 - matches: [{path: {value: /legacy}}]\n\
             \x20   backendRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: refunds, namespace: payments}]\n"
        )
    });
    assert_eq!(
        served_by(&c, "/payments/refunds", &[("x-api-version", "v2")]).as_deref(),
        Some("payments/refunds")
    );
    let s = status(&c, "payments", "refunds");
    let accepted = |parent: &str| {
        let p = s
            .parents
            .iter()
            .find(|p| p.parent_ref.name == parent)
            .unwrap_or_else(|| panic!("no parent {parent}: {s:#?}"));
        let a = p.conditions.iter().find(|c| c.kind == "Accepted").unwrap();
        (a.status, a.reason)
    };
    assert_eq!(accepted("api"), ("True", "Accepted"));
    assert_eq!(accepted("legacy"), ("False", "UnsupportedValue"));
}
