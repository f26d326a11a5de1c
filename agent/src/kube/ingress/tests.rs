//! Conversion of Ingresses: classes, path types, default backend, TLS,
//! names, annotations and invalid objects.
use std::sync::Arc;

use ::kube::api::DynamicObject;
use serde_json::json;

use super::*;
use crate::{
    config::{Filter, HttpRoute, PathMatch, PathModifier, RouteKind},
    kube::watch::Kind,
};

fn object(kind: Kind, ns: Option<&str>, name: &str, data: serde_json::Value) -> Arc<DynamicObject> {
    let mut o = DynamicObject::new(name, &kind.resource()).data(data);
    o.metadata.namespace = ns.map(str::to_owned);
    Arc::new(o)
}

fn class(name: &str, controller: &str, default: bool) -> Arc<DynamicObject> {
    let mut c = object(
        Kind::IngressClass,
        None,
        name,
        json!({"spec": {"controller": controller}}),
    );
    if default {
        Arc::make_mut(&mut c).metadata.annotations =
            Some([(DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())].into());
    }
    c
}

fn ingress(
    name: &str,
    spec: serde_json::Value,
    annotations: &[(&str, &str)],
) -> Arc<DynamicObject> {
    let mut i = object(Kind::Ingress, Some("apps"), name, json!({ "spec": spec }));
    Arc::make_mut(&mut i).metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
    if !annotations.is_empty() {
        Arc::make_mut(&mut i).metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| {
                    let k = if k.contains('/') {
                        k.to_string()
                    } else {
                        format!("{}{k}", annotations::NGINX_PREFIX)
                    };
                    (k, v.to_string())
                })
                .collect(),
        );
    }
    i
}

fn service(name: &str, ports: &[(&str, u16)]) -> Arc<DynamicObject> {
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p}))
        .collect();
    object(
        Kind::Service,
        Some("apps"),
        name,
        json!({"spec": {"ports": ports}}),
    )
}

fn secret(name: &str) -> DynamicObject {
    let mut s = DynamicObject::new(name, &Kind::Secret.resource());
    s.metadata.namespace = Some("apps".into());
    s
}

fn ours() -> Vec<Arc<DynamicObject>> {
    vec![class("sluice", INGRESS_CONTROLLER, false)]
}

fn path(p: &str, ty: &str, svc: &str, port: u16) -> serde_json::Value {
    json!({"path": p, "pathType": ty, "backend": {"service": {"name": svc, "port": {"number": port}}}})
}

fn settings() -> IngressSettings {
    IngressSettings {
        http_port: 8080,
        https_port: 8443,
        addresses: Vec::new(),
    }
}

fn convert(ingresses: &[Arc<DynamicObject>], secrets: &[DynamicObject]) -> IngressOutput {
    let services = vec![
        service("web", &[("http", 80)]),
        service("api", &[("grpc", 9000)]),
    ];
    convert_all(&ours(), ingresses, &services, secrets, &settings())
}

fn route<'a>(out: &'a IngressOutput, name: &str) -> &'a HttpRoute {
    out.config
        .routes
        .iter()
        .find(|r| r.id.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = out.config.routes.iter().map(|r| &r.id.name).collect();
            panic!("no route {name}: {names:?} {:?}", out.errors)
        })
}

#[test]
fn path_types_hosts_and_default_backend_become_routes_of_the_entry_point() {
    let out = convert(
        &[ingress(
            "shop",
            json!({
                "ingressClassName": "sluice",
                "defaultBackend": {"service": {"name": "web", "port": {"name": "http"}}},
                "rules": [
                    {"host": "shop.example.com", "http": {"paths": [
                        path("/cart", "Exact", "web", 80),
                        path("/api/", "Prefix", "api", 9000),
                    ]}},
                    {"http": {"paths": [path("/static", "ImplementationSpecific", "web", 80)]}},
                ],
            }),
            &[],
        )],
        &[],
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.ours, [(ObjectRef::new("apps", "shop"), true)]);
    let host = route(&out, "ingress:shop:shop.example.com");
    assert_eq!(host.id.namespace, "apps");
    assert_eq!(host.hostnames.len(), 1);
    assert_eq!(host.parents[0].gateway, entry_gateway());
    assert_eq!(host.parents[0].section_name, None);
    let paths: Vec<_> = host
        .rules
        .iter()
        .map(|r| r.matches[0].path.clone())
        .collect();
    assert_eq!(
        paths,
        [
            PathMatch::Exact("/cart".into()),
            PathMatch::Prefix("/api".into())
        ]
    );
    assert_eq!(
        host.rules[1].backends[0].service,
        ObjectRef::new("apps", "api")
    );
    assert_eq!(host.rules[1].backends[0].port, 9000);
    let any = route(&out, "ingress:shop:*");
    assert!(any.hostnames.is_empty());
    assert_eq!(
        any.rules[0].matches[0].path,
        PathMatch::Prefix("/static".into())
    );
    let default = route(&out, "ingress:shop:(default-backend)");
    assert!(default.hostnames.is_empty());
    // No creation time: it loses every precedence tie with the rules.
    assert_eq!(default.created, None);
    assert!(host.created.is_some());
    assert_eq!(
        default.rules[0].matches[0].path,
        PathMatch::Prefix("/".into())
    );
    // The named port was resolved through the Service.
    assert_eq!(default.rules[0].backends[0].port, 80);

    // The entry point: our class, one Gateway with the HTTP listener only.
    assert_eq!(out.config.gateway_classes.len(), 1);
    let gw = &out.config.gateways[0];
    assert_eq!(gw.id, entry_gateway());
    assert!(gw.assign_address && gw.addresses.is_empty());
    let listeners: Vec<_> = gw
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.port))
        .collect();
    assert_eq!(listeners, [("http", 8080)]);
    assert!(is_synthetic(&gw.id) && is_synthetic(&host.id));
    assert!(!is_synthetic(&ObjectRef::new("apps", "shop")));
}

#[test]
fn only_ingresses_of_our_classes_are_converted_and_the_default_class_is_honoured() {
    let spec = |class: Option<&str>| {
        let mut s = json!({"rules": [{"http": {"paths": [path("/", "Prefix", "web", 80)]}}]});
        if let Some(c) = class {
            s["ingressClassName"] = c.into();
        }
        s
    };
    let ingresses = [
        ingress("mine", spec(Some("sluice")), &[]),
        ingress("nginx", spec(Some("nginx")), &[]),
        ingress("classless", spec(None), &[]),
        ingress("legacy", spec(None), &[(LEGACY_CLASS_ANNOTATION, "sluice")]),
    ];
    let classes = |default: bool| {
        vec![
            class("sluice", INGRESS_CONTROLLER, default),
            class("nginx", "k8s.io/ingress-nginx", !default),
        ]
    };
    let names = |out: &IngressOutput| -> Vec<String> {
        let mut n: Vec<_> = out.ours.iter().map(|(id, _)| id.name.clone()).collect();
        n.sort();
        n
    };
    let out = convert_all(&classes(false), &ingresses, &[], &[], &settings());
    assert_eq!(names(&out), ["legacy", "mine"]);
    let out = convert_all(&classes(true), &ingresses, &[], &[], &settings());
    assert_eq!(names(&out), ["classless", "legacy", "mine"]);
    // No Ingress of ours: no entry point, no ports bound.
    let out = convert_all(&classes(false), &ingresses[1..3], &[], &[], &settings());
    assert!(out.config.gateways.is_empty() && out.config.routes.is_empty());
}

#[test]
fn tls_hosts_get_listeners_with_their_secrets_and_plain_http_redirects() {
    let spec = json!({
        "ingressClassName": "sluice",
        "tls": [{"hosts": ["secure.example.com", "*.wild.example.com"], "secretName": "cert"}],
        "rules": [
            {"host": "secure.example.com", "http": {"paths": [path("/", "Prefix", "web", 80)]}},
            {"host": "plain.example.com", "http": {"paths": [path("/", "Prefix", "web", 80)]}},
        ],
    });
    let out = convert(&[ingress("tls", spec.clone(), &[])], &[secret("cert")]);
    assert!(out.errors.is_empty() && out.warnings.is_empty(), "{out:?}");
    let gw = &out.config.gateways[0];
    let listeners: Vec<_> = gw
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.port,
                l.hostname.as_ref().map(ToString::to_string),
            )
        })
        .collect();
    assert_eq!(
        listeners,
        [
            ("http", 8080, None),
            (
                "https-w.wild.example.com",
                8443,
                Some("*.wild.example.com".into())
            ),
            (
                "https-h.secure.example.com",
                8443,
                Some("secure.example.com".into())
            ),
        ]
    );
    let cert = &gw.listeners[2].tls.as_ref().unwrap().certificate_refs[0];
    assert_eq!(
        (cert.kind.as_str(), &cert.object),
        ("Secret", &ObjectRef::new("apps", "cert"))
    );
    // The entry point may read the Secret in the Ingress's namespace.
    let grant = &out.config.reference_grants[0];
    assert_eq!(grant.id, ObjectRef::new("apps", "ingress:tls"));
    assert_eq!(grant.from[0].namespace, ENTRY_NAMESPACE);
    assert_eq!(grant.to[0].name.as_deref(), Some("cert"));

    // The TLS host is served on the HTTPS port; plain HTTP redirects with 308.
    let secure = route(&out, "ingress:tls:secure.example.com");
    assert_eq!(secure.parents[0].port, Some(8443));
    let redirect = route(&out, "ingress:tls:secure.example.com:to-https");
    assert_eq!(redirect.parents[0].section_name.as_deref(), Some("http"));
    match &redirect.rules[0].filters[0] {
        Filter::Redirect(r) => {
            assert_eq!(
                (r.scheme.as_deref(), r.status, r.port),
                (Some("https"), 308, Some(8443))
            )
        }
        f => panic!("{f:?}"),
    }
    // A host without TLS is served on every listener, no redirect.
    let plain = route(&out, "ingress:tls:plain.example.com");
    assert_eq!(
        (
            plain.parents[0].port,
            plain.parents[0].section_name.as_deref()
        ),
        (None, None)
    );
    assert!(!out
        .config
        .routes
        .iter()
        .any(|r| r.id.name == "ingress:tls:plain.example.com:to-https"));

    // ssl-redirect "false": no redirect; force-ssl-redirect: every host.
    let out = convert(
        &[ingress("tls", spec.clone(), &[("ssl-redirect", "false")])],
        &[secret("cert")],
    );
    assert_eq!(out.config.routes.len(), 2);
    assert!(out
        .config
        .routes
        .iter()
        .all(|r| r.parents[0].port.is_none()));
    let out = convert(
        &[ingress(
            "tls",
            spec.clone(),
            &[("force-ssl-redirect", "true")],
        )],
        &[secret("cert")],
    );
    route(&out, "ingress:tls:plain.example.com:to-https");

    // The Secret is missing: still served, with a warning naming it.
    let out = convert(&[ingress("tls", spec, &[])], &[]);
    assert!(out.errors.is_empty());
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("Ingress apps/tls: TLS Secret apps/cert not found")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn a_tls_host_claimed_twice_keeps_the_first_secret() {
    let spec = |secret: &str| {
        json!({
            "ingressClassName": "sluice",
            "tls": [{"hosts": ["a.example.com"], "secretName": secret}],
            "rules": [{"host": "a.example.com", "http": {"paths": [path("/", "Prefix", "web", 80)]}}],
        })
    };
    let out = convert(
        &[
            ingress("first", spec("one"), &[]),
            ingress("second", spec("two"), &[]),
        ],
        &[secret("one"), secret("two")],
    );
    let https: Vec<_> = out.config.gateways[0]
        .listeners
        .iter()
        .filter_map(|l| {
            l.tls
                .as_ref()
                .map(|t| t.certificate_refs[0].object.name.clone())
        })
        .collect();
    assert_eq!(https, ["one"]);
    assert!(
        out.warnings.iter().any(|w| w.starts_with(
            "Ingress apps/second: TLS for a.example.com is already served with Secret apps/one"
        )),
        "{:?}",
        out.warnings
    );
}

#[test]
fn annotations_map_onto_rewrites_policies_and_grpc() {
    let spec = |p: serde_json::Value| json!({"ingressClassName": "sluice", "rules": [{"host": "a.example.com", "http": {"paths": [p]}}]});
    // rewrite-target without captures replaces the whole path (nginx semantics).
    let out = convert(
        &[ingress(
            "r",
            spec(path("/app", "Prefix", "web", 80)),
            &[("rewrite-target", "/")],
        )],
        &[],
    );
    let r = route(&out, "ingress:r:a.example.com");
    assert_eq!(
        *r.rules[0].filters,
        [Filter::Rewrite(crate::config::Rewrite {
            hostname: None,
            path: Some(PathModifier::ReplaceFullPath("/".into()))
        })]
    );
    // The capture idiom strips the prefix.
    let out = convert(
        &[ingress(
            "r",
            spec(path("/app(/|$)(.*)", "ImplementationSpecific", "web", 80)),
            &[("rewrite-target", "/$2"), ("use-regex", "true")],
        )],
        &[],
    );
    let r = route(&out, "ingress:r:a.example.com");
    assert_eq!(r.rules[0].matches[0].path, PathMatch::Prefix("/app".into()));
    assert_eq!(
        *r.rules[0].filters,
        [Filter::Rewrite(crate::config::Rewrite {
            hostname: None,
            path: Some(PathModifier::ReplacePrefixMatch("/".into()))
        })]
    );
    // Other capture forms are refused, naming the path.
    let out = convert(
        &[ingress(
            "r",
            spec(path("/(a|b)/(.*)", "ImplementationSpecific", "web", 80)),
            &[("rewrite-target", "/$1")],
        )],
        &[],
    );
    let text = out.errors[0].1[0].to_string();
    assert!(
        text.contains("Ingress apps/r")
            && text.contains("spec.rules[0].http.paths[0].path")
            && text.contains("capture groups"),
        "{text}"
    );
    assert_eq!(out.ours, [(ObjectRef::new("apps", "r"), false)]);

    // Source ranges and body size: a SluicePolicy per route.
    let out = convert(
        &[ingress(
            "p",
            spec(path("/", "Prefix", "web", 80)),
            &[
                ("whitelist-source-range", "10.0.0.0/8"),
                ("proxy-body-size", "1k"),
            ],
        )],
        &[],
    );
    let p = &out.config.policies[0];
    assert_eq!(p.id, ObjectRef::new("apps", "ingress:p:a.example.com"));
    assert_eq!(p.targets[0].kind, "HTTPRoute");
    assert_eq!(p.targets[0].name, "ingress:p:a.example.com");
    assert_eq!(
        p.defaults.ip_allow,
        Some(vec!["10.0.0.0/8".parse().unwrap()])
    );
    assert_eq!(
        p.defaults.limits.as_ref().unwrap().max_request_body_bytes,
        Some(1024)
    );

    // backend-protocol GRPC: gRPC routes (HTTP/2 to the backend).
    let out = convert(
        &[ingress(
            "g",
            spec(path("/", "Prefix", "api", 9000)),
            &[("backend-protocol", "GRPC")],
        )],
        &[],
    );
    assert_eq!(route(&out, "ingress:g:a.example.com").kind, RouteKind::Grpc);
}

#[test]
fn unsupported_annotations_warn_by_name_and_access_control_refuses_the_ingress() {
    let spec = json!({"ingressClassName": "sluice", "rules": [{"http": {"paths": [path("/", "Prefix", "web", 80)]}}]});
    let out = convert(
        &[
            ingress("a", spec.clone(), &[("proxy-read-timeout", "60")]),
            ingress(
                "b",
                spec.clone(),
                &[("proxy-read-timeout", "30"), ("app-root", "/x")],
            ),
            ingress("locked", spec, &[("auth-url", "http://auth.example.com")]),
        ],
        &[],
    );
    let timeout = format!("{}proxy-read-timeout", annotations::NGINX_PREFIX);
    assert_eq!(out.ignored_annotations.get(&timeout), Some(&2));
    assert!(
        out.warnings.contains(&format!(
            "Ingress apps/a: annotation {timeout} is not supported by Sluice, ignored"
        )),
        "{:?}",
        out.warnings
    );
    // The protected Ingress is not served at all; the others are.
    assert_eq!(out.errors.len(), 1);
    let text = out.errors[0].1[0].to_string();
    assert!(
        text.contains("Ingress apps/locked") && text.contains("auth-url"),
        "{text}"
    );
    assert!(route(&out, "ingress:a:*").rules.len() == 1);
    assert!(!out
        .config
        .routes
        .iter()
        .any(|r| r.id.name.starts_with("ingress:locked")));
}

#[test]
fn invalid_ingresses_are_left_out_alone_and_missing_services_warn() {
    let spec = |p: serde_json::Value| json!({"ingressClassName": "sluice", "rules": [{"http": {"paths": [p]}}]});
    let out = convert(
        &[
            ingress(
                "regex",
                spec(path("/(", "ImplementationSpecific", "web", 80)),
                &[("use-regex", "true")],
            ),
            ingress(
                "named",
                spec(
                    json!({"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "nope"}}}}),
                ),
                &[],
            ),
            ingress(
                "resource",
                spec(
                    json!({"path": "/", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}}),
                ),
                &[],
            ),
            ingress("relative", spec(path("x", "Prefix", "web", 80)), &[]),
            ingress("empty", json!({"ingressClassName": "sluice"}), &[]),
            ingress("gone", spec(path("/", "Prefix", "missing", 80)), &[]),
        ],
        &[],
    );
    let errors: Vec<(String, String)> = out
        .errors
        .iter()
        .map(|(id, e)| (id.name.clone(), e[0].to_string()))
        .collect();
    let find = |name: &str, needle: &str| {
        let (_, text) = errors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not refused: {errors:?}"));
        assert!(
            text.contains(needle) && text.contains(&format!("Ingress apps/{name}")),
            "{text}"
        );
    };
    find("regex", "not a valid regular expression");
    find("named", "has no port named \"nope\"");
    find("resource", "resource backends are not supported");
    find("relative", "not an absolute path");
    find("empty", "nothing to serve");
    assert_eq!(errors.len(), 5);
    // A missing Service does not make the Ingress invalid: its paths answer
    // 500 (as a Gateway API backendRef does) and the warning says so.
    route(&out, "ingress:gone:*");
    assert!(
        out.warnings.iter().any(|w| w == "Ingress apps/gone: backend Service apps/missing not found: its paths answer 500 until it exists"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn the_converter_reports_ingress_errors_and_reconverts_only_on_change() {
    use crate::kube::convert::Converter;
    let mut writers: std::collections::BTreeMap<
        Kind,
        ::kube::runtime::reflector::store::Writer<DynamicObject>,
    > = Kind::ALL
        .into_iter()
        .chain([Kind::Node])
        .map(|k| {
            (
                k,
                ::kube::runtime::reflector::store::Writer::new(k.resource()),
            )
        })
        .collect();
    let put = |writers: &mut std::collections::BTreeMap<
        Kind,
        ::kube::runtime::reflector::store::Writer<DynamicObject>,
    >,
               kind: Kind,
               o: Arc<DynamicObject>| {
        writers
            .get_mut(&kind)
            .unwrap()
            .apply_watcher_event(&::kube::runtime::watcher::Event::Apply((*o).clone()));
    };
    put(
        &mut writers,
        Kind::IngressClass,
        class("sluice", INGRESS_CONTROLLER, false),
    );
    put(
        &mut writers,
        Kind::Ingress,
        ingress(
            "ok",
            json!({"ingressClassName": "sluice", "rules": [{"http": {"paths": [path("/", "Prefix", "web", 80)]}}]}),
            &[],
        ),
    );
    put(
        &mut writers,
        Kind::Ingress,
        ingress("bad", json!({"ingressClassName": "sluice"}), &[]),
    );
    let stores = writers.iter().map(|(k, w)| (*k, w.as_reader())).collect();
    let mut c = Converter::new(settings());
    let out = c.convert(&stores, &[], &[]);
    assert!(out.changed);
    assert!(out.config.gateways.iter().any(|g| g.id == entry_gateway()));
    assert_eq!(out.errors.len(), 1);
    assert_eq!(
        out.errors[0].0,
        (Kind::Ingress, ObjectRef::new("apps", "bad"))
    );
    let again = c.convert(&stores, &[], &[]);
    assert!(!again.changed, "nothing changed");
    assert_eq!(again.config.routes.len(), 1);
    assert_eq!(again.ingresses.len(), 2);
    put(
        &mut writers,
        Kind::Ingress,
        ingress(
            "ok",
            json!({"ingressClassName": "sluice", "rules": [{"http": {"paths": [path("/v2", "Prefix", "web", 80)]}}]}),
            &[],
        ),
    );
    let stores = writers.iter().map(|(k, w)| (*k, w.as_reader())).collect();
    let changed = c.convert(&stores, &[], &[]);
    assert!(changed.changed);
    assert_eq!(
        changed.config.routes[0].rules[0].matches[0].path,
        PathMatch::Prefix("/v2".into())
    );
}

#[test]
fn a_host_with_tls_in_another_ingress_is_redirected_too() {
    let with_tls = json!({
        "ingressClassName": "sluice",
        "tls": [{"hosts": ["a.example.com"], "secretName": "cert"}],
        "rules": [{"host": "a.example.com", "http": {"paths": [path("/", "Prefix", "web", 80)]}}],
    });
    let without = json!({
        "ingressClassName": "sluice",
        "rules": [{"host": "a.example.com", "http": {"paths": [path("/static", "Prefix", "web", 80)]}}],
    });
    let out = convert(
        &[
            ingress("main", with_tls, &[]),
            ingress("static", without.clone(), &[]),
        ],
        &[secret("cert")],
    );
    assert_eq!(
        route(&out, "ingress:static:a.example.com").parents[0].port,
        Some(8443)
    );
    route(&out, "ingress:static:a.example.com:to-https");
    // Unless that Ingress says otherwise.
    let out = convert(
        &[
            ingress(
                "main",
                json!({"ingressClassName": "sluice", "tls": [{"hosts": ["a.example.com"], "secretName": "cert"}], "rules": [{"host": "a.example.com", "http": {"paths": [path("/", "Prefix", "web", 80)]}}]}),
                &[],
            ),
            ingress("static", without, &[("ssl-redirect", "false")]),
        ],
        &[secret("cert")],
    );
    assert_eq!(
        route(&out, "ingress:static:a.example.com").parents[0].port,
        None
    );
}

#[test]
fn status_gives_served_ingresses_the_node_addresses_and_skips_synthetic_objects() {
    use crate::kube::status::{objects, ObjectStatus};
    let spec = json!({"ingressClassName": "sluice", "rules": [{"http": {"paths": [path("/", "Prefix", "web", 80)]}}]});
    let out = convert_all(
        &ours(),
        &[
            ingress("ok", spec, &[]),
            ingress("bad", json!({"ingressClassName": "sluice"}), &[]),
        ],
        &[service("web", &[("http", 80)])],
        &[],
        // No --ingress-address: every local address, the node's in status.
        &IngressSettings::default(),
    );
    let converted = crate::kube::convert::Converted {
        config: out.config.clone(),
        ingresses: out.ours.clone(),
        ..Default::default()
    };
    let status = crate::control::compile(
        &converted.config,
        &mut crate::control::ShardIds::default(),
        1,
    )
    .status;
    let written = objects(&status, &converted);
    assert!(
        written.iter().all(|o| !is_synthetic(&o.target().1)),
        "no status for objects without an API object: {written:?}"
    );
    let ingress = |name: &str| {
        written
            .iter()
            .find_map(|o| match o {
                ObjectStatus::Ingress(i) if i.name == name => Some(i.addresses.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no status for {name}: {written:?}"))
    };
    let node = crate::control::status::node_addresses();
    assert!(!node.is_empty());
    let node: Vec<String> = node.iter().map(ToString::to_string).collect();
    assert_eq!(ingress("ok"), node);
    assert!(ingress("bad").is_empty(), "a refused Ingress gets none");
}

#[test]
fn tls_hosts_that_look_alike_or_are_invalid_never_take_the_entry_point_down() {
    let spec = |host: &str, secret: &str| {
        json!({
            "ingressClassName": "sluice",
            "tls": [{"hosts": [host], "secretName": secret}],
            "rules": [{"http": {"paths": [path("/", "Prefix", "web", 80)]}}],
        })
    };
    let out = convert(
        &[
            ingress("wild", spec("*.example.com", "one"), &[]),
            // Once spelled like the wildcard's listener name.
            ingress("plain", spec("wildcard.example.com", "two"), &[]),
            ingress("upper", spec("Shop.Example.com", "three"), &[]),
        ],
        &[secret("one"), secret("two"), secret("three")],
    );
    assert_eq!(
        out.config.gateways.len(),
        1,
        "the entry point stands: {:?}",
        out.warnings
    );
    let names: Vec<&str> = out.config.gateways[0]
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "http",
            "https-w.example.com",
            "https-h.wildcard.example.com"
        ]
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("Ingress apps/upper") && w.contains("not a valid hostname")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn snippets_and_canaries_refuse_the_ingress() {
    let spec = json!({"ingressClassName": "sluice", "rules": [{"http": {"paths": [path("/", "Prefix", "web", 80)]}}]});
    let out = convert(
        &[
            ingress(
                "snippet",
                spec.clone(),
                &[("configuration-snippet", "deny all;")],
            ),
            ingress(
                "canary",
                spec,
                &[("canary", "true"), ("canary-weight", "10")],
            ),
        ],
        &[],
    );
    assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
    assert!(!out
        .config
        .routes
        .iter()
        .any(|r| r.id.name.starts_with("ingress:")));
}
