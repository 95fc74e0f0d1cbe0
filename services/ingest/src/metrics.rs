//! Metrics of the ingest API (`tributary_ingest_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    pub(crate) status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicLabel {
    pub(crate) topic: String,
}

#[derive(Debug, Clone)]
pub(crate) struct IngestMetrics {
    pub(crate) requests: Family<StatusLabel, Counter>,
    pub(crate) accepted: Family<TopicLabel, Counter>,
    pub(crate) rejected: Family<TopicLabel, Counter>,
    pub(crate) produce_latency: Histogram,
}

impl IngestMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            accepted: Family::default(),
            rejected: Family::default(),
            // 1 ms to about 16 s.
            produce_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        };
        let r = registry.sub_registry_with_prefix("ingest");
        r.register(
            "requests",
            "requests answered, by http status",
            m.requests.clone(),
        );
        r.register(
            "records_accepted",
            "records acknowledged by kafka, by topic",
            m.accepted.clone(),
        );
        r.register(
            "records_rejected",
            "records refused (invalid, too many, rate limited), by topic",
            m.rejected.clone(),
        );
        r.register(
            "produce_latency_seconds",
            "time from a request's records being handed to the producer to their acknowledgement",
            m.produce_latency.clone(),
        );
        m
    }

    pub(crate) fn count(family: &Family<TopicLabel, Counter>, topic: &str, n: usize) {
        family
            .get_or_create(&TopicLabel {
                topic: topic.to_string(),
            })
            .inc_by(n as u64);
    }
}
