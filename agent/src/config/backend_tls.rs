//! Conversion of the TLS documents around backends and client certificates:
//! BackendTLSPolicy, ConfigMap (CA bundles) and `Gateway.spec.tls`.
use super::{
    model, resources as wire,
    time::parse_timestamp,
    validate::{hostname, ns, Doc},
};

/// `gateway.networking.k8s.io` versions of BackendTLSPolicy read (same shape).
pub(super) const BACKEND_TLS_POLICY_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1alpha3",
];

pub(super) fn config_map(m: wire::ConfigMap) -> model::ConfigMap {
    model::ConfigMap {
        id: model::ObjectRef::new(ns(&m.metadata), &m.metadata.name),
        data: m.data,
    }
}

pub(super) fn backend_tls_policy(
    doc: &mut Doc<'_>,
    p: wire::BackendTlsPolicy,
) -> Option<model::BackendTlsPolicy> {
    let before = doc.errors.len();
    let created = p.metadata.creation_timestamp.as_deref().and_then(|t| {
        let parsed = parse_timestamp(t);
        if parsed.is_none() {
            doc.err(
                "metadata.creationTimestamp",
                format!("not an RFC 3339 timestamp: {t:?}"),
            );
        }
        parsed
    });
    if p.spec.target_refs.is_empty() {
        doc.err("spec.targetRefs", "at least one target is required");
    }
    if let Some(key) = p.spec.options.keys().next() {
        doc.err(
            "spec.options",
            format!("unsupported option {key:?} (no BackendTLSPolicy options are implemented)"),
        );
    }
    let v = &p.spec.validation;
    match (
        v.ca_certificate_refs.is_empty(),
        &v.well_known_ca_certificates,
    ) {
        (true, None) => doc.err(
            "spec.validation",
            "one of caCertificateRefs and wellKnownCACertificates is required",
        ),
        (false, Some(_)) => doc.err(
            "spec.validation",
            "caCertificateRefs and wellKnownCACertificates are mutually exclusive",
        ),
        _ => {}
    }
    let host = hostname(doc, "spec.validation.hostname", &v.hostname);
    if matches!(host, Some(model::Hostname::Wildcard(_))) {
        doc.err(
            "spec.validation.hostname",
            "must be a plain DNS name, not a wildcard",
        );
    }
    let mut subject_alt_names = Vec::new();
    for (i, san) in v.subject_alt_names.iter().enumerate() {
        let field = format!("spec.validation.subjectAltNames[{i}]");
        match (san.kind.as_str(), &san.hostname, &san.uri) {
            ("Hostname", Some(h), None) => {
                if hostname(doc, &format!("{field}.hostname"), h).is_some() {
                    subject_alt_names.push(model::SubjectAltName::Hostname(h.to_ascii_lowercase()));
                }
            }
            ("URI", None, Some(u)) => {
                if u.contains("://") {
                    subject_alt_names.push(model::SubjectAltName::Uri(u.clone()));
                } else {
                    doc.err(format!("{field}.uri"), format!("not a URI: {u:?}"));
                }
            }
            ("Hostname", _, _) => doc.err(field, "type Hostname needs hostname (and no uri)"),
            ("URI", _, _) => doc.err(field, "type URI needs uri (and no hostname)"),
            (other, _, _) => doc.err(
                format!("{field}.type"),
                format!("unsupported type {other:?} (supported: Hostname, URI)"),
            ),
        }
    }
    let targets = p
        .spec
        .target_refs
        .iter()
        .map(|t| model::PolicyTarget {
            group: t.group.clone(),
            kind: t.kind.clone(),
            name: t.name.clone(),
            section_name: t.section_name.clone().filter(|s| !s.is_empty()),
        })
        .collect();
    let ca_refs = v
        .ca_certificate_refs
        .iter()
        .map(|r| model::LocalRef {
            group: r.group.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
        .collect();
    (doc.errors.len() == before).then(|| model::BackendTlsPolicy {
        id: model::ObjectRef::new(ns(&p.metadata), &p.metadata.name),
        generation: p.metadata.generation,
        created,
        targets,
        ca_refs,
        well_known: v.well_known_ca_certificates.clone(),
        hostname: v.hostname.to_ascii_lowercase(),
        subject_alt_names,
    })
}

fn certificate_ref(r: &wire::SecretObjectReference, default_ns: &str) -> model::CertificateRef {
    model::CertificateRef {
        group: r.group.clone().unwrap_or_default(),
        kind: r.kind.clone().unwrap_or_else(|| "Secret".into()),
        object: model::ObjectRef::new(r.namespace.as_deref().unwrap_or(default_ns), &r.name),
    }
}

/// `Gateway.spec.tls`: the backend client certificate reference and the
/// frontend client-certificate validation.
pub(super) fn gateway_tls(
    doc: &mut Doc<'_>,
    tls: Option<&wire::GatewaySpecTls>,
    gateway_ns: &str,
) -> (Option<model::CertificateRef>, model::FrontendValidation) {
    let Some(tls) = tls else {
        return (None, model::FrontendValidation::default());
    };
    let client_cert = tls
        .backend
        .as_ref()
        .and_then(|b| b.client_certificate_ref.as_ref())
        .map(|r| certificate_ref(r, gateway_ns));
    let mut frontend = model::FrontendValidation::default();
    if let Some(f) = &tls.frontend {
        let validation = |doc: &mut Doc<'_>, field: String, c: &wire::TlsConfig| {
            let v = c.validation.as_ref()?;
            if v.ca_certificate_refs.is_empty() {
                doc.err(
                    format!("{field}.caCertificateRefs"),
                    "at least one CA reference is required",
                );
            }
            let insecure_fallback = match v.mode.as_deref().unwrap_or("AllowValidOnly") {
                "AllowValidOnly" => false,
                "AllowInsecureFallback" => true,
                other => {
                    doc.err(
                        format!("{field}.mode"),
                        format!("unsupported mode {other:?} (supported: AllowValidOnly, AllowInsecureFallback)"),
                    );
                    false
                }
            };
            Some(model::ClientValidation {
                // ConfigMaps by default: the CA bundle kind of the Gateway API.
                ca_refs: v
                    .ca_certificate_refs
                    .iter()
                    .map(|r| model::CertificateRef {
                        kind: r.kind.clone().unwrap_or_else(|| "ConfigMap".into()),
                        ..certificate_ref(r, gateway_ns)
                    })
                    .collect(),
                insecure_fallback,
            })
        };
        if let Some(d) = &f.default {
            frontend.default = validation(doc, "spec.tls.frontend.default.validation".into(), d);
        }
        for (i, p) in f.per_port.iter().enumerate() {
            let field = format!("spec.tls.frontend.perPort[{i}]");
            if frontend.per_port.contains_key(&p.port) {
                doc.err(
                    format!("{field}.port"),
                    format!("duplicate port {}", p.port),
                );
            }
            let v = validation(doc, format!("{field}.tls.validation"), &p.tls);
            frontend.per_port.insert(p.port, v);
        }
    }
    (client_cert, frontend)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_documents, SubjectAltName};

    const POLICY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: p, namespace: ns1}
spec:
  targetRefs: [{group: "", kind: Service, name: svc, sectionName: https}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]
    hostname: Backend.Internal
    subjectAltNames: [{type: URI, uri: "spiffe://x/y"}, {type: Hostname, hostname: a.internal}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ca, namespace: ns1}
data: {ca.crt: "pem"}
"#;

    #[test]
    fn converts_policy_and_config_map() {
        let c = parse_documents([(Path::new("t.yaml"), POLICY)]).unwrap();
        let p = &c.backend_tls_policies[0];
        assert_eq!(p.id.to_string(), "ns1/p");
        assert_eq!(p.hostname, "backend.internal");
        assert_eq!(p.targets[0].section_name.as_deref(), Some("https"));
        assert_eq!(p.ca_refs[0].kind, "ConfigMap");
        assert_eq!(
            p.subject_alt_names,
            [
                SubjectAltName::Uri("spiffe://x/y".into()),
                SubjectAltName::Hostname("a.internal".into())
            ]
        );
        assert_eq!(c.config_maps[0].data["ca.crt"], "pem");
    }

    #[test]
    fn rejects_bad_policies_by_field() {
        let parse = |text: String| match parse_documents([(Path::new("t.yaml"), text.as_str())]) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        let err = parse(POLICY.replace("hostname: Backend.Internal", "hostname: \"*.x\""));
        assert!(err.contains("spec.validation.hostname"), "{err}");
        let err = parse(POLICY.replace("type: URI", "type: IP"));
        assert!(err.contains("subjectAltNames[0]"), "{err}");
        let err = parse(POLICY.replace(
            "    hostname: Backend",
            "    wellKnownCACertificates: System\n    hostname: Backend",
        ));
        assert!(err.contains("mutually exclusive"), "{err}");
        let err =
            parse(POLICY.replace("/v1\nkind: BackendTLSPolicy", "/v9\nkind: BackendTLSPolicy"));
        assert!(
            err.contains("unsupported BackendTLSPolicy version"),
            "{err}"
        );
    }

    #[test]
    fn gateway_tls_backend_and_frontend() {
        let gw = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns1}
spec:
  gatewayClassName: sluice
  listeners: [{name: h, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}]
  tls:
    backend: {clientCertificateRef: {name: client}}
    frontend:
      default: {validation: {caCertificateRefs: [{name: ca}]}}
      perPort:
      - {port: 8443, tls: {validation: {caCertificateRefs: [{name: ca2, kind: ConfigMap, group: ""}], mode: AllowInsecureFallback}}}
      - {port: 9443, tls: {}}
"#;
        let c = parse_documents([(Path::new("t.yaml"), gw)]).unwrap();
        let g = &c.gateways[0];
        let client = g.backend_client_certificate.as_ref().unwrap();
        assert_eq!(
            (client.kind.as_str(), client.object.to_string()),
            ("Secret", "ns1/client".into())
        );
        let f = &g.frontend_validation;
        let default = f.for_port(443).unwrap();
        assert_eq!(default.ca_refs[0].kind, "ConfigMap");
        assert!(!default.insecure_fallback);
        assert!(f.for_port(8443).unwrap().insecure_fallback);
        assert!(f.for_port(9443).is_none(), "perPort without validation");
        let err = parse_documents([(
            Path::new("t.yaml"),
            gw.replace("AllowInsecureFallback", "Nope").as_str(),
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("spec.tls.frontend.perPort[0].tls.validation.mode"),
            "{err}"
        );
    }
}
