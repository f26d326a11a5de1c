//! Conversion of the objects behind a backendRef: Service (ports and their
//! target ports) and EndpointSlice (ready addresses and named ports). They
//! are core Kubernetes kinds, not Gateway API ones, hence a module apart
//! from the Gateway and route conversions.
use std::net::IpAddr;

use super::{
    model, resources as wire,
    validate::{ns, Doc},
};

/// Label by which an EndpointSlice names the Service it belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub(super) fn service(doc: &mut Doc<'_>, s: wire::Service) -> Option<model::Service> {
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
            udp: p.protocol.as_deref() == Some("UDP"),
        });
    }
    (doc.errors.len() == before).then(|| model::Service {
        id: model::ObjectRef::new(ns(&s.metadata), &s.metadata.name),
        ports,
    })
}

pub(super) fn endpoint_slice(
    doc: &mut Doc<'_>,
    s: wire::EndpointSlice,
) -> Option<model::EndpointSlice> {
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
