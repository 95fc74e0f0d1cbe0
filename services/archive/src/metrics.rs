//! Metrics of the archive (`tributary_archive_*`).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub(crate) struct ArchiveMetrics {
    pub(crate) records_archived: Counter,
    pub(crate) records_failed: Counter,
    pub(crate) files_written: Counter,
    pub(crate) bytes_written: Counter,
    pub(crate) write_errors: Counter,
    pub(crate) early_flushes: Counter,
    pub(crate) keys_taken: Counter,
    pub(crate) write_seconds: Histogram,
}

impl ArchiveMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            records_archived: Counter::default(),
            records_failed: Counter::default(),
            files_written: Counter::default(),
            bytes_written: Counter::default(),
            write_errors: Counter::default(),
            early_flushes: Counter::default(),
            keys_taken: Counter::default(),
            write_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
        };
        let r = registry.sub_registry_with_prefix("archive");
        r.register(
            "records_archived",
            "records written to the lake",
            m.records_archived.clone(),
        );
        r.register(
            "records_failed",
            "records that could not be decoded (sent to dlq.archive)",
            m.records_failed.clone(),
        );
        r.register(
            "files_written",
            "parquet files written",
            m.files_written.clone(),
        );
        r.register(
            "bytes_written",
            "bytes of parquet written",
            m.bytes_written.clone(),
        );
        r.register(
            "write_errors",
            "failed attempts to write a file (retried)",
            m.write_errors.clone(),
        );
        r.register(
            "early_flushes",
            "files written early because of memory pressure",
            m.early_flushes.clone(),
        );
        r.register(
            "keys_taken",
            "files not written because a file was already at their key (a replay, another replica)",
            m.keys_taken.clone(),
        );
        r.register(
            "write_seconds",
            "time to write one file",
            m.write_seconds.clone(),
        );
        m
    }

    pub(crate) fn file_written(&self, records: u64, bytes: u64, took: Duration) {
        self.records_archived.inc_by(records);
        self.files_written.inc();
        self.bytes_written.inc_by(bytes);
        self.write_seconds.observe(took.as_secs_f64());
    }
}
