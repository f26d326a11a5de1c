//! Pods on this node → namespace identity for the eBPF isolation maps, the
//! same [`NamespaceIdentity`] the file-side `--agent-config` produces:
//!
//! - each pod IP (`status.podIPs`, as a /32 or /128) → the pod's namespace,
//!   for admission by sk_lookup (remote sources);
//! - the pod's cgroup directory and every cgroup below it (its containers)
//!   → the pod's namespace, for the connect4/connect6 hooks (local clients).
//!
//! Host-network pods carry the node's IP, which says nothing about a
//! namespace: their IPs are left out, their cgroups are not. Finished pods
//! (Succeeded, Failed) are left out entirely: their IPs may already belong to
//! another pod. A pod whose cgroup directory is not there yet (the kubelet
//! creates it after the pod is bound) is looked for again on the next event
//! and every few seconds while any is missing.
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ::kube::api::DynamicObject;
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::config::{
    identity::{cgroup_ids, pod_uid_from_cgroup_path},
    NamespaceIdentity,
};

/// What of a Pod the identity needs; the rest is dropped before the
/// reflector stores it (a Pod object is mostly spec the agent never reads).
pub fn trim(obj: &mut DynamicObject) {
    let m = &mut obj.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.labels = None;
    m.owner_references = None;
    m.finalizers = None;
    let data = &obj.data;
    let host_network = data.pointer("/spec/hostNetwork").cloned();
    let mut status = serde_json::Map::new();
    for key in ["phase", "podIP", "podIPs"] {
        if let Some(v) = data.get("status").and_then(|s| s.get(key)) {
            status.insert(key.into(), v.clone());
        }
    }
    let mut spec = serde_json::Map::new();
    if let Some(h) = host_network {
        spec.insert("hostNetwork".into(), h);
    }
    obj.data = json!({"spec": spec, "status": status});
}

/// The identity-relevant facts of one Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub host_network: bool,
    pub ips: Vec<IpAddr>,
    /// Phase Succeeded or Failed.
    pub finished: bool,
}

/// Reads a (trimmed) Pod; `None` without namespace or UID.
pub fn pod_info(obj: &DynamicObject) -> Option<PodInfo> {
    let namespace = obj.metadata.namespace.clone()?;
    let uid = obj.metadata.uid.clone()?;
    let status = obj.data.get("status");
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.get("podIPs"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("ip")?.as_str()?.parse().ok())
        .collect();
    if ips.is_empty() {
        // Older API servers fill only the singular field.
        ips.extend(
            status
                .and_then(|s| s.get("podIP"))
                .and_then(Value::as_str)
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    let phase = status.and_then(|s| s.get("phase")).and_then(Value::as_str);
    Some(PodInfo {
        namespace,
        name: obj.metadata.name.clone().unwrap_or_default(),
        uid,
        host_network: obj
            .data
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ips,
        finished: matches!(phase, Some("Succeeded" | "Failed")),
    })
}

/// How deep below the cgroup root pod directories are looked for: the
/// kubelet puts them 2–3 levels down (`kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid>.slice`, `kubepods/besteffort/pod<uid>`), one
/// or two more when the kubelet itself runs in a cgroup of its own.
const MAX_DEPTH: usize = 5;

/// Pod UID → its cgroup directory, for both kubelet cgroup drivers (the
/// layouts [`pod_uid_from_cgroup_path`] understands). Only directories named
/// like the kubelet's (`kubepods*`, `kubelet*`) and what is below a
/// `kubepods*` one (`burstable/`, `besteffort/`) are descended into, so the
/// rest of the host's hierarchy is not walked.
pub fn find_pod_cgroups(root: &Path) -> HashMap<String, PathBuf> {
    let mut out = HashMap::new();
    walk(root, 0, false, &mut out);
    out
}

fn walk(dir: &Path, depth: usize, in_kubepods: bool, out: &mut HashMap<String, PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(uid) = pod_uid_from_cgroup_path(&name) {
            out.insert(uid, entry.path());
        } else if depth < MAX_DEPTH {
            let kubepods = in_kubepods || name.contains("kubepods");
            if kubepods || name.starts_with("kubelet") {
                walk(&entry.path(), depth + 1, kubepods, out);
            }
        }
    }
}

/// The identity of this node's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub identity: NamespaceIdentity,
    /// Pods (`namespace/name`) whose cgroup directory was not found.
    pub unresolved: Vec<String>,
}

/// Converts pods to identity; `cgroup_dirs` maps pod UIDs to their cgroup
/// directories ([`find_pod_cgroups`]).
pub fn identity(pods: &[PodInfo], cgroup_dirs: &HashMap<String, PathBuf>) -> PodIdentity {
    let mut out = PodIdentity::default();
    let mut pods: Vec<&PodInfo> = pods.iter().filter(|p| !p.finished).collect();
    // Stable order, so an unchanged set of pods gives an equal identity.
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for pod in pods {
        if !pod.host_network {
            for ip in &pod.ips {
                out.identity
                    .cidrs
                    .push((IpNet::from(*ip), pod.namespace.clone()));
            }
        }
        match cgroup_dirs.get(&pod.uid).map(|d| cgroup_ids(d)) {
            Some(Ok(ids)) => out
                .identity
                .cgroups
                .extend(ids.into_iter().map(|id| (id, pod.namespace.clone()))),
            // Gone between the scan and now, or not there yet.
            Some(Err(_)) | None => out
                .unresolved
                .push(format!("{}/{}", pod.namespace, pod.name)),
        }
    }
    out
}

/// The identity of the pods in `pods` (trimmed Pod objects), looking for
/// cgroups under `cgroup_root` (no cgroup v2 hierarchy: IPs only).
pub fn collect(pods: &[std::sync::Arc<DynamicObject>], cgroup_root: Option<&Path>) -> PodIdentity {
    let infos: Vec<PodInfo> = pods.iter().filter_map(|p| pod_info(p)).collect();
    let dirs = match cgroup_root {
        Some(root) if !infos.is_empty() => find_pod_cgroups(root),
        _ => HashMap::new(),
    };
    identity(&infos, &dirs)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;
    use crate::kube::watch::Kind;

    const UID_A: &str = "6f1c2e3a-1b2c-4d5e-8f90-0123456789ab";
    const UID_B: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    fn pod(ns: &str, name: &str, uid: &str, data: Value) -> DynamicObject {
        let mut o = DynamicObject::new(name, &Kind::Pod.resource()).data(data);
        o.metadata.namespace = Some(ns.into());
        o.metadata.uid = Some(uid.into());
        o
    }

    /// A fake cgroup directory: `cgroup_ids` only needs `cgroup.procs`.
    fn cgroup_dir(path: &Path) {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join("cgroup.procs"), "").unwrap();
    }

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn trim_keeps_what_identity_reads() {
        let mut p = pod(
            "apps",
            "web",
            UID_A,
            json!({
                "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}], "conditions": []},
            }),
        );
        p.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        trim(&mut p);
        assert_eq!(
            p.data,
            json!({"spec": {"hostNetwork": true}, "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}]}})
        );
        assert!(p.metadata.labels.is_none());
        assert_eq!(pod_info(&p).unwrap().uid, UID_A);
    }

    #[test]
    fn pod_ips_and_cgroups_map_to_the_pod_namespace() {
        let root =
            TempDir(std::env::temp_dir().join(format!("sluice-podcg-{}", std::process::id())));
        // systemd driver, burstable pod with one container.
        let a = root.0.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID_A.replace('-', "_")
        ));
        cgroup_dir(&a);
        cgroup_dir(&a.join("cri-containerd-0123.scope"));
        // cgroupfs driver, under a kubelet cgroup of its own.
        let b = root
            .0
            .join(format!("kubelet/kubepods/besteffort/pod{UID_B}"));
        cgroup_dir(&b);
        // Not a kubelet directory: never walked.
        cgroup_dir(&root.0.join("system.slice/sshd.service"));

        let dirs = find_pod_cgroups(&root.0);
        assert_eq!(dirs.len(), 2, "{dirs:?}");
        assert_eq!(dirs[UID_A], a);
        assert_eq!(dirs[UID_B], b);

        let pods = [
            pod(
                "team-a",
                "web",
                UID_A,
                json!({"status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}]}}),
            ),
            pod(
                "team-b",
                "agent",
                UID_B,
                json!({"spec": {"hostNetwork": true}, "status": {"phase": "Running", "podIPs": [{"ip": "192.0.2.10"}]}}),
            ),
            pod(
                "team-c",
                "pending",
                "ffffffff-0000-4000-8000-000000000000",
                json!({"status": {"phase": "Pending", "podIP": "10.1.0.9"}}),
            ),
            pod(
                "team-d",
                "done",
                "eeeeeeee-0000-4000-8000-000000000000",
                json!({"status": {"phase": "Succeeded", "podIPs": [{"ip": "10.1.0.7"}]}}),
            ),
        ]
        .map(std::sync::Arc::new);
        let out = collect(&pods, Some(&root.0));
        let cidrs: Vec<(String, &str)> = out
            .identity
            .cidrs
            .iter()
            .map(|(n, ns)| (n.to_string(), ns.as_str()))
            .collect();
        // Host-network pod: no IP identity; finished pod: nothing at all.
        assert_eq!(
            cidrs,
            [
                ("10.1.0.5/32".to_string(), "team-a"),
                ("fd00::5/128".to_string(), "team-a"),
                ("10.1.0.9/32".to_string(), "team-c"),
            ]
        );
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let mut cgroups = out.identity.cgroups.clone();
        cgroups.sort();
        let mut want = vec![
            (ino(&a), "team-a".to_string()),
            (
                ino(&a.join("cri-containerd-0123.scope")),
                "team-a".to_string(),
            ),
            (ino(&b), "team-b".to_string()),
        ];
        want.sort();
        assert_eq!(cgroups, want);
        // The pending pod has no cgroup yet: retried later.
        assert_eq!(out.unresolved, ["team-c/pending"]);

        // Its cgroup appears: the next collection finds it.
        let c = root
            .0
            .join("kubepods/podffffffff-0000-4000-8000-000000000000");
        cgroup_dir(&c);
        let again = collect(&pods, Some(&root.0));
        assert!(again.unresolved.is_empty());
        assert!(again
            .identity
            .cgroups
            .contains(&(ino(&c), "team-c".to_string())));
    }
}
