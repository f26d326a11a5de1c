//! The narrow interface the reconciler programs the kernel through. Deletes are
//! idempotent (deleting a missing key is not an error), so a retried or
//! repeated reconcile converges instead of failing.
use std::collections::BTreeMap;

use std::collections::BTreeSet;

use sluice_common::{AdmitKey, ListenerKey, ListenerValue};

use super::{KernelError, PortBlock, SourceRule};

pub trait DatapathMaps {
    fn dump_listeners(&self) -> Result<BTreeMap<ListenerKey, ListenerValue>, KernelError>;
    fn put_listener(&mut self, key: ListenerKey, value: ListenerValue) -> Result<(), KernelError>;
    fn delete_listener(&mut self, key: &ListenerKey) -> Result<(), KernelError>;
    fn dump_port_ranges(&self) -> Result<BTreeMap<PortBlock, ListenerValue>, KernelError>;
    fn put_port_range(&mut self, block: PortBlock, value: ListenerValue)
        -> Result<(), KernelError>;
    fn delete_port_range(&mut self, block: &PortBlock) -> Result<(), KernelError>;
    fn dump_source_rules(&self) -> Result<BTreeMap<SourceRule, u32>, KernelError>;
    fn put_source_rule(&mut self, rule: SourceRule, action: u32) -> Result<(), KernelError>;
    fn delete_source_rule(&mut self, rule: &SourceRule) -> Result<(), KernelError>;
    fn dump_source_namespaces(&self) -> Result<BTreeMap<([u8; 16], u8), u32>, KernelError>;
    fn put_source_namespace(&mut self, prefix: ([u8; 16], u8), ns: u32) -> Result<(), KernelError>;
    fn delete_source_namespace(&mut self, prefix: &([u8; 16], u8)) -> Result<(), KernelError>;
    fn dump_cgroup_namespaces(&self) -> Result<BTreeMap<u64, u32>, KernelError>;
    fn put_cgroup_namespace(&mut self, cgroup: u64, ns: u32) -> Result<(), KernelError>;
    fn delete_cgroup_namespace(&mut self, cgroup: &u64) -> Result<(), KernelError>;
    fn dump_admissions(&self) -> Result<BTreeSet<AdmitKey>, KernelError>;
    fn put_admission(&mut self, key: AdmitKey) -> Result<(), KernelError>;
    fn delete_admission(&mut self, key: &AdmitKey) -> Result<(), KernelError>;
}

/// In-memory maps for tests, with injectable failures.
#[derive(Debug, Default)]
pub struct FakeMaps {
    pub listeners: BTreeMap<ListenerKey, ListenerValue>,
    pub port_ranges: BTreeMap<PortBlock, ListenerValue>,
    pub source_rules: BTreeMap<SourceRule, u32>,
    pub source_namespaces: BTreeMap<([u8; 16], u8), u32>,
    pub cgroup_namespaces: BTreeMap<u64, u32>,
    pub admissions: BTreeSet<AdmitKey>,
    /// Fail every write after this many successful ones (`None`: never).
    pub fail_after_writes: Option<usize>,
    /// Transient faults: the next N writes to the named map fail (EIO).
    pub failures: BTreeMap<&'static str, usize>,
    pub writes: usize,
    /// Capacity of the listener map, as the kernel would enforce it.
    pub max_listeners: Option<usize>,
}

impl FakeMaps {
    fn write(&mut self, map: &'static str) -> Result<(), KernelError> {
        let injected = match self.failures.get_mut(map) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        if injected || self.fail_after_writes.is_some_and(|n| self.writes >= n) {
            return Err(KernelError::Map {
                map,
                action: "update".into(),
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_elem",
                    io_error: std::io::Error::from_raw_os_error(libc::EIO),
                }),
            });
        }
        self.writes += 1;
        Ok(())
    }
}

impl DatapathMaps for FakeMaps {
    fn dump_listeners(&self) -> Result<BTreeMap<ListenerKey, ListenerValue>, KernelError> {
        Ok(self.listeners.clone())
    }
    fn put_listener(&mut self, key: ListenerKey, value: ListenerValue) -> Result<(), KernelError> {
        if self
            .max_listeners
            .is_some_and(|m| self.listeners.len() >= m)
            && !self.listeners.contains_key(&key)
        {
            return Err(KernelError::MapFull { map: "LISTENERS" });
        }
        self.write("LISTENERS")?;
        self.listeners.insert(key, value);
        Ok(())
    }
    fn delete_listener(&mut self, key: &ListenerKey) -> Result<(), KernelError> {
        self.write("LISTENERS")?;
        self.listeners.remove(key);
        Ok(())
    }
    fn dump_port_ranges(&self) -> Result<BTreeMap<PortBlock, ListenerValue>, KernelError> {
        Ok(self.port_ranges.clone())
    }
    fn put_port_range(
        &mut self,
        block: PortBlock,
        value: ListenerValue,
    ) -> Result<(), KernelError> {
        self.write("PORT_RANGES")?;
        self.port_ranges.insert(block, value);
        Ok(())
    }
    fn delete_port_range(&mut self, block: &PortBlock) -> Result<(), KernelError> {
        self.write("PORT_RANGES")?;
        self.port_ranges.remove(block);
        Ok(())
    }
    fn dump_source_rules(&self) -> Result<BTreeMap<SourceRule, u32>, KernelError> {
        Ok(self.source_rules.clone())
    }
    fn put_source_rule(&mut self, rule: SourceRule, action: u32) -> Result<(), KernelError> {
        self.write("SOURCE_RULES")?;
        self.source_rules.insert(rule, action);
        Ok(())
    }
    fn delete_source_rule(&mut self, rule: &SourceRule) -> Result<(), KernelError> {
        self.write("SOURCE_RULES")?;
        self.source_rules.remove(rule);
        Ok(())
    }
    fn dump_source_namespaces(&self) -> Result<BTreeMap<([u8; 16], u8), u32>, KernelError> {
        Ok(self.source_namespaces.clone())
    }
    fn put_source_namespace(&mut self, prefix: ([u8; 16], u8), ns: u32) -> Result<(), KernelError> {
        self.write("SOURCE_NS")?;
        self.source_namespaces.insert(prefix, ns);
        Ok(())
    }
    fn delete_source_namespace(&mut self, prefix: &([u8; 16], u8)) -> Result<(), KernelError> {
        self.write("SOURCE_NS")?;
        self.source_namespaces.remove(prefix);
        Ok(())
    }
    fn dump_cgroup_namespaces(&self) -> Result<BTreeMap<u64, u32>, KernelError> {
        Ok(self.cgroup_namespaces.clone())
    }
    fn put_cgroup_namespace(&mut self, cgroup: u64, ns: u32) -> Result<(), KernelError> {
        self.write("CGROUP_NS")?;
        self.cgroup_namespaces.insert(cgroup, ns);
        Ok(())
    }
    fn delete_cgroup_namespace(&mut self, cgroup: &u64) -> Result<(), KernelError> {
        self.write("CGROUP_NS")?;
        self.cgroup_namespaces.remove(cgroup);
        Ok(())
    }
    fn dump_admissions(&self) -> Result<BTreeSet<AdmitKey>, KernelError> {
        Ok(self.admissions.clone())
    }
    fn put_admission(&mut self, key: AdmitKey) -> Result<(), KernelError> {
        self.write("ADMISSION")?;
        self.admissions.insert(key);
        Ok(())
    }
    fn delete_admission(&mut self, key: &AdmitKey) -> Result<(), KernelError> {
        self.write("ADMISSION")?;
        self.admissions.remove(key);
        Ok(())
    }
}
