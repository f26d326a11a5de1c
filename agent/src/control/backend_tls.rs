//! TLS to backends: BackendTLSPolicies (which Service ports, which CAs and
//! names) and the Gateway's backend client certificate become the
//! [`UpstreamTls`] of each backend, plus the policy ancestor status and the
//! Gateway `ResolvedRefs` condition about the client certificate.
use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    sign::CertifiedKey,
    RootCertStore,
};
use serde::Serialize;

use super::{
    policy::attach::{Level, TargetIndex},
    refgrant::{Kind, ReferenceGrants},
    status::{Condition, ParentRefStatus},
    tls::certified_key,
};
use crate::{
    config::{
        BackendTlsPolicy, Config, ConfigMap, Gateway, ObjectRef, Secret, Service, ServicePort,
    },
    snapshot::{upstream_tls::UpstreamTls, Backend, BackendTarget, Unresolved},
};

/// Service port `appProtocol`s that mean TLS: they need a BackendTLSPolicy
/// (the CA and the name to verify), else the reference does not resolve.
pub const TLS_APP_PROTOCOLS: [&str; 2] = ["https", "kubernetes.io/wss"];

/// Whether `policy` targets `service` (and its port named `port_name`).
pub fn targets(policy: &BackendTlsPolicy, service: &ObjectRef, port_name: Option<&str>) -> bool {
    policy.id.namespace == service.namespace
        && policy.targets.iter().any(|t| {
            t.group.is_empty()
                && t.kind == "Service"
                && t.name == service.name
                && t.section_name
                    .as_deref()
                    .is_none_or(|s| Some(s) == port_name)
        })
}

/// The CA side of one policy, resolved once.
struct Validation {
    roots: RootCertStore,
    /// `ResolvedRefs=False`: a CA reference that does not resolve.
    ref_problem: Option<Unresolved>,
    /// `Accepted=False`: (reason, message).
    not_accepted: Option<(&'static str, String)>,
}

type Built = Result<Arc<UpstreamTls>, Unresolved>;

/// Backend TLS built per (Gateway, policy), kept from one compile for the
/// next (see [`BackendTls::reuse`]).
#[derive(Default)]
pub(super) struct BuiltTls(HashMap<(ObjectRef, ObjectRef), Built>);

/// Resolves backend TLS for one compile.
pub(super) struct BackendTls<'a> {
    /// In precedence order: oldest first, then namespace/name.
    policies: Vec<&'a BackendTlsPolicy>,
    /// The same, by the Service (port) they target.
    index: TargetIndex<'a, BackendTlsPolicy>,
    services: HashMap<&'a ObjectRef, &'a Service>,
    validations: HashMap<&'a ObjectRef, Validation>,
    secrets: HashMap<&'a ObjectRef, &'a Secret>,
    grants: ReferenceGrants<'a>,
    /// Per (Gateway, policy).
    built: RefCell<HashMap<(ObjectRef, ObjectRef), Built>>,
    /// Built by the previous compile from the same Gateways, policies,
    /// Secrets and ConfigMaps: taken instead of building again, so that
    /// backends compiled at different times share one client config.
    previous: RefCell<HashMap<(ObjectRef, ObjectRef), Built>>,
}

impl BackendTls<'_> {
    /// One line per (Gateway, policy) whose backends cannot be reached,
    /// for the compile warnings (`/config`, logs).
    pub(super) fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .built
            .borrow()
            .iter()
            .filter_map(|((gateway, _), b)| {
                b.as_ref()
                    .err()
                    .map(|u| format!("Gateway {gateway}: TLS backends not served: {u}"))
            })
            .collect();
        out.sort();
        out
    }
}

impl<'a> BackendTls<'a> {
    pub(super) fn new(config: &'a Config) -> Self {
        let mut policies: Vec<&BackendTlsPolicy> = config.backend_tls_policies.iter().collect();
        policies.sort_by(|a, b| {
            (a.created.is_none(), a.created, &a.id).cmp(&(b.created.is_none(), b.created, &b.id))
        });
        let maps: HashMap<&ObjectRef, &ConfigMap> =
            config.config_maps.iter().map(|m| (&m.id, m)).collect();
        let validations = policies
            .iter()
            .map(|p| (&p.id, validation(p, &maps)))
            .collect();
        Self {
            index: TargetIndex::new(policies.iter().copied()),
            policies,
            services: config.services.iter().map(|s| (&s.id, s)).collect(),
            validations,
            secrets: config.secrets.iter().map(|s| (&s.id, s)).collect(),
            grants: ReferenceGrants::new(config),
            built: RefCell::default(),
            previous: RefCell::default(),
        }
    }

    /// Takes over what the previous compile built; only for the same
    /// Gateways, BackendTLSPolicies, Secrets and ConfigMaps.
    pub(super) fn reuse(&self, built: BuiltTls) {
        *self.previous.borrow_mut() = built.0;
    }

    /// What this compile built, for [`BackendTls::reuse`] by the next.
    pub(super) fn into_built(self) -> BuiltTls {
        BuiltTls(self.built.into_inner())
    }

    /// Whether any BackendTLSPolicy exists.
    pub(super) fn has_policies(&self) -> bool {
        !self.policies.is_empty()
    }

    /// Builds (once per compile) the TLS of `policy` (an index as returned
    /// by [`BackendTls::apply`]) for `gateway`: for backends compiled
    /// earlier and kept, so that their problems are still reported.
    pub(super) fn touch(&self, gateway: &Gateway, policy: usize) {
        if let Some(p) = self.policies.get(policy) {
            // Built for its warnings; the backends hold the result already.
            let _ = self.built_for(gateway, p);
        }
    }

    fn built_for(&self, gateway: &Gateway, policy: &BackendTlsPolicy) -> Built {
        let key = (gateway.id.clone(), policy.id.clone());
        if let Some(b) = self.built.borrow().get(&key) {
            return b.clone();
        }
        let b = match self.previous.borrow_mut().remove(&key) {
            Some(b) => b,
            None => self.build(gateway, policy),
        };
        self.built.borrow_mut().insert(key, b.clone());
        b
    }

    /// The policy in force for a Service port (through the attachment
    /// layer): one naming the port wins over one for the whole Service,
    /// then the oldest.
    fn policy_for(&self, service: &ObjectRef, port: &ServicePort) -> Option<&'a BackendTlsPolicy> {
        let specific = port
            .name
            .as_ref()
            .and_then(|n| {
                self.index
                    .at(&Level::ServicePort(service.clone(), n.clone()))
                    .first()
            })
            .copied();
        specific.or_else(|| {
            self.index
                .at(&Level::Service(service.clone()))
                .first()
                .copied()
        })
    }

    /// `spec.tls.backend.clientCertificateRef` of a Gateway: `Ok(None)` when
    /// not set, the reason when it does not resolve.
    pub(super) fn client_certificate(
        &self,
        gateway: &Gateway,
    ) -> Result<Option<Arc<CertifiedKey>>, Unresolved> {
        let Some(r) = &gateway.backend_client_certificate else {
            return Ok(None);
        };
        let invalid = |message: String| Unresolved {
            reason: "InvalidClientCertificateRef",
            message,
        };
        if !r.group.is_empty() || r.kind != "Secret" {
            return Err(invalid(format!(
                "clientCertificateRef {}: unsupported kind {}/{} (supported: core Secret)",
                r.object, r.group, r.kind
            )));
        }
        if !self.grants.allows(
            Kind::GATEWAY,
            &gateway.id.namespace,
            Kind::SECRET,
            &r.object,
        ) {
            return Err(Unresolved {
                reason: "RefNotPermitted",
                message: format!(
                    "clientCertificateRef {}: cross-namespace reference not permitted by any \
                     ReferenceGrant in namespace {}",
                    r.object, r.object.namespace
                ),
            });
        }
        let secret = self.secrets.get(&r.object).ok_or_else(|| {
            invalid(format!(
                "clientCertificateRef {}: Secret not found",
                r.object
            ))
        })?;
        certified_key(secret)
            .map(Some)
            .map_err(|u| invalid(format!("clientCertificateRef: {}", u.message)))
    }

    /// Gives a resolved backend its TLS settings when a policy targets its
    /// port; a policy without usable CAs makes the backend unresolvable
    /// rather than letting requests go out unverified or in plain text.
    /// Returns the index of the policy applied.
    pub(super) fn apply(&self, gateway: &Gateway, backend: &mut Backend) -> Option<usize> {
        if !matches!(backend.target, BackendTarget::Endpoints(_)) {
            return None;
        }
        let port = self
            .services
            .get(&*backend.service)
            .and_then(|s| s.ports.iter().find(|p| p.port == backend.port))?;
        let policy = self.policy_for(&backend.service, port)?;
        match self.built_for(gateway, policy) {
            Ok(tls) => backend.tls = Some(tls),
            Err(u) => backend.target = BackendTarget::Invalid(Box::new(u)),
        }
        self.policies.iter().position(|p| p.id == policy.id)
    }

    fn build(
        &self,
        gateway: &Gateway,
        policy: &BackendTlsPolicy,
    ) -> Result<Arc<UpstreamTls>, Unresolved> {
        let v = &self.validations[&policy.id];
        if let Some((reason, message)) = &v.not_accepted {
            return Err(Unresolved {
                reason,
                message: format!("BackendTLSPolicy {}: {message}", policy.id),
            });
        }
        // An unresolvable client certificate is the Gateway's condition;
        // the connection goes without one (the backend may refuse it).
        let client_cert = self.client_certificate(gateway).ok().flatten();
        UpstreamTls::new(
            policy.id.clone(),
            v.roots.clone(),
            &policy.hostname,
            policy.subject_alt_names.clone(),
            client_cert,
        )
        .map(Arc::new)
        .map_err(|e| Unresolved {
            reason: "NoValidCACertificate",
            message: format!("BackendTLSPolicy {}: {e}", policy.id),
        })
    }

    /// Status of every policy that applies to a backend of a route attached
    /// to one of `gateways` (its ancestors).
    pub(super) fn status(
        &self,
        config: &Config,
        gateways: &[&Gateway],
        controller: &'static str,
    ) -> Vec<PolicyStatus> {
        let mut out = Vec::new();
        for policy in &self.policies {
            let mut ancestors = Vec::new();
            for gateway in gateways {
                let uses = config.routes.iter().any(|r| {
                    r.parents.iter().any(|p| p.gateway == gateway.id)
                        && r.rules.iter().flat_map(|rule| &rule.backends).any(|b| {
                            b.unsupported_kind.is_none()
                                && self
                                    .services
                                    .get(&b.service)
                                    .and_then(|s| s.ports.iter().find(|p| p.port == b.port))
                                    .is_some_and(|p| targets(policy, &b.service, p.name.as_deref()))
                        })
                });
                if !uses {
                    continue;
                }
                let v = &self.validations[&policy.id];
                // Conflicted: on every target, an older policy comes first.
                let conflicted = policy.targets.iter().all(|t| {
                    Level::of(&policy.id.namespace, t).is_some_and(|level| {
                        self.index
                            .at(&level)
                            .first()
                            .is_some_and(|first| first.id != policy.id)
                    })
                });
                let accepted = if conflicted {
                    condition(
                        "Accepted",
                        false,
                        "Conflicted",
                        "an older BackendTLSPolicy targets the same Service ports",
                    )
                } else {
                    match &v.not_accepted {
                        Some((reason, message)) => condition("Accepted", false, reason, message),
                        None => condition("Accepted", true, "Accepted", ""),
                    }
                };
                let resolved = match &v.ref_problem {
                    Some(u) => condition("ResolvedRefs", false, u.reason, &u.message),
                    None => condition("ResolvedRefs", true, "ResolvedRefs", ""),
                };
                let mut conditions = vec![accepted, resolved];
                for c in &mut conditions {
                    c.observed_generation = policy.generation;
                }
                ancestors.push(PolicyAncestorStatus {
                    ancestor_ref: ParentRefStatus {
                        group: super::refgrant::GATEWAY_GROUP,
                        kind: "Gateway",
                        namespace: gateway.id.namespace.clone(),
                        name: gateway.id.name.clone(),
                        section_name: None,
                        port: None,
                    },
                    controller_name: controller,
                    conditions,
                });
            }
            if !ancestors.is_empty() {
                out.push(PolicyStatus {
                    kind: "BackendTLSPolicy",
                    namespace: policy.id.namespace.clone(),
                    name: policy.id.name.clone(),
                    ancestors,
                });
            }
        }
        out
    }

    /// The Gateway's `ResolvedRefs` about its backend client certificate
    /// (`None` when the Gateway sets none).
    pub(super) fn gateway_condition(&self, gateway: &Gateway) -> Option<Condition> {
        gateway.backend_client_certificate.as_ref()?;
        let mut c = match self.client_certificate(gateway) {
            Ok(_) => condition("ResolvedRefs", true, "ResolvedRefs", ""),
            Err(u) => condition("ResolvedRefs", false, u.reason, &u.message),
        };
        c.observed_generation = gateway.generation;
        Some(c)
    }
}

fn condition(kind: &'static str, ok: bool, reason: &'static str, message: &str) -> Condition {
    Condition {
        kind,
        status: if ok { "True" } else { "False" },
        reason,
        message: message.to_owned(),
        observed_generation: None,
    }
}

/// The platform's CA bundle, read once (wellKnownCACertificates: System).
fn system_roots() -> &'static Result<RootCertStore, String> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            return Err(format!(
                "no system CA certificates found ({})",
                errors.join("; ")
            ));
        }
        Ok(roots)
    })
}

fn validation(policy: &BackendTlsPolicy, maps: &HashMap<&ObjectRef, &ConfigMap>) -> Validation {
    let mut v = Validation {
        roots: RootCertStore::empty(),
        ref_problem: None,
        not_accepted: None,
    };
    match policy.well_known.as_deref() {
        Some("System") => match system_roots() {
            Ok(roots) => v.roots = roots.clone(),
            Err(e) => v.not_accepted = Some(("NoValidCACertificate", e.clone())),
        },
        Some(other) => {
            v.not_accepted = Some((
                "Invalid",
                format!("wellKnownCACertificates {other:?} is not supported (supported: System)"),
            ));
        }
        None => {}
    }
    for r in &policy.ca_refs {
        let id = ObjectRef::new(&policy.id.namespace, &r.name);
        let problem = if !r.group.is_empty() || r.kind != "ConfigMap" {
            Some(Unresolved {
                reason: "InvalidKind",
                message: format!(
                    "caCertificateRef {id}: unsupported kind {}/{} (supported: core ConfigMap)",
                    r.group, r.kind
                ),
            })
        } else {
            match maps.get(&id).and_then(|m| m.data.get("ca.crt")) {
                None => Some(Unresolved {
                    reason: "InvalidCACertificateRef",
                    message: format!("caCertificateRef {id}: ConfigMap with key ca.crt not found"),
                }),
                Some(pem) => {
                    let certs: Vec<CertificateDer<'static>> =
                        CertificateDer::pem_slice_iter(pem.as_bytes())
                            .filter_map(Result::ok)
                            .collect();
                    let (added, _) = v.roots.add_parsable_certificates(certs);
                    (added == 0).then(|| Unresolved {
                        reason: "InvalidCACertificateRef",
                        message: format!(
                            "caCertificateRef {id}: ca.crt holds no usable certificate"
                        ),
                    })
                }
            }
        };
        if let Some(p) = problem {
            v.ref_problem.get_or_insert(p);
        }
    }
    if v.roots.is_empty() && v.not_accepted.is_none() {
        v.not_accepted = Some((
            "NoValidCACertificate",
            v.ref_problem
                .as_ref()
                .map_or_else(|| "no CA certificate".to_owned(), |u| u.message.clone()),
        ));
    }
    v
}

/// `status` of a policy (Gateway API PolicyStatus).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// One `status.ancestors` entry: a Gateway the policy takes effect through.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: ParentRefStatus,
    pub controller_name: &'static str,
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_documents;

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn config(policies: &str) -> Config {
        let pem: String = ca_pem().lines().map(|l| format!("    {l}\n")).collect();
        let text = format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: ns}}
spec: {{ports: [{{name: https, port: 443}}, {{name: other, port: 8443}}]}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca, namespace: ns}}
data:
  ca.crt: |
{pem}{policies}"#
        );
        parse_documents([(Path::new("t.yaml"), text.as_str())]).unwrap()
    }

    fn policy(name: &str, created: &str, section: &str, validation: &str) -> String {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
             metadata: {{name: {name}, namespace: ns, creationTimestamp: \"{created}\"}}\n\
             spec:\n  targetRefs: [{{group: \"\", kind: Service, name: svc{section}}}]\n  \
             validation: {{hostname: {name}.internal, {validation}}}\n"
        )
    }

    const CA: &str = "caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}]";

    fn port(config: &Config, number: u16) -> &ServicePort {
        config.services[0]
            .ports
            .iter()
            .find(|p| p.port == number)
            .unwrap()
    }

    #[test]
    fn port_specific_policy_wins_then_the_oldest() {
        let c = config(&format!(
            "{}{}{}",
            policy("whole-new", "2024-02-01T00:00:00Z", "", CA),
            policy("whole-old", "2024-01-01T00:00:00Z", "", CA),
            policy("port", "2024-03-01T00:00:00Z", ", sectionName: https", CA),
        ));
        let tls = BackendTls::new(&c);
        let svc = ObjectRef::new("ns", "svc");
        assert_eq!(tls.policy_for(&svc, port(&c, 443)).unwrap().id.name, "port");
        assert_eq!(
            tls.policy_for(&svc, port(&c, 8443)).unwrap().id.name,
            "whole-old"
        );
        assert!(tls
            .policy_for(&ObjectRef::new("other", "svc"), port(&c, 443))
            .is_none());
    }

    #[test]
    fn unknown_well_known_set_and_missing_ca_are_not_accepted() {
        let c = config(&format!(
            "{}{}",
            policy(
                "odd",
                "2024-01-01T00:00:00Z",
                "",
                "wellKnownCACertificates: Mozilla"
            ),
            policy(
                "missing",
                "2024-01-02T00:00:00Z",
                "",
                "caCertificateRefs: [{group: \"\", kind: ConfigMap, name: nope}]"
            ),
        ));
        let tls = BackendTls::new(&c);
        let odd = &tls.validations[&ObjectRef::new("ns", "odd")];
        assert_eq!(odd.not_accepted.as_ref().unwrap().0, "Invalid");
        let missing = &tls.validations[&ObjectRef::new("ns", "missing")];
        assert_eq!(
            missing.not_accepted.as_ref().unwrap().0,
            "NoValidCACertificate"
        );
        assert_eq!(
            missing.ref_problem.as_ref().unwrap().reason,
            "InvalidCACertificateRef"
        );
        // A backend under such a policy is not resolvable (never sent unverified).
        // Parsed, not built field by field: Gateway grows fields.
        let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                  metadata: {name: gw, namespace: ns}\n\
                  spec: {gatewayClassName: c, listeners: [{name: h, port: 80, protocol: HTTP}]}\n";
        let gateway = &parse_documents([(Path::new("g.yaml"), gw)])
            .unwrap()
            .gateways[0];
        let mut b = Backend::new(
            ObjectRef::new("ns", "svc"),
            443,
            1,
            BackendTarget::Endpoints(Arc::from(["127.0.0.1:1".parse().unwrap()])),
        );
        tls.apply(gateway, &mut b);
        assert!(
            matches!(&b.target, BackendTarget::Invalid(u) if u.reason == "Invalid"),
            "{:?}",
            b.target
        );
        assert!(b.tls.is_none());
    }
}
