//! `sluice_ingress_ignored_annotations`: the ingress-nginx annotations that
//! served Ingresses carry and Sluice ignores, so a migration can be watched
//! and alerted on rather than read from logs.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{gauge::ConstGauge, MetricType},
};

/// Per annotation, how many served Ingresses carry it; replaced on every
/// conversion of the Ingresses.
#[derive(Debug, Default)]
pub struct IgnoredAnnotations(Mutex<BTreeMap<String, u64>>);

impl IgnoredAnnotations {
    pub fn set(&self, counts: BTreeMap<String, u64>) {
        *self.0.lock().expect("ignored annotations lock") = counts;
    }

    pub fn get(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("ignored annotations lock").clone()
    }
}

/// Series of `sluice_ingress_ignored_annotations` before the rest are
/// summed as `other` (a label value per user-chosen name is unbounded).
const MAX_LABELS: usize = 50;

/// Encodes [`IgnoredAnnotations`] at scrape time.
#[derive(Debug)]
pub struct IgnoredAnnotationsCollector(pub Arc<IgnoredAnnotations>);

impl Collector for IgnoredAnnotationsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.get();
        let mut family = encoder.encode_descriptor(
            "sluice_ingress_ignored_annotations",
            "Served Ingresses carrying an nginx.ingress.kubernetes.io annotation that Sluice does \
             not support and ignores, by annotation.",
            None,
            MetricType::Gauge,
        )?;
        // Annotation names come from users: at most MAX_LABELS series (the
        // most common), the rest summed under `annotation="other"`.
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other: u64 = counts.iter().skip(MAX_LABELS).map(|(_, n)| n).sum();
        counts.truncate(MAX_LABELS);
        if other > 0 {
            counts.push(("other".into(), other));
        }
        for (name, n) in counts {
            let labels = [("annotation", name.as_str())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(n as i64).encode(metric)?;
        }
        Ok(())
    }
}
