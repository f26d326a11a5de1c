//! Kubernetes `Ingress` (networking.k8s.io/v1) as Gateway API objects.
//!
//! **Whose Ingresses.** An IngressClass is Sluice's when `spec.controller` is
//! [`INGRESS_CONTROLLER`] (`sluice.dev/ingress-controller`, the sibling of
//! the GatewayClass controllerName `sluice.dev/gateway-controller`). An
//! Ingress is ours when its `spec.ingressClassName` (or the legacy
//! `kubernetes.io/ingress.class` annotation) names such a class, or when it
//! names none and one of our classes carries
//! `ingressclass.kubernetes.io/is-default-class: "true"`. Other Ingresses are
//! not looked at. `spec.parameters` of a class is not read.
//!
//! **Conversion.** Every Ingress is rewritten into the wire shape of
//! Gateway API objects and converted by [`crate::config::convert_object`],
//! so it is validated, compiled and served exactly like hand-written ones:
//! - one entry-point Gateway for all Ingresses, `sluice:ingress/ingress` of
//!   class `sluice:ingress` (a `:` never occurs in a Kubernetes name, so no
//!   user object collides, and `/config` and the status page show where it
//!   came from). Listener `http` on `--ingress-http-port` (80), and for each
//!   `spec.tls[].hosts` entry an HTTPS listener `https-h.<host>` on
//!   `--ingress-https-port` (443) with the Secret as certificate (SNI picks
//!   it; `https-w.<suffix>` for `*.<suffix>`), plus `https` without hostname for a TLS
//!   entry without hosts. Addresses: `--ingress-address`, or, when none is
//!   given, every local address with the node's addresses in status (the
//!   GatewayAddressEmpty behaviour of Gateways). Both datapaths serve it
//!   like any other Gateway. A host listed by two Ingresses with different
//!   Secrets gets the older Ingress's (a warning names the other);
//! - per Ingress and host, an HTTPRoute `ingress:<name>:<host>` in the
//!   Ingress's namespace (`*` for rules without host), one rule per path:
//!   `Exact` → Exact, `Prefix` → PathPrefix (element-wise, as both specs
//!   define it), `ImplementationSpecific` → PathPrefix, or a regular
//!   expression (whole path, case-sensitive) with `use-regex: "true"`;
//!   backends by Service name and port number, or port name resolved through
//!   the Service. `spec.defaultBackend` becomes
//!   `ingress:<name>:(default-backend)` (no host has parentheses, so no
//!   rule's route takes that name), PathPrefix `/` without hostname and
//!   without creation time (which ranks
//!   it after every other route on a tie, e.g. a `/` rule on an HTTPS
//!   listener whose hostname it takes): the route table falls back to it
//!   for whatever no host-specific rule matches;
//! - a ReferenceGrant `ingress:<name>` letting the entry-point Gateway read
//!   the Ingress's TLS Secrets; a SluicePolicy `ingress:<name>:<host>` per
//!   route for the source-range and body-size annotations ([`annotations`]).
//!
//! **Redirects.** As ingress-nginx does, a host with TLS (in the `spec.tls`
//! of any Ingress of ours) answers plain HTTP with a 308 to `https`; the
//! Ingress's `ssl-redirect: "false"` turns that off for its paths,
//! `force-ssl-redirect: "true"` turns it on for all its hosts. Such a host's
//! serving route attaches to the HTTPS port only and a second route
//! `ingress:<name>:<host>:to-https` on listener `http` redirects.
//!
//! **Errors.** An Ingress that cannot be served as written (bad path, bad
//! regular expression, resource backend, bad or refused annotation value) is
//! left out whole, like an invalid Gateway API object, reported with
//! `Ingress namespace/name` and field (agent log, `/config` `objectErrors`);
//! everything else keeps serving. Problems that do not make it invalid are
//! warnings (agent log, `/config` `ingressWarnings`): a missing backend
//! Service (its paths answer 500 until it exists), a missing TLS Secret
//! (that host's HTTPS is not served), ignored annotations. Status: one agent
//! writes `status.loadBalancer.ingress` of the Ingresses it serves (the
//! entry point's addresses) and clears it on refused ones.
pub mod annotations;
pub mod metrics;
mod routes;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use ::kube::api::DynamicObject;
use serde_json::{json, Value};

use crate::{
    config::{convert_object, Config, DocumentError, ObjectRef},
    control::CONTROLLER_NAME,
};

/// `spec.controller` of Sluice's IngressClasses.
pub const INGRESS_CONTROLLER: &str = "sluice.dev/ingress-controller";
/// Marks an IngressClass as the one for Ingresses that name none.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The class annotation of Ingresses older than `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Namespace of the entry-point Gateway and its class name.
pub const ENTRY_NAMESPACE: &str = "sluice:ingress";
/// Name of the entry-point Gateway.
pub const ENTRY_NAME: &str = "ingress";
/// Prefix of the names of objects made from an Ingress.
pub const NAME_PREFIX: &str = "ingress:";

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

/// Where the Ingress entry point listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IngressSettings {
    pub http_port: u16,
    pub https_port: u16,
    /// Empty: every local address (status shows the node's addresses).
    pub addresses: Vec<IpAddr>,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self {
            http_port: 80,
            https_port: 443,
            addresses: Vec::new(),
        }
    }
}

/// The entry-point Gateway's identity.
pub fn entry_gateway() -> ObjectRef {
    ObjectRef::new(ENTRY_NAMESPACE, ENTRY_NAME)
}

/// Whether an object was made from an Ingress (it has no API object of its own).
pub fn is_synthetic(id: &ObjectRef) -> bool {
    id.namespace == ENTRY_NAMESPACE || id.name.starts_with(NAME_PREFIX)
}

/// All Ingresses of our classes, converted.
#[derive(Debug, Default, Clone)]
pub struct IngressOutput {
    /// The entry point (class and Gateway, when any Ingress is served) and
    /// the routes, grants and policies of the valid Ingresses.
    pub config: Config,
    /// Ingresses of ours left out as invalid.
    pub errors: Vec<(ObjectRef, Vec<DocumentError>)>,
    /// Served, but not everything as written: `Ingress ns/name: ...`.
    pub warnings: Vec<String>,
    /// Ingresses of ours, and whether each is served (for status).
    pub ours: Vec<(ObjectRef, bool)>,
    /// Per ignored annotation, how many served Ingresses carry it.
    pub ignored_annotations: BTreeMap<String, u64>,
}

/// Converts the Ingresses of our classes. `services` resolve named ports and
/// tell missing backends; `secrets` (the held TLS Secrets) tell missing
/// certificates.
pub fn convert_all(
    classes: &[Arc<DynamicObject>],
    ingresses: &[Arc<DynamicObject>],
    services: &[Arc<DynamicObject>],
    secrets: &[DynamicObject],
    settings: &IngressSettings,
) -> IngressOutput {
    let mut out = IngressOutput::default();
    let ours: BTreeSet<&str> = classes
        .iter()
        .filter(|c| str_at(&c.data, &["spec", "controller"]) == Some(INGRESS_CONTROLLER))
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    let default_is_ours = classes.iter().any(|c| {
        c.metadata.name.as_deref().is_some_and(|n| ours.contains(n))
            && c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
    });
    let mut mine: Vec<&Arc<DynamicObject>> = ingresses
        .iter()
        .filter(|i| match class_of(i) {
            Some(c) => ours.contains(c),
            None => default_is_ours,
        })
        .collect();
    // Oldest first: the older Ingress wins a TLS host (and route ties).
    mine.sort_by_key(|i| {
        (
            i.metadata.creation_timestamp.as_ref().map(|t| t.0),
            i.metadata.namespace.clone(),
            i.metadata.name.clone(),
        )
    });
    let by_name: HashMap<ObjectRef, &Arc<DynamicObject>> =
        services.iter().map(|s| (object_ref(s), s)).collect();
    let service_ports = |id: &ObjectRef| -> Option<routes::ServicePorts> {
        let s = by_name.get(id)?;
        Some(
            s.data
                .get("spec")
                .and_then(|s| s.get("ports"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let port = u16::try_from(p.get("port")?.as_u64()?).ok()?;
                    Some((
                        p.get("name").and_then(Value::as_str).map(str::to_owned),
                        port,
                    ))
                })
                .collect(),
        )
    };
    // Hosts with TLS in any Ingress of ours that is served: as ingress-nginx
    // does per server, plain HTTP to them is redirected whichever Ingress
    // routes it. A refused Ingress must not redirect another's host (there
    // would be no HTTPS listener for it): whether one converts does not
    // depend on this set, so a first pass with no hosts finds them.
    let no_hosts = BTreeSet::new();
    let all_tls_hosts: BTreeSet<String> = mine
        .iter()
        .filter(|i| routes::convert_one(i, &no_hosts, &service_ports, settings).is_ok())
        .filter_map(|i| i.data.get("spec")?.get("tls")?.as_array())
        .flatten()
        .filter(|t| {
            t.get("secretName")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        })
        .filter_map(|t| t.get("hosts")?.as_array())
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect();
    // host → (Secret, Ingress that named it first)
    let mut tls_hosts: BTreeMap<Option<String>, (ObjectRef, ObjectRef)> = BTreeMap::new();
    for obj in mine {
        let id = object_ref(obj);
        match routes::convert_one(obj, &all_tls_hosts, &service_ports, settings) {
            Ok(one) => {
                out.config.merge(one.config);
                for w in one.warnings {
                    out.warnings.push(format!("Ingress {id}: {w}"));
                }
                for a in &one.ignored {
                    out.warnings.push(format!(
                        "Ingress {id}: annotation {a} is not supported by Sluice, ignored"
                    ));
                    *out.ignored_annotations.entry(a.clone()).or_default() += 1;
                }
                for (host, secret) in one.tls {
                    let secret = ObjectRef::new(&id.namespace, secret);
                    let held = secrets.iter().any(|s| {
                        s.metadata.namespace.as_deref() == Some(&secret.namespace)
                            && s.metadata.name.as_deref() == Some(&secret.name)
                    });
                    let shown = host.as_deref().unwrap_or("(hosts not listed)");
                    if host.as_deref().is_some_and(|h| !valid_tls_host(h)) {
                        out.warnings.push(format!(
                            "Ingress {id}: TLS host {shown:?} is not a valid hostname: HTTPS \
                             for it is not served"
                        ));
                        continue;
                    }
                    if !held {
                        out.warnings.push(format!(
                            "Ingress {id}: TLS Secret {secret} not found (or not of type \
                             kubernetes.io/tls): HTTPS for {shown} is not served until it exists"
                        ));
                    }
                    match tls_hosts.get(&host) {
                        Some((s, owner)) if *s != secret => out.warnings.push(format!(
                            "Ingress {id}: TLS for {shown} is already served with Secret {s} \
                             of Ingress {owner}; Secret {secret} is not used"
                        )),
                        Some(_) => {}
                        None => {
                            tls_hosts.insert(host, (secret, id.clone()));
                        }
                    }
                }
                out.ours.push((id, true));
            }
            Err(errors) => {
                out.errors.push((id.clone(), errors));
                out.ours.push((id, false));
            }
        }
    }
    if out.ours.iter().any(|(_, served)| *served) {
        let entry = entry_point(&tls_hosts, settings);
        for doc in entry {
            match convert_object(yaml(doc)) {
                Ok(c) => out.config.merge(c),
                // Built from validated parts: a failure is a bug, but it
                // must show, not vanish.
                Err(e) => out.warnings.extend(e.iter().map(|e| e.to_string())),
            }
        }
    }
    out
}

/// The class an Ingress names, if any.
fn class_of(obj: &DynamicObject) -> Option<&str> {
    str_at(&obj.data, &["spec", "ingressClassName"]).or_else(|| {
        obj.metadata
            .annotations
            .as_ref()?
            .get(LEGACY_CLASS_ANNOTATION)
            .map(String::as_str)
    })
}

/// The entry-point GatewayClass and Gateway.
fn entry_point(
    tls_hosts: &BTreeMap<Option<String>, (ObjectRef, ObjectRef)>,
    settings: &IngressSettings,
) -> Vec<Value> {
    let all = json!({"namespaces": {"from": "All"}});
    let mut listeners = vec![json!({
        "name": "http", "port": settings.http_port, "protocol": "HTTP", "allowedRoutes": all,
    })];
    for (host, (secret, _)) in tls_hosts {
        let mut l = json!({
            "name": listener_name(host.as_deref()),
            "port": settings.https_port,
            "protocol": "HTTPS",
            "allowedRoutes": all,
            "tls": {"mode": "Terminate", "certificateRefs": [
                {"kind": "Secret", "name": secret.name, "namespace": secret.namespace}
            ]},
        });
        if let Some(h) = host {
            l["hostname"] = h.clone().into();
        }
        listeners.push(l);
    }
    let addresses: Vec<Value> = if settings.addresses.is_empty() {
        vec![json!({"type": "IPAddress"})]
    } else {
        settings
            .addresses
            .iter()
            .map(|a| json!({"type": "IPAddress", "value": a.to_string()}))
            .collect()
    };
    vec![
        json!({
            "apiVersion": GATEWAY_API, "kind": "GatewayClass",
            "metadata": {"name": ENTRY_NAMESPACE},
            "spec": {"controllerName": CONTROLLER_NAME},
        }),
        json!({
            "apiVersion": GATEWAY_API, "kind": "Gateway",
            "metadata": {"name": ENTRY_NAME, "namespace": ENTRY_NAMESPACE},
            "spec": {"gatewayClassName": ENTRY_NAMESPACE, "addresses": addresses, "listeners": listeners},
        }),
    ]
}

/// `https-h.<host>`, `https-w.<suffix>` for a wildcard `*.<suffix>`, or
/// `https` for no host: distinct for distinct hosts (a plain host can never
/// give a wildcard's name), since one duplicate listener name would make
/// the whole entry-point Gateway invalid.
pub fn listener_name(host: Option<&str>) -> String {
    match host {
        Some(h) => match h.strip_prefix("*.") {
            Some(suffix) => format!("https-w.{suffix}"),
            None => format!("https-h.{h}"),
        },
        None => "https".into(),
    }
}

/// Whether `host` can be a listener hostname: lower-case DNS labels,
/// optionally under one leading `*.` (what the Gateway validation takes).
/// Anything else is left out of the entry point with a warning instead of
/// making the shared Gateway, and with it every Ingress, invalid.
fn valid_tls_host(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        // Its listener name (`https-h.` + host) must stay a valid one too.
        && host.len() <= 253 - "https-h.".len()
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn object_ref(obj: &DynamicObject) -> ObjectRef {
    super::convert::object_ref(obj)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

fn yaml(v: Value) -> serde_yaml::Value {
    serde_yaml::to_value(v).unwrap_or_default()
}
