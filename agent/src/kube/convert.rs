//! API objects → [`Config`], through the same conversion and validation as
//! the directory source. Unlike a directory (whole or nothing), objects are
//! judged one by one: in a cluster, one team's broken HTTPRoute must not hold
//! back everybody else's changes. A bad object is left out and reported with
//! namespace/name and field — except a SluicePolicy, which fails closed: it
//! stays in the configuration as invalid, with its targets read leniently,
//! so that what it protects answers 500 instead of going unprotected.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{Hash, Hasher},
};

use ::kube::api::DynamicObject;

use super::{
    ingress::{IngressOutput, IngressSettings},
    node_select::{select, Selection, NODE_SELECTOR_ANNOTATION},
    watch::{Kind, Stores},
};
use crate::{
    config::{
        convert_object,
        policy::{lenient_targets, PolicySections},
        port_range_overlaps, Config, DocumentError, Location, ObjectRef, SluicePolicy,
        PORT_RANGES_ANNOTATION,
    },
    control::CONTROLLER_NAME,
};

/// Identity of one API object.
pub type ObjectKey = (Kind, ObjectRef);

/// What the stores converted to.
#[derive(Debug, Default, Clone)]
pub struct Converted {
    /// The valid objects Sluice acts on: GatewayClasses of our controller,
    /// Gateways of those classes, and everything else in scope.
    pub config: Config,
    /// Objects left out as invalid.
    pub errors: Vec<(ObjectKey, Vec<DocumentError>)>,
    /// `metadata.generation` of each Gateway API object, for `observedGeneration`.
    pub generations: HashMap<ObjectKey, i64>,
    /// Invalid HTTPRoutes and GRPCRoutes and the Gateways their parentRefs
    /// name, so their status can say why they are not attached.
    pub invalid_route_parents: Vec<(ObjectKey, Vec<ObjectRef>)>,
    /// Invalid ListenerSets and the Gateway their parentRef names, so their
    /// status can say why they are not accepted.
    pub invalid_listener_sets: Vec<(ObjectRef, ObjectRef)>,
    /// Invalid BackendTLSPolicies and the Services their targetRefs name,
    /// so their status can say why they are not accepted.
    pub invalid_policy_targets: Vec<(ObjectRef, Vec<ObjectRef>)>,
    /// Valid Gateways of our classes that this node does not serve
    /// (`sluice.dev/node-selector`); not in `config`, but their status is
    /// still the leader's job.
    pub elsewhere: Vec<crate::config::Gateway>,
    /// Ingresses of our IngressClasses, and whether each is served.
    pub ingresses: Vec<(ObjectRef, bool)>,
    /// What is not served of valid Ingresses as written (`Ingress ns/name: ...`).
    pub ingress_warnings: Vec<String>,
    /// Per ignored ingress-nginx annotation, how many served Ingresses carry it.
    pub ignored_annotations: BTreeMap<String, u64>,
    /// Whether anything that conversion reads changed since the last call.
    pub changed: bool,
}

/// One converted object, kept until the object changes.
struct Cached {
    resource_version: Option<String>,
    fingerprint: u64,
    result: Result<Config, Vec<DocumentError>>,
}

/// Converts the stores, reusing the conversion of unchanged objects: with
/// thousands of routes, a change of one must not re-validate all.
#[derive(Default)]
pub struct Converter {
    cache: HashMap<ObjectKey, Cached>,
    /// The node's labels at the last call, to notice a change.
    node_labels: Option<BTreeMap<String, String>>,
    /// Where the Ingress entry point listens.
    ingress: IngressSettings,
    /// The Ingresses converted last, by a fingerprint of everything that
    /// conversion reads (Ingresses, IngressClasses, Services, held Secrets).
    ingress_cache: Option<(u64, IngressOutput)>,
}

impl Converter {
    /// A converter whose Ingress entry point listens as `ingress` says.
    pub fn new(ingress: IngressSettings) -> Self {
        Self {
            ingress,
            ..Self::default()
        }
    }

    /// The Ingresses of our classes, converted again only when what they
    /// read changed.
    fn ingresses(
        &mut self,
        stores: &Stores,
        secrets: &[DynamicObject],
        changed: &mut bool,
    ) -> &IngressOutput {
        let objects = |kind: Kind| stores.get(&kind).map(|s| s.state()).unwrap_or_default();
        let classes = objects(Kind::IngressClass);
        let ingresses = objects(Kind::Ingress);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.ingress.hash(&mut h);
        let mut prints: Vec<u64> = classes
            .iter()
            .chain(&ingresses)
            .map(|o| fingerprint(o))
            .collect();
        // Services matter only to Ingresses (named ports, missing backends).
        if !ingresses.is_empty() {
            prints.extend(objects(Kind::Service).iter().map(|s| fingerprint(s)));
            let mut held: Vec<ObjectRef> = secrets.iter().map(object_ref).collect();
            held.sort();
            held.hash(&mut h);
        }
        prints.sort_unstable();
        prints.hash(&mut h);
        let key = h.finish();
        if self.ingress_cache.as_ref().map(|(k, _)| *k) != Some(key) {
            let services = if ingresses.is_empty() {
                Vec::new()
            } else {
                objects(Kind::Service)
            };
            let converted = super::ingress::convert_all(
                &classes,
                &ingresses,
                &services,
                secrets,
                &self.ingress,
            );
            *changed = true;
            self.ingress_cache = Some((key, converted));
        }
        &self.ingress_cache.as_ref().expect("just filled").1
    }

    /// Converts the stores and the held `secrets` and `config_maps`.
    pub fn convert(
        &mut self,
        stores: &Stores,
        secrets: &[DynamicObject],
        config_maps: &[DynamicObject],
    ) -> Converted {
        let mut out = Converted::default();
        let node_labels: BTreeMap<String, String> = stores
            .get(&Kind::Node)
            .and_then(|s| s.state().first().and_then(|n| n.metadata.labels.clone()))
            .unwrap_or_default();
        if self.node_labels.as_ref() != Some(&node_labels) {
            out.changed = true;
            self.node_labels = Some(node_labels.clone());
        }
        let objects = |kind: Kind| stores.get(&kind).map(|s| s.state()).unwrap_or_default();

        let classes: Vec<_> = objects(Kind::GatewayClass)
            .into_iter()
            .filter(|c| str_at(c, &["spec", "controllerName"]) == Some(CONTROLLER_NAME))
            .collect();
        let our_classes: BTreeSet<String> = classes
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let gateways: Vec<_> = objects(Kind::Gateway)
            .into_iter()
            .filter(|g| {
                str_at(g, &["spec", "gatewayClassName"]).is_some_and(|c| our_classes.contains(c))
            })
            .collect();

        let mut seen = BTreeSet::new();
        let mut add = |kind: Kind, obj: &DynamicObject, out: &mut Converted| {
            let key = (kind, object_ref(obj));
            if let Some(g) = obj.metadata.generation {
                out.generations.insert(key.clone(), g);
            }
            let rv = &obj.metadata.resource_version;
            let known = match self.cache.get_mut(&key) {
                // The version already converted: no need to even fingerprint.
                Some(c) if rv.is_some() && c.resource_version == *rv => true,
                Some(c) => {
                    // A new version; often only status changed (our own writes).
                    let f = fingerprint(obj);
                    c.resource_version = rv.clone();
                    if c.fingerprint != f {
                        c.fingerprint = f;
                        c.result = convert_object(to_value(kind, obj));
                        out.changed = true;
                    }
                    true
                }
                None => false,
            };
            if !known {
                out.changed = true;
                let cached = Cached {
                    resource_version: rv.clone(),
                    fingerprint: fingerprint(obj),
                    result: convert_object(to_value(kind, obj)),
                };
                self.cache.insert(key.clone(), cached);
            }
            let cached = &self.cache[&key];
            match &cached.result {
                Ok(c) => out.config.merge(c.clone()),
                Err(errors) => {
                    if kind.is_route() {
                        out.invalid_route_parents
                            .push((key.clone(), raw_parents(obj)));
                    }
                    if kind == Kind::ListenerSet {
                        if let Some(parent) = raw_listener_set_parent(obj) {
                            out.invalid_listener_sets.push((key.1.clone(), parent));
                        }
                    }
                    if kind == Kind::BackendTlsPolicy {
                        out.invalid_policy_targets
                            .push((key.1.clone(), raw_service_targets(obj)));
                    }
                    if kind == Kind::SluicePolicy {
                        out.config.policies.push(fail_closed(obj, errors));
                    }
                    out.errors.push((key.clone(), errors.clone()))
                }
            }
            seen.insert(key);
        };
        for c in &classes {
            add(Kind::GatewayClass, c, &mut out);
        }
        let mut elsewhere = BTreeSet::new();
        for g in &gateways {
            match select(g, &node_labels) {
                Selection::Here => {}
                Selection::Elsewhere => {
                    elsewhere.insert(object_ref(g));
                }
                Selection::Invalid(message) => {
                    let id = object_ref(g);
                    if let Some(generation) = g.metadata.generation {
                        out.generations
                            .insert((Kind::Gateway, id.clone()), generation);
                    }
                    let mut location = crate::config::Location::api_object();
                    location.object = Some(format!("Gateway {id}"));
                    out.errors.push((
                        (Kind::Gateway, id),
                        vec![DocumentError {
                            location,
                            field: format!("metadata.annotations[{NODE_SELECTOR_ANNOTATION}]"),
                            message,
                        }],
                    ));
                    continue;
                }
            }
            add(Kind::Gateway, g, &mut out);
        }
        for kind in [
            Kind::ListenerSet,
            Kind::HttpRoute,
            Kind::GrpcRoute,
            Kind::TlsRoute,
            Kind::TcpRoute,
            Kind::UdpRoute,
            Kind::ReferenceGrant,
            Kind::BackendTlsPolicy,
            Kind::SluicePolicy,
            Kind::Service,
            Kind::EndpointSlice,
            Kind::Namespace,
        ] {
            for o in objects(kind) {
                add(kind, &o, &mut out);
            }
        }
        for s in secrets {
            add(Kind::Secret, s, &mut out);
        }
        for m in config_maps {
            add(Kind::ConfigMap, m, &mut out);
        }
        let mut ingress_changed = false;
        let ingress = self.ingresses(stores, secrets, &mut ingress_changed);
        out.changed |= ingress_changed;
        out.config.extend_from(&ingress.config);
        for (id, errors) in &ingress.errors {
            out.errors
                .push(((Kind::Ingress, id.clone()), errors.clone()));
        }
        out.ingresses = ingress.ours.clone();
        out.ingress_warnings = ingress.warnings.clone();
        out.ignored_annotations = ingress.ignored_annotations.clone();
        let (here, there): (Vec<_>, Vec<_>) = std::mem::take(&mut out.config.gateways)
            .into_iter()
            .partition(|g| !elsewhere.contains(&g.id));
        out.config.gateways = here;
        out.elsewhere = there;
        drop_overlapping_port_ranges(&mut out);
        let before = self.cache.len();
        self.cache.retain(|k, _| seen.contains(k));
        out.changed |= self.cache.len() != before;
        out
    }
}

/// Port ranges are judged across Gateways: of two that overlap, the later one
/// (in namespace/name order) is left out, with an error naming both.
fn drop_overlapping_port_ranges(out: &mut Converted) {
    // Store order is arbitrary: which Gateway is left out must not flap.
    out.config.gateways.sort_by(|a, b| a.id.cmp(&b.id));
    let mut dropped = BTreeSet::new();
    for (later, _, message) in port_range_overlaps(&out.config.gateways) {
        if !dropped.insert(later) {
            continue;
        }
        let id = out.config.gateways[later].id.clone();
        let mut location = Location::api_object();
        location.object = Some(format!("Gateway {id}"));
        out.errors.push((
            (Kind::Gateway, id),
            vec![DocumentError {
                location,
                field: format!("metadata.annotations[{PORT_RANGES_ANNOTATION}]"),
                message,
            }],
        ));
    }
    for i in dropped.into_iter().rev() {
        out.config.gateways.remove(i);
    }
}

pub fn object_ref(obj: &DynamicObject) -> ObjectRef {
    ObjectRef::new(
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// The Gateways named by a route's `spec.parentRefs`, read without validation.
fn raw_parents(obj: &DynamicObject) -> Vec<ObjectRef> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    obj.data
        .get("spec")
        .and_then(|s| s.get("parentRefs"))
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter(|p| {
            p.get("kind")
                .and_then(|k| k.as_str())
                .is_none_or(|k| k == "Gateway")
        })
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let pns = p.get("namespace").and_then(|n| n.as_str()).unwrap_or(&ns);
            Some(ObjectRef::new(pns, name))
        })
        .collect()
}

/// The Gateway a ListenerSet's raw `spec.parentRef` names (namespace
/// defaulting to the set's); `None` for a parent of another kind.
fn raw_listener_set_parent(obj: &DynamicObject) -> Option<ObjectRef> {
    let p = obj.data.get("spec")?.get("parentRef")?;
    if p.get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k != "Gateway")
    {
        return None;
    }
    let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
    let pns = p.get("namespace").and_then(|n| n.as_str()).unwrap_or(ns);
    Some(ObjectRef::new(pns, p.get("name")?.as_str()?))
}

/// A SluicePolicy that did not validate, as an invalid policy: no sections,
/// its targets read from the raw spec. The control plane answers 500 on
/// every target of an invalid policy and reports it `Invalid`.
fn fail_closed(obj: &DynamicObject, errors: &[DocumentError]) -> SluicePolicy {
    SluicePolicy {
        id: object_ref(obj),
        generation: obj.metadata.generation,
        created: obj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| (t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)),
        targets: obj
            .data
            .get("spec")
            .map(lenient_targets)
            .unwrap_or_default(),
        defaults: PolicySections::default(),
        overrides: PolicySections::default(),
        invalid: Some(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// The Services named by a policy's `spec.targetRefs`, read without validation.
fn raw_service_targets(obj: &DynamicObject) -> Vec<ObjectRef> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    obj.data
        .get("spec")
        .and_then(|s| s.get("targetRefs"))
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter(|t| {
            t.get("group")
                .and_then(|g| g.as_str())
                .unwrap_or("")
                .is_empty()
                && t.get("kind").and_then(|k| k.as_str()) == Some("Service")
        })
        .filter_map(|t| Some(ObjectRef::new(&ns, t.get("name")?.as_str()?)))
        .collect()
}

/// A string field of the object's data.
pub fn str_at<'a>(obj: &'a DynamicObject, path: &[&str]) -> Option<&'a str> {
    let mut v = &obj.data;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

/// The object as the wire types expect it: list items carry no apiVersion
/// and kind, so they are put back; managedFields are dropped unread.
fn to_value(kind: Kind, obj: &DynamicObject) -> serde_yaml::Value {
    let ar = kind.resource();
    let mut json = serde_json::to_value(obj).unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        map.insert("apiVersion".into(), ar.api_version.into());
        map.insert("kind".into(), ar.kind.into());
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
    }
    serde_yaml::to_value(json).unwrap_or_default()
}

/// What conversion reads of an object: everything but status and the
/// bookkeeping that changes on every write (status updates of our own
/// would otherwise trigger a reconversion each).
fn fingerprint(obj: &DynamicObject) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let m = &obj.metadata;
    (
        &m.name,
        &m.namespace,
        &m.labels,
        &m.annotations,
        &m.generation,
    )
        .hash(&mut h);
    m.creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut h);
    if let Some(map) = obj.data.as_object() {
        let rest: BTreeMap<&String, &serde_json::Value> =
            map.iter().filter(|(k, _)| k.as_str() != "status").collect();
        serde_json::to_string(&rest)
            .unwrap_or_default()
            .hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: Kind, ns: Option<&str>, name: &str, data: serde_json::Value) -> DynamicObject {
        let mut o = DynamicObject::new(name, &kind.resource()).data(data);
        o.metadata.namespace = ns.map(str::to_owned);
        o
    }

    fn stores(objs: Vec<(Kind, DynamicObject)>) -> Stores {
        let mut writers: BTreeMap<Kind, ::kube::runtime::reflector::store::Writer<DynamicObject>> =
            Kind::ALL
                .into_iter()
                .chain([Kind::Node])
                .map(|k| {
                    (
                        k,
                        ::kube::runtime::reflector::store::Writer::new(k.resource()),
                    )
                })
                .collect();
        for (k, o) in objs {
            writers
                .get_mut(&k)
                .unwrap()
                .apply_watcher_event(&::kube::runtime::watcher::Event::Apply(o));
        }
        writers.iter().map(|(k, w)| (*k, w.as_reader())).collect()
    }

    #[test]
    fn keeps_our_classes_and_their_gateways_and_reports_bad_objects_by_name() {
        let s = stores(vec![
            (
                Kind::GatewayClass,
                obj(
                    Kind::GatewayClass,
                    None,
                    "ours",
                    serde_json::json!({"spec": {"controllerName": CONTROLLER_NAME}}),
                ),
            ),
            (
                Kind::GatewayClass,
                obj(
                    Kind::GatewayClass,
                    None,
                    "theirs",
                    serde_json::json!({"spec": {"controllerName": "x.io/y"}}),
                ),
            ),
            (
                Kind::Gateway,
                obj(
                    Kind::Gateway,
                    Some("a"),
                    "gw",
                    serde_json::json!({"spec": {"gatewayClassName": "ours", "listeners": [{"name": "h", "port": 8080, "protocol": "HTTP"}]}}),
                ),
            ),
            (
                Kind::Gateway,
                obj(
                    Kind::Gateway,
                    Some("a"),
                    "other",
                    serde_json::json!({"spec": {"gatewayClassName": "theirs", "listeners": []}}),
                ),
            ),
            (
                Kind::HttpRoute,
                obj(
                    Kind::HttpRoute,
                    Some("a"),
                    "bad",
                    serde_json::json!({"spec": {"parentRefs": [{"name": "gw"}], "rules": [{"matches": [{"path": {"type": "Bogus", "value": "/"}}]}]}}),
                ),
            ),
        ]);
        let mut c = Converter::default();
        let out = c.convert(&s, &[], &[]);
        assert!(out.changed);
        assert_eq!(out.config.gateway_classes.len(), 1);
        assert_eq!(out.config.gateways.len(), 1);
        assert_eq!(out.config.routes.len(), 0);
        assert_eq!(out.errors.len(), 1);
        let text = out.errors[0].1[0].to_string();
        assert!(text.contains("HTTPRoute a/bad"), "{text}");
        assert!(text.contains("spec.rules[0].matches[0].path"), "{text}");
        // Nothing changed: the cache answers and says so.
        assert!(!c.convert(&s, &[], &[]).changed);
    }

    #[test]
    fn grpc_routes_are_converted_and_bad_ones_reported_with_their_kind() {
        let s = stores(vec![
            (
                Kind::GrpcRoute,
                obj(
                    Kind::GrpcRoute,
                    Some("a"),
                    "echo",
                    serde_json::json!({"spec": {"parentRefs": [{"name": "gw"}], "rules": [{"matches": [{"method": {"service": "echo.Echo", "method": "Say"}}], "backendRefs": [{"name": "svc", "port": 50051}]}]}}),
                ),
            ),
            (
                Kind::GrpcRoute,
                obj(
                    Kind::GrpcRoute,
                    Some("a"),
                    "bad",
                    serde_json::json!({"spec": {"parentRefs": [{"name": "gw"}], "rules": [{"filters": [{"type": "URLRewrite", "urlRewrite": {}}]}]}}),
                ),
            ),
        ]);
        let out = Converter::default().convert(&s, &[], &[]);
        assert_eq!(out.config.routes.len(), 1);
        let r = &out.config.routes[0];
        assert_eq!(r.kind, crate::config::RouteKind::Grpc);
        assert_eq!(
            r.rules[0].matches[0].path,
            crate::config::PathMatch::Exact("/echo.Echo/Say".into())
        );
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            out.errors[0].0,
            (Kind::GrpcRoute, ObjectRef::new("a", "bad"))
        );
        let text = out.errors[0].1[0].to_string();
        assert!(text.contains("GRPCRoute a/bad"), "{text}");
        assert!(text.contains("not allowed on a GRPCRoute"), "{text}");
        // Its status names the kind, so the writer patches grpcroutes.
        assert_eq!(
            out.invalid_route_parents,
            vec![(
                (Kind::GrpcRoute, ObjectRef::new("a", "bad")),
                vec![ObjectRef::new("a", "gw")]
            )]
        );
        let status =
            super::super::status::ObjectStatus::HttpRoute(crate::control::status::RouteStatus {
                kind: "GRPCRoute",
                namespace: "a".into(),
                name: "echo".into(),
                parents: vec![],
            });
        assert_eq!(
            status.target(),
            (Kind::GrpcRoute, ObjectRef::new("a", "echo"))
        );
    }

    #[test]
    fn tls_and_tcp_routes_are_converted_and_bad_ones_reported_with_their_kind() {
        let route = |kind, name: &str, spec: serde_json::Value| {
            (
                kind,
                obj(kind, Some("a"), name, serde_json::json!({ "spec": spec })),
            )
        };
        let s = stores(vec![
            route(
                Kind::TlsRoute,
                "tls",
                serde_json::json!({"parentRefs": [{"name": "gw"}], "hostnames": ["a.example.com"], "rules": [{"backendRefs": [{"name": "svc", "port": 443}]}]}),
            ),
            route(
                Kind::TcpRoute,
                "tcp",
                serde_json::json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "svc", "port": 5432}]}]}),
            ),
            route(
                Kind::UdpRoute,
                "udp",
                serde_json::json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "dns", "port": 53}]}]}),
            ),
            // Two rules: v1 has exactly one.
            route(
                Kind::TcpRoute,
                "bad",
                serde_json::json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "svc", "port": 1}]}, {"backendRefs": [{"name": "svc", "port": 2}]}]}),
            ),
        ]);
        let out = Converter::default().convert(&s, &[], &[]);
        let kinds: Vec<_> = out
            .config
            .routes
            .iter()
            .map(|r| (r.id.name.as_str(), r.kind))
            .collect();
        assert!(
            kinds.contains(&("tls", crate::config::RouteKind::Tls)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("tcp", crate::config::RouteKind::Tcp)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("udp", crate::config::RouteKind::Udp)),
            "{kinds:?}"
        );
        assert_eq!(kinds.len(), 3);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            out.errors[0].0,
            (Kind::TcpRoute, ObjectRef::new("a", "bad"))
        );
        assert!(out.errors[0].1[0].to_string().contains("exactly one rule"));
        assert_eq!(
            out.invalid_route_parents,
            vec![(
                (Kind::TcpRoute, ObjectRef::new("a", "bad")),
                vec![ObjectRef::new("a", "gw")]
            )]
        );
        // Status goes to tlsroutes/tcproutes.
        for (kind, name, plural) in [
            ("TLSRoute", Kind::TlsRoute, "tlsroutes"),
            ("TCPRoute", Kind::TcpRoute, "tcproutes"),
            ("UDPRoute", Kind::UdpRoute, "udproutes"),
        ] {
            let status = super::super::status::ObjectStatus::HttpRoute(
                crate::control::status::RouteStatus {
                    kind,
                    namespace: "a".into(),
                    name: "r".into(),
                    parents: vec![],
                },
            );
            assert_eq!(status.target(), (name, ObjectRef::new("a", "r")));
            assert_eq!(name.resource().plural, plural);
        }
    }

    fn node(labels: &[(&str, &str)]) -> DynamicObject {
        let mut n = obj(Kind::Node, None, "node-1", serde_json::json!({}));
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    fn selected_gateway(name: &str, selector: &str) -> DynamicObject {
        let mut g = obj(
            Kind::Gateway,
            Some("a"),
            name,
            serde_json::json!({"spec": {"gatewayClassName": "ours", "listeners": [{"name": "h", "port": 8080, "protocol": "HTTP"}]}}),
        );
        g.metadata.annotations = Some(
            [(
                super::super::node_select::NODE_SELECTOR_ANNOTATION.to_string(),
                selector.to_string(),
            )]
            .into(),
        );
        g
    }

    #[test]
    fn node_labels_select_the_gateways_served_here() {
        let class = obj(
            Kind::GatewayClass,
            None,
            "ours",
            serde_json::json!({"spec": {"controllerName": CONTROLLER_NAME}}),
        );
        let objects = |labels: &[(&str, &str)]| {
            stores(vec![
                (Kind::GatewayClass, class.clone()),
                (Kind::Gateway, selected_gateway("infra", "role=infra")),
                (Kind::Gateway, selected_gateway("edge", "role in (edge)")),
                (Kind::Gateway, selected_gateway("broken", "role in (")),
                (Kind::Node, node(labels)),
            ])
        };
        let names = |gws: &[crate::config::Gateway]| -> Vec<String> {
            gws.iter().map(|g| g.id.name.clone()).collect()
        };
        let mut c = Converter::default();
        let out = c.convert(&objects(&[("role", "infra")]), &[], &[]);
        assert_eq!(names(&out.config.gateways), ["infra"]);
        assert_eq!(names(&out.elsewhere), ["edge"]);
        assert_eq!(out.errors.len(), 1);
        let text = out.errors[0].1[0].to_string();
        assert!(
            text.contains("Gateway a/broken")
                && text.contains("sluice.dev/node-selector")
                && text.contains("unclosed"),
            "{text}"
        );
        // The node is relabelled: the other Gateway is served here now.
        let out = c.convert(&objects(&[("role", "edge")]), &[], &[]);
        assert!(out.changed, "a label change is a change");
        assert_eq!(names(&out.config.gateways), ["edge"]);
        assert_eq!(names(&out.elsewhere), ["infra"]);
        assert!(!c.convert(&objects(&[("role", "edge")]), &[], &[]).changed);
    }

    #[test]
    fn of_two_gateways_with_overlapping_port_ranges_the_later_is_left_out() {
        let gateway = |name: &str, ranges: &str| {
            let mut o = obj(
                Kind::Gateway,
                Some("a"),
                name,
                serde_json::json!({"spec": {"gatewayClassName": "ours", "listeners": [{"name": "h", "port": 8080, "protocol": "HTTP"}]}}),
            );
            o.metadata.annotations = Some(BTreeMap::from([(
                PORT_RANGES_ANNOTATION.to_owned(),
                ranges.to_owned(),
            )]));
            (Kind::Gateway, o)
        };
        let s = stores(vec![
            (
                Kind::GatewayClass,
                obj(
                    Kind::GatewayClass,
                    None,
                    "ours",
                    serde_json::json!({"spec": {"controllerName": CONTROLLER_NAME}}),
                ),
            ),
            gateway("one", "30000-30100"),
            gateway("two", "30050"),
            gateway("three", "31000"),
        ]);
        let out = Converter::default().convert(&s, &[], &[]);
        let served: Vec<String> = out
            .config
            .gateways
            .iter()
            .map(|g| g.id.to_string())
            .collect();
        assert_eq!(served, ["a/one", "a/three"]);
        assert_eq!(out.errors.len(), 1);
        let ((kind, id), errors) = &out.errors[0];
        assert_eq!((*kind, id.to_string()), (Kind::Gateway, "a/two".to_owned()));
        let text = errors[0].to_string();
        assert!(
            text.contains("Gateway a/two")
                && text.contains(
                    "ports 30050 of Gateway a/two overlap ports 30000-30100 of Gateway a/one"
                ),
            "{text}"
        );
    }

    #[test]
    fn an_invalid_sluice_policy_fails_closed_on_its_targets() {
        let policy = |name: &str, spec: serde_json::Value| {
            let mut o = obj(
                Kind::SluicePolicy,
                Some("a"),
                name,
                serde_json::json!({"spec": spec}),
            );
            o.metadata.generation = Some(3);
            (Kind::SluicePolicy, o)
        };
        let s = stores(vec![
            policy(
                "ok",
                serde_json::json!({"targetRefs": [{"kind": "HTTPRoute", "name": "r"}], "ipAllow": ["10.0.0.0/8"]}),
            ),
            policy(
                "bad-cidr",
                serde_json::json!({
                    "targetRefs": [{"kind": "HTTPRoute", "name": "r", "sectionName": "admin"}, {"kind": "Gateway", "name": "gw"}],
                    "ipAllow": ["10.0.0.0/33"],
                }),
            ),
            // Not even the wire shape: still fails closed on what it names.
            policy(
                "unknown-field",
                serde_json::json!({"targetRefs": [{"kind": "HTTPRoute", "name": "r2"}], "ipAlow": ["10.0.0.0/8"]}),
            ),
        ]);
        let mut c = Converter::default();
        let out = c.convert(&s, &[], &[]);
        let by_name = |n: &str| {
            out.config
                .policies
                .iter()
                .find(|p| p.id.name == n)
                .unwrap_or_else(|| panic!("{n} not in the config"))
        };
        assert_eq!(out.config.policies.len(), 3);
        let ok = by_name("ok");
        assert!(ok.invalid.is_none() && ok.defaults.ip_allow.is_some());

        let bad = by_name("bad-cidr");
        let why = bad.invalid.as_deref().expect("kept as invalid");
        assert!(
            why.contains("SluicePolicy a/bad-cidr") && why.contains("spec.ipAllow[0]"),
            "{why}"
        );
        assert!(bad.defaults.is_empty() && bad.overrides.is_empty());
        assert_eq!(bad.generation, Some(3));
        let targets: Vec<_> = bad
            .targets
            .iter()
            .map(|t| (t.kind.as_str(), t.name.as_str(), t.section_name.as_deref()))
            .collect();
        assert_eq!(
            targets,
            [("HTTPRoute", "r", Some("admin")), ("Gateway", "gw", None)]
        );
        assert!(by_name("unknown-field")
            .invalid
            .as_deref()
            .is_some_and(|w| w.contains("ipAlow")));
        assert_eq!(by_name("unknown-field").targets[0].name, "r2");
        // Still reported as object errors (admin /config).
        let reported: Vec<&str> = out
            .errors
            .iter()
            .filter(|((k, _), _)| *k == Kind::SluicePolicy)
            .map(|((_, id), _)| id.name.as_str())
            .collect();
        assert_eq!(reported.len(), 2);
        assert!(reported.contains(&"bad-cidr") && reported.contains(&"unknown-field"));
        // Unchanged objects come from the cache, fail-closed ones included.
        let again = c.convert(&s, &[], &[]);
        assert!(!again.changed);
        assert_eq!(again.config.policies.len(), 3);
    }
}
