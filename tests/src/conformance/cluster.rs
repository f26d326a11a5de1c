//! Tests that need a real Kubernetes API server: those that check that
//! `metadata.generation` changed (`generation_changed`), which only the API
//! server maintains. They run against kubelite (`shared/kubelite`), started
//! once per run (in the background, from its start) and stopped with the
//! runner. The same adapted documents a file-fed agent would get are applied
//! with server-side apply, the agent runs with `--kubernetes`, steps are
//! `kubectl patch`/`delete`/`apply`, and status is read as upstream reads it:
//! from the objects in the API server, which the agent's status writer
//! updates.
use std::{collections::BTreeMap, path::Path, sync::Arc};

use anyhow::{Context, Result};
use serde_json::Value as Json;
use serde_yaml::Value;

use super::{
    cases::{Step, TestFile},
    manifests::{self, Prepared},
    report::{CaseResult, TestResult, Traffic},
    runner::{label, poll_status, run_cases, unchecked, Agent, Env},
    status::AgentStatus,
};
use crate::kubelite::Kubelite;

/// kubelite's API port for the runner (tests/tests/kubernetes.rs uses
/// 27443–27553, every tenth).
pub const API_PORT: u16 = 27563;
/// kubelite's etcd ports (this and the next; tests/tests/kubernetes.rs uses
/// 28790–28901, every tenth and the next), so that no other kubelite of a
/// test run collides even on the host network.
pub const ETCD_PORT: u16 = 28885;

/// The resources whose status the assertions read.
const STATUS_RESOURCES: &str = "gatewayclasses.gateway.networking.k8s.io,\
gateways.gateway.networking.k8s.io,httproutes.gateway.networking.k8s.io,\
grpcroutes.gateway.networking.k8s.io,tlsroutes.gateway.networking.k8s.io,\
tcproutes.gateway.networking.k8s.io,backendtlspolicies.gateway.networking.k8s.io";

/// A test needs an API server when a `status` block (of the test or a step)
/// asks for `generation_changed`.
pub fn needs_api_server(t: &TestFile) -> bool {
    fn asks(v: &Value) -> bool {
        match v {
            Value::Mapping(m) => m.iter().any(|(k, v)| {
                (k.as_str() == Some("generation_changed") && v.as_bool() == Some(true)) || asks(v)
            }),
            Value::Sequence(s) => s.iter().any(asks),
            _ => false,
        }
    }
    asks(&t.status) || t.steps.iter().any(|s| asks(&s.status))
}

/// kubelite with the Gateway API CRDs.
pub struct Cluster {
    kube: Kubelite,
}

impl Cluster {
    /// `upstream_dir` is `…/gateway-api/conformance`; kubelite is
    /// `…/kubelite` next to `gateway-api`, the CRDs `…/gateway-api/crd/standard`.
    pub fn start(upstream_dir: &Path) -> Result<Self> {
        let gateway_api = upstream_dir
            .parent()
            .context("the upstream directory has no parent")?;
        let shared = gateway_api
            .parent()
            .context("gateway-api has no parent directory")?;
        let kube = Kubelite::start(
            &shared.join("kubelite"),
            API_PORT,
            ETCD_PORT,
            &gateway_api.join("crd/standard"),
        )?;
        // The agent's status-writer Lease lives here.
        kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: sluice-system}\n")?;
        Ok(Cluster { kube })
    }

    /// Objects with their status, as [`AgentStatus`] and as documents.
    fn snapshot(&self) -> Result<(AgentStatus, Vec<Value>), String> {
        let out = self
            .kube
            .kubectl_ok(&["get", STATUS_RESOURCES, "-A", "-o", "json"], None)
            .map_err(|e| format!("{e:#}"))?;
        let list: Json =
            serde_json::from_str(&out).map_err(|e| format!("kubectl get: invalid JSON: {e}"))?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let status = status_of(&items)?;
        let docs = items
            .iter()
            .map(serde_yaml::to_value)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        Ok((status, docs))
    }

    /// Applies a step's change with kubectl.
    fn step(&self, step: &Step) -> Result<()> {
        if let Some(d) = &step.delete {
            let mut args = vec!["delete", d.kind.as_str(), d.name.as_str()];
            if let Some(ns) = &d.namespace {
                args.extend(["-n", ns.as_str()]);
            }
            self.kube.kubectl_ok(&args, None)?;
        } else if let Some(p) = &step.patch {
            let patch = serde_json::to_string(&p.patch)?;
            let mut args = vec![
                "patch",
                p.kind.as_str(),
                p.name.as_str(),
                "--type",
                "merge",
                "-p",
                patch.as_str(),
            ];
            if let Some(ns) = &p.namespace {
                args.extend(["-n", ns.as_str()]);
            }
            self.kube.kubectl_ok(&args, None)?;
        } else if let Some(c) = &step.create {
            self.kube.apply(&serde_yaml::to_string(c)?)?;
        }
        Ok(())
    }
}

/// The agent-independent `/status` shape, filled from the API objects.
fn status_of(items: &[Json]) -> Result<AgentStatus, String> {
    let mut gateways = Vec::new();
    let mut routes = Vec::new();
    let mut policies = Vec::new();
    let mut classes = Vec::new();
    for i in items {
        let (kind, ns, name) = (
            i["kind"].as_str().unwrap_or(""),
            &i["metadata"]["namespace"],
            &i["metadata"]["name"],
        );
        let s = &i["status"];
        match kind {
            "GatewayClass" => classes.push(i.clone()),
            "Gateway" => gateways.push(serde_json::json!({
                "namespace": ns, "name": name, "conditions": s["conditions"],
                "listeners": s["listeners"], "addresses": s["addresses"],
            })),
            "BackendTLSPolicy" => policies.push(serde_json::json!({
                "kind": kind, "namespace": ns, "name": name, "ancestors": s["ancestors"],
            })),
            _ => routes.push(serde_json::json!({
                "kind": kind, "namespace": ns, "name": name, "parents": s["parents"],
            })),
        }
    }
    // Absent lists are `null` in these documents; the shape reads them as empty.
    let strip = |v: Vec<Json>| -> Vec<Json> {
        v.into_iter()
            .map(|mut o| {
                if let Some(m) = o.as_object_mut() {
                    m.retain(|_, v| !v.is_null());
                }
                o
            })
            .collect()
    };
    serde_json::from_value(serde_json::json!({
        "gatewayClasses": classes,
        "gateways": strip(gateways),
        "httpRoutes": strip(routes),
        "policies": strip(policies),
    }))
    .map_err(|e| format!("API objects do not read as status: {e}"))
}

/// The documents as written to the API server: `metadata.generation` and
/// `creationTimestamp` are the server's to set.
fn api_documents(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for d in docs {
        let mut d = d.clone();
        if let Some(m) = d.get_mut("metadata").and_then(Value::as_mapping_mut) {
            m.remove("generation");
            m.remove("creationTimestamp");
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&d)?);
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Runs one test against the API server. Infrastructure failures (no
/// kubelite, kubectl errors) fail the test's assertions with that reason.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_test(
    env: &Env,
    t: &TestFile,
    dir: &Path,
    r: &mut TestResult,
    cluster: &Result<Arc<Cluster>, String>,
    mut source: Vec<Value>,
    ports: &BTreeMap<(String, String), u16>,
    prepared: Prepared,
) -> Result<()> {
    let all_unchecked = |r: &mut TestResult, why: &str| {
        r.status = unchecked(&t.status, "", why);
        for (i, step) in t.steps.iter().enumerate() {
            r.status
                .extend(unchecked(&step.status, &format!("step {}: ", i + 1), why));
        }
        r.cases = t
            .cases
            .iter()
            .chain(t.steps.iter().flat_map(|s| &s.cases))
            .map(|c| CaseResult {
                label: label(c),
                error: Some(why.to_owned()),
            })
            .collect();
        r.traffic = if r.cases.is_empty() {
            Traffic::NoCases
        } else {
            Traffic::Ran {
                passed: 0,
                total: r.cases.len(),
            }
        };
    };
    let cluster = match cluster {
        Ok(c) => c.clone(),
        Err(e) => {
            all_unchecked(r, &format!("needs a Kubernetes API server: {e}"));
            return Ok(());
        }
    };
    let mut docs = prepared.docs.clone();
    docs.extend(env.certs.secret_docs());
    docs.extend(env.certs.config_map_docs());
    let yaml = api_documents(&docs)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("api-objects.yaml"), &yaml)?;
    let applied = {
        let (c, y) = (cluster.clone(), yaml.clone());
        blocking(move || c.kube.apply(&y)).await
    };
    if let Err(e) = applied {
        all_unchecked(r, &format!("applying the objects to the API server: {e:#}"));
        cleanup(&cluster, &yaml, &[]).await;
        return Ok(());
    }
    let lease = format!("conformance-{}", t.id);
    let mut agent = match Agent::start_kube(env, dir, 0, &cluster.kube.kubeconfig, &lease).await {
        Ok(a) => a,
        Err(e) => {
            cleanup(&cluster, &yaml, &[]).await;
            return Err(e);
        }
    };
    let snapshot = || {
        let c = cluster.clone();
        async move {
            tokio::task::spawn_blocking(move || c.snapshot())
                .await
                .map_err(|e| e.to_string())?
        }
    };
    r.status
        .extend(poll_status(env, &t.status, "", None, snapshot).await);
    let mut case_results = run_cases(env, t, &t.cases, &prepared, "").await;
    let mut created = Vec::new();
    for (i, step) in t.steps.iter().enumerate() {
        let prefix = format!("step {}: ", i + 1);
        let before = snapshot().await;
        let change = {
            let (c, s) = (cluster.clone(), step.clone());
            blocking(move || c.step(&s)).await
        };
        // The runner's copy follows, for the Gateway addresses cases dial.
        let local = match (&step.delete, &step.patch, &step.create) {
            (Some(d), _, _) => manifests::delete(&mut source, d),
            (_, Some(p), _) => manifests::patch(&mut source, p),
            (_, _, Some(c)) => {
                created.push(c.clone());
                manifests::create(&mut source, c)
            }
            _ => Ok(()),
        };
        let failed = match (before, change.and(local)) {
            (Err(e), _) => Some(format!("reading the objects before the step: {e}")),
            (_, Err(e)) => Some(format!("cannot apply the step: {e:#}")),
            (Ok((_, before)), Ok(())) => {
                r.status
                    .extend(poll_status(env, &step.status, &prefix, Some(&before), snapshot).await);
                let prepared = manifests::prepare_with(
                    &source,
                    env.opts.port_offset,
                    ports,
                    &env.container_ports,
                )?;
                case_results.extend(run_cases(env, t, &step.cases, &prepared, &prefix).await);
                None
            }
        };
        if let Some(why) = failed {
            r.status.extend(unchecked(&step.status, &prefix, &why));
            case_results.extend(step.cases.iter().map(|c| CaseResult {
                label: format!("{prefix}{}", label(c)),
                error: Some(why.clone()),
            }));
        }
    }
    agent.stop().await;
    cleanup(&cluster, &yaml, &created).await;
    r.traffic = if case_results.is_empty() {
        Traffic::NoCases
    } else {
        Traffic::Ran {
            passed: case_results.iter().filter(|c| c.error.is_none()).count(),
            total: case_results.len(),
        }
    };
    r.cases = case_results;
    Ok(())
}

/// Deletes what the test applied or created (not the Namespaces: kubelite
/// does not cascade their deletion, and the next test re-applies them), so
/// that the next test starts from the base objects only.
async fn cleanup(cluster: &Arc<Cluster>, yaml: &str, created: &[Value]) {
    let mut docs: Vec<Value> = manifests::parse_docs(yaml, "").unwrap_or_default();
    docs.extend(created.iter().cloned());
    docs.retain(|d| manifests::group_kind(d).1 != "Namespace");
    let Ok(text) = api_documents(&docs) else {
        return;
    };
    let c = cluster.clone();
    let _ = blocking(move || {
        c.kube.kubectl_ok(
            &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            Some(&text),
        )
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_objects_read_as_status() {
        let items: Vec<Json> = serde_json::from_str(
            r#"[{"kind": "Gateway", "metadata": {"namespace": "ns", "name": "gw", "generation": 2},
                 "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                            "observedGeneration": 2}],
                            "listeners": [{"name": "http", "attachedRoutes": 1, "supportedKinds": [],
                                           "conditions": []}]}},
                {"kind": "HTTPRoute", "metadata": {"namespace": "ns", "name": "r"},
                 "status": {"parents": [{"parentRef": {"name": "gw"}, "controllerName": "c",
                                         "conditions": []}]}},
                {"kind": "TCPRoute", "metadata": {"namespace": "ns", "name": "t"}}]"#,
        )
        .unwrap();
        let s = status_of(&items).unwrap();
        assert_eq!(s.gateways[0].name, "gw");
        assert_eq!(s.gateways[0].conditions[0].observed_generation, Some(2));
        assert_eq!(s.gateways[0].listeners[0].attached_routes, 1);
        assert!(s.gateways[0].addresses.is_empty());
        assert_eq!(s.http_routes[0].parents[0].parent_ref.name, "gw");
        assert_eq!(s.http_routes[1].kind, "TCPRoute");
        assert!(s.http_routes[1].parents.is_empty());
    }

    #[test]
    fn generation_tests_need_an_api_server_and_the_server_sets_generations() {
        let t: TestFile = serde_yaml::from_str(
            "name: x\nsteps: [{status: {gateways: [{gateway: {namespace: a, name: b}, generation_changed: true}]}}]\n",
        )
        .unwrap();
        assert!(needs_api_server(&t));
        let plain: TestFile = serde_yaml::from_str("name: y\nstatus: {routes: []}\n").unwrap();
        assert!(!needs_api_server(&plain));
        let docs = manifests::parse_docs(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: g, namespace: n, generation: 1, creationTimestamp: '2026-01-01T00:00:00Z'}\n",
            "c",
        )
        .unwrap();
        let yaml = api_documents(&docs).unwrap();
        assert!(
            !yaml.contains("generation") && !yaml.contains("creationTimestamp"),
            "{yaml}"
        );
    }
}
