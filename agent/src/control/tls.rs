//! Listener certificates: `certificateRefs` → Secrets of type
//! `kubernetes.io/tls` → a rustls [`CertifiedKey`], with the reasons the
//! Gateway API asks for when a reference does not resolve.
use std::{collections::HashMap, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};

use super::refgrant::{Kind, ReferenceGrants};
use crate::{
    config::{Config, Gateway, Listener, ObjectRef, Secret, SECRET_TYPE_TLS},
    snapshot::Unresolved,
};

/// Resolves listener certificates against the Secrets of one config.
pub(super) struct Certificates<'a> {
    secrets: HashMap<&'a ObjectRef, &'a Secret>,
    grants: ReferenceGrants<'a>,
}

impl<'a> Certificates<'a> {
    pub(super) fn new(config: &'a Config) -> Self {
        Self {
            secrets: config.secrets.iter().map(|s| (&s.id, s)).collect(),
            grants: ReferenceGrants::new(config),
        }
    }

    /// The certificate of an HTTPS listener: the first `certificateRefs`
    /// entry that resolves. When none does, the reason of the first failure
    /// (`RefNotPermitted` or `InvalidCertificateRef`).
    pub(super) fn resolve(
        &self,
        gateway: &Gateway,
        listener: &Listener,
    ) -> Result<Arc<CertifiedKey>, Unresolved> {
        let refs = listener
            .tls
            .as_ref()
            .map(|t| t.certificate_refs.as_slice())
            .unwrap_or_default();
        let mut first_error = None;
        for r in refs {
            let result = if !r.group.is_empty() || r.kind != "Secret" {
                Err(invalid(format!(
                    "certificateRef {}: unsupported kind {}/{} (supported: core Secret)",
                    r.object, r.group, r.kind
                )))
            } else if !self.grants.allows(
                // A ListenerSet's certificates need a grant from the set.
                if listener.origin.is_some() {
                    Kind::LISTENER_SET
                } else {
                    Kind::GATEWAY
                },
                listener.namespace(gateway),
                Kind::SECRET,
                &r.object,
            ) {
                Err(Unresolved {
                    reason: "RefNotPermitted",
                    message: format!(
                        "certificateRef {}: cross-namespace reference not permitted by any \
                         ReferenceGrant in namespace {}",
                        r.object, r.object.namespace
                    ),
                })
            } else {
                match self.secrets.get(&r.object) {
                    None => Err(invalid(format!(
                        "certificateRef {}: Secret not found",
                        r.object
                    ))),
                    Some(s) => certified_key(s),
                }
            };
            match result {
                Ok(key) => return Ok(key),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| invalid("no certificateRefs given".into())))
    }
}

fn invalid(message: String) -> Unresolved {
    Unresolved {
        reason: "InvalidCertificateRef",
        message,
    }
}

/// Parses a `kubernetes.io/tls` Secret: `tls.crt` (PEM chain, leaf first) and
/// `tls.key` (PEM PKCS#8, PKCS#1 or SEC1) that must belong together.
pub fn certified_key(secret: &Secret) -> Result<Arc<CertifiedKey>, Unresolved> {
    let id = &secret.id;
    if secret.kind != SECRET_TYPE_TLS {
        return Err(invalid(format!(
            "Secret {id}: type {} (want {SECRET_TYPE_TLS})",
            secret.kind
        )));
    }
    let field = |key: &str| {
        secret
            .data
            .get(key)
            .ok_or_else(|| invalid(format!("Secret {id}: no {key}")))
    };
    let chain = CertificateDer::pem_slice_iter(field("tls.crt")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("Secret {id}: tls.crt is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "Secret {id}: tls.crt holds no certificate"
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(field("tls.key")?).map_err(|e| {
        invalid(format!(
            "Secret {id}: tls.key is not a PEM private key: {e}"
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    // Also checks that the key belongs to the leaf certificate.
    let key = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| invalid(format!("Secret {id}: unusable certificate or key: {e}")))?;
    // The leaf must parse as X.509, or every handshake would fail later.
    rustls::server::ParsedCertificate::try_from(
        key.end_entity_cert()
            .map_err(|e| invalid(format!("Secret {id}: {e}")))?,
    )
    .map_err(|e| invalid(format!("Secret {id}: tls.crt: {e}")))?;
    Ok(Arc::new(key))
}
