//! The train-trigger's metrics (`tributary_train_trigger_*`): per trigger, policy and drift
//! measure.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DriftLabel {
    pub(crate) trigger: String,
    pub(crate) feature: String,
    pub(crate) metric: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PolicyLabel {
    pub(crate) trigger: String,
    pub(crate) policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TriggerLabel {
    pub(crate) trigger: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub(crate) drift: Family<DriftLabel, Gauge<f64, AtomicU64>>,
    pub(crate) fired: Family<PolicyLabel, Counter>,
    pub(crate) suppressed: Family<TriggerLabel, Counter>,
    pub(crate) windows: Family<TriggerLabel, Counter>,
    pub(crate) action_failures: Family<TriggerLabel, Counter>,
    pub(crate) records_in: Family<TriggerLabel, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them (as `tributary_train_trigger_*`) on `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("train_trigger");
        r.register(
            "drift",
            "drift of the last window against the reference, per feature and metric",
            metrics.drift.clone(),
        );
        r.register(
            "triggers_fired",
            "retraining requests, by policy",
            metrics.fired.clone(),
        );
        r.register(
            "triggers_suppressed",
            "requests held back by the cooldown",
            metrics.suppressed.clone(),
        );
        r.register(
            "windows",
            "drift windows evaluated",
            metrics.windows.clone(),
        );
        r.register(
            "action_failures",
            "webhook or job actions that failed every attempt",
            metrics.action_failures.clone(),
        );
        r.register(
            "records_in",
            "input records handled",
            metrics.records_in.clone(),
        );
        metrics
    }
}
