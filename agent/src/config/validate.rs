//! Conversion of wire documents into validated domain types. Structural errors
//! (wrong types, bad values, unsupported features) are reported here with file,
//! document and field; references between objects are not errors here — a
//! route to a missing Gateway is a status condition, not a bad config.
//!
//! This module dispatches each document by group and kind and holds what the
//! conversions share (the per-document error collector [`Doc`], [`ns`],
//! [`hostname`]); each kind is converted in its own module: [`super::gateway`]
//! (with [`super::annotations`]), [`super::route`], [`super::backends`],
//! [`super::refs`] and [`super::backend_tls`].
use std::net::IpAddr;

use serde::de::DeserializeOwned;

use super::{
    annotations::{port_range_overlaps, PORT_RANGES_ANNOTATION},
    backend_tls, backends, gateway, model, names, refs, resources as wire,
    route::http_route,
    Config, ConfigError, DocumentError, Location,
};

pub(super) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

#[derive(Default)]
pub struct Builder {
    config: Config,
    errors: Vec<DocumentError>,
    /// Where each of `config.gateways` came from, for errors across Gateways.
    gateway_locations: Vec<Location>,
    /// Objects from the Kubernetes API: their names were checked by the API
    /// server (and the objects made from Ingresses have names no API object
    /// can have, so that they never collide with one).
    names_checked: bool,
}

/// Collects the errors of one document.
pub(super) struct Doc<'a> {
    location: Location,
    pub(super) errors: &'a mut Vec<DocumentError>,
}

impl Doc<'_> {
    pub(super) fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(DocumentError {
            location: self.location.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

impl Builder {
    /// A builder for objects from the Kubernetes API (see `names_checked`).
    pub fn for_api_objects() -> Self {
        Self {
            names_checked: true,
            ..Self::default()
        }
    }

    pub fn error(&mut self, e: DocumentError) {
        self.errors.push(e);
    }

    pub fn add(&mut self, mut location: Location, value: serde_yaml::Value) {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .map(str::to_owned);
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("<unnamed>");
        let namespace = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|n| n.as_str())
            .unwrap_or("default");
        let Some(kind) = kind else {
            self.errors.push(DocumentError {
                location,
                field: "kind".into(),
                message: "missing".into(),
            });
            return;
        };
        location.object = Some(format!("{kind} {namespace}/{name}"));
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let mut doc = Doc {
            location,
            errors: &mut self.errors,
        };
        if !self.names_checked {
            let metadata = value.get("metadata");
            for (field, message) in names::metadata_errors(
                &kind,
                metadata
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str()),
                metadata
                    .and_then(|m| m.get("namespace"))
                    .and_then(|n| n.as_str()),
            ) {
                doc.err(field, message);
            }
        }
        match (group, kind.as_str()) {
            (GATEWAY_GROUP, "GatewayClass") => {
                if let Some(gc) = decode::<wire::GatewayClass>(&mut doc, value) {
                    self.config.gateway_classes.push(gateway::gateway_class(gc));
                }
            }
            (GATEWAY_GROUP, "Gateway") => {
                if let Some(g) = decode::<wire::Gateway>(&mut doc, value) {
                    if let Some(g) = gateway::gateway(&mut doc, g) {
                        self.config.gateways.push(g);
                        self.gateway_locations.push(doc.location.clone());
                    }
                }
            }
            (GATEWAY_GROUP, "ListenerSet") => {
                if let Some(l) = decode::<wire::ListenerSet>(&mut doc, value) {
                    if let Some(l) = super::listener_set::listener_set(&mut doc, l) {
                        self.config.listener_sets.push(l);
                    }
                }
            }
            (GATEWAY_GROUP, "HTTPRoute") => {
                if let Some(r) = decode::<wire::HttpRoute>(&mut doc, value) {
                    if let Some(r) = http_route(&mut doc, r) {
                        self.config.routes.push(std::sync::Arc::new(r));
                    }
                }
            }
            (GATEWAY_GROUP, "GRPCRoute") => {
                if let Some(r) = decode::<wire::GrpcRoute>(&mut doc, value) {
                    if let Some(r) = super::grpc_route::grpc_route(&mut doc, r) {
                        self.config.routes.push(std::sync::Arc::new(r));
                    }
                }
            }
            (GATEWAY_GROUP, kind @ ("TLSRoute" | "TCPRoute" | "UDPRoute")) => {
                let (route_kind, versions) = match kind {
                    "TLSRoute" => (model::RouteKind::Tls, &super::l4_route::TLS_ROUTE_VERSIONS[..]),
                    "TCPRoute" => (model::RouteKind::Tcp, &super::l4_route::TCP_ROUTE_VERSIONS[..]),
                    _ => (model::RouteKind::Udp, &super::l4_route::UDP_ROUTE_VERSIONS[..]),
                };
                if !versions.contains(&api_version.as_str()) {
                    doc.err("apiVersion", format!("unsupported {kind} version {api_version:?} (supported: {})", versions.join(", ")));
                } else if let Some(r) = decode::<wire::L4Route>(&mut doc, value) {
                    if let Some(r) = super::l4_route::l4_route(&mut doc, route_kind, r) {
                        self.config.routes.push(std::sync::Arc::new(r));
                    }
                }
            }
            ("", "Service") => {
                if let Some(s) = decode::<wire::Service>(&mut doc, value) {
                    if let Some(s) = backends::service(&mut doc, s) {
                        self.config.services.push(s);
                    }
                }
            }
            ("discovery.k8s.io", "EndpointSlice") => {
                if let Some(s) = decode::<wire::EndpointSlice>(&mut doc, value) {
                    if let Some(s) = backends::endpoint_slice(&mut doc, s) {
                        self.config.endpoint_slices.push(s);
                    }
                }
            }
            ("", "Namespace") => {
                if let Some(n) = decode::<wire::Namespace>(&mut doc, value) {
                    self.config.namespaces.push(refs::namespace(n));
                }
            }
            ("", "Secret") => {
                if let Some(sec) = decode::<wire::Secret>(&mut doc, value) {
                    if let Some(sec) = refs::secret(&mut doc, sec) {
                        self.config.secrets.push(sec);
                    }
                }
            }
            ("", "ConfigMap") => {
                if let Some(m) = decode::<wire::ConfigMap>(&mut doc, value) {
                    self.config.config_maps.push(backend_tls::config_map(m));
                }
            }
            (GATEWAY_GROUP, "BackendTLSPolicy") => {
                if !backend_tls::BACKEND_TLS_POLICY_VERSIONS.contains(&api_version.as_str()) {
                    doc.err("apiVersion", format!("unsupported BackendTLSPolicy version {api_version:?} (supported: v1, v1alpha3)"));
                } else if let Some(p) = decode::<wire::BackendTlsPolicy>(&mut doc, value) {
                    if let Some(p) = backend_tls::backend_tls_policy(&mut doc, p) {
                        self.config.backend_tls_policies.push(p);
                    }
                }
            }
            (super::policy::SLUICE_GROUP, "SluicePolicy") => {
                if !super::policy::POLICY_VERSIONS.contains(&api_version.as_str()) {
                    doc.err("apiVersion", format!("unsupported SluicePolicy version {api_version:?} (supported: sluice.dev/v1alpha1)"));
                } else if let Some(p) = decode::<super::policy::convert::Document>(&mut doc, value) {
                    if let Some(p) = super::policy::convert::sluice_policy(&mut doc, p) {
                        self.config.policies.push(p);
                    }
                }
            }
            (super::policy::SLUICE_GROUP, model::CONSUL_SERVICE_KIND) => {
                if !super::policy::POLICY_VERSIONS.contains(&api_version.as_str()) {
                    doc.err("apiVersion", format!("unsupported ConsulService version {api_version:?} (supported: sluice.dev/v1alpha1)"));
                } else if let Some(c) = decode::<super::consul::ConsulServiceDoc>(&mut doc, value) {
                    if let Some(c) = super::consul::consul_service(&mut doc, c) {
                        self.config.consul_services.push(c);
                    }
                }
            }
            (GATEWAY_GROUP, "ReferenceGrant") => {
                if !matches!(api_version.as_str(), "gateway.networking.k8s.io/v1beta1" | "gateway.networking.k8s.io/v1") {
                    doc.err("apiVersion", format!("unsupported ReferenceGrant version {api_version:?} (supported: v1beta1, v1)"));
                } else if let Some(g) = decode::<wire::ReferenceGrant>(&mut doc, value) {
                    if let Some(g) = refs::reference_grant(&mut doc, g) {
                        self.config.reference_grants.push(g);
                    }
                }
            }
            _ => doc.err(
                "kind",
                format!(
                    "unsupported kind {kind} (apiVersion {api_version:?}); supported: GatewayClass, \
                     Gateway, ListenerSet, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, BackendTLSPolicy ({GATEWAY_GROUP}/v1), ReferenceGrant ({GATEWAY_GROUP}/v1beta1), Service, Namespace, Secret, ConfigMap (v1), \
                     EndpointSlice (discovery.k8s.io/v1), SluicePolicy, ConsulService (sluice.dev/v1alpha1)"
                ),
            ),
        }
    }

    /// Adds `text` if it is one HTTPRoute document that converts without an
    /// error, decoded straight into the wire type (see [`super::strict`]):
    /// routes are most of a large config, and the `Value` tree [`Self::add`]
    /// goes through is most of their parse. Returns `false`, having added
    /// nothing, for any other text, and for a route with anything to report:
    /// the caller then passes the text to [`Self::add`], whose result and
    /// errors are the reference this must equal.
    pub(super) fn add_route_text(&mut self, location: Location, text: &str) -> bool {
        may_be_route(text)
            && self.add_route_document(location, serde_yaml::Deserializer::from_str(text))
    }

    /// [`Self::add_route_text`] for a document of a parse already under way
    /// (all documents of a file with one parser); the caller has checked
    /// the document's text with [`may_be_route`].
    pub(super) fn add_route_document<'de, D: serde::Deserializer<'de>>(
        &mut self,
        location: Location,
        document: D,
    ) -> bool {
        /// The fields [`Builder::add`] reads to dispatch an HTTPRoute, and the route.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RouteDocument {
            api_version: String,
            kind: String,
            metadata: wire::ObjectMeta,
            spec: wire::HttpRouteSpec,
        }
        let Some(d) = super::strict::decode_from::<RouteDocument, D>(document) else {
            return false;
        };
        let group = d.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        // Bad names take the other path too, which reports them.
        if d.kind != "HTTPRoute"
            || group != GATEWAY_GROUP
            || !names::metadata_errors(
                &d.kind,
                Some(&d.metadata.name),
                d.metadata.namespace.as_deref(),
            )
            .is_empty()
        {
            return false;
        }
        let mut errors = Vec::new();
        let mut doc = Doc {
            location,
            errors: &mut errors,
        };
        let route = http_route(
            &mut doc,
            wire::HttpRoute {
                metadata: d.metadata,
                spec: d.spec,
            },
        );
        match route {
            Some(r) if errors.is_empty() => {
                self.config.routes.push(std::sync::Arc::new(r));
                true
            }
            _ => false,
        }
    }

    pub fn finish(mut self) -> Result<Config, ConfigError> {
        for (later, earlier, message) in port_range_overlaps(&self.config.gateways) {
            self.errors.push(DocumentError {
                location: self.gateway_locations[later].clone(),
                field: format!("metadata.annotations[{PORT_RANGES_ANNOTATION}]"),
                message: format!(
                    "{message} (declared in {})",
                    self.gateway_locations[earlier]
                ),
            });
        }
        if self.errors.is_empty() {
            Ok(self.config)
        } else {
            Err(ConfigError::Invalid(self.errors))
        }
    }
}

/// Whether a document's text is worth the typed route path: a top-level
/// `kind: HTTPRoute` line (other kinds are not worth a failed attempt), no
/// tag indicator (`!`), which [`super::strict`] leaves to the `Value` path,
/// and no anchor or alias indicator (`&`, `*`): serde_yaml's stream
/// deserializer panics on some aliases across documents (found by the
/// `config` fuzz target), so such text goes the `Value` path too.
pub(super) fn may_be_route(text: &str) -> bool {
    !text.contains('!')
        && !has_anchor_or_alias(text)
        && text.lines().any(|l| l.trim_end() == "kind: HTTPRoute")
}

/// Whether `text` may hold an anchor (`&a`) or an alias (`*a`): one of the
/// two where a node can begin (at the start, after a space, a line break,
/// `[`, `{` or `,`). A quoted wildcard hostname (`"*.example.com"`) or a `&`
/// inside a path is not; a false positive only costs the `Value` path.
fn has_anchor_or_alias(text: &str) -> bool {
    let b = text.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        (c == b'&' || c == b'*')
            && (i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n' | b'[' | b'{' | b','))
    })
}

fn decode<T: DeserializeOwned>(doc: &mut Doc<'_>, value: serde_yaml::Value) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            doc.err(field, e.into_inner().to_string());
            None
        }
    }
}

pub(super) fn ns(meta: &wire::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

pub(super) fn hostname(doc: &mut Doc<'_>, field: &str, raw: &str) -> Option<model::Hostname> {
    let h = raw.to_ascii_lowercase();
    let (wild, rest) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h.as_str()),
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if rest.is_empty() || rest.len() > 253 || !rest.split('.').all(valid_label) {
        doc.err(field, format!("invalid hostname {raw:?}"));
        return None;
    }
    if rest.parse::<IpAddr>().is_ok() {
        doc.err(
            field,
            format!("hostname must not be an IP address: {raw:?}"),
        );
        return None;
    }
    Some(if wild {
        model::Hostname::Wildcard(format!(".{rest}"))
    } else {
        model::Hostname::Exact(rest.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn anchors_and_aliases_are_told_from_wildcards_and_ampersands() {
        use super::has_anchor_or_alias as a;
        for yes in [
            "name: &n b",
            "note: *n",
            "[*x]",
            "{a: 1,*x: 2}",
            "&top\nkind: HTTPRoute",
        ] {
            assert!(a(yes), "{yes}");
        }
        for no in [
            "hostnames: [\"*.example.org\"]",
            "value: /a&b",
            "x: 'a*b'",
            "",
        ] {
            assert!(!a(no), "{no}");
        }
    }

    use std::path::Path;

    use super::super::{parse_documents, ConfigError, Hostname, PathMatch};

    fn parse(text: &str) -> Result<super::Config, ConfigError> {
        parse_documents([(Path::new("test.yaml"), text)])
    }

    const GOOD: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns1, annotations: {sluice.dev/source-ranges: "10.0.0.0/8, fd00::/8"}}
spec:
  gatewayClassName: sluice
  addresses: [{value: 10.1.2.3}]
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: "*.Example.com"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns1}
spec:
  parentRefs: [{name: gw}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1/}}]
    backendRefs: [{name: svc, port: 8080}]
"#;

    #[test]
    fn converts_gateway_and_route() {
        let c = parse(GOOD).unwrap();
        let g = &c.gateways[0];
        assert_eq!(g.id.to_string(), "ns1/gw");
        assert_eq!(g.source_allow.len(), 2);
        assert_eq!(
            g.listeners[0].hostname,
            Some(Hostname::Wildcard(".example.com".into()))
        );
        let r = &c.routes[0];
        assert_eq!(r.parents[0].gateway.to_string(), "ns1/gw");
        assert_eq!(r.rules[0].matches[0].path, PathMatch::Prefix("/v1".into()));
        assert_eq!(r.rules[0].backends[0].service.to_string(), "ns1/svc");
        assert_eq!(r.rules[0].backends[0].weight, 1);
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let bad = GOOD.replace("port: 80", "port: eighty");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("test.yaml: document 1 (Gateway ns1/gw)"),
            "{err}"
        );
        assert!(err.contains("spec.listeners[0].port"), "{err}");
    }

    #[test]
    fn every_error_is_reported() {
        let bad = GOOD
            .replace("10.0.0.0/8", "10.0.0.0/99")
            .replace("type: PathPrefix", "type: Nope");
        let ConfigError::Invalid(errors) = parse(&bad).unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].location.document, 1);
        assert_eq!(errors[1].location.document, 2);
        assert_eq!(errors[1].field, "spec.rules[0].matches[0].path.type");
    }

    #[test]
    fn rejects_unknown_kinds_and_bad_hostnames() {
        let err = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported kind Deployment"), "{err}");
        let err = parse(&GOOD.replace("api.example.com", "a..b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.hostnames[0]"), "{err}");
    }

    #[test]
    fn hostname_semantics() {
        let w = Hostname::Wildcard(".example.com".into());
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        let e = Hostname::Exact("a.example.com".into());
        assert_eq!(Hostname::intersect(&w, &e), Some(e.clone()));
        assert_eq!(
            Hostname::intersect(&e, &Hostname::Exact("b.example.com".into())),
            None
        );
    }

    #[test]
    fn prefix_match_is_element_wise() {
        let p = PathMatch::Prefix("/v1".into());
        assert!(p.matches("/v1"));
        assert!(p.matches("/v1/users"));
        assert!(!p.matches("/v10"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
    }

    #[test]
    fn broken_yaml_is_one_error_not_a_hang() {
        let err = parse("kind: [unclosed\n---\nkind: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid YAML"), "{err}");
    }
}
