//! Frontend client-certificate validation (`Gateway.spec.tls.frontend`):
//! the CA bundles of a port's `caCertificateRefs` become the rustls client
//! verifier of that port, with the reasons the Gateway API asks for when
//! they do not resolve.
use std::{collections::HashMap, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    server::{danger::ClientCertVerifier, WebPkiClientVerifier},
    RootCertStore,
};

use super::{
    refgrant::{Kind, ReferenceGrants},
    status::Condition,
};
use crate::{
    config::{ClientValidation, Config, ConfigMap, Gateway, ObjectRef},
    snapshot::{tls::InsecureFallback, Unresolved},
};

const CONFIG_MAP: Kind<'static> = Kind {
    group: "",
    kind: "ConfigMap",
};

/// Resolves client-certificate validation against one config.
pub(super) struct FrontendTls<'a> {
    maps: HashMap<&'a ObjectRef, &'a ConfigMap>,
    grants: ReferenceGrants<'a>,
}

impl<'a> FrontendTls<'a> {
    pub(super) fn new(config: &'a Config) -> Self {
        Self {
            maps: config.config_maps.iter().map(|m| (&m.id, m)).collect(),
            grants: ReferenceGrants::new(config),
        }
    }

    /// The client verifier of an HTTPS port of `gateway`: `Ok(None)` when
    /// the port does not validate client certificates; the reason of the
    /// first failing reference when no CA resolves.
    pub(super) fn verifier(
        &self,
        gateway: &Gateway,
        port: u16,
    ) -> Result<Option<Arc<dyn ClientCertVerifier>>, Unresolved> {
        let Some(v) = gateway.frontend_validation.for_port(port) else {
            return Ok(None);
        };
        let (roots, problem) = self.roots(gateway, v);
        if roots.is_empty() {
            return Err(problem.unwrap_or_else(|| Unresolved {
                reason: "InvalidCACertificateRef",
                message: "no caCertificateRefs given".into(),
            }));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Unresolved {
                reason: "InvalidCACertificateRef",
                message: format!("client certificate verifier: {e}"),
            })?;
        Ok(Some(if v.insecure_fallback {
            Arc::new(InsecureFallback::new(verifier))
        } else {
            verifier
        }))
    }

    /// The CAs of every reference that resolves, and the first problem.
    fn roots(
        &self,
        gateway: &Gateway,
        v: &ClientValidation,
    ) -> (RootCertStore, Option<Unresolved>) {
        let mut roots = RootCertStore::empty();
        let mut problem = None;
        for r in &v.ca_refs {
            let id = &r.object;
            let result = if !r.group.is_empty() || r.kind != "ConfigMap" {
                Err(Unresolved {
                    reason: "InvalidCACertificateKind",
                    message: format!(
                        "caCertificateRef {id}: unsupported kind {}/{} (supported: core ConfigMap)",
                        r.group, r.kind
                    ),
                })
            } else if !self
                .grants
                .allows(Kind::GATEWAY, &gateway.id.namespace, CONFIG_MAP, id)
            {
                Err(Unresolved {
                    reason: "RefNotPermitted",
                    message: format!(
                        "caCertificateRef {id}: cross-namespace reference not permitted by any \
                         ReferenceGrant in namespace {}",
                        id.namespace
                    ),
                })
            } else {
                match self.maps.get(id).and_then(|m| m.data.get("ca.crt")) {
                    None => Err(Unresolved {
                        reason: "InvalidCACertificateRef",
                        message: format!(
                            "caCertificateRef {id}: ConfigMap with key ca.crt not found"
                        ),
                    }),
                    Some(pem) => {
                        let certs: Vec<CertificateDer<'static>> =
                            CertificateDer::pem_slice_iter(pem.as_bytes())
                                .filter_map(Result::ok)
                                .collect();
                        match roots.add_parsable_certificates(certs) {
                            (0, _) => Err(Unresolved {
                                reason: "InvalidCACertificateRef",
                                message: format!(
                                    "caCertificateRef {id}: ca.crt holds no usable certificate"
                                ),
                            }),
                            _ => Ok(()),
                        }
                    }
                }
            };
            if let Err(u) = result {
                problem.get_or_insert(u);
            }
        }
        (roots, problem)
    }

    /// `InsecureFrontendValidationMode=True` on Gateways that let clients
    /// without a valid certificate through on some port.
    pub(super) fn gateway_condition(gateway: &Gateway) -> Option<Condition> {
        let f = &gateway.frontend_validation;
        let insecure = f
            .default
            .iter()
            .chain(f.per_port.values().flatten())
            .any(|v| v.insecure_fallback);
        insecure.then(|| Condition {
            kind: "InsecureFrontendValidationMode",
            status: "True",
            reason: "ConfigurationChanged",
            message: "AllowInsecureFallback: clients without a valid certificate are served".into(),
            observed_generation: gateway.generation,
        })
    }
}
