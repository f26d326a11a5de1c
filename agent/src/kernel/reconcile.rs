//! Converges the maps to the desired state: read what is there, delete what
//! should not be, write what is missing or different. Running it twice is a
//! no-op the second time; after a failure, the next run finishes the job.
use super::{maps::DatapathMaps, KernelDesired, KernelError};

/// What one reconcile changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileStats {
    pub written: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

pub fn reconcile(
    maps: &mut dyn DatapathMaps,
    desired: &KernelDesired,
) -> Result<ReconcileStats, KernelError> {
    let mut stats = ReconcileStats::default();

    // Writes before deletes: a listener that moves between shards is never
    // absent, and new source rules are in place before old ones go.
    let current = maps.dump_source_rules()?;
    for (rule, action) in &desired.source_rules {
        if current.get(rule) == Some(action) {
            stats.unchanged += 1;
        } else {
            maps.put_source_rule(*rule, *action)?;
            stats.written += 1;
        }
    }
    // Identity and admission before listeners: a listener that starts
    // requiring admission finds its namespaces already in place.
    converge(
        &maps.dump_source_namespaces()?,
        &desired.source_namespaces,
        &mut stats,
        |k, v| maps.put_source_namespace(*k, *v),
    )?;
    converge(
        &maps.dump_cgroup_namespaces()?,
        &desired.cgroup_namespaces,
        &mut stats,
        |k, v| maps.put_cgroup_namespace(*k, *v),
    )?;
    let current_admissions = maps.dump_admissions()?;
    for key in &desired.admissions {
        if current_admissions.contains(key) {
            stats.unchanged += 1;
        } else {
            maps.put_admission(*key)?;
            stats.written += 1;
        }
    }
    let current_listeners = maps.dump_listeners()?;
    for (key, value) in &desired.listeners {
        if current_listeners.get(key) == Some(value) {
            stats.unchanged += 1;
        } else {
            maps.put_listener(*key, *value)?;
            stats.written += 1;
        }
    }
    for key in current_listeners.keys() {
        if !desired.listeners.contains_key(key) {
            maps.delete_listener(key)?;
            stats.deleted += 1;
        }
    }
    for rule in current.keys() {
        if !desired.source_rules.contains_key(rule) {
            maps.delete_source_rule(rule)?;
            stats.deleted += 1;
        }
    }
    for key in &current_admissions {
        if !desired.admissions.contains(key) {
            maps.delete_admission(key)?;
            stats.deleted += 1;
        }
    }
    for key in maps.dump_cgroup_namespaces()?.keys() {
        if !desired.cgroup_namespaces.contains_key(key) {
            maps.delete_cgroup_namespace(key)?;
            stats.deleted += 1;
        }
    }
    for key in maps.dump_source_namespaces()?.keys() {
        if !desired.source_namespaces.contains_key(key) {
            maps.delete_source_namespace(key)?;
            stats.deleted += 1;
        }
    }
    Ok(stats)
}

/// Writes what is missing or different (deletes happen at the end of reconcile).
fn converge<K: Ord, V: PartialEq>(
    current: &std::collections::BTreeMap<K, V>,
    desired: &std::collections::BTreeMap<K, V>,
    stats: &mut ReconcileStats,
    mut put: impl FnMut(&K, &V) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    for (k, v) in desired {
        if current.get(k) == Some(v) {
            stats.unchanged += 1;
        } else {
            put(k, v)?;
            stats.written += 1;
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
        let s = reconcile(&mut m, &desired(&[80, 81])).unwrap();
        assert_eq!((s.written, s.deleted), (3, 0));
        let s = reconcile(&mut m, &desired(&[80, 81])).unwrap();
        assert_eq!((s.written, s.deleted, s.unchanged), (0, 0, 3));
        let s = reconcile(&mut m, &desired(&[81, 82])).unwrap();
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
        assert_eq!(s.deleted, 2);
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
}
