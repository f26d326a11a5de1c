//! Conversion of GatewayClass and Gateway: addresses, infrastructure
//! parameters and listeners (protocol, hostname, allowedRoutes, TLS).
//! A Gateway is the largest document Sluice reads, so its conversion has a
//! module of its own; its `sluice.dev/*` annotations are read by
//! [`super::annotations`] and its `spec.tls` by [`super::backend_tls`].
use std::net::IpAddr;

use super::{
    annotations::{gateway_annotations, GatewayAnnotations},
    backend_tls, model, resources as wire,
    validate::{hostname, ns, Doc, GATEWAY_GROUP},
};

pub(super) fn gateway_class(gc: wire::GatewayClass) -> model::GatewayClass {
    model::GatewayClass {
        name: gc.metadata.name,
        controller_name: gc.spec.controller_name,
        parameters_ref: gc.spec.parameters_ref.as_ref().map(|p| p.describe()),
    }
}

pub(super) fn gateway(doc: &mut Doc<'_>, g: wire::Gateway) -> Option<model::Gateway> {
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
    let listeners = listeners(doc, &g.spec.listeners, &ns(&g.metadata));
    let allowed_listeners = allowed_listeners(doc, g.spec.allowed_listeners.as_ref());
    let GatewayAnnotations {
        source_allow,
        source_deny,
        syn_budget,
        admitted_namespaces,
        port_ranges,
    } = gateway_annotations(doc, &g.metadata.annotations, &listeners);
    let (backend_client_certificate, frontend_validation) =
        backend_tls::gateway_tls(doc, g.spec.tls.as_ref(), &ns(&g.metadata));
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
        allowed_listeners,
    })
}

/// `spec.allowedListeners`: which ListenerSets may add listeners.
fn allowed_listeners(
    doc: &mut Doc<'_>,
    allowed: Option<&wire::AllowedListeners>,
) -> model::AllowedListeners {
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    let field = "spec.allowedListeners.namespaces";
    match namespaces.and_then(|n| n.from.as_deref()) {
        None | Some("None") => model::AllowedListeners::None,
        Some("Same") => model::AllowedListeners::Same,
        Some("All") => model::AllowedListeners::All,
        Some("Selector") => match namespaces.and_then(|n| n.selector.as_ref()) {
            Some(sel) => model::AllowedListeners::Selector(label_selector(
                doc,
                &format!("{field}.selector"),
                sel,
            )),
            None => {
                doc.err(
                    format!("{field}.selector"),
                    "required when from is Selector",
                );
                model::AllowedListeners::None
            }
        },
        Some(other) => {
            doc.err(
                format!("{field}.from"),
                format!("unsupported value {other:?} (supported: None, Same, All, Selector)"),
            );
            model::AllowedListeners::None
        }
    }
}

/// `spec.listeners` of a Gateway or a ListenerSet; `namespace` is the
/// object's, where certificateRefs without a namespace point.
pub(super) fn listeners(
    doc: &mut Doc<'_>,
    wire_listeners: &[wire::Listener],
    namespace: &str,
) -> Vec<model::Listener> {
    let mut listeners = Vec::new();
    for (i, l) in wire_listeners.iter().enumerate() {
        let protocol = match l.protocol.as_str() {
            "HTTP" => model::ListenerProtocol::Http,
            "HTTPS" => model::ListenerProtocol::Https,
            "TCP" => model::ListenerProtocol::Tcp,
            "UDP" => model::ListenerProtocol::Udp,
            "TLS" => match l.tls.as_ref().and_then(|t| t.mode.as_deref()) {
                Some("Passthrough") => model::ListenerProtocol::TlsPassthrough,
                // Terminate is the mode when none is given.
                None | Some("Terminate") => model::ListenerProtocol::TlsTerminate,
                Some(other) => model::ListenerProtocol::Other(format!("TLS with mode {other}")),
            },
            other => model::ListenerProtocol::Other(other.to_owned()),
        };
        if l.port == 0 {
            doc.err(format!("spec.listeners[{i}].port"), "port must be 1-65535");
        }
        if let Some(e) = super::names::subdomain_error(&l.name) {
            doc.err(format!("spec.listeners[{i}].name"), e);
        }
        if listeners.iter().any(|x: &model::Listener| x.name == l.name) {
            doc.err(
                format!("spec.listeners[{i}].name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        let hostname = match &l.hostname {
            // A TCP listener has no hostname to match (the Gateway API
            // ignores it for TCP); a routing decision must not depend on it.
            Some(_)
                if matches!(
                    protocol,
                    model::ListenerProtocol::Tcp | model::ListenerProtocol::Udp
                ) =>
            {
                None
            }
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
        let is_kind = |k: &wire::RouteGroupKind, kind: &str| {
            k.kind == kind && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        };
        // Kinds the protocol takes: all of them when `kinds` is unset, else
        // those named; a named kind the protocol cannot take (an HTTPRoute
        // on a TLS listener) is invalid, like an unknown one.
        let served = protocol.route_kinds();
        let allowed_kinds = served
            .iter()
            .copied()
            .filter(|rk| kinds.is_empty() || kinds.iter().any(|k| is_kind(k, rk.as_str())))
            .collect();
        let invalid_route_kinds = kinds
            .iter()
            .filter(|k| !served.iter().any(|rk| is_kind(k, rk.as_str())))
            .map(|k| format!("{}/{}", k.group.as_deref().unwrap_or(GATEWAY_GROUP), k.kind))
            .collect();
        let tls = listener_tls(doc, i, &protocol, l.tls.as_ref(), namespace);
        listeners.push(model::Listener {
            name: l.name.clone(),
            port: l.port,
            protocol,
            hostname,
            allowed_routes,
            allowed_kinds,
            invalid_route_kinds,
            tls,
            origin: None,
        });
    }
    listeners
}

/// `spec.listeners[i].tls`: required for HTTPS (mode Terminate) and TLS
/// (mode Passthrough: no certificates, the backend terminates), not allowed
/// for HTTP and TCP. Other protocols are not served, so their `tls` is not read.
fn listener_tls(
    doc: &mut Doc<'_>,
    i: usize,
    protocol: &model::ListenerProtocol,
    tls: Option<&wire::GatewayTlsConfig>,
    owner_ns: &str,
) -> Option<model::ListenerTls> {
    let field = format!("spec.listeners[{i}].tls");
    match (protocol, tls) {
        (model::ListenerProtocol::Http, Some(_)) => {
            doc.err(field, "not allowed for protocol HTTP");
            None
        }
        (model::ListenerProtocol::Tcp, Some(_)) => {
            doc.err(field, "not allowed for protocol TCP");
            None
        }
        (model::ListenerProtocol::Udp, Some(_)) => {
            doc.err(field, "not allowed for protocol UDP");
            None
        }
        (model::ListenerProtocol::TlsPassthrough, Some(tls)) => {
            if !tls.certificate_refs.is_empty() {
                doc.err(
                    format!("{field}.certificateRefs"),
                    "not allowed with mode Passthrough (the backend holds the certificate)",
                );
            }
            if let Some(key) = tls.options.keys().next() {
                doc.err(
                    format!("{field}.options"),
                    format!("unsupported option {key:?} (no TLS options are implemented)"),
                );
            }
            None
        }
        (model::ListenerProtocol::Https, None) => {
            doc.err(field, "required for protocol HTTPS");
            None
        }
        (model::ListenerProtocol::TlsTerminate, None) => {
            doc.err(
                field,
                "required for protocol TLS (mode Terminate needs certificateRefs)",
            );
            None
        }
        (model::ListenerProtocol::Https | model::ListenerProtocol::TlsTerminate, Some(tls)) => {
            match tls.mode.as_deref().unwrap_or("Terminate") {
                "Terminate" => {}
                "Passthrough" => doc.err(
                    format!("{field}.mode"),
                    "Passthrough is only valid for protocol TLS; HTTPS terminates",
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
                        r.namespace.as_deref().unwrap_or(owner_ns),
                        &r.name,
                    ),
                })
                .collect();
            Some(model::ListenerTls { certificate_refs })
        }
        _ => None,
    }
}

pub(super) fn label_selector(
    doc: &mut Doc<'_>,
    at: &str,
    s: &wire::LabelSelector,
) -> model::LabelSelector {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_documents, ConfigError};

    fn parse(text: &str) -> Result<super::super::Config, ConfigError> {
        parse_documents([(Path::new("test.yaml"), text)])
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
    fn udp_listener_is_served_without_hostname_or_tls() {
        let gw = |listener: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                 metadata: {{name: gw, namespace: ns1}}\nspec:\n  gatewayClassName: sluice\n  \
                 listeners: [{listener}]\n"
            )
        };
        let c = parse(&gw(
            "{name: dns, port: 53, protocol: UDP, hostname: dns.example.com}",
        ))
        .unwrap();
        let l = &c.gateways[0].listeners[0];
        assert_eq!(l.protocol, super::super::ListenerProtocol::Udp);
        assert!(l.protocol.is_served() && l.protocol.is_l4());
        assert_eq!(l.hostname, None, "a UDP listener matches no hostname");
        assert_eq!(
            l.allowed_kinds,
            [super::super::RouteKind::Udp],
            "UDPRoutes only"
        );
        let err = parse(&gw(
            "{name: dns, port: 53, protocol: UDP, tls: {mode: Passthrough}}",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("spec.listeners[0].tls") && err.contains("not allowed for protocol UDP"),
            "{err}"
        );
    }
}
