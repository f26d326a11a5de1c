//! Turns the upstream manifests into what one agent instance is fed.
//!
//! The manifests are used as shipped, with these environment adaptations
//! (the runner plays the part of the cluster):
//! - `{GATEWAY_CLASS_NAME}` becomes the runner's class, and a GatewayClass with
//!   controllerName `sluice.dev/gateway-controller` is added;
//! - kinds that describe cluster infrastructure rather than gateway config
//!   (Deployments, Secrets, ...) are left out: see [`SKIPPED_KINDS`];
//! - every Service gets an EndpointSlice pointing at its echo backend on
//!   127.0.0.1 (what the cluster's EndpointSlice controller would do);
//! - every Gateway without `spec.addresses` gets its own loopback address
//!   (127.0.10.N, what a cluster's load balancer would assign), and every
//!   listener port is moved up by the port offset: 0 in the runner's private
//!   network namespace; on the host network an offset keeps privileged and
//!   well-known ports free (see `network.rs`). Requests are dialed at the moved
//!   port; the `Host` header still carries the manifest's port. Routes'
//!   `parentRefs[].port` move with the listeners they name.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::cases::{ObjectSel, Patch};

/// The controllerName of the GatewayClass the runner supplies.
pub const CONTROLLER_NAME: &str = "sluice.dev/gateway-controller";
/// The name of that GatewayClass.
pub const GATEWAY_CLASS: &str = "sluice-conformance";

/// (API group, kind) of documents the runner does not feed to the agent:
/// workloads and objects the agent does not read. Gateway API kinds are never
/// skipped, so that an unsupported one is reported by the agent itself.
pub const SKIPPED_KINDS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "DaemonSet"),
    ("apps", "StatefulSet"),
    ("apps", "ReplicaSet"),
    ("", "Pod"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
];

/// Parses multi-document YAML after substituting the class name.
pub fn parse_docs(text: &str, class: &str) -> Result<Vec<Value>> {
    let text = text.replace("{GATEWAY_CLASS_NAME}", class);
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).context("invalid YAML document")?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

pub fn read_docs(path: &Path, class: &str) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_docs(&text, class).with_context(|| format!("parsing {}", path.display()))
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// `(group, kind)` of a document.
pub fn group_kind(doc: &Value) -> (String, String) {
    let api = s(doc, &["apiVersion"]).unwrap_or("");
    let group = api.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    (group.to_owned(), s(doc, &["kind"]).unwrap_or("").to_owned())
}

/// `(namespace, name)` of a document (namespace `default` when unset).
pub fn object_key(doc: &Value) -> (String, String) {
    (
        s(doc, &["metadata", "namespace"])
            .unwrap_or("default")
            .to_owned(),
        s(doc, &["metadata", "name"]).unwrap_or("").to_owned(),
    )
}

/// Services of the documents, as `(namespace, name)`.
pub fn services(docs: &[Value]) -> Vec<(String, String)> {
    docs.iter()
        .filter(|d| group_kind(d) == (String::new(), "Service".into()))
        .map(object_key)
        .collect()
}

/// A listener as the runner dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    pub name: String,
    /// The port in the manifest (what `Host` headers and cases refer to).
    pub port: u16,
    pub protocol: String,
}

/// Where a Gateway can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayInfo {
    pub address: IpAddr,
    pub listeners: Vec<ListenerInfo>,
}

/// What the agent is fed for one test, and how to reach its Gateways.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    pub docs: Vec<Value>,
    pub gateways: BTreeMap<(String, String), GatewayInfo>,
    /// Kinds left out, with counts, for the log.
    pub skipped: BTreeMap<String, usize>,
}

impl Prepared {
    /// The documents as one multi-document YAML file.
    pub fn to_yaml(&self) -> Result<String> {
        let mut out = String::new();
        for d in &self.docs {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(d)?);
        }
        Ok(out)
    }
}

/// The loopback address the runner gives the `index`-th Gateway.
pub fn gateway_address(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 10, (index % 250 + 1) as u8))
}

/// Builds the agent's input from the substituted source documents.
/// `backends` maps a Service to its echo server's port on 127.0.0.1.
pub fn prepare(
    source: &[Value],
    port_offset: u16,
    backends: &BTreeMap<(String, String), u16>,
) -> Result<Prepared> {
    prepare_with(source, port_offset, backends, &BTreeMap::new())
}

/// [`prepare`] for backends that listen on more than one port: a Service
/// port whose `targetPort` (else `port`) is `p` gets the echo port
/// `container_ports[(namespace, service, p)]` when listed (the TCP echo
/// backend's plain and TLS ports), else the Service's one echo port.
pub fn prepare_with(
    source: &[Value],
    port_offset: u16,
    backends: &BTreeMap<(String, String), u16>,
    container_ports: &BTreeMap<(String, String, u16), u16>,
) -> Result<Prepared> {
    let mut p = Prepared::default();
    p.docs.push(serde_yaml::from_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {GATEWAY_CLASS}}}\nspec: {{controllerName: {CONTROLLER_NAME}}}\n"
    ))?);
    let has_slice = |svc: &(String, String)| {
        source.iter().any(|d| {
            group_kind(d).1 == "EndpointSlice"
                && object_key(d).0 == svc.0
                && s(d, &["metadata", "labels", "kubernetes.io/service-name"])
                    == Some(svc.1.as_str())
        })
    };
    let mut gateway_index = 0;
    for doc in source {
        let (group, kind) = group_kind(doc);
        if SKIPPED_KINDS.iter().any(|(g, k)| *g == group && *k == kind) {
            *p.skipped.entry(kind).or_default() += 1;
            continue;
        }
        let mut doc = doc.clone();
        match (group.as_str(), kind.as_str()) {
            ("gateway.networking.k8s.io", "Gateway") => {
                let key = object_key(&doc);
                let info = rewrite_gateway(&mut doc, gateway_index, port_offset)
                    .with_context(|| format!("Gateway {}/{}", key.0, key.1))?;
                gateway_index += 1;
                p.gateways.insert(key, info);
            }
            ("", "Service") => {
                let key = object_key(&doc);
                if !has_slice(&key) {
                    if let Some(port) = backends.get(&key) {
                        p.docs
                            .push(endpoint_slice(&doc, &key, *port, container_ports)?);
                    }
                }
            }
            _ => shift_parent_ref_ports(&mut doc, port_offset),
        }
        p.docs.push(doc);
    }
    Ok(p)
}

fn rewrite_gateway(doc: &mut Value, index: usize, offset: u16) -> Result<GatewayInfo> {
    let spec = doc
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .context("no spec")?;
    let existing = spec
        .get("addresses")
        .and_then(Value::as_sequence)
        .and_then(|a| a.first())
        .and_then(|a| a.get("value"))
        .and_then(Value::as_str)
        .and_then(|v| v.parse::<IpAddr>().ok());
    let address = match existing {
        Some(a) => a,
        None if spec
            .get("addresses")
            .and_then(Value::as_sequence)
            .is_some_and(|a| !a.is_empty()) =>
        {
            // Addresses without a usable IP value: leave them for the agent to judge.
            gateway_address(index)
        }
        None => {
            let a = gateway_address(index);
            let mut m = Mapping::new();
            m.insert("type".into(), "IPAddress".into());
            m.insert("value".into(), a.to_string().into());
            spec.insert("addresses".into(), Value::Sequence(vec![Value::Mapping(m)]));
            a
        }
    };
    // Frontend TLS settings per port name listener ports, which move too.
    if let Some(per_port) = spec
        .get_mut("tls")
        .and_then(|t| t.get_mut("frontend"))
        .and_then(|f| f.get_mut("perPort"))
        .and_then(Value::as_sequence_mut)
    {
        for p in per_port {
            let port = p.get("port").and_then(Value::as_u64);
            if let (Some(port), Some(m)) = (port, p.as_mapping_mut()) {
                m.insert("port".into(), Value::from(port + u64::from(offset)));
            }
        }
    }
    let mut listeners = Vec::new();
    if let Some(ls) = spec.get_mut("listeners").and_then(Value::as_sequence_mut) {
        for l in ls {
            let port = l.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
            let moved = port
                .checked_add(offset)
                .with_context(|| format!("listener port {port} + offset {offset} exceeds 65535"))?;
            if let Some(m) = l.as_mapping_mut() {
                m.insert("port".into(), Value::from(moved));
            }
            listeners.push(ListenerInfo {
                name: s(l, &["name"]).unwrap_or("").to_owned(),
                port,
                protocol: s(l, &["protocol"]).unwrap_or("").to_owned(),
            });
        }
    }
    Ok(GatewayInfo { address, listeners })
}

/// Routes' `parentRefs[].port` name listener ports, which moved by the offset.
fn shift_parent_ref_ports(doc: &mut Value, offset: u16) {
    let Some(refs) = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("parentRefs"))
        .and_then(Value::as_sequence_mut)
    else {
        return;
    };
    for r in refs {
        let port = r.get("port").and_then(Value::as_u64);
        if let (Some(port), Some(m)) = (port, r.as_mapping_mut()) {
            m.insert("port".into(), Value::from(port + u64::from(offset)));
        }
    }
}

fn endpoint_slice(
    service: &Value,
    key: &(String, String),
    port: u16,
    container_ports: &BTreeMap<(String, String, u16), u16>,
) -> Result<Value> {
    let mut ports = Vec::new();
    if let Some(ps) = service
        .get("spec")
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_sequence)
    {
        for sp in ps {
            let mut m = Mapping::new();
            if let Some(n) = s(sp, &["name"]) {
                m.insert("name".into(), n.into());
            }
            let target = sp
                .get("targetPort")
                .or_else(|| sp.get("port"))
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok());
            let echo = target
                .and_then(|t| container_ports.get(&(key.0.clone(), key.1.clone(), t)))
                .copied()
                .unwrap_or(port);
            m.insert("port".into(), Value::from(echo));
            ports.push(Value::Mapping(m));
        }
    }
    let yaml = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-conformance\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nendpoints:\n- addresses: [127.0.0.1]\n  conditions: {{ready: true}}\n",
        ns = key.0,
        name = key.1
    );
    let mut v: Value = serde_yaml::from_str(&yaml)?;
    if let Some(m) = v.as_mapping_mut() {
        m.insert("ports".into(), Value::Sequence(ports));
    }
    Ok(v)
}

fn matches(doc: &Value, kind: &str, namespace: &Option<String>, name: &str) -> bool {
    let (ns, n) = object_key(doc);
    group_kind(doc).1 == kind && n == name && namespace.as_deref().is_none_or(|x| x == ns)
}

/// Applies a step's `delete`.
pub fn delete(docs: &mut Vec<Value>, sel: &ObjectSel) -> Result<()> {
    let before = docs.len();
    docs.retain(|d| !matches(d, &sel.kind, &sel.namespace, &sel.name));
    anyhow::ensure!(docs.len() < before, "delete: no {} {}", sel.kind, sel.name);
    Ok(())
}

/// Applies a step's JSON merge patch (RFC 7386). Like the API server, bumps
/// `metadata.generation` when the patch changes the `spec`.
pub fn patch(docs: &mut [Value], p: &Patch) -> Result<()> {
    let doc = docs
        .iter_mut()
        .find(|d| matches(d, &p.kind, &p.namespace, &p.name))
        .with_context(|| format!("patch: no {} {}", p.kind, p.name))?;
    let spec_before = doc.get("spec").cloned();
    merge_patch(doc, &p.patch);
    if doc.get("spec").cloned() != spec_before {
        let g = generation(doc).unwrap_or(0);
        set_generation(doc, g + 1);
    }
    Ok(())
}

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// `metadata.creationTimestamp` of objects created before a `create` step.
pub const CREATED_BEFORE: &str = "2026-01-01T00:00:00Z";
/// `metadata.creationTimestamp` of an object a step creates (one second
/// later, as upstream sleeps a second before creating it).
pub const CREATED_BY_STEP: &str = "2026-01-01T00:00:01Z";

/// Applies a step's `create`. Like the API server, it stamps
/// `metadata.creationTimestamp` (where the order of creation matters, e.g.
/// the oldest of conflicting routes wins): every Gateway API object without
/// one gets [`CREATED_BEFORE`], the new object [`CREATED_BY_STEP`] and
/// `metadata.generation: 1`.
pub fn create(docs: &mut Vec<Value>, obj: &Value) -> Result<()> {
    let (kind, key) = (group_kind(obj).1, object_key(obj));
    anyhow::ensure!(
        !docs
            .iter()
            .any(|d| matches(d, &kind, &Some(key.0.clone()), &key.1)),
        "create: {kind} {}/{} already exists",
        key.0,
        key.1
    );
    let stamp = |d: &mut Value, t: &str| {
        if let Some(m) = d.get_mut("metadata").and_then(Value::as_mapping_mut) {
            if !m.contains_key("creationTimestamp") {
                m.insert("creationTimestamp".into(), t.into());
            }
        }
    };
    for d in docs.iter_mut() {
        if group_kind(d).0 == GATEWAY_GROUP {
            stamp(d, CREATED_BEFORE);
        }
    }
    let mut obj = obj.clone();
    stamp(&mut obj, CREATED_BY_STEP);
    if group_kind(&obj).0 == GATEWAY_GROUP && generation(&obj).is_none() {
        set_generation(&mut obj, 1);
    }
    docs.push(obj);
    Ok(())
}

fn generation(doc: &Value) -> Option<i64> {
    doc.get("metadata")?.get("generation")?.as_i64()
}

fn set_generation(doc: &mut Value, g: i64) {
    if let Some(m) = doc.get_mut("metadata").and_then(Value::as_mapping_mut) {
        m.insert("generation".into(), Value::from(g));
    }
}

/// What the API server does on create: every Gateway API object starts at
/// `metadata.generation: 1` (the agent echoes it as `observedGeneration`).
pub fn set_initial_generations(docs: &mut [Value]) {
    for d in docs {
        if group_kind(d).0 == GATEWAY_GROUP && generation(d).is_none() {
            set_generation(d, 1);
        }
    }
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Mapping(pm) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_mapping() {
        *target = Value::Mapping(Mapping::new());
    }
    let tm = target.as_mapping_mut().expect("just made a mapping");
    for (k, v) in pm {
        if v.is_null() {
            tm.remove(k);
        } else {
            merge_patch(tm.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_get_addresses_and_moved_ports_services_get_slices() {
        let docs = parse_docs(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g, namespace: infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: infra}
spec: {ports: [{name: first, port: 8080, targetPort: 3000}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: svc, namespace: infra}
"#,
            GATEWAY_CLASS,
        )
        .unwrap();
        let backends = BTreeMap::from([(("infra".to_owned(), "svc".to_owned()), 4321)]);
        let p = prepare(&docs, 20000, &backends).unwrap();
        let g = &p.gateways[&("infra".to_owned(), "g".to_owned())];
        assert_eq!(g.address, gateway_address(0));
        assert_eq!(g.listeners[0].port, 80);
        let yaml = p.to_yaml().unwrap();
        assert!(yaml.contains("port: 20080"), "{yaml}");
        assert!(
            yaml.contains(&format!("gatewayClassName: {GATEWAY_CLASS}")),
            "{yaml}"
        );
        assert!(
            yaml.contains("port: 4321") && yaml.contains("kind: EndpointSlice"),
            "{yaml}"
        );
        assert!(!yaml.contains("Deployment"));
        assert_eq!(p.skipped["Deployment"], 1);
    }

    #[test]
    fn generations_start_at_one_and_spec_patches_bump_them() {
        let mut docs = parse_docs(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: infra}\nspec: {listeners: []}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: infra}\n",
            GATEWAY_CLASS,
        )
        .unwrap();
        set_initial_generations(&mut docs);
        assert_eq!(generation(&docs[0]), Some(1));
        assert_eq!(generation(&docs[1]), None);
        let p = |patch: &str| Patch {
            kind: "Gateway".into(),
            namespace: Some("infra".into()),
            name: "g".into(),
            patch: serde_yaml::from_str(patch).unwrap(),
        };
        patch(&mut docs, &p("{metadata: {labels: {a: b}}}")).unwrap();
        assert_eq!(generation(&docs[0]), Some(1), "metadata-only change");
        patch(&mut docs, &p("{spec: {listeners: [{name: http}]}}")).unwrap();
        assert_eq!(generation(&docs[0]), Some(2));
        patch(&mut docs, &p("{spec: {listeners: [{name: http}]}}")).unwrap();
        assert_eq!(generation(&docs[0]), Some(2), "no-op patch");
    }

    #[test]
    fn merge_patch_replaces_lists_and_removes_nulls() {
        let mut t: Value = serde_yaml::from_str("{a: {b: 1, c: [1, 2]}, d: 1}").unwrap();
        let p: Value = serde_yaml::from_str("{a: {c: [3]}, d: null}").unwrap();
        merge_patch(&mut t, &p);
        assert_eq!(
            t,
            serde_yaml::from_str::<Value>("{a: {b: 1, c: [3]}}").unwrap()
        );
    }
}
