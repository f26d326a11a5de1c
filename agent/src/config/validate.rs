//! Conversion of wire documents into validated domain types. Structural errors
//! (wrong types, bad values, unsupported features) are reported here with file,
//! document and field; references between objects are not errors here — a
//! route to a missing Gateway is a status condition, not a bad config.
use std::{net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::{
    backend_tls, model, resources as wire, route::http_route, Config, ConfigError, DocumentError,
    Location,
};

pub(super) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Gateway annotation: comma-separated source CIDRs allowed to reach the shard.
pub const SOURCE_RANGES_ANNOTATION: &str = "sluice.dev/source-ranges";
/// Gateway annotation: comma-separated source CIDRs denied (longest prefix wins).
pub const SOURCE_DENY_ANNOTATION: &str = "sluice.dev/source-deny";
/// Gateway annotation: comma-separated namespaces whose clients may connect.
pub const ADMITTED_NAMESPACES_ANNOTATION: &str = "sluice.dev/admitted-namespaces";
/// Gateway annotation: new TCP connections per second allowed per source address.
pub const SYN_RATE_ANNOTATION: &str = "sluice.dev/syn-rate";
/// Gateway annotation: extra destination port ranges served by a listener,
/// `[LISTENER=]FIRST[-LAST]` items separated by commas.
pub const PORT_RANGES_ANNOTATION: &str = "sluice.dev/port-ranges";
/// Gateway annotation: burst of new connections per source (default: the rate).
pub const SYN_BURST_ANNOTATION: &str = "sluice.dev/syn-burst";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label Kubernetes puts on every Namespace, holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Default)]
pub struct Builder {
    config: Config,
    errors: Vec<DocumentError>,
    /// Where each of `config.gateways` came from, for errors across Gateways.
    gateway_locations: Vec<Location>,
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
        match (group, kind.as_str()) {
            (GATEWAY_GROUP, "GatewayClass") => {
                if let Some(gc) = decode::<wire::GatewayClass>(&mut doc, value) {
                    self.config.gateway_classes.push(model::GatewayClass {
                        name: gc.metadata.name,
                        controller_name: gc.spec.controller_name,
                        parameters_ref: gc.spec.parameters_ref.as_ref().map(|p| p.describe()),
                    });
                }
            }
            (GATEWAY_GROUP, "Gateway") => {
                if let Some(g) = decode::<wire::Gateway>(&mut doc, value) {
                    if let Some(g) = gateway(&mut doc, g) {
                        self.config.gateways.push(g);
                        self.gateway_locations.push(doc.location.clone());
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
            ("", "Service") => {
                if let Some(s) = decode::<wire::Service>(&mut doc, value) {
                    if let Some(s) = service(&mut doc, s) {
                        self.config.services.push(s);
                    }
                }
            }
            ("discovery.k8s.io", "EndpointSlice") => {
                if let Some(s) = decode::<wire::EndpointSlice>(&mut doc, value) {
                    if let Some(s) = endpoint_slice(&mut doc, s) {
                        self.config.endpoint_slices.push(s);
                    }
                }
            }
            ("", "Namespace") => {
                if let Some(n) = decode::<wire::Namespace>(&mut doc, value) {
                    let mut labels = n.metadata.labels;
                    // Kubernetes sets this label on every Namespace; selectors rely on it.
                    labels.insert(NAMESPACE_NAME_LABEL.into(), n.metadata.name.clone());
                    self.config.namespaces.push(model::Namespace {
                        name: n.metadata.name,
                        labels,
                    });
                }
            }
            ("", "Secret") => {
                if let Some(sec) = decode::<wire::Secret>(&mut doc, value) {
                    if let Some(sec) = secret(&mut doc, sec) {
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
            (GATEWAY_GROUP, "ReferenceGrant") => {
                if !matches!(api_version.as_str(), "gateway.networking.k8s.io/v1beta1" | "gateway.networking.k8s.io/v1") {
                    doc.err("apiVersion", format!("unsupported ReferenceGrant version {api_version:?} (supported: v1beta1, v1)"));
                } else if let Some(g) = decode::<wire::ReferenceGrant>(&mut doc, value) {
                    if let Some(g) = reference_grant(&mut doc, g) {
                        self.config.reference_grants.push(g);
                    }
                }
            }
            _ => doc.err(
                "kind",
                format!(
                    "unsupported kind {kind} (apiVersion {api_version:?}); supported: GatewayClass, \
                     Gateway, HTTPRoute, BackendTLSPolicy ({GATEWAY_GROUP}/v1), ReferenceGrant ({GATEWAY_GROUP}/v1beta1), Service, Namespace, Secret, ConfigMap (v1), \
                     EndpointSlice (discovery.k8s.io/v1)"
                ),
            ),
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

fn cidrs(doc: &mut Doc<'_>, field: &str, raw: Option<&String>) -> Vec<IpNet> {
    let Some(raw) = raw else { return Vec::new() };
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = IpNet::from_str(item)
            .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
            .map(|n| n.trunc());
        match parsed {
            Ok(n) => out.push(n),
            Err(_) => doc.err(field, format!("invalid CIDR {item:?}")),
        }
    }
    out
}

fn gateway(doc: &mut Doc<'_>, g: wire::Gateway) -> Option<model::Gateway> {
    let before = doc.errors.len();
    let mut addresses = Vec::new();
    let mut assign_address = false;
    for (i, a) in g.spec.addresses.iter().enumerate() {
        match a.kind.as_deref().unwrap_or("IPAddress") {
            "IPAddress" => match a.value.as_deref().filter(|v| !v.is_empty()) {
                // GatewayAddressEmpty: the implementation assigns the address.
                None => assign_address = true,
                Some(v) => match v.parse::<IpAddr>() {
                    Ok(ip) => addresses.push(ip),
                    Err(_) => doc.err(
                        format!("spec.addresses[{i}].value"),
                        format!("not an IP address: {v:?}"),
                    ),
                },
            },
            other => doc.err(
                format!("spec.addresses[{i}].type"),
                format!("unsupported address type {other:?} (supported: IPAddress)"),
            ),
        }
    }
    if assign_address && !addresses.is_empty() {
        // Sluice serves a Gateway either on the given addresses or on every
        // local address; it cannot add an assigned one to given ones.
        doc.err(
            "spec.addresses",
            "an address without value cannot be combined with addresses that have one",
        );
    }
    let parameters_ref = g
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
        .map(|p| p.describe());
    if g.spec.listeners.is_empty() {
        doc.err("spec.listeners", "a Gateway needs at least one listener");
    }
    let mut listeners = Vec::new();
    for (i, l) in g.spec.listeners.iter().enumerate() {
        let protocol = match l.protocol.as_str() {
            "HTTP" => model::ListenerProtocol::Http,
            "HTTPS" => model::ListenerProtocol::Https,
            other => model::ListenerProtocol::Other(other.to_owned()),
        };
        if l.port == 0 {
            doc.err(format!("spec.listeners[{i}].port"), "port must be 1-65535");
        }
        if listeners.iter().any(|x: &model::Listener| x.name == l.name) {
            doc.err(
                format!("spec.listeners[{i}].name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        let hostname = match &l.hostname {
            Some(h) => hostname(doc, &format!("spec.listeners[{i}].hostname"), h),
            None => None,
        };
        let namespaces = l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
        let from = namespaces.and_then(|n| n.from.as_deref());
        let field = format!("spec.listeners[{i}].allowedRoutes.namespaces");
        let allowed_routes = match from {
            None | Some("Same") => model::AllowedRoutes::Same,
            Some("All") => model::AllowedRoutes::All,
            Some("Selector") => match namespaces.and_then(|n| n.selector.as_ref()) {
                Some(sel) => model::AllowedRoutes::Selector(label_selector(
                    doc,
                    &format!("{field}.selector"),
                    sel,
                )),
                None => {
                    doc.err(
                        format!("{field}.selector"),
                        "required when from is Selector",
                    );
                    model::AllowedRoutes::Same
                }
            },
            Some(other) => {
                doc.err(
                    format!("{field}.from"),
                    format!("unsupported value {other:?} (supported: Same, All, Selector)"),
                );
                model::AllowedRoutes::Same
            }
        };
        let kinds = l
            .allowed_routes
            .as_ref()
            .map(|a| a.kinds.as_slice())
            .unwrap_or_default();
        let is_http_route = |k: &&wire::RouteGroupKind| {
            k.kind == "HTTPRoute" && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        };
        let allows_http_routes = kinds.is_empty() || kinds.iter().any(|k| is_http_route(&k));
        let invalid_route_kinds = kinds
            .iter()
            .filter(|k| !is_http_route(k))
            .map(|k| format!("{}/{}", k.group.as_deref().unwrap_or(GATEWAY_GROUP), k.kind))
            .collect();
        let tls = listener_tls(doc, i, &protocol, l.tls.as_ref(), &ns(&g.metadata));
        listeners.push(model::Listener {
            name: l.name.clone(),
            port: l.port,
            protocol,
            hostname,
            allowed_routes,
            allows_http_routes,
            invalid_route_kinds,
            tls,
        });
    }
    let ann = &g.metadata.annotations;
    let source_allow = cidrs(
        doc,
        &format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]"),
        ann.get(SOURCE_RANGES_ANNOTATION),
    );
    let source_deny = cidrs(
        doc,
        &format!("metadata.annotations[{SOURCE_DENY_ANNOTATION}]"),
        ann.get(SOURCE_DENY_ANNOTATION),
    );
    let positive = |doc: &mut Doc<'_>, key: &str| -> Option<u32> {
        let raw = ann.get(key)?;
        match raw.trim().parse::<u32>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                doc.err(
                    format!("metadata.annotations[{key}]"),
                    format!("expected a positive integer, got {raw:?}"),
                );
                None
            }
        }
    };
    let syn_rate = positive(doc, SYN_RATE_ANNOTATION);
    let syn_burst = positive(doc, SYN_BURST_ANNOTATION);
    if syn_burst.is_some() && syn_rate.is_none() {
        doc.err(
            format!("metadata.annotations[{SYN_BURST_ANNOTATION}]"),
            format!("needs {SYN_RATE_ANNOTATION} as well"),
        );
    }
    let admitted_namespaces = ann.get(ADMITTED_NAMESPACES_ANNOTATION).map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let port_ranges = ann
        .get(PORT_RANGES_ANNOTATION)
        .map(|raw| port_ranges(doc, raw, &listeners))
        .unwrap_or_default();
    let (backend_client_certificate, frontend_validation) =
        backend_tls::gateway_tls(doc, g.spec.tls.as_ref(), &ns(&g.metadata));
    let syn_budget = syn_rate.map(|rate| model::SynBudget {
        rate,
        burst: syn_burst.unwrap_or(rate),
    });
    (doc.errors.len() == before).then(|| model::Gateway {
        id: model::ObjectRef::new(ns(&g.metadata), &g.metadata.name),
        generation: g.metadata.generation,
        class_name: g.spec.gateway_class_name,
        addresses,
        assign_address,
        parameters_ref,
        listeners,
        source_allow,
        source_deny,
        syn_budget,
        admitted_namespaces,
        port_ranges,
        backend_client_certificate,
        frontend_validation,
    })
}

/// `sluice.dev/port-ranges`: comma-separated `[LISTENER=]FIRST[-LAST]`. An item
/// without a listener name belongs to the Gateway's first HTTP or HTTPS
/// listener. Ranges of one Gateway may not overlap each other.
fn port_ranges(
    doc: &mut Doc<'_>,
    raw: &str,
    listeners: &[model::Listener],
) -> Vec<model::PortRange> {
    let field = format!("metadata.annotations[{PORT_RANGES_ANNOTATION}]");
    let served = |l: &&model::Listener| {
        matches!(
            l.protocol,
            model::ListenerProtocol::Http | model::ListenerProtocol::Https
        )
    };
    let mut out: Vec<model::PortRange> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, ports) = match item.split_once('=') {
            Some((n, p)) => (Some(n.trim()), p.trim()),
            None => (None, item),
        };
        let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a), port(b)),
            None => (port(ports), port(ports)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            doc.err(
                &field,
                format!("{item:?}: expected [LISTENER=]PORT or [LISTENER=]FIRST-LAST with ports 1-65535"),
            );
            continue;
        };
        if first > last {
            doc.err(
                &field,
                format!("{item:?}: range is empty ({first} > {last})"),
            );
            continue;
        }
        let listener = match name {
            Some(n) => match listeners.iter().find(|l| l.name == n) {
                Some(l) if served(&l) => l,
                Some(_) => {
                    doc.err(
                        &field,
                        format!("{item:?}: listener {n:?} is not HTTP or HTTPS"),
                    );
                    continue;
                }
                None => {
                    doc.err(
                        &field,
                        format!("{item:?}: the Gateway has no listener {n:?}"),
                    );
                    continue;
                }
            },
            None => match listeners.iter().find(served) {
                Some(l) => l,
                None => {
                    doc.err(
                        &field,
                        format!("{item:?}: the Gateway has no HTTP or HTTPS listener"),
                    );
                    continue;
                }
            },
        };
        let range = model::PortRange {
            listener: listener.name.clone(),
            first,
            last,
        };
        if let Some(other) = out.iter().find(|o| o.overlaps(&range)) {
            doc.err(&field, format!("{item:?}: overlaps {other}"));
            continue;
        }
        out.push(range);
    }
    out
}

/// Port ranges of two Gateways that overlap on a common address (Gateways
/// without addresses listen on every address, and only overlap each other:
/// a Gateway's own address is more specific than the wildcard). Returns
/// `(later, earlier, message)` with indices into `gateways`.
pub fn port_range_overlaps(gateways: &[model::Gateway]) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (j, b) in gateways.iter().enumerate() {
        'earlier: for (i, a) in gateways[..j].iter().enumerate() {
            let common = if a.addresses.is_empty() || b.addresses.is_empty() {
                (a.addresses.is_empty() && b.addresses.is_empty())
                    .then(|| "every address".to_owned())
            } else {
                a.addresses
                    .iter()
                    .find(|x| b.addresses.contains(x))
                    .map(|x| format!("address {x}"))
            };
            let Some(common) = common else { continue };
            for rb in &b.port_ranges {
                if let Some(ra) = a.port_ranges.iter().find(|ra| ra.overlaps(rb)) {
                    out.push((
                        j,
                        i,
                        format!(
                            "ports {rb} of Gateway {} overlap ports {ra} of Gateway {} on {common}",
                            b.id, a.id
                        ),
                    ));
                    continue 'earlier;
                }
            }
        }
    }
    out
}

/// `spec.listeners[i].tls`: required for HTTPS (mode Terminate), not allowed
/// for HTTP. Other protocols are not served, so their `tls` is not read.
fn listener_tls(
    doc: &mut Doc<'_>,
    i: usize,
    protocol: &model::ListenerProtocol,
    tls: Option<&wire::GatewayTlsConfig>,
    gateway_ns: &str,
) -> Option<model::ListenerTls> {
    let field = format!("spec.listeners[{i}].tls");
    match (protocol, tls) {
        (model::ListenerProtocol::Http, Some(_)) => {
            doc.err(field, "not allowed for protocol HTTP");
            None
        }
        (model::ListenerProtocol::Https, None) => {
            doc.err(field, "required for protocol HTTPS");
            None
        }
        (model::ListenerProtocol::Https, Some(tls)) => {
            match tls.mode.as_deref().unwrap_or("Terminate") {
                "Terminate" => {}
                "Passthrough" => doc.err(
                    format!("{field}.mode"),
                    "Passthrough is only valid for protocol TLS (not served); HTTPS terminates",
                ),
                other => doc.err(
                    format!("{field}.mode"),
                    format!("unsupported mode {other:?} (supported: Terminate)"),
                ),
            }
            if let Some(key) = tls.options.keys().next() {
                doc.err(
                    format!("{field}.options"),
                    format!("unsupported option {key:?} (no TLS options are implemented)"),
                );
            }
            let certificate_refs = tls
                .certificate_refs
                .iter()
                .map(|r| model::CertificateRef {
                    group: r.group.clone().unwrap_or_default(),
                    kind: r.kind.clone().unwrap_or_else(|| "Secret".into()),
                    object: model::ObjectRef::new(
                        r.namespace.as_deref().unwrap_or(gateway_ns),
                        &r.name,
                    ),
                })
                .collect();
            Some(model::ListenerTls { certificate_refs })
        }
        _ => None,
    }
}

/// A Secret: `data` is base64 (whitespace ignored), `stringData` plain and
/// overriding `data`, as the API server merges them.
fn secret(doc: &mut Doc<'_>, s: wire::Secret) -> Option<model::Secret> {
    let before = doc.errors.len();
    let mut data = std::collections::BTreeMap::new();
    for (key, value) in &s.data {
        match base64_decode(value) {
            Some(bytes) => {
                data.insert(key.clone(), bytes);
            }
            None => doc.err(format!("data[{key}]"), "not valid base64"),
        }
    }
    for (key, value) in s.string_data {
        data.insert(key, value.into_bytes());
    }
    (doc.errors.len() == before).then(|| model::Secret {
        id: model::ObjectRef::new(ns(&s.metadata), &s.metadata.name),
        kind: s.kind.unwrap_or_else(|| "Opaque".into()),
        data,
    })
}

/// Standard base64 (RFC 4648 §4) with optional padding; ASCII whitespace is
/// skipped. `None` on any other character or a dangling 6-bit group.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits, mut padding) = (0u32, 0u32, 0usize);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            b if b.is_ascii_whitespace() => continue,
            _ => return None,
        };
        if padding > 0 {
            return None; // data after padding
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 2 or 4 leftover bits are a partial final group; 6 cannot be.
    (bits < 6 && padding <= 2).then_some(out)
}

fn label_selector(doc: &mut Doc<'_>, at: &str, s: &wire::LabelSelector) -> model::LabelSelector {
    let mut out = model::LabelSelector {
        match_labels: s.match_labels.clone(),
        match_expressions: Vec::new(),
    };
    for (i, e) in s.match_expressions.iter().enumerate() {
        let field = format!("{at}.matchExpressions[{i}]");
        let operator = match e.operator.as_str() {
            "In" => model::LabelOperator::In,
            "NotIn" => model::LabelOperator::NotIn,
            "Exists" => model::LabelOperator::Exists,
            "DoesNotExist" => model::LabelOperator::DoesNotExist,
            other => {
                doc.err(
                    format!("{field}.operator"),
                    format!("unsupported operator {other:?} (supported: In, NotIn, Exists, DoesNotExist)"),
                );
                continue;
            }
        };
        let needs_values = matches!(
            operator,
            model::LabelOperator::In | model::LabelOperator::NotIn
        );
        if needs_values == e.values.is_empty() {
            doc.err(
                format!("{field}.values"),
                if needs_values {
                    "must be non-empty for In and NotIn"
                } else {
                    "must be empty for Exists and DoesNotExist"
                },
            );
            continue;
        }
        out.match_expressions.push(model::LabelRequirement {
            key: e.key.clone(),
            operator,
            values: e.values.clone(),
        });
    }
    out
}

fn reference_grant(doc: &mut Doc<'_>, g: wire::ReferenceGrant) -> Option<model::ReferenceGrant> {
    let before = doc.errors.len();
    if g.spec.from.is_empty() {
        doc.err("spec.from", "at least one entry is required");
    }
    if g.spec.to.is_empty() {
        doc.err("spec.to", "at least one entry is required");
    }
    let from = g
        .spec
        .from
        .iter()
        .map(|f| model::GrantFrom {
            group: f.group.clone(),
            kind: f.kind.clone(),
            namespace: f.namespace.clone(),
        })
        .collect();
    let to = g
        .spec
        .to
        .iter()
        .map(|t| model::GrantTo {
            group: t.group.clone(),
            kind: t.kind.clone(),
            name: t.name.clone().filter(|n| !n.is_empty()),
        })
        .collect();
    (doc.errors.len() == before).then(|| model::ReferenceGrant {
        id: model::ObjectRef::new(ns(&g.metadata), &g.metadata.name),
        from,
        to,
    })
}

fn service(doc: &mut Doc<'_>, s: wire::Service) -> Option<model::Service> {
    let before = doc.errors.len();
    let mut ports = Vec::new();
    for (i, p) in s.spec.ports.iter().enumerate() {
        let target_port = match &p.target_port {
            None => None,
            Some(serde_yaml::Value::Number(n)) => {
                match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(n) if n > 0 => Some(n),
                    _ => {
                        doc.err(
                            format!("spec.ports[{i}].targetPort"),
                            format!("invalid port {n}"),
                        );
                        None
                    }
                }
            }
            // A named port: resolved through the EndpointSlice port of this name.
            Some(serde_yaml::Value::String(_)) => None,
            Some(other) => {
                doc.err(
                    format!("spec.ports[{i}].targetPort"),
                    format!("expected a port number or name, got {other:?}"),
                );
                None
            }
        };
        ports.push(model::ServicePort {
            name: p.name.clone(),
            port: p.port,
            target_port,
            app_protocol: p.app_protocol.clone(),
        });
    }
    (doc.errors.len() == before).then(|| model::Service {
        id: model::ObjectRef::new(ns(&s.metadata), &s.metadata.name),
        ports,
    })
}

fn endpoint_slice(doc: &mut Doc<'_>, s: wire::EndpointSlice) -> Option<model::EndpointSlice> {
    let before = doc.errors.len();
    let namespace = ns(&s.metadata);
    let Some(service) = s.metadata.labels.get(SERVICE_NAME_LABEL) else {
        doc.err(
            format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
            "an EndpointSlice must name its Service with this label",
        );
        return None;
    };
    let mut addresses = Vec::new();
    for (i, e) in s.endpoints.iter().enumerate() {
        if e.conditions.ready == Some(false) {
            continue;
        }
        for (j, a) in e.addresses.iter().enumerate() {
            match a.parse::<IpAddr>() {
                Ok(ip) => addresses.push(ip),
                Err(_) => doc.err(
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("not an IP address: {a:?}"),
                ),
            }
        }
    }
    let mut ports = Vec::new();
    for (i, p) in s.ports.iter().enumerate() {
        match p.port {
            Some(port) if port > 0 => ports.push(model::EndpointPort {
                name: p.name.clone(),
                port,
            }),
            _ => doc.err(format!("ports[{i}].port"), "a port number is required"),
        }
    }
    (doc.errors.len() == before).then(|| model::EndpointSlice {
        id: model::ObjectRef::new(&namespace, &s.metadata.name),
        service: model::ObjectRef::new(&namespace, service),
        addresses,
        ports,
    })
}

#[cfg(test)]
mod tests {
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

    fn gateway_with_ranges(name: &str, addresses: &str, ranges: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: {name}, namespace: ns1, annotations: {{sluice.dev/port-ranges: \"{ranges}\"}}}}\n\
             spec:\n  gatewayClassName: sluice\n  addresses: [{addresses}]\n  listeners:\n\
             \x20 - {{name: tcp, port: 22, protocol: TCP}}\n\
             \x20 - {{name: http, port: 80, protocol: HTTP}}\n\
             \x20 - {{name: web, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: c}}]}}}}\n"
        )
    }

    #[test]
    fn port_ranges_name_a_listener_or_default_to_the_first_http_one() {
        let c = parse(&gateway_with_ranges(
            "gw",
            "",
            "30000-30100, 31000, web=32000-32010",
        ))
        .unwrap();
        let r = &c.gateways[0].port_ranges;
        let got: Vec<(&str, u16, u16)> = r
            .iter()
            .map(|r| (r.listener.as_str(), r.first, r.last))
            .collect();
        assert_eq!(
            got,
            [
                ("http", 30000, 30100),
                ("http", 31000, 31000),
                ("web", 32000, 32010)
            ]
        );
    }

    #[test]
    fn bad_port_ranges_are_errors_naming_the_field() {
        for (ranges, needle) in [
            ("30000-", "expected [LISTENER=]PORT"),
            ("0-10", "expected [LISTENER=]PORT"),
            ("30100-30000", "range is empty"),
            ("nope=30000", "no listener \"nope\""),
            ("tcp=30000", "not HTTP or HTTPS"),
            ("30000-30100,30050", "overlaps 30000-30100"),
            ("70000", "expected [LISTENER=]PORT"),
        ] {
            let err = parse(&gateway_with_ranges("gw", "", ranges))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("field metadata.annotations[sluice.dev/port-ranges]")
                    && err.contains(needle),
                "{ranges}: {err}"
            );
        }
    }

    #[test]
    fn overlapping_ranges_of_two_gateways_on_one_address_name_both() {
        let a = gateway_with_ranges("a", "{value: 10.0.0.1}", "30000-30100");
        let b = gateway_with_ranges("b", "{value: 10.0.0.2}, {value: 10.0.0.1}", "30100-30200");
        let err = parse(&format!("{a}---\n{b}")).unwrap_err().to_string();
        assert!(
            err.contains("document 2 (Gateway ns1/b)")
                && err.contains("ports 30100-30200 of Gateway ns1/b overlap ports 30000-30100 of Gateway ns1/a on address 10.0.0.1")
                && err.contains("declared in test.yaml: document 1"),
            "{err}"
        );
        // Other addresses, or a Gateway on every address next to one on its
        // own address, do not clash (the own address is more specific).
        let c = gateway_with_ranges("c", "{value: 10.0.0.3}", "30000-30100");
        let d = gateway_with_ranges("d", "", "30000-30100");
        parse(&format!("{a}---\n{c}---\n{d}")).unwrap();
        let e = gateway_with_ranges("e", "", "30050");
        let err = parse(&format!("{d}---\n{e}")).unwrap_err().to_string();
        assert!(err.contains("on every address"), "{err}");
    }

    #[test]
    fn address_without_value_and_parameters_ref() {
        let gw = |spec: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                 metadata: {{name: gw, namespace: ns1}}\nspec:\n  gatewayClassName: sluice\n  \
                 listeners: [{{name: http, port: 80, protocol: HTTP}}]\n{spec}"
            )
        };
        let c = parse(&gw("  addresses: [{type: IPAddress}]\n")).unwrap();
        let g = &c.gateways[0];
        assert!(g.assign_address && g.addresses.is_empty());
        assert_eq!(g.parameters_ref, None);
        let err = parse(&gw("  addresses: [{type: IPAddress}, {value: 10.0.0.1}]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.addresses") && err.contains("without value"),
            "{err}"
        );
        let c = parse(&gw(
            "  infrastructure: {parametersRef: {group: invalid.io, kind: Params, name: p}}\n",
        ))
        .unwrap();
        assert_eq!(
            c.gateways[0].parameters_ref.as_deref(),
            Some("invalid.io/Params/p")
        );
        assert!(!c.gateways[0].assign_address);
    }

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
    fn base64_round_trips_and_rejects_garbage() {
        assert_eq!(super::base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::base64_decode("aGVs\nbG8").unwrap(), b"hello");
        assert_eq!(super::base64_decode("").unwrap(), b"");
        assert_eq!(super::base64_decode("/+8=").unwrap(), [0xff, 0xef]);
        assert!(super::base64_decode("aGVs*G8=").is_none());
        assert!(super::base64_decode("a").is_none());
        assert!(super::base64_decode("aG=Vs").is_none());
    }

    #[test]
    fn https_listener_and_tls_secret() {
        let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns1}
spec:
  gatewayClassName: sluice
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: cert}, {name: other, namespace: certs, kind: Secret, group: ""}]}
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: ns1}
type: kubernetes.io/tls
data: {tls.crt: aGVsbG8=}
stringData: {tls.key: key}
"#;
        let c = parse(text).unwrap();
        let tls = c.gateways[0].listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.certificate_refs[0].object.to_string(), "ns1/cert");
        assert_eq!(tls.certificate_refs[0].kind, "Secret");
        assert_eq!(tls.certificate_refs[1].object.to_string(), "certs/other");
        let s = &c.secrets[0];
        assert_eq!(s.kind, "kubernetes.io/tls");
        assert_eq!(s.data["tls.crt"], b"hello");
        assert_eq!(s.data["tls.key"], b"key");
        assert!(
            !format!("{s:?}").contains("hello"),
            "Debug hides key material"
        );

        let err = parse(&text.replace("tls: {", "tls: {mode: Passthrough, "))
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.listeners[0].tls.mode"), "{err}");
        let err = parse(&text.replace("protocol: HTTPS", "protocol: HTTP"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not allowed for protocol HTTP"), "{err}");
        let err = parse(&text.replace("aGVsbG8=", "a*b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("data[tls.crt]"), "{err}");
    }

    #[test]
    fn broken_yaml_is_one_error_not_a_hang() {
        let err = parse("kind: [unclosed\n---\nkind: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid YAML"), "{err}");
    }
}
