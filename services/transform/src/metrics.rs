//! Metrics of the transform service (`tributary_transform_*`, labelled by transform).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransformLabel {
    pub(crate) transform: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabel {
    pub(crate) transform: String,
    pub(crate) class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LookupLabel {
    pub(crate) transform: String,
    pub(crate) lookup: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TransformMetrics {
    pub(crate) records_in: Family<TransformLabel, Counter>,
    pub(crate) records_out: Family<TransformLabel, Counter>,
    pub(crate) rejected: Family<RejectLabel, Counter>,
    pub(crate) duplicates: Family<TransformLabel, Counter>,
    pub(crate) tombstones: Family<TransformLabel, Counter>,
    pub(crate) dedup_keys: Family<TransformLabel, Gauge>,
    pub(crate) lookup_keys: Family<LookupLabel, Gauge>,
}

impl TransformMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("transform");
        r.register("records_in", "input records handled", m.records_in.clone());
        r.register(
            "records_out",
            "records produced to the output topic",
            m.records_out.clone(),
        );
        r.register(
            "records_rejected",
            "records sent to dlq.transform, by class (decode, validation, sql, output)",
            m.rejected.clone(),
        );
        r.register(
            "duplicates_dropped",
            "records dropped as duplicates within the dedup window",
            m.duplicates.clone(),
        );
        r.register(
            "tombstones_skipped",
            "input tombstones (nothing to transform)",
            m.tombstones.clone(),
        );
        r.register(
            "dedup_keys",
            "keys held by the dedup window",
            m.dedup_keys.clone(),
        );
        r.register(
            "lookup_keys",
            "keys held by a lookup table",
            m.lookup_keys.clone(),
        );
        m
    }
}
