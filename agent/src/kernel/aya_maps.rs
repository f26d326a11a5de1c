//! The maps the reconciler programs, behind the narrow [`DatapathMaps`] trait.
use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{lpm_trie::Key, HashMap as BpfHashMap, LpmTrie, MapData};
use sluice_common::{AdmitKey, ListenerKey, ListenerValue, PortRangeKey, SourceRuleKey};

use super::{
    loader::{is_enoent, map_err},
    maps::DatapathMaps,
    KernelError, PortBlock, SourceRule,
};

/// Handles on the pinned (or private) maps of the loaded object.
pub struct AyaMaps {
    pub(super) listeners: BpfHashMap<MapData, ListenerKey, ListenerValue>,
    pub(super) port_ranges: LpmTrie<MapData, PortRangeKey, ListenerValue>,
    pub(super) source_rules: LpmTrie<MapData, SourceRuleKey, u32>,
    pub(super) source_ns: LpmTrie<MapData, [u8; 16], u32>,
    pub(super) cgroup_ns: BpfHashMap<MapData, u64, u32>,
    pub(super) admission: BpfHashMap<MapData, AdmitKey, u8>,
}

impl DatapathMaps for AyaMaps {
    fn dump_listeners(&self) -> Result<BTreeMap<ListenerKey, ListenerValue>, KernelError> {
        self.listeners
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("LISTENERS", "dump"))
    }

    fn put_listener(&mut self, key: ListenerKey, value: ListenerValue) -> Result<(), KernelError> {
        self.listeners
            .insert(key, value, 0)
            .map_err(map_err("LISTENERS", &format!("insert port {}", key.port)))
    }

    fn delete_listener(&mut self, key: &ListenerKey) -> Result<(), KernelError> {
        match self.listeners.remove(key) {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            r => r.map_err(map_err("LISTENERS", "delete")),
        }
    }

    fn dump_port_ranges(&self) -> Result<BTreeMap<PortBlock, ListenerValue>, KernelError> {
        self.port_ranges
            .iter()
            .map(|r| r.map(|(k, v)| (PortBlock::from_key(k.prefix_len(), &k.data()), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err("PORT_RANGES", "dump"))
    }

    fn put_port_range(
        &mut self,
        block: PortBlock,
        value: ListenerValue,
    ) -> Result<(), KernelError> {
        let (len, data) = block.key();
        self.port_ranges
            .insert(&Key::new(len, data), value, 0)
            .map_err(map_err("PORT_RANGES", &format!("insert {block}")))
    }

    fn delete_port_range(&mut self, block: &PortBlock) -> Result<(), KernelError> {
        let (len, data) = block.key();
        idempotent(self.port_ranges.remove(&Key::new(len, data)), "PORT_RANGES")
    }

    fn dump_source_rules(&self) -> Result<BTreeMap<SourceRule, u32>, KernelError> {
        self.source_rules
            .iter()
            .map(|r| r.map(|(k, v)| (SourceRule::from_key(k.prefix_len(), &k.data()), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err("SOURCE_RULES", "dump"))
    }

    fn put_source_rule(&mut self, rule: SourceRule, action: u32) -> Result<(), KernelError> {
        let (len, data) = rule.key();
        self.source_rules
            .insert(&Key::new(len, data), action, 0)
            .map_err(map_err("SOURCE_RULES", "insert"))
    }

    fn delete_source_rule(&mut self, rule: &SourceRule) -> Result<(), KernelError> {
        let (len, data) = rule.key();
        match self.source_rules.remove(&Key::new(len, data)) {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            r => r.map_err(map_err("SOURCE_RULES", "delete")),
        }
    }

    fn dump_source_namespaces(&self) -> Result<BTreeMap<([u8; 16], u8), u32>, KernelError> {
        self.source_ns
            .iter()
            .map(|r| r.map(|(k, v)| ((k.data(), k.prefix_len() as u8), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err("SOURCE_NS", "dump"))
    }

    fn put_source_namespace(&mut self, prefix: ([u8; 16], u8), ns: u32) -> Result<(), KernelError> {
        self.source_ns
            .insert(&Key::new(u32::from(prefix.1), prefix.0), ns, 0)
            .map_err(map_err("SOURCE_NS", "insert"))
    }

    fn delete_source_namespace(&mut self, prefix: &([u8; 16], u8)) -> Result<(), KernelError> {
        idempotent(
            self.source_ns
                .remove(&Key::new(u32::from(prefix.1), prefix.0)),
            "SOURCE_NS",
        )
    }

    fn dump_cgroup_namespaces(&self) -> Result<BTreeMap<u64, u32>, KernelError> {
        self.cgroup_ns
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("CGROUP_NS", "dump"))
    }

    fn put_cgroup_namespace(&mut self, cgroup: u64, ns: u32) -> Result<(), KernelError> {
        self.cgroup_ns
            .insert(cgroup, ns, 0)
            .map_err(map_err("CGROUP_NS", "insert"))
    }

    fn delete_cgroup_namespace(&mut self, cgroup: &u64) -> Result<(), KernelError> {
        idempotent(self.cgroup_ns.remove(cgroup), "CGROUP_NS")
    }

    fn dump_admissions(&self) -> Result<BTreeSet<AdmitKey>, KernelError> {
        self.admission
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("ADMISSION", "dump"))
    }

    fn put_admission(&mut self, key: AdmitKey) -> Result<(), KernelError> {
        self.admission
            .insert(key, 1, 0)
            .map_err(map_err("ADMISSION", "insert"))
    }

    fn delete_admission(&mut self, key: &AdmitKey) -> Result<(), KernelError> {
        idempotent(self.admission.remove(key), "ADMISSION")
    }
}

fn idempotent(r: Result<(), aya::maps::MapError>, map: &'static str) -> Result<(), KernelError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) if is_enoent(&e) => Ok(()),
        r => r.map_err(map_err(map, "delete")),
    }
}
