//! ListenerSets from YAML to snapshot and status: admission per
//! `allowedListeners` mode, conflicts and their precedence, routes through a
//! ListenerSet parentRef, certificates in the set's namespace.
use std::path::Path;

use crate::{
    config::parse_documents,
    control::{
        compile,
        status::{Condition, ListenerSetStatus, Status},
        Compiled, ShardIds,
    },
};

/// GatewayClass, Gateway `infra/gw` (listener `http` on port 80 for
/// `a.example.com`, `allowedListeners` given by `allowed`) and Namespaces
/// `team-a` (labelled `team: a`) and `team-b`.
fn base(allowed: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  {allowed}
  listeners:
  - {{name: http, port: 80, protocol: HTTP, hostname: a.example.com}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: team-a, labels: {{team: a}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: team-b}}
"#
    )
}

/// A ListenerSet `ns/name` of `infra/gw` with the listeners given (flow YAML).
fn set(ns: &str, name: &str, created: Option<&str>, listeners: &[&str]) -> String {
    let created = created
        .map(|c| format!(", creationTimestamp: \"{c}\""))
        .unwrap_or_default();
    let listeners: String = listeners.iter().map(|l| format!("  - {l}\n")).collect();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\n\
         metadata: {{name: {name}, namespace: {ns}{created}}}\n\
         spec:\n  parentRef: {{name: gw, namespace: infra}}\n  listeners:\n{listeners}"
    )
}

fn compiled(text: &str) -> Compiled {
    let cfg = parse_documents([(Path::new("t.yaml"), text)]).unwrap();
    compile(&cfg, &mut ShardIds::default(), 1)
}

fn set_status<'a>(s: &'a Status, ns: &str, name: &str) -> &'a ListenerSetStatus {
    s.listener_sets
        .iter()
        .find(|x| x.namespace == ns && x.name == name)
        .unwrap_or_else(|| panic!("no status of ListenerSet {ns}/{name}: {s:#?}"))
}

/// `status/reason` of condition `kind`.
fn cond(conditions: &[Condition], kind: &str) -> String {
    let c = conditions
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in {conditions:#?}"));
    format!("{}/{}", c.status, c.reason)
}

fn listener_cond(s: &ListenerSetStatus, listener: &str, kind: &str) -> String {
    let l = s
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .unwrap_or_else(|| panic!("no listener {listener} in {s:#?}"));
    cond(&l.conditions, kind)
}

const WEB_B: &str = "{name: web, port: 80, protocol: HTTP, hostname: b.example.com}";

#[test]
fn admission_follows_allowed_listeners_mode() {
    let sets = [
        set("infra", "same", None, &[WEB_B]),
        set(
            "team-a",
            "labelled",
            None,
            &["{name: web, port: 81, protocol: HTTP}"],
        ),
        set(
            "team-b",
            "plain",
            None,
            &["{name: web, port: 82, protocol: HTTP}"],
        ),
    ]
    .concat();
    // (allowedListeners, which of same/labelled/plain are admitted)
    let cases = [
        ("", [false, false, false]),
        ("allowedListeners: {namespaces: {from: None}}", [false; 3]),
        (
            "allowedListeners: {namespaces: {from: Same}}",
            [true, false, false],
        ),
        ("allowedListeners: {namespaces: {from: All}}", [true; 3]),
        (
            "allowedListeners: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}",
            [false, true, false],
        ),
        (
            "allowedListeners: {namespaces: {from: Selector, selector: \
             {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [infra, team-b]}]}}}",
            [true, false, true],
        ),
    ];
    for (allowed, want) in cases {
        let c = compiled(&format!("{}{sets}", base(allowed)));
        let shard = &c.snapshot.shards[0];
        let served = [
            shard.listener_for(80, "b.example.com").is_some(),
            shard.listener_for(81, "x").is_some(),
            shard.listener_for(82, "x").is_some(),
        ];
        assert_eq!(served, want, "served with {allowed:?}");
        for ((ns, name), admitted) in [
            ("infra", "same"),
            ("team-a", "labelled"),
            ("team-b", "plain"),
        ]
        .into_iter()
        .zip(want)
        {
            let s = set_status(&c.status, ns, name);
            let (accepted, programmed) = if admitted {
                ("True/Accepted", "True/Programmed")
            } else {
                ("False/NotAllowed", "False/NotAllowed")
            };
            assert_eq!(
                cond(&s.conditions, "Accepted"),
                accepted,
                "{ns}/{name} with {allowed:?}"
            );
            assert_eq!(cond(&s.conditions, "Programmed"), programmed);
            assert_eq!(s.listeners.len(), usize::from(admitted));
        }
        let gw = &c.status.gateways[0];
        let attached = want.iter().filter(|a| **a).count() as u32;
        assert_eq!(
            gw.attached_listener_sets,
            (!allowed.is_empty() && !allowed.contains("None")).then_some(attached),
            "{allowed:?}"
        );
        assert_eq!(
            gw.listeners.len(),
            1,
            "a set's listeners are not the Gateway's"
        );
        assert_eq!(cond(&gw.conditions, "Accepted"), "True/Accepted");
    }
}

#[test]
fn a_set_of_a_gateway_not_accepted_is_parent_not_accepted() {
    let text = format!(
        "{}{}",
        base("allowedListeners: {namespaces: {from: All}}\n  infrastructure: {parametersRef: {group: x.io, kind: P, name: p}}"),
        set("team-a", "team", None, &[WEB_B])
    );
    let c = compiled(&text);
    assert!(c.snapshot.shards.is_empty(), "the Gateway is not served");
    let s = set_status(&c.status, "team-a", "team");
    assert_eq!(cond(&s.conditions, "Accepted"), "False/ParentNotAccepted");
    assert_eq!(cond(&s.conditions, "Programmed"), "False/ParentNotAccepted");
    assert!(s.listeners.is_empty());
    assert_eq!(c.status.gateways[0].attached_listener_sets, Some(0));
}

#[test]
fn gateway_listeners_win_then_older_sets_then_names() {
    let text = [
        base("allowedListeners: {namespaces: {from: All}}"),
        // Newest, but its name sorts first: age decides before names.
        set(
            "team-a",
            "a-newer",
            Some("2024-01-01T00:00:00Z"),
            &[WEB_B, "{name: other, port: 80, protocol: HTTP, hostname: d.example.com}"],
        ),
        set(
            "team-b",
            "older",
            Some("2020-01-01T00:00:00Z"),
            &[
                // Same port and hostname as the Gateway's own listener.
                "{name: clash, port: 80, protocol: HTTP, hostname: a.example.com}",
                WEB_B,
                // Port 80 is HTTP: another protocol conflicts whatever the hostname.
                "{name: tls, port: 80, protocol: TLS, hostname: c.example.com, tls: {mode: Passthrough}}",
            ],
        ),
        // Same age (none): by namespace/name.
        set("team-b", "x-second", None, &["{name: s, port: 90, protocol: HTTP}"]),
        set("team-b", "b-first", None, &["{name: s, port: 90, protocol: HTTP}"]),
    ]
    .concat();
    let c = compiled(&text);
    let older = set_status(&c.status, "team-b", "older");
    assert_eq!(
        listener_cond(older, "clash", "Accepted"),
        "False/HostnameConflict"
    );
    assert_eq!(
        listener_cond(older, "clash", "Programmed"),
        "False/HostnameConflict"
    );
    assert_eq!(
        listener_cond(older, "clash", "Conflicted"),
        "True/HostnameConflict"
    );
    assert_eq!(listener_cond(older, "web", "Accepted"), "True/Accepted");
    assert_eq!(
        listener_cond(older, "web", "Conflicted"),
        "False/NoConflicts"
    );
    assert_eq!(
        listener_cond(older, "tls", "Conflicted"),
        "True/ProtocolConflict"
    );
    // Accepted with one valid listener; the reason names the others.
    assert_eq!(
        cond(&older.conditions, "Accepted"),
        "True/ListenersNotValid"
    );
    assert_eq!(cond(&older.conditions, "Programmed"), "True/Programmed");

    let newer = set_status(&c.status, "team-a", "a-newer");
    assert_eq!(
        listener_cond(newer, "web", "Accepted"),
        "False/HostnameConflict"
    );
    assert_eq!(listener_cond(newer, "other", "Accepted"), "True/Accepted");

    assert_eq!(
        cond(
            &set_status(&c.status, "team-b", "b-first").conditions,
            "Accepted"
        ),
        "True/Accepted"
    );
    let second = set_status(&c.status, "team-b", "x-second");
    assert_eq!(
        cond(&second.conditions, "Accepted"),
        "False/ListenersNotValid"
    );
    assert_eq!(
        cond(&second.conditions, "Programmed"),
        "False/ListenersNotValid"
    );

    // The Gateway's own listener stays accepted and served; the winners serve.
    let gw = &c.status.gateways[0];
    assert_eq!(
        cond(&gw.listeners[0].conditions, "Conflicted"),
        "False/NoConflicts"
    );
    assert_eq!(gw.attached_listener_sets, Some(3));
    let shard = &c.snapshot.shards[0];
    assert_eq!(
        shard
            .listener_for(80, "a.example.com")
            .unwrap()
            .name
            .as_ref(),
        "http"
    );
    assert_eq!(
        shard
            .listener_for(80, "b.example.com")
            .unwrap()
            .name
            .as_ref(),
        "team-b/older/web"
    );
    assert_eq!(
        shard.listener_for(90, "x").unwrap().name.as_ref(),
        "team-b/b-first/s"
    );
    assert!(shard.listener_for(80, "c.example.com").is_none());
}

#[test]
fn routes_attach_through_listener_set_parent_refs() {
    let text = [
        base("allowedListeners: {namespaces: {from: All}}"),
        set(
            "team-a",
            "team",
            None,
            &[
                "{name: web, port: 8080, protocol: HTTP, hostname: '*.team-a.example.com'}",
                "{name: admin, port: 8081, protocol: HTTP}",
            ],
        ),
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: team-a}
spec:
  parentRefs: [{kind: ListenerSet, group: gateway.networking.k8s.io, name: team, sectionName: web}]
  hostnames: [app.team-a.example.com, app.elsewhere.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-section, namespace: team-a}
spec:
  parentRefs: [{kind: ListenerSet, name: team, sectionName: http}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: via-gateway, namespace: team-a}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: web}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-team, namespace: team-b}
spec:
  parentRefs: [{kind: ListenerSet, name: team, namespace: team-a}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-missing-set, namespace: team-a}
spec:
  parentRefs: [{kind: ListenerSet, name: missing}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: team-a}
spec: {ports: [{port: 80}]}
"#
        .to_owned(),
    ]
    .concat();
    let c = compiled(&text);
    let shard = &c.snapshot.shards[0];
    let web = shard.listener_for(8080, "app.team-a.example.com").unwrap();
    assert_eq!(
        web.routes.len(),
        1,
        "only the route to the set's web listener"
    );
    let headers = http::HeaderMap::new();
    let req = crate::snapshot::RequestView::new(&http::Method::GET, "/", None, &headers);
    assert_eq!(
        web.routes
            .find("app.team-a.example.com", &req)
            .unwrap()
            .route
            .name,
        "app"
    );
    assert!(web.routes.find("app.elsewhere.com", &req).is_none());
    // allowedRoutes defaults to Same: the set's namespace, not the Gateway's.
    assert!(shard.listener_for(8081, "x").unwrap().routes.is_empty());

    let route = |name: &str| {
        c.status
            .http_routes
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("route {name}"))
    };
    let app = route("app");
    let p = &app.parents[0];
    assert_eq!(
        (
            p.parent_ref.kind,
            p.parent_ref.namespace.as_str(),
            p.parent_ref.name.as_str()
        ),
        ("ListenerSet", "team-a", "team")
    );
    assert_eq!(p.parent_ref.section_name.as_deref(), Some("web"));
    assert_eq!(cond(&p.conditions, "Accepted"), "True/Accepted");
    assert_eq!(
        cond(&route("wrong-section").parents[0].conditions, "Accepted"),
        "False/NoMatchingParent"
    );
    // A Gateway parentRef does not reach a set's listener by its name.
    let gw_parent = &route("via-gateway").parents[0];
    assert_eq!(gw_parent.parent_ref.kind, "Gateway");
    assert_eq!(
        cond(&gw_parent.conditions, "Accepted"),
        "False/NoMatchingParent"
    );
    assert_eq!(
        cond(&route("other-team").parents[0].conditions, "Accepted"),
        "False/NotAllowedByListeners"
    );
    // A ListenerSet that does not exist has no Gateway: not a parent of ours.
    assert!(c
        .status
        .http_routes
        .iter()
        .all(|r| r.name != "to-missing-set"));
    let team = set_status(&c.status, "team-a", "team");
    let attached: Vec<(&str, u32)> = team
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.attached_routes))
        .collect();
    assert_eq!(attached, [("web", 1), ("admin", 0)]);
}

/// A self-signed certificate for `host` as a TLS Secret `ns/name`.
fn tls_secret(ns: &str, name: &str, host: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let indent = |t: &str| -> String { t.lines().map(|l| format!("    {l}\n")).collect() };
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert.pem()),
        indent(&key.serialize_pem())
    )
}

fn grant(from_kind: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {{name: certs, namespace: certs}}\nspec:\n  \
         from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: team-a}}]\n  \
         to: [{{group: \"\", kind: Secret}}]\n"
    )
}

#[test]
fn certificates_are_in_the_sets_namespace_or_granted() {
    let set_and_shared = [
        base("allowedListeners: {namespaces: {from: All}}"),
        set(
            "team-a",
            "team",
            None,
            &[
                "{name: own, port: 443, protocol: HTTPS, hostname: own.example.com, tls: {certificateRefs: [{name: own}]}}",
                "{name: shared, port: 443, protocol: HTTPS, hostname: shared.example.com, tls: {certificateRefs: [{name: shared, namespace: certs}]}}",
            ],
        ),
        tls_secret("certs", "shared", "shared.example.com"),
        // The Gateway's namespace holds a Secret of the same name: a set's
        // reference without a namespace never reaches it.
        tls_secret("infra", "own", "own.example.com"),
    ]
    .concat();
    let text = format!(
        "{set_and_shared}{}",
        tls_secret("team-a", "own", "own.example.com")
    );
    for (extra, shared_served) in [
        (String::new(), false),
        // A grant to Gateways does not cover a ListenerSet.
        (grant("Gateway"), false),
        (grant("ListenerSet"), true),
    ] {
        let c = compiled(&format!("{text}{extra}"));
        let shard = &c.snapshot.shards[0];
        assert!(shard.listener_for(443, "own.example.com").is_some());
        assert_eq!(
            shard.listener_for(443, "shared.example.com").is_some(),
            shared_served,
            "{extra}"
        );
        let team = set_status(&c.status, "team-a", "team");
        assert_eq!(
            listener_cond(team, "own", "ResolvedRefs"),
            "True/ResolvedRefs"
        );
        assert_eq!(
            listener_cond(team, "shared", "ResolvedRefs"),
            if shared_served {
                "True/ResolvedRefs"
            } else {
                "False/RefNotPermitted"
            }
        );
        assert_eq!(cond(&team.conditions, "Programmed"), "True/Programmed");
    }
    // Without its own Secret, the set's listener is not served even though
    // the Gateway's namespace has one of that name.
    let c = compiled(&set_and_shared);
    assert!(c.snapshot.shards[0]
        .listener_for(443, "own.example.com")
        .is_none());
    let team = set_status(&c.status, "team-a", "team");
    assert_eq!(
        listener_cond(team, "own", "ResolvedRefs"),
        "False/InvalidCertificateRef"
    );
    // Neither listener resolves its certificate: the set is not valid.
    assert_eq!(
        cond(&team.conditions, "Accepted"),
        "False/ListenersNotValid"
    );
    assert_eq!(
        cond(&team.conditions, "Programmed"),
        "False/ListenersNotValid"
    );
}

#[test]
fn a_route_through_a_set_is_not_compiled_again_when_another_changes() {
    let text = [
        base("allowedListeners: {namespaces: {from: All}}"),
        set(
            "team-a",
            "team",
            None,
            &["{name: web, port: 8080, protocol: HTTP}"],
        ),
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: team-a}
spec:
  parentRefs: [{kind: ListenerSet, name: team, sectionName: web}]
  hostnames: [app.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: team-a}
spec:
  parentRefs: [{kind: ListenerSet, name: team, sectionName: web}]
  hostnames: [other.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: team-a}
spec: {ports: [{port: 80}]}
"#
        .to_owned(),
    ]
    .concat();
    let base = parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap();
    // A new generation of `other` only.
    let mut runs = crate::control::compile::Recompiles::default();
    let first = runs.compile(&base);
    let changed = crate::control::compile::Recompiles::touched(&base, "other");
    let second = runs.compile(&changed);
    let stats = runs.compiler.stats();
    assert!(stats.incremental, "{stats:?}");
    assert_eq!(stats.compiled, 1, "only `other`: {stats:?}");
    let headers = http::HeaderMap::new();
    let req = crate::snapshot::RequestView::new(&http::Method::GET, "/", None, &headers);
    let app = |c: &Compiled| {
        let web = c.snapshot.shards[0]
            .listener_for(8080, "app.example.com")
            .unwrap();
        web.routes
            .find("app.example.com", &req)
            .unwrap()
            .action
            .clone()
    };
    assert!(std::sync::Arc::ptr_eq(&app(&first), &app(&second)));
    // The set's Gateway changing (the set is removed) resolves it again.
    let mut without = changed.clone();
    without.listener_sets.clear();
    let third = runs.compile(&without);
    assert!(third.snapshot.shards[0]
        .listener_for(8080, "app.example.com")
        .is_none());
}
