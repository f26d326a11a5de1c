//! `ConsulService` (sluice.dev/v1alpha1): names the Consul service (and its
//! tag filter and datacenter) behind `backendRef`s of kind ConsulService.
//! Optional: a backendRef to a ConsulService without such a document uses
//! its name as the Consul service name, any tags, the local datacenter.
use serde::Deserialize;

use super::{model, resources::ObjectMeta, validate::Doc};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ConsulServiceDoc {
    #[allow(dead_code)]
    #[serde(default)]
    api_version: String,
    #[allow(dead_code)]
    #[serde(default)]
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    /// The Consul service name; default: `metadata.name`.
    #[serde(default)]
    service: Option<String>,
    /// Instances must carry every one of these tags.
    #[serde(default)]
    tags: Vec<String>,
    /// Consul datacenter; default: the agent's own.
    #[serde(default)]
    datacenter: Option<String>,
}

pub(super) fn consul_service(
    doc: &mut Doc<'_>,
    d: ConsulServiceDoc,
) -> Option<model::ConsulService> {
    let service = d.spec.service.unwrap_or_else(|| d.metadata.name.clone());
    let before = doc.errors.len();
    if service.is_empty() || service.contains('/') || service.contains('?') {
        doc.err(
            "spec.service",
            format!("invalid Consul service name {service:?}"),
        );
    }
    for (i, t) in d.spec.tags.iter().enumerate() {
        if t.is_empty() {
            doc.err(format!("spec.tags[{i}]"), "empty tag");
        }
    }
    (doc.errors.len() == before).then(|| model::ConsulService {
        id: model::ObjectRef::new(super::validate::ns(&d.metadata), &d.metadata.name),
        service,
        tags: d.spec.tags,
        datacenter: d.spec.datacenter.filter(|s| !s.is_empty()),
    })
}
