//! The feature service's metrics (`tributary_feature_*`), per view.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ViewLabel {
    pub(crate) view: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub(crate) records_in: Family<ViewLabel, Counter>,
    pub(crate) late: Family<ViewLabel, Counter>,
    pub(crate) rejected: Family<ViewLabel, Counter>,
    pub(crate) emitted: Family<ViewLabel, Counter>,
    pub(crate) open_windows: Family<ViewLabel, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them (as `tributary_feature_*`) on `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("feature");
        r.register(
            "records_in",
            "input records handled",
            metrics.records_in.clone(),
        );
        r.register(
            "records_late",
            "records too late for every window (to the late topic)",
            metrics.late.clone(),
        );
        r.register(
            "records_rejected",
            "records that could not be read (to dlq.feature)",
            metrics.rejected.clone(),
        );
        r.register(
            "windows_emitted",
            "window results produced",
            metrics.emitted.clone(),
        );
        r.register(
            "open_windows",
            "windows held in state",
            metrics.open_windows.clone(),
        );
        metrics
    }
}
