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
//!   `spec.tls[].hosts` entry an HTTPS listener `https-<host>` on
//!   `--ingress-https-port` (443) with the Secret as certificate (SNI picks
//!   it; `*` becomes `wildcard`), plus `https` without hostname for a TLS
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
//!   the Service. `spec.defaultBackend` becomes `ingress:<name>:default-backend`,
//!   PathPrefix `/` without hostname: the route table falls back to it for
//!   whatever no host-specific rule matches;
//! - a ReferenceGrant `ingress:<name>` letting the entry-point Gateway read
//!   the Ingress's TLS Secrets; a SluicePolicy `ingress:<name>:<host>` per
//!   route for the source-range and body-size annotations ([`annotations`]).
//!
//! **Redirects.** As ingress-nginx does, a host covered by the Ingress's TLS
//! answers plain HTTP with a 308 to `https` (`ssl-redirect: "false"` turns
//! it off, `force-ssl-redirect: "true"` turns it on for every host): its
//! serving route then attaches to the HTTPS port only and a second route
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
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use ::kube::api::DynamicObject;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};
use serde_json::{json, Value};

use crate::{
    config::{convert_object, Config, DocumentError, Location, ObjectRef},
    control::CONTROLLER_NAME,
};
use annotations::NginxAnnotations;

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

/// What one valid Ingress contributes.
struct One {
    config: Config,
    /// `(host, Secret name)` of `spec.tls` (host `None`: no hosts listed).
    tls: Vec<(Option<String>, String)>,
    warnings: Vec<String>,
    ignored: Vec<String>,
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
    let service_ports = |id: &ObjectRef| -> Option<Vec<(Option<String>, u16)>> {
        let s = services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(&id.namespace)
                && s.metadata.name.as_deref() == Some(&id.name)
        })?;
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
    // host → (Secret, Ingress that named it first)
    let mut tls_hosts: BTreeMap<Option<String>, (ObjectRef, ObjectRef)> = BTreeMap::new();
    for obj in mine {
        let id = object_ref(obj);
        match convert_one(obj, &service_ports, settings) {
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

/// `https-<host>` (`*` spelled `wildcard`), or `https` for no host.
pub fn listener_name(host: Option<&str>) -> String {
    match host {
        Some(h) => format!("https-{}", h.replace('*', "wildcard")),
        None => "https".into(),
    }
}

/// The paths of one host, in the order given.
struct HostRules {
    host: Option<String>,
    rules: Vec<Value>,
    /// Whether plain HTTP is redirected to HTTPS.
    redirect: bool,
}

/// One Ingress as routes, a ReferenceGrant and policies.
fn convert_one(
    obj: &DynamicObject,
    service_ports: &dyn Fn(&ObjectRef) -> Option<Vec<(Option<String>, u16)>>,
    settings: &IngressSettings,
) -> Result<One, Vec<DocumentError>> {
    let id = object_ref(obj);
    let err = |field: String, message: String| {
        let mut location = Location::api_object();
        location.object = Some(format!("Ingress {id}"));
        vec![DocumentError {
            location,
            field,
            message,
        }]
    };
    let ingress: Ingress = serde_json::to_value(obj)
        .and_then(serde_json::from_value)
        .map_err(|e| err(String::new(), format!("not a valid Ingress: {e}")))?;
    let spec: IngressSpec = ingress.spec.unwrap_or_default();
    let nginx: NginxAnnotations =
        annotations::read(&obj.metadata.annotations.clone().unwrap_or_default())
            .map_err(|e| err(format!("metadata.annotations[{}]", e.name), e.message))?;
    let mut warnings = Vec::new();
    let mut backend = |b: &IngressBackend, field: &str| -> Result<Value, Vec<DocumentError>> {
        let Some(svc) = &b.service else {
            return Err(err(
                field.into(),
                "resource backends are not supported (only Service backends)".into(),
            ));
        };
        let service = ObjectRef::new(&id.namespace, &svc.name);
        let ports = service_ports(&service);
        if ports.is_none() {
            warnings.push(format!(
                "backend Service {service} not found: its paths answer 500 until it exists"
            ));
        }
        let port = match svc.port.as_ref() {
            Some(p) if p.number.is_some() => p.number.and_then(|n| u16::try_from(n).ok()),
            Some(p) if p.name.is_some() => {
                let name = p.name.as_deref();
                let found = ports
                    .iter()
                    .flatten()
                    .find(|(n, _)| n.as_deref() == name)
                    .map(|(_, port)| *port);
                if found.is_none() {
                    return Err(err(
                        format!("{field}.service.port.name"),
                        format!(
                            "Service {service} has no port named {:?} (or does not exist yet)",
                            name.unwrap_or_default()
                        ),
                    ));
                }
                found
            }
            _ => None,
        };
        let Some(port) = port.filter(|p| *p > 0) else {
            return Err(err(
                format!("{field}.service.port"),
                "a port number (1-65535) or name is required".into(),
            ));
        };
        Ok(json!([{"name": svc.name, "port": port}]))
    };

    let tls_host_covered = |host: &str| {
        spec.tls.iter().flatten().any(|t| {
            t.hosts.iter().flatten().any(|h| {
                h == host
                    || h.strip_prefix('*')
                        .is_some_and(|s| host.len() > s.len() && host.ends_with(s))
            })
        })
    };
    let mut hosts: Vec<HostRules> = Vec::new();
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        let host = rule.host.clone().filter(|h| !h.is_empty());
        let redirect = nginx.force_ssl_redirect
            || (nginx.ssl_redirect != Some(false) && host.as_deref().is_some_and(tls_host_covered));
        let index = match hosts.iter().position(|h| h.host == host) {
            Some(i) => i,
            None => {
                hosts.push(HostRules {
                    host: host.clone(),
                    rules: Vec::new(),
                    redirect,
                });
                hosts.len() - 1
            }
        };
        for (pi, path) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
            let field = format!("spec.rules[{ri}].http.paths[{pi}]");
            let (matched, filters) =
                path_match(path.path.as_deref().unwrap_or(""), &path.path_type, &nginx)
                    .map_err(|m| err(format!("{field}.path"), m))?;
            let backends = backend(&path.backend, &format!("{field}.backend"))?;
            hosts[index].rules.push(json!({
                "matches": [{"path": matched}], "filters": filters, "backendRefs": backends,
            }));
        }
    }
    let default_backend = match &spec.default_backend {
        Some(b) => Some(backend(b, "spec.defaultBackend")?),
        None => None,
    };
    drop(backend);

    let created = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string());
    let metadata = |name: &str| {
        let mut m = json!({"name": name, "namespace": id.namespace});
        if let Some(c) = &created {
            m["creationTimestamp"] = c.clone().into();
        }
        m
    };
    let parent = |section: Option<&str>, port: Option<u16>| {
        let mut p = json!({"name": ENTRY_NAME, "namespace": ENTRY_NAMESPACE});
        if let Some(s) = section {
            p["sectionName"] = s.into();
        }
        if let Some(port) = port {
            p["port"] = port.into();
        }
        p
    };
    let route = |name: &str, host: Option<&str>, parent: Value, rules: Vec<Value>| {
        let mut spec = json!({"parentRefs": [parent], "rules": rules});
        if let Some(h) = host {
            spec["hostnames"] = json!([h]);
        }
        json!({"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": metadata(name), "spec": spec})
    };
    let mut docs = Vec::new();
    let mut served = Vec::new();
    for h in &hosts {
        if h.rules.is_empty() {
            continue;
        }
        let name = format!(
            "{NAME_PREFIX}{}:{}",
            id.name,
            h.host.as_deref().unwrap_or("*")
        );
        if h.redirect {
            docs.push(route(
                &name,
                h.host.as_deref(),
                parent(None, Some(settings.https_port)),
                h.rules.clone(),
            ));
            let mut redirect = json!({"scheme": "https", "statusCode": 308});
            if settings.https_port != 443 {
                redirect["port"] = settings.https_port.into();
            }
            let to_https = format!("{name}:to-https");
            docs.push(route(
                &to_https,
                h.host.as_deref(),
                parent(Some("http"), None),
                vec![
                    json!({"filters": [{"type": "RequestRedirect", "requestRedirect": redirect}]}),
                ],
            ));
            served.push(to_https);
        } else {
            docs.push(route(
                &name,
                h.host.as_deref(),
                parent(None, None),
                h.rules.clone(),
            ));
        }
        served.push(name);
    }
    if let Some(backends) = default_backend {
        let name = format!("{NAME_PREFIX}{}:default-backend", id.name);
        docs.push(route(
            &name,
            None,
            parent(None, None),
            vec![json!({"backendRefs": backends})],
        ));
        served.push(name);
    }
    if docs.is_empty() {
        return Err(err(
            "spec".into(),
            "neither rules with paths nor a defaultBackend: nothing to serve".into(),
        ));
    }
    let mut tls = Vec::new();
    for (ti, t) in spec.tls.iter().flatten().enumerate() {
        let Some(secret) = t.secret_name.clone().filter(|s| !s.is_empty()) else {
            warnings.push(format!(
                "spec.tls[{ti}] has no secretName: Sluice has no default certificate, so its \
                 hosts get no HTTPS"
            ));
            continue;
        };
        let hosts: Vec<Option<String>> = match t.hosts.as_deref() {
            Some(h) if !h.is_empty() => h.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
        for h in hosts {
            tls.push((h, secret.clone()));
        }
    }
    if !tls.is_empty() {
        let names: BTreeSet<&String> = tls.iter().map(|(_, s)| s).collect();
        docs.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": metadata(&format!("{NAME_PREFIX}{}", id.name)),
            "spec": {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": ENTRY_NAMESPACE}],
                "to": names.iter().map(|n| json!({"group": "", "kind": "Secret", "name": n})).collect::<Vec<_>>(),
            },
        }));
    }
    let mut sections = json!({});
    if !nginx.allow.is_empty() {
        sections["ipAllow"] = json!(nginx
            .allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>());
    }
    if !nginx.deny.is_empty() {
        sections["ipDeny"] = json!(nginx
            .deny
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>());
    }
    if let Some(Some(bytes)) = nginx.body_size {
        sections["limits"] = json!({"maxRequestBodyBytes": bytes});
    }
    if sections.as_object().is_some_and(|s| !s.is_empty()) {
        for name in &served {
            let mut spec = sections.clone();
            spec["targetRefs"] =
                json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}]);
            docs.push(json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "SluicePolicy",
                "metadata": metadata(name), "spec": spec,
            }));
        }
    }

    let mut config = Config::default();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let converted = convert_object(yaml(doc)).map_err(|errors| {
            // Reported against the Ingress, naming the object it became.
            errors
                .into_iter()
                .map(|e| {
                    let mut location = Location::api_object();
                    location.object = Some(format!("Ingress {id}"));
                    DocumentError {
                        location,
                        field: String::new(),
                        message: format!("as {kind} {}/{name}: {}", id.namespace, e),
                    }
                })
                .collect::<Vec<_>>()
        })?;
        config.merge(converted);
    }
    if nginx.grpc {
        // GRPCRoute matches are methods; the paths stay HTTPRoute matches
        // and only the kind changes (HTTP/2 upstream, gRPC errors).
        for r in &mut config.routes {
            Arc::make_mut(r).kind = crate::config::RouteKind::Grpc;
        }
    }
    Ok(One {
        config,
        tls,
        warnings,
        ignored: nginx.ignored,
    })
}

/// The Gateway API path match (and URLRewrite filters) of one Ingress path.
fn path_match(
    path: &str,
    path_type: &str,
    nginx: &NginxAnnotations,
) -> Result<(Value, Vec<Value>), String> {
    let path = if path.is_empty() && path_type == "ImplementationSpecific" {
        "/"
    } else {
        path
    };
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?} is not an absolute path (it must start with /)"
        ));
    }
    let rewrite = |kind: &str, value: &str| {
        let key = if kind == "ReplaceFullPath" {
            "replaceFullPath"
        } else {
            "replacePrefixMatch"
        };
        vec![json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": kind, key: value}}})]
    };
    // The ingress-nginx idiom `path: /app(/|$)(.*)` with `rewrite-target:
    // /$2` strips the prefix: the same as PathPrefix /app with
    // ReplacePrefixMatch /.
    if let Some(target) = &nginx.rewrite_target {
        if target.contains('$') {
            let prefix = path
                .strip_suffix("(/|$)(.*)")
                .filter(|p| p.starts_with('/'));
            let replacement = target.strip_suffix("$2").filter(|t| !t.contains('$'));
            return match (prefix, replacement) {
                (Some(prefix), Some(replacement)) if !has_regex_syntax(prefix) => {
                    let replacement = match replacement.trim_end_matches('/') {
                        "" => "/",
                        r => r,
                    };
                    Ok((
                        json!({"type": "PathPrefix", "value": prefix}),
                        rewrite("ReplacePrefixMatch", replacement),
                    ))
                }
                _ => Err(format!(
                    "rewrite-target {target:?} uses capture groups; Sluice supports them only in \
                     the form path: /prefix(/|$)(.*) with rewrite-target: /$2 (a target without \
                     $ replaces the whole path)"
                )),
            };
        }
    }
    let filters = match &nginx.rewrite_target {
        Some(target) => rewrite("ReplaceFullPath", target),
        None => Vec::new(),
    };
    let matched = match path_type {
        "Exact" => json!({"type": "Exact", "value": path}),
        "Prefix" => json!({"type": "PathPrefix", "value": path}),
        "ImplementationSpecific" if nginx.use_regex => {
            // ingress-nginx regex locations match from the start of the path.
            let pattern = format!("{path}.*");
            crate::matchers::Pattern::new(&pattern)
                .map_err(|e| format!("{path:?} is not a valid regular expression: {e}"))?;
            json!({"type": "RegularExpression", "value": pattern})
        }
        "ImplementationSpecific" => json!({"type": "PathPrefix", "value": path}),
        other => {
            return Err(format!(
                "pathType {other:?} is not Exact, Prefix or ImplementationSpecific"
            ))
        }
    };
    Ok((matched, filters))
}

fn has_regex_syntax(s: &str) -> bool {
    s.contains([
        '(', ')', '[', ']', '*', '+', '?', '|', '^', '$', '\\', '{', '}',
    ])
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
