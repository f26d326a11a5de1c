//! Namespace isolation in the kernel: namespace ids, the source/cgroup →
//! namespace maps, and which namespaces each shard admits.
use std::collections::BTreeMap;

use sluice_common::{AdmitKey, LISTENER_F_NS_ADMISSION};

use crate::{
    config::{Gateway, NamespaceIdentity},
    kernel::{prefix16, KernelDesired},
    snapshot::ShardId,
};

/// Stable namespace ids (0 is "unknown"): a namespace keeps its id across
/// reloads so a map update never briefly points a source at another namespace.
#[derive(Debug, Default, Clone)]
pub struct NamespaceIds {
    ids: BTreeMap<String, u32>,
}

impl NamespaceIds {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = (1..)
            .find(|i| !self.ids.values().any(|v| v == i))
            .expect("u32 ids");
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// Drops ids of namespaces no longer mentioned anywhere.
    fn retain(&mut self, used: &[&str]) {
        self.ids.retain(|k, _| used.contains(&k.as_str()));
    }
}

/// Fills the identity maps and the admissions of the served shards, and marks
/// the listeners of shards that admit only some namespaces.
pub fn program(
    identity: &NamespaceIdentity,
    shards: &[(ShardId, &Gateway)],
    ids: &mut NamespaceIds,
    kernel: &mut KernelDesired,
) {
    let mut used: Vec<&str> = identity
        .cidrs
        .iter()
        .map(|(_, ns)| ns.as_str())
        .chain(identity.cgroups.iter().map(|(_, ns)| ns.as_str()))
        .collect();
    for (_, g) in shards {
        used.extend(g.admitted_namespaces.iter().flatten().map(String::as_str));
    }
    ids.retain(&used);
    for (net, ns) in &identity.cidrs {
        kernel.source_namespaces.insert(prefix16(*net), ids.id(ns));
    }
    for (cgroup, ns) in &identity.cgroups {
        kernel.cgroup_namespaces.insert(*cgroup, ids.id(ns));
    }
    for (shard, gateway) in shards {
        let Some(admitted) = &gateway.admitted_namespaces else {
            continue;
        };
        for ns in admitted {
            kernel.admissions.insert(AdmitKey {
                shard: *shard,
                namespace: ids.id(ns),
            });
        }
        for value in kernel.listeners.values_mut().filter(|v| v.shard == *shard) {
            value.flags |= LISTENER_F_NS_ADMISSION;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_admission_marks_listeners() {
        let mut ids = NamespaceIds::default();
        let a = ids.id("team-a");
        let b = ids.id("team-b");
        ids.retain(&["team-b"]);
        assert_eq!(ids.id("team-b"), b);
        assert_eq!(ids.id("team-c"), a, "freed id is reused");

        let identity = NamespaceIdentity {
            cidrs: vec![("10.0.0.0/8".parse().unwrap(), "team-a".into())],
            cgroups: vec![(42, "team-b".into())],
        };
        let cfg = crate::config::parse_documents([(
            std::path::Path::new("t.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: n, annotations: {sluice.dev/admitted-namespaces: \"team-a\"}}\nspec: {gatewayClassName: c, listeners: [{name: h, port: 80, protocol: HTTP}]}\n",
        )])
        .unwrap();
        let mut kernel = KernelDesired::default();
        kernel.listeners.insert(
            sluice_common::ListenerKey::new([0; 16], 80, 6),
            sluice_common::ListenerValue::new(3, 0),
        );
        let mut ids = NamespaceIds::default();
        program(&identity, &[(3, &cfg.gateways[0])], &mut ids, &mut kernel);
        let a = ids.id("team-a");
        assert!(kernel.admissions.contains(&AdmitKey {
            shard: 3,
            namespace: a
        }));
        assert_eq!(kernel.admissions.len(), 1);
        assert_eq!(kernel.cgroup_namespaces[&42], ids.id("team-b"));
        assert_eq!(kernel.source_namespaces.values().next(), Some(&a));
        assert!(kernel
            .listeners
            .values()
            .all(|v| v.flags & LISTENER_F_NS_ADMISSION != 0));
    }
}
