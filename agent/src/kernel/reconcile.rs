//! Converges the maps to the desired state: read what is there, delete what
//! should not be, write what is missing or different. Running it twice is a
//! no-op the second time; after a failure, the next run finishes the job.
//! Every difference found is reported (map and key), so that a run against
//! the state already applied tells what drifted.
use std::{collections::BTreeMap, fmt::Debug};

use super::{maps::DatapathMaps, KernelDesired, KernelError};

/// What one reconcile changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileStats {
    pub written: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// How a map entry differed from the desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Desired but absent: written.
    Missing,
    /// Present with another value: rewritten.
    Differs,
    /// Present but not desired: deleted.
    Extra,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::Missing => "missing",
            ChangeKind::Differs => "differs",
            ChangeKind::Extra => "extra",
        }
    }
}

/// One entry the reconcile wrote or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapChange {
    pub map: &'static str,
    /// The key, readable (`Debug` of the user-space key type, or its `Display`).
    pub key: String,
    pub kind: ChangeKind,
}

/// Counts and the entries changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub stats: ReconcileStats,
    pub changes: Vec<MapChange>,
}

impl ReconcileReport {
    /// Changes per map name.
    pub fn changes_by_map(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for c in &self.changes {
            *out.entry(c.map).or_insert(0) += 1;
        }
        out
    }

    fn write<K: Debug>(&mut self, map: &'static str, key: &K, existed: bool) {
        self.stats.written += 1;
        self.changes.push(MapChange {
            map,
            key: format!("{key:?}"),
            kind: if existed {
                ChangeKind::Differs
            } else {
                ChangeKind::Missing
            },
        });
    }

    fn delete<K: Debug>(&mut self, map: &'static str, key: &K) {
        self.stats.deleted += 1;
        self.changes.push(MapChange {
            map,
            key: format!("{key:?}"),
            kind: ChangeKind::Extra,
        });
    }
}

pub fn reconcile(
    maps: &mut dyn DatapathMaps,
    desired: &KernelDesired,
) -> Result<ReconcileReport, KernelError> {
    let mut r = ReconcileReport::default();

    // Writes before deletes: a listener that moves between shards is never
    // absent, and new source rules are in place before old ones go.
    let current_rules = maps.dump_source_rules()?;
    converge(
        "SOURCE_RULES",
        &current_rules,
        &desired.source_rules,
        &mut r,
        |k, v| maps.put_source_rule(*k, *v),
    )?;
    // Identity and admission before listeners: a listener that starts
    // requiring admission finds its namespaces already in place.
    let current_ns = maps.dump_source_namespaces()?;
    converge(
        "SOURCE_NS",
        &current_ns,
        &desired.source_namespaces,
        &mut r,
        |k, v| maps.put_source_namespace(*k, *v),
    )?;
    let current_cgroups = maps.dump_cgroup_namespaces()?;
    converge(
        "CGROUP_NS",
        &current_cgroups,
        &desired.cgroup_namespaces,
        &mut r,
        |k, v| maps.put_cgroup_namespace(*k, *v),
    )?;
    let current_admissions = maps.dump_admissions()?;
    for key in &desired.admissions {
        if current_admissions.contains(key) {
            r.stats.unchanged += 1;
        } else {
            maps.put_admission(*key)?;
            r.write("ADMISSION", key, false);
        }
    }
    let current_listeners = maps.dump_listeners()?;
    converge(
        "LISTENERS",
        &current_listeners,
        &desired.listeners,
        &mut r,
        |k, v| maps.put_listener(*k, *v),
    )?;
    let current_ranges = maps.dump_port_ranges()?;
    converge(
        "PORT_RANGES",
        &current_ranges,
        &desired.port_ranges,
        &mut r,
        |k, v| maps.put_port_range(*k, *v),
    )?;

    for key in current_listeners.keys() {
        if !desired.listeners.contains_key(key) {
            maps.delete_listener(key)?;
            r.delete("LISTENERS", key);
        }
    }
    for key in current_ranges.keys() {
        if !desired.port_ranges.contains_key(key) {
            maps.delete_port_range(key)?;
            r.delete("PORT_RANGES", key);
        }
    }
    for rule in current_rules.keys() {
        if !desired.source_rules.contains_key(rule) {
            maps.delete_source_rule(rule)?;
            r.delete("SOURCE_RULES", rule);
        }
    }
    for key in &current_admissions {
        if !desired.admissions.contains(key) {
            maps.delete_admission(key)?;
            r.delete("ADMISSION", key);
        }
    }
    for key in current_cgroups.keys() {
        if !desired.cgroup_namespaces.contains_key(key) {
            maps.delete_cgroup_namespace(key)?;
            r.delete("CGROUP_NS", key);
        }
    }
    for key in current_ns.keys() {
        if !desired.source_namespaces.contains_key(key) {
            maps.delete_source_namespace(key)?;
            r.delete("SOURCE_NS", key);
        }
    }
    Ok(r)
}

/// Writes what is missing or different (deletes happen at the end of reconcile).
fn converge<K: Ord + Debug, V: PartialEq>(
    map: &'static str,
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
    report: &mut ReconcileReport,
    mut put: impl FnMut(&K, &V) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    for (k, v) in desired {
        match current.get(k) {
            Some(c) if c == v => report.stats.unchanged += 1,
            existing => {
                put(k, v)?;
                report.write(map, k, existing.is_some());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_common::{ListenerKey, ListenerValue, PROTO_TCP, SOURCE_ALLOW};

    use super::*;
    use crate::kernel::{maps::FakeMaps, SourceRule};

    fn desired(ports: &[u16]) -> KernelDesired {
        let mut d = KernelDesired::default();
        for p in ports {
            d.listeners.insert(
                ListenerKey::new([0; 16], *p, PROTO_TCP),
                ListenerValue::new(1, 0),
            );
        }
        d.source_rules.insert(
            SourceRule::new(1, "10.0.0.0/8".parse().unwrap()),
            SOURCE_ALLOW,
        );
        d
    }

    #[test]
    fn converges_and_is_idempotent() {
        let mut m = FakeMaps::default();
        let s = reconcile(&mut m, &desired(&[80, 81])).unwrap().stats;
        assert_eq!((s.written, s.deleted), (3, 0));
        let s = reconcile(&mut m, &desired(&[80, 81])).unwrap().stats;
        assert_eq!((s.written, s.deleted, s.unchanged), (0, 0, 3));
        let s = reconcile(&mut m, &desired(&[81, 82])).unwrap().stats;
        assert_eq!((s.written, s.deleted), (1, 1));
        assert_eq!(m.listeners.len(), 2);
    }

    #[test]
    fn removes_stale_entries_left_by_a_previous_agent() {
        let mut m = FakeMaps::default();
        m.listeners.insert(
            ListenerKey::new([1; 16], 9, PROTO_TCP),
            ListenerValue::new(9, 0),
        );
        reconcile(&mut m, &desired(&[80])).unwrap();
        assert_eq!(m.listeners.len(), 1);
        assert!(m.listeners.keys().all(|k| k.port == 80));
    }

    #[test]
    fn a_failed_run_is_finished_by_the_next() {
        let mut m = FakeMaps {
            fail_after_writes: Some(1),
            ..Default::default()
        };
        assert!(reconcile(&mut m, &desired(&[80, 81, 82])).is_err());
        m.fail_after_writes = None;
        reconcile(&mut m, &desired(&[80, 81, 82])).unwrap();
        assert_eq!(m.listeners.len(), 3);
        assert_eq!(m.source_rules.len(), 1);
    }

    #[test]
    fn namespace_identity_and_admissions_converge() {
        let mut m = FakeMaps::default();
        let mut d = desired(&[80]);
        d.source_namespaces.insert(([0; 16], 0), 7);
        d.cgroup_namespaces.insert(42, 7);
        d.admissions.insert(sluice_common::AdmitKey {
            shard: 1,
            namespace: 7,
        });
        reconcile(&mut m, &d).unwrap();
        assert_eq!(m.admissions.len(), 1);
        assert_eq!(m.cgroup_namespaces.get(&42), Some(&7));
        d.admissions.clear();
        d.cgroup_namespaces.clear();
        let s = reconcile(&mut m, &d).unwrap();
        assert_eq!(s.stats.deleted, 2);
        assert!(m.admissions.is_empty() && m.cgroup_namespaces.is_empty());
        assert_eq!(m.source_namespaces.len(), 1);
    }

    #[test]
    fn full_map_is_a_clear_error() {
        let mut m = FakeMaps {
            max_listeners: Some(2),
            ..Default::default()
        };
        let err = reconcile(&mut m, &desired(&[80, 81, 82]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LISTENERS is full") && err.contains("--map-size LISTENERS=N"),
            "{err}"
        );
    }

    #[test]
    fn port_range_blocks_converge_with_the_listeners() {
        let mut m = FakeMaps::default();
        let block = |port, bits| crate::kernel::PortBlock {
            addr: [0; 16],
            proto: PROTO_TCP,
            port,
            bits,
        };
        let mut d = desired(&[80]);
        d.port_ranges
            .insert(block(30000, 12), ListenerValue::new(1, 0));
        d.port_ranges
            .insert(block(30016, 16), ListenerValue::new(1, 0));
        let r = reconcile(&mut m, &d).unwrap();
        assert_eq!(r.changes_by_map().get("PORT_RANGES"), Some(&2));
        assert_eq!(m.port_ranges, d.port_ranges);
        // A block moved to another shard is rewritten, a dropped one deleted.
        d.port_ranges
            .insert(block(30000, 12), ListenerValue::new(2, 0));
        d.port_ranges.remove(&block(30016, 16));
        let r = reconcile(&mut m, &d).unwrap();
        let kinds: Vec<ChangeKind> = r
            .changes
            .iter()
            .filter(|c| c.map == "PORT_RANGES")
            .map(|c| c.kind)
            .collect();
        assert_eq!(kinds, [ChangeKind::Differs, ChangeKind::Extra]);
        assert_eq!(m.port_ranges, d.port_ranges);
        assert_eq!(reconcile(&mut m, &d).unwrap().changes, []);
    }
}
