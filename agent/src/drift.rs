//! Drift between the eBPF maps and the applied configuration: another
//! program (or an operator with bpftool) may change or remove entries, and a
//! restore after a failed change may itself fail. A periodic check (and one on
//! request, `POST /reconcile`) converges the maps back, logging each entry
//! with its map and key and counting it in `sluice_bpf_map_drift_total`.
use std::{sync::Arc, time::Duration};

use crate::{
    kernel::{self, maps::DatapathMaps, KernelDesired, KernelError, ReconcileReport},
    metrics::{MapLabels, Metrics},
    reload::Runtime,
};

/// How often the eBPF maps are compared with the applied configuration.
pub const CHECK_PERIOD: Duration = Duration::from_secs(30);

/// Checks for drift every `period` and on request
/// ([`Runtime::request_drift_check`]), until aborted.
pub fn spawn_checker(runtime: &Arc<Runtime>, period: Duration) -> tokio::task::JoinHandle<()> {
    let this = runtime.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = this.drift_check_requested() => {}
            }
            match this.check_drift().await {
                Ok(r) if !r.changes.is_empty() => tracing::info!(
                    repaired = r.changes.len(),
                    "eBPF maps back in line with the applied configuration"
                ),
                Ok(_) => tracing::debug!("eBPF maps match the applied configuration"),
                Err(e) => {
                    tracing::warn!(error = %e, "eBPF drift check failed; next period retries")
                }
            }
        }
    })
}

/// Converges `maps` back to `applied` (the state of the served
/// configuration), logging and counting each entry that differed.
pub fn repair(
    maps: &mut dyn DatapathMaps,
    applied: &KernelDesired,
    metrics: &Metrics,
) -> Result<ReconcileReport, KernelError> {
    let report = kernel::reconcile(maps, applied).inspect_err(|e| {
        metrics
            .bpf_reconcile_errors
            .get_or_create(&MapLabels {
                map: e.map_name().unwrap_or("none"),
            })
            .inc();
    })?;
    for c in &report.changes {
        tracing::warn!(
            map = c.map,
            key = %c.key,
            kind = c.kind.label(),
            "eBPF map drift: entry differed from the applied configuration; repaired"
        );
        metrics
            .bpf_map_drift
            .get_or_create(&MapLabels { map: c.map })
            .inc();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use sluice_common::{ListenerKey, ListenerValue, PROTO_TCP, SOURCE_ALLOW, SOURCE_DENY};

    use super::*;
    use crate::kernel::{maps::FakeMaps, ChangeKind, KernelDesired, PortBlock, SourceRule};

    fn applied() -> KernelDesired {
        let mut d = KernelDesired::default();
        for port in [80, 443] {
            d.listeners.insert(
                ListenerKey::new([0; 16], port, PROTO_TCP),
                ListenerValue::new(1, 0),
            );
        }
        d.source_rules.insert(
            SourceRule::new(1, "10.0.0.0/8".parse().unwrap()),
            SOURCE_ALLOW,
        );
        d
    }

    fn count(
        family: &prometheus_client::metrics::family::Family<
            MapLabels,
            prometheus_client::metrics::counter::Counter,
        >,
        map: &'static str,
    ) -> u64 {
        family.get_or_create(&MapLabels { map }).get()
    }

    #[test]
    fn tampered_entries_are_detected_counted_and_repaired() {
        let metrics = Metrics::default();
        let d = applied();
        let mut maps = FakeMaps::default();
        kernel::reconcile(&mut maps, &d).unwrap();
        assert!(repair(&mut maps, &d, &metrics).unwrap().changes.is_empty());

        // Another program deletes a listener, flips a rule and adds a range.
        maps.listeners
            .remove(&ListenerKey::new([0; 16], 443, PROTO_TCP));
        *maps.source_rules.values_mut().next().unwrap() = SOURCE_DENY;
        maps.port_ranges.insert(
            PortBlock {
                addr: [0; 16],
                proto: PROTO_TCP,
                port: 30000,
                bits: 12,
            },
            ListenerValue::new(9, 0),
        );
        let report = repair(&mut maps, &d, &metrics).unwrap();
        let mut kinds: Vec<(&str, ChangeKind)> =
            report.changes.iter().map(|c| (c.map, c.kind)).collect();
        kinds.sort_by_key(|(m, _)| *m);
        assert_eq!(
            kinds,
            [
                ("LISTENERS", ChangeKind::Missing),
                ("PORT_RANGES", ChangeKind::Extra),
                ("SOURCE_RULES", ChangeKind::Differs),
            ]
        );
        assert!(
            report
                .changes
                .iter()
                .any(|c| c.map == "LISTENERS" && c.key.contains("port: 443")),
            "the key is named: {report:?}"
        );
        for map in ["LISTENERS", "PORT_RANGES", "SOURCE_RULES"] {
            assert_eq!(count(&metrics.bpf_map_drift, map), 1, "{map}");
        }
        assert_eq!(maps.listeners, d.listeners);
        assert_eq!(maps.source_rules, d.source_rules);
        assert!(maps.port_ranges.is_empty());

        // Repaired: the next check finds nothing and counts nothing.
        assert!(repair(&mut maps, &d, &metrics).unwrap().changes.is_empty());
        assert_eq!(count(&metrics.bpf_map_drift, "LISTENERS"), 1);
    }

    #[test]
    fn a_failing_repair_counts_an_error_for_the_map_and_the_next_one_finishes() {
        let metrics = Metrics::default();
        let d = applied();
        let mut maps = FakeMaps::default();
        maps.failures.insert("SOURCE_RULES", 1);
        let err = repair(&mut maps, &d, &metrics).unwrap_err();
        assert_eq!(err.map_name(), Some("SOURCE_RULES"));
        assert_eq!(count(&metrics.bpf_reconcile_errors, "SOURCE_RULES"), 1);
        let report = repair(&mut maps, &d, &metrics).unwrap();
        assert_eq!(report.changes.len(), 3);
        assert_eq!(maps.listeners, d.listeners);
    }
}
