//! Namespace identity of traffic sources, for the eBPF isolation checks:
//! which source addresses and which local cgroups belong to which namespace.
//!
//! Outside Kubernetes it comes from the agent config file (`--agent-config`):
//!
//! ```yaml
//! namespaces:
//!   team-a:
//!     cidrs: ["10.0.1.0/24"]
//!     cgroups: ["/sys/fs/cgroup/team-a.slice"]   # the cgroup and all below it
//! ```
//!
//! In Kubernetes a local process's namespace is its pod's: the pod UID is read
//! from the kubelet's cgroup path ([`pod_uid_from_cgroup_path`]).
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;

use super::{ConfigError, DocumentError, Location};

/// Who is in which namespace. Empty: nobody is known (shards that admit only
/// some namespaces then refuse everyone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceIdentity {
    pub cidrs: Vec<(IpNet, String)>,
    /// cgroup v2 ids (directory inodes) and their namespace.
    pub cgroups: Vec<(u64, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentConfigFile {
    #[serde(default)]
    namespaces: BTreeMap<String, NamespaceSources>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceSources {
    #[serde(default)]
    cidrs: Vec<String>,
    #[serde(default)]
    cgroups: Vec<PathBuf>,
}

fn err(path: &Path, field: String, message: String) -> DocumentError {
    DocumentError {
        location: Location {
            file: path.to_path_buf(),
            document: 1,
            object: Some("agent config".into()),
        },
        field,
        message,
    }
}

/// Reads the agent config file. cgroup directories are resolved to ids now,
/// with every cgroup below them.
pub fn load_agent_config(path: &Path) -> Result<NamespaceIdentity, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let file: AgentConfigFile = serde_path_to_error::deserialize(
        serde_yaml::Deserializer::from_str(&text),
    )
    .map_err(|e| {
        ConfigError::Invalid(vec![err(
            path,
            e.path().to_string(),
            e.into_inner().to_string(),
        )])
    })?;
    let mut errors = Vec::new();
    let mut identity = NamespaceIdentity::default();
    for (ns, sources) in &file.namespaces {
        for (i, c) in sources.cidrs.iter().enumerate() {
            match c
                .parse::<IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
            {
                Ok(net) => identity.cidrs.push((net.trunc(), ns.clone())),
                Err(_) => errors.push(err(
                    path,
                    format!("namespaces.{ns}.cidrs[{i}]"),
                    format!("invalid CIDR {c:?}"),
                )),
            }
        }
        for (i, dir) in sources.cgroups.iter().enumerate() {
            match cgroup_ids(dir) {
                Ok(ids) => identity
                    .cgroups
                    .extend(ids.into_iter().map(|id| (id, ns.clone()))),
                Err(e) => errors.push(err(
                    path,
                    format!("namespaces.{ns}.cgroups[{i}]"),
                    format!("{}: {e}", dir.display()),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(identity)
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

/// The cgroup v2 ids (directory inode numbers) of `dir` and every cgroup below it.
pub fn cgroup_ids(dir: &Path) -> std::io::Result<Vec<u64>> {
    if !dir.join("cgroup.procs").exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a cgroup v2 directory (no cgroup.procs)",
        ));
    }
    let mut out = vec![std::fs::metadata(dir)?.ino()];
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(cgroup_ids(&entry.path())?);
        }
    }
    Ok(out)
}

/// The mount point of the cgroup v2 hierarchy: `/sys/fs/cgroup` on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .min_by_key(|p| p.as_os_str().len())
}

/// The pod UID in a kubelet cgroup path, for both cgroup drivers:
/// systemd (`.../kubepods-burstable-pod1234_5678.slice/cri-containerd-….scope`,
/// dashes in the UID written as underscores) and cgroupfs
/// (`.../kubepods/burstable/pod1234-5678/<container>`).
pub fn pod_uid_from_cgroup_path(path: &str) -> Option<String> {
    for segment in path.split('/').rev() {
        if let Some(rest) = segment.strip_suffix(".slice") {
            if let Some(idx) = rest.rfind("-pod") {
                return Some(rest[idx + 4..].replace('_', "-"));
            }
        } else if let Some(uid) = segment.strip_prefix("pod") {
            if uid.len() >= 32 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Some(uid.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uid_from_systemd_and_cgroupfs_layouts() {
        assert_eq!(
            pod_uid_from_cgroup_path(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c2e3a_1b2c_4d5e_8f90_0123456789ab.slice/cri-containerd-abc.scope"
            )
            .as_deref(),
            Some("6f1c2e3a-1b2c-4d5e-8f90-0123456789ab")
        );
        assert_eq!(
            pod_uid_from_cgroup_path(
                "/kubepods/besteffort/pod6f1c2e3a-1b2c-4d5e-8f90-0123456789ab/0123abcd"
            )
            .as_deref(),
            Some("6f1c2e3a-1b2c-4d5e-8f90-0123456789ab")
        );
        assert_eq!(pod_uid_from_cgroup_path("/system.slice/sshd.service"), None);
        assert_eq!(pod_uid_from_cgroup_path("/user.slice/podman"), None);
    }

    #[test]
    fn agent_config_errors_name_the_field() {
        let dir = std::env::temp_dir().join(format!("sluice-agentcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("agent.yaml");
        std::fs::write(
            &f,
            "namespaces:\n  team-a:\n    cidrs: [10.0.0.0/33]\n    cgroups: [/nonexistent/cg]\n",
        )
        .unwrap();
        let e = load_agent_config(&f).unwrap_err().to_string();
        assert!(
            e.contains("namespaces.team-a.cidrs[0]") && e.contains("invalid CIDR"),
            "{e}"
        );
        assert!(
            e.contains("namespaces.team-a.cgroups[0]") && e.contains("not a cgroup v2"),
            "{e}"
        );
        std::fs::write(&f, "namespaces:\n  team-a:\n    cidrz: []\n").unwrap();
        let e = load_agent_config(&f).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        std::fs::write(
            &f,
            "namespaces:\n  team-a:\n    cidrs: [10.1.0.0/16, 10.2.0.1]\n",
        )
        .unwrap();
        let id = load_agent_config(&f).unwrap();
        assert_eq!(id.cidrs.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
