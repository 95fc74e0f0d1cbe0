//! Metrics of the ingest API (`tributary_ingest_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceTableLabel {
    pub(crate) source: String,
    pub(crate) table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabel {
    pub(crate) source: String,
}

#[derive(Debug, Clone)]
pub(crate) struct IngestMetrics {
    pub(crate) source_records: Family<SourceTableLabel, Counter>,
    pub(crate) source_dead_letters: Family<SourceTableLabel, Counter>,
    pub(crate) source_acknowledged_lsn: Family<SourceLabel, Gauge>,
    pub(crate) requests: Family<StatusLabel, Counter>,
    pub(crate) accepted: Family<TopicLabel, Counter>,
    pub(crate) rejected: Family<TopicLabel, Counter>,
    pub(crate) produce_latency: Histogram,
}

impl IngestMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            source_records: Family::default(),
            source_dead_letters: Family::default(),
            source_acknowledged_lsn: Family::default(),
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
        r.register(
            "source_records",
            "records written by postgresql and file sources, by source (and table for postgresql)",
            m.source_records.clone(),
        );
        r.register(
            "source_dead_letters",
            "rows, lines and files of postgresql and file sources sent to dlq.ingest, by source (and table for postgresql)",
            m.source_dead_letters.clone(),
        );
        r.register(
            "source_acknowledged_lsn",
            "the WAL position a change data capture source last acknowledged to its slot",
            m.source_acknowledged_lsn.clone(),
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
