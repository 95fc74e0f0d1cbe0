use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicLabel {
    pub(crate) topic: String,
}

/// Metrics of the bus, updated per batch (never per record in a hot path).
#[derive(Debug, Clone, Default)]
pub struct BusMetrics {
    pub(crate) consumed: Family<TopicLabel, Counter>,
    pub(crate) produced: Family<TopicLabel, Counter>,
    pub(crate) delivery_failures: Family<TopicLabel, Counter>,
    pub(crate) dead_letters: Family<TopicLabel, Counter>,
    pub(crate) batches: Counter,
    pub(crate) handler_errors: Counter,
    pub(crate) handler_retries: Counter,
    pub(crate) rebalances: Counter,
}

impl BusMetrics {
    /// Creates the metrics and registers them (as `tributary_bus_*`) on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("bus");
        r.register(
            "records_consumed",
            "records received from kafka",
            m.consumed.clone(),
        );
        r.register(
            "records_produced",
            "records acknowledged by kafka",
            m.produced.clone(),
        );
        r.register(
            "delivery_failures",
            "records kafka did not acknowledge",
            m.delivery_failures.clone(),
        );
        r.register(
            "dead_letters",
            "records sent to a dead-letter topic",
            m.dead_letters.clone(),
        );
        r.register(
            "batches",
            "batches handed to the handler",
            m.batches.clone(),
        );
        r.register(
            "handler_errors",
            "handler calls that failed (retried, dead-lettered or stopping)",
            m.handler_errors.clone(),
        );
        r.register(
            "handler_retries",
            "batches handed again after the handler met an outage",
            m.handler_retries.clone(),
        );
        r.register(
            "rebalances",
            "partition revocations seen",
            m.rebalances.clone(),
        );
        m
    }

    pub(crate) fn add(family: &Family<TopicLabel, Counter>, topic: &str, n: u64) {
        family
            .get_or_create(&TopicLabel {
                topic: topic.to_string(),
            })
            .inc_by(n);
    }
}
