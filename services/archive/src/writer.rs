//! The archive's batch handler: decodes records through the registry into Arrow, keeps one open
//! file per partition, and writes Parquet to the lake; offsets are committed only up to what is
//! durable.
//!
//! Effectively once, by three rules (docs/archive.md has the argument):
//! 1. A file's key is (topic, hour, partition, first offset) and a file is only ever created,
//!    never replaced: [`Lake::create_parquet`] puts it with `PutMode::Create`. When a key is
//!    taken (a replay after a crash, a replica that lost the partition and still writes, a put
//!    whose answer was lost), the writer reads the last offset of the file there, drops its rows
//!    up to it, and writes the rest under the key of its first remaining offset, by the same
//!    rule. So two files never hold the same offset, whoever writes them and in whatever order.
//! 2. Before opening a file the writer looks for a file at its key, and skips the records that
//!    file holds (a replay finds what it wrote before its commit was lost).
//! 3. The position committed for a partition never points inside a durable file: it is the
//!    first offset of the open file, else the offset after the last record handled or skipped
//!    (the end of the last file found), so the next owner starts at a file boundary or past
//!    the lake's end.
//!
//! Files are cut when the record time bucket or the schema changes or the file is full, and
//! also early (idle for `max_open_seconds`, memory pressure, shutdown): the rules above hold
//! whatever the cuts. A record at or below what the partition already handled (the partition
//! was assigned again and the consumer rewound) drops the partition's state and starts over.

mod close;
mod decode;
mod handler;
mod lake;
mod partition;
mod route;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parquet::file::properties::WriterProperties;
use tokio_util::sync::CancellationToken;
use tributary_core::bus::HandlerError;
use tributary_core::lake::Lake;
use tributary_core::schema::arrow::AvroBatchDecoder;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::telemetry::Readiness;

use crate::config::ArchiveSettings;
use crate::metrics::ArchiveMetrics;
use partition::PartitionState;

/// Parquet key/value metadata written into every file.
pub(crate) const META_TOPIC: &str = "tributary.topic";
pub(crate) const META_PARTITION: &str = "tributary.partition";
pub(crate) const META_FIRST_OFFSET: &str = "tributary.offset.first";
pub(crate) const META_LAST_OFFSET: &str = "tributary.offset.last";
pub(crate) const META_SCHEMA_ID: &str = "tributary.schema.id";
pub(crate) const META_AVRO_SCHEMA: &str = "avro.schema";

/// What the archive knows of a topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    pub(crate) event_time_field: Option<String>,
}

/// Lineage column names.
pub(crate) const LINEAGE_TOPIC: &str = "_kafka_topic";
pub(crate) const LINEAGE_PARTITION: &str = "_kafka_partition";
pub(crate) const LINEAGE_OFFSET: &str = "_kafka_offset";
pub(crate) const LINEAGE_TIMESTAMP: &str = "_kafka_timestamp";
pub(crate) const LINEAGE_SCHEMA_ID: &str = "_schema_id";

pub(crate) struct Archiver {
    lake: Lake,
    root: String,
    topics: HashMap<String, TopicInfo>,
    registry: RegistryClient,
    decoder: AvroBatchDecoder,
    schemas: HashMap<u32, Arc<str>>,
    partitions: BTreeMap<(String, i32), PartitionState>,
    settings: ArchiveSettings,
    properties: WriterProperties,
    metrics: ArchiveMetrics,
    shutdown: CancellationToken,
    /// Where the lake's failures are reported (`/readyz`), while they last.
    readiness: Readiness,
}

/// The part of the archive that reports the lake's failures to [`Readiness`].
const LAKE: &str = "lake";

impl Archiver {
    pub(crate) fn new(
        lake: Lake,
        topics: HashMap<String, TopicInfo>,
        registry: RegistryClient,
        settings: ArchiveSettings,
        properties: WriterProperties,
        metrics: ArchiveMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        let root = lake.root().to_string();
        let decoder = AvroBatchDecoder::new(None, settings.batch_records.max(1));
        Self {
            lake,
            root,
            topics,
            registry,
            decoder,
            schemas: HashMap::new(),
            partitions: BTreeMap::new(),
            settings,
            properties,
            metrics,
            shutdown,
            readiness: Readiness::default(),
        }
    }

    /// Reports the lake's failures (a write or a look that keeps failing) to `readiness`, so
    /// that `/readyz` says why the archive is stuck while it retries.
    pub(crate) fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    async fn wait(&self, d: Duration) -> Result<(), HandlerError> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(HandlerError::Interrupted("the lake was being retried".into())),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }
}

#[cfg(test)]
mod simulation;
