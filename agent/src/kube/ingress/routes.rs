//! One Ingress as Gateway API objects: an HTTPRoute per host (and its
//! redirect route), the default-backend route, the ReferenceGrant of its TLS
//! Secrets and the SluicePolicies of its annotations (see the module above
//! for the rules).
use std::{collections::BTreeSet, sync::Arc};

use ::kube::api::DynamicObject;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};
use serde_json::{json, Value};

use super::{
    annotations::{self, NginxAnnotations},
    object_ref, yaml, IngressSettings, ENTRY_NAME, ENTRY_NAMESPACE, GATEWAY_API, NAME_PREFIX,
};
use crate::config::{convert_object, Config, DocumentError, Location, ObjectRef};

/// The ports of a Service: `(name, port)`.
pub(super) type ServicePorts = Vec<(Option<String>, u16)>;

/// What one valid Ingress contributes.
pub(super) struct One {
    pub(super) config: Config,
    /// `(host, Secret name)` of `spec.tls` (host `None`: no hosts listed).
    pub(super) tls: Vec<(Option<String>, String)>,
    pub(super) warnings: Vec<String>,
    pub(super) ignored: Vec<String>,
}

/// The paths of one host, in the order given.
struct HostRules {
    host: Option<String>,
    rules: Vec<Value>,
    /// Whether plain HTTP is redirected to HTTPS.
    redirect: bool,
}

/// One Ingress as routes, a ReferenceGrant and policies.
pub(super) fn convert_one(
    obj: &DynamicObject,
    tls_hosts: &BTreeSet<String>,
    service_ports: &dyn Fn(&ObjectRef) -> Option<ServicePorts>,
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
        tls_hosts.iter().any(|h| {
            h == host
                || h.strip_prefix('*')
                    .is_some_and(|s| host.len() > s.len() && host.ends_with(s))
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
        let name = format!("{NAME_PREFIX}{}:(default-backend)", id.name);
        let mut doc = route(
            &name,
            None,
            parent(None, None),
            vec![json!({"backendRefs": backends})],
        );
        // On a listener with a hostname (HTTPS) this route is in the same
        // bucket as the host's routes and ties with a `/` path there; without
        // a creation time it sorts after every route that has one, so the
        // rules always win, as the Ingress spec wants.
        if let Some(m) = doc["metadata"].as_object_mut() {
            m.remove("creationTimestamp");
        }
        docs.push(doc);
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
