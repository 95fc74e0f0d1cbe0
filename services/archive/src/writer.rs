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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array,
};
use arrow::compute::kernels::cmp::gt;
use arrow::compute::{cast, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::bus::{BatchHandler, HandlerError, InboundRecord, Output};
use tributary_core::lake::{Created, Lake};
use tributary_core::schema::arrow::AvroBatchDecoder;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::schema::wire;
use tributary_core::telemetry::Readiness;

use crate::config::ArchiveSettings;
use crate::metrics::ArchiveMetrics;
use crate::paths::{Bucket, object_key};

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

struct OpenFile {
    key: String,
    topic: String,
    partition: i32,
    bucket: Bucket,
    schema_id: u32,
    first_offset: i64,
    last_offset: i64,
    records: u64,
    bytes: u64,
    batches: Vec<RecordBatch>,
    /// Rows of the batch being handled that go to this file, not yet taken into `batches`.
    pending_rows: Vec<u32>,
    opened: Instant,
}

impl OpenFile {
    /// Drops the rows at or below `last` (another file holds them); the first offset moves to
    /// the first row left.
    fn drop_through(&mut self, last: i64) -> Result<(), HandlerError> {
        let mut kept = Vec::with_capacity(self.batches.len());
        for batch in std::mem::take(&mut self.batches) {
            let offsets = batch
                .column_by_name(LINEAGE_OFFSET)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| HandlerError::fatal("a buffered batch has no offset column"))?;
            let mask = gt(offsets, &Int64Array::new_scalar(last)).map_err(HandlerError::fatal)?;
            let part = filter_record_batch(&batch, &mask).map_err(HandlerError::fatal)?;
            if part.num_rows() > 0 {
                kept.push(part);
            }
        }
        self.records = kept.iter().map(|b| b.num_rows() as u64).sum();
        self.bytes = kept.iter().map(|b| b.get_array_memory_size() as u64).sum();
        if let Some(first) = kept
            .first()
            .and_then(|b| b.column_by_name(LINEAGE_OFFSET))
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .map(|o| o.value(0))
        {
            self.first_offset = first;
        }
        self.batches = kept;
        Ok(())
    }
}

struct PartitionState {
    file: Option<OpenFile>,
    /// Next offset to read (last handled + 1).
    next: i64,
    /// Records at or below this offset are already in the lake (found after a replay).
    skip_through: i64,
}

impl Default for PartitionState {
    fn default() -> Self {
        Self {
            file: None,
            next: 0,
            skip_through: -1,
        }
    }
}

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

    /// Records that a record with nothing to archive (a tombstone, a dead letter) was handled,
    /// after the batch's archived records (positions only move forward).
    fn advance(&mut self, record: &InboundRecord) {
        let state = self
            .partitions
            .entry((record.topic.clone(), record.partition))
            .or_default();
        state.next = state.next.max(record.offset + 1);
    }

    /// Makes every writer schema of the batch known to the decoder, asking the registry for new
    /// ids (retrying while it is unreachable; an id it does not know is left for the decoder to
    /// report, and the record goes to the dead-letter topic).
    async fn learn_schemas(&mut self, payloads: &[&[u8]]) -> Result<(), HandlerError> {
        for payload in payloads {
            let Ok((id, _)) = wire::parse(payload) else {
                continue;
            };
            if self.decoder.is_registered(id) || self.schemas.contains_key(&id) {
                continue;
            }
            let mut backoff = Duration::from_millis(200);
            let schema = loop {
                match self.registry.schema_by_id(id).await {
                    Ok(s) => break Some(s),
                    Err(e) if e.error_code() == Some(40403) => break None,
                    Err(e) => {
                        warn!(id, error = %e, "registry unavailable; retrying");
                        self.wait(backoff).await?;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            };
            if let Some(schema) = schema {
                // A schema the decoder cannot take is reported per record by the decoder.
                if self.decoder.register(id, &schema).is_ok() {
                    self.schemas.insert(id, schema);
                }
            }
        }
        Ok(())
    }

    async fn wait(&self, d: Duration) -> Result<(), HandlerError> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(HandlerError::Interrupted("the lake was being retried".into())),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Writes a file to the lake, retrying with backoff until it is durable. Where another file
    /// already holds the key, the rows that file holds are dropped and the rest written under
    /// the key of their first offset (rule 1). Returns the last offset of the files found in
    /// the way, if any: the partition's records up to it are in the lake.
    async fn write(&self, mut file: OpenFile) -> Result<Option<i64>, HandlerError> {
        let mut found: Option<i64> = None;
        loop {
            if file.batches.is_empty() {
                return Ok(found);
            }
            if self.write_once(&file).await? {
                return Ok(found);
            }
            let Some(last) = self.existing_last_offset(&file.key).await? else {
                // Deleted between the put and the look: try again.
                continue;
            };
            self.metrics.keys_taken.inc();
            info!(key = %file.key, last, "a file is already at the key; writing only what follows it");
            found = Some(found.map_or(last, |f| f.max(last)));
            file.drop_through(last)?;
            file.key = object_key(
                &self.root,
                &file.topic,
                file.bucket,
                file.partition,
                file.first_offset,
            );
        }
    }

    /// One file, retried while the store fails: `true` once written, `false` if the key is taken.
    async fn write_once(&self, file: &OpenFile) -> Result<bool, HandlerError> {
        let Some(first) = file.batches.first() else {
            return Ok(true);
        };
        let schema = first.schema();
        let mut metadata = vec![
            KeyValue::new(META_TOPIC.to_string(), file.topic.clone()),
            KeyValue::new(META_PARTITION.to_string(), file.partition.to_string()),
            KeyValue::new(META_FIRST_OFFSET.to_string(), file.first_offset.to_string()),
            KeyValue::new(META_LAST_OFFSET.to_string(), file.last_offset.to_string()),
            KeyValue::new(META_SCHEMA_ID.to_string(), file.schema_id.to_string()),
        ];
        if let Some(avro) = self.schemas.get(&file.schema_id) {
            metadata.push(KeyValue::new(
                META_AVRO_SCHEMA.to_string(),
                avro.to_string(),
            ));
        }
        let properties = self
            .properties
            .clone()
            .into_builder()
            .set_key_value_metadata(Some(metadata))
            .build();
        let path = Path::from(file.key.as_str());
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            match self
                .lake
                .create_parquet(&path, schema.clone(), properties.clone(), &file.batches)
                .await
            {
                Ok(Created::Written(size)) => {
                    self.readiness.recover(LAKE);
                    self.metrics
                        .file_written(file.records, size, started.elapsed());
                    tracing::debug!(key = %file.key, records = file.records, "file written");
                    return Ok(true);
                }
                Ok(Created::AlreadyExists) => {
                    self.readiness.recover(LAKE);
                    return Ok(false);
                }
                Err(e) => {
                    self.metrics.write_errors.inc();
                    warn!(key = %file.key, error = %e, "writing a file failed; retrying");
                    self.readiness
                        .fail(LAKE, format!("writing {} failed: {e}", file.key));
                    self.wait(backoff).await?;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// The last offset a file already in the lake holds, if there is one at `key`.
    async fn existing_last_offset(&self, key: &str) -> Result<Option<i64>, HandlerError> {
        let path = Path::from(key);
        let mut backoff = Duration::from_millis(200);
        loop {
            let found = match self.lake.store().head(&path).await {
                Ok(meta) => read_last_offset(&self.lake, &path, meta.size).await,
                Err(e) => Err(FooterError::Store(e)),
            };
            match found {
                Ok(last) => {
                    self.readiness.recover(LAKE);
                    return Ok(Some(last));
                }
                Err(FooterError::Store(object_store::Error::NotFound { .. })) => {
                    self.readiness.recover(LAKE);
                    return Ok(None);
                }
                Err(FooterError::Invalid(message)) => return Err(HandlerError::fatal(message)),
                Err(FooterError::Store(e)) => {
                    warn!(key, error = %e, "checking for an existing file failed; retrying");
                    self.readiness
                        .fail(LAKE, format!("reading {key} failed: {e}"));
                    self.wait(backoff).await?;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Moves the rows gathered for a file in the current batch into its buffered batches.
    fn take_pending(file: &mut OpenFile, full: &RecordBatch) -> Result<(), HandlerError> {
        if file.pending_rows.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(std::mem::take(&mut file.pending_rows));
        let part = take_record_batch(full, &indices).map_err(HandlerError::fatal)?;
        file.bytes += part.get_array_memory_size() as u64;
        file.records += part.num_rows() as u64;
        file.batches.push(part);
        Ok(())
    }

    fn buffered_bytes(&self) -> u64 {
        self.partitions
            .values()
            .filter_map(|p| p.file.as_ref())
            .map(|f| f.bytes)
            .sum()
    }

    /// Closes the file of a partition, if open, and writes it; records that files found in the
    /// way hold are skipped from then on.
    async fn close(&mut self, key: &(String, i32)) -> Result<(), HandlerError> {
        let file = self.partitions.get_mut(key).and_then(|p| p.file.take());
        if let Some(file) = file
            && let Some(last) = self.write(file).await?
            && let Some(state) = self.partitions.get_mut(key)
        {
            state.skip_through = state.skip_through.max(last);
        }
        Ok(())
    }

    async fn close_all(&mut self, only_older_than: Option<Duration>) -> Result<(), HandlerError> {
        let keys: Vec<(String, i32)> = self
            .partitions
            .iter()
            .filter(|(_, p)| {
                p.file
                    .as_ref()
                    .is_some_and(|f| only_older_than.is_none_or(|age| f.opened.elapsed() >= age))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.close(&key).await?;
        }
        Ok(())
    }

    /// Writes the largest files early while the buffered total is over the limit.
    async fn relieve_memory(&mut self) -> Result<(), HandlerError> {
        while self.buffered_bytes() > self.settings.max_buffered_bytes {
            let largest = self
                .partitions
                .iter()
                .filter_map(|(k, p)| p.file.as_ref().map(|f| (f.bytes, k.clone())))
                .max()
                .map(|(_, k)| k);
            let Some(key) = largest else { break };
            self.metrics.early_flushes.inc();
            self.close(&key).await?;
        }
        Ok(())
    }

    async fn archive_batch(
        &mut self,
        records: &[&InboundRecord],
        decoded: tributary_core::schema::arrow::DecodedBatch,
    ) -> Result<(), HandlerError> {
        let full = with_lineage(&decoded, records)?;
        let times = self.row_times(&decoded, records)?;
        let mut touched: Vec<(String, i32)> = Vec::new();
        for (row, &index) in decoded.rows.iter().enumerate() {
            let record = records[index];
            let key = (record.topic.clone(), record.partition);
            let bucket = Bucket::of_millis(times[row]);
            let needs_new = {
                let state = self.partitions.entry(key.clone()).or_default();
                let rewound = match &state.file {
                    Some(f) => record.offset <= f.last_offset,
                    None => record.offset < state.next,
                };
                if rewound {
                    // Read again from an earlier position (assigned again after a revocation
                    // this handler did not hear of): what it holds is stale.
                    warn!(
                        topic = %record.topic,
                        partition = record.partition,
                        offset = record.offset,
                        "partition rewound; dropping its open file and starting over"
                    );
                    *state = PartitionState::default();
                }
                state.next = state.next.max(record.offset + 1);
                if record.offset <= state.skip_through {
                    continue;
                }
                match &state.file {
                    None => true,
                    Some(f) => {
                        f.bucket != bucket
                            || f.schema_id != decoded.schema_id
                            || f.records + f.pending_rows.len() as u64
                                >= self.settings.max_file_records
                            || f.bytes >= self.settings.max_file_bytes
                    }
                }
            };
            if needs_new {
                if let Some(state) = self.partitions.get_mut(&key)
                    && let Some(file) = state.file.as_mut()
                {
                    Self::take_pending(file, &full)?;
                }
                self.close(&key).await?;
                if self
                    .partitions
                    .get(&key)
                    .is_some_and(|s| record.offset <= s.skip_through)
                {
                    // The file just closed met another writer's file that holds this record.
                    continue;
                }
                let object = object_key(
                    &self.root,
                    &record.topic,
                    bucket,
                    record.partition,
                    record.offset,
                );
                if let Some(last) = self.existing_last_offset(&object).await? {
                    // Written before a crash whose commit was lost: those records are in the lake.
                    info!(key = %object, last, "file already in the lake; skipping its records");
                    if let Some(state) = self.partitions.get_mut(&key) {
                        state.skip_through = last;
                    }
                    if record.offset <= last {
                        continue;
                    }
                }
                if let Some(state) = self.partitions.get_mut(&key) {
                    state.file = Some(OpenFile {
                        key: object,
                        topic: record.topic.clone(),
                        partition: record.partition,
                        bucket,
                        schema_id: decoded.schema_id,
                        first_offset: record.offset,
                        last_offset: record.offset,
                        records: 0,
                        bytes: 0,
                        batches: Vec::new(),
                        pending_rows: Vec::new(),
                        opened: Instant::now(),
                    });
                }
            }
            if let Some(file) = self.partitions.get_mut(&key).and_then(|s| s.file.as_mut()) {
                file.pending_rows
                    .push(u32::try_from(row).map_err(|_| HandlerError::fatal("batch too large"))?);
                file.last_offset = record.offset;
            }
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        for key in touched {
            if let Some(file) = self.partitions.get_mut(&key).and_then(|s| s.file.as_mut()) {
                Self::take_pending(file, &full)?;
            }
        }
        Ok(())
    }

    /// Handles a batch: archives it, writes files early under memory pressure or when open too
    /// long, and returns the records that cannot be decoded, with why, for the dead-letter topic.
    async fn process<'r>(
        &mut self,
        batch: &'r [InboundRecord],
    ) -> Result<Vec<(&'r InboundRecord, String)>, HandlerError> {
        let failed = self.archive_records(batch).await?;
        self.relieve_memory().await?;
        // Files of partitions that stopped receiving records are written after a while, even
        // while other partitions keep the loop busy (ticks come only when all are quiet).
        self.close_all(Some(Duration::from_secs(self.settings.max_open_seconds)))
            .await?;
        Ok(failed)
    }

    /// Archives a batch: returns the records that cannot be decoded, with why. Tombstones carry
    /// no record to archive; their offsets still advance.
    async fn archive_records<'r>(
        &mut self,
        batch: &'r [InboundRecord],
    ) -> Result<Vec<(&'r InboundRecord, String)>, HandlerError> {
        let records: Vec<&InboundRecord> = batch.iter().filter(|r| r.payload.is_some()).collect();
        let payloads: Vec<&[u8]> = records
            .iter()
            .map(|r| r.payload.as_deref().unwrap_or_default())
            .collect();
        self.learn_schemas(&payloads).await?;
        let decoded = self.decoder.decode(payloads.iter().copied());
        for d in decoded.batches {
            self.archive_batch(&records, d).await?;
        }
        // After the archived records: a partition's records are handled in offset order.
        for r in batch.iter().filter(|r| r.payload.is_none()) {
            self.advance(r);
        }
        let mut failed = Vec::with_capacity(decoded.errors.len());
        for (index, error) in decoded.errors {
            let record = records[index];
            self.advance(record);
            failed.push((record, error.to_string()));
        }
        self.metrics.records_failed.inc_by(failed.len() as u64);
        Ok(failed)
    }

    /// Each row's time in milliseconds: the catalog's event-time field, else the Kafka timestamp.
    fn row_times(
        &self,
        decoded: &tributary_core::schema::arrow::DecodedBatch,
        records: &[&InboundRecord],
    ) -> Result<Vec<i64>, HandlerError> {
        let kafka_time = |row: usize| records[decoded.rows[row]].timestamp_ms.unwrap_or(0);
        let field = decoded
            .rows
            .first()
            .and_then(|i| self.topics.get(&records[*i].topic))
            .and_then(|t| t.event_time_field.as_deref());
        let column = field.and_then(|f| decoded.batch.column_by_name(f));
        let Some(column) = column else {
            return Ok((0..decoded.rows.len()).map(kafka_time).collect());
        };
        let per_ms = match column.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => -1000,
            DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 => 1,
            DataType::Timestamp(TimeUnit::Microsecond, _) => 1000,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000,
            _ => return Ok((0..decoded.rows.len()).map(kafka_time).collect()),
        };
        let raw = cast(column, &DataType::Int64).map_err(HandlerError::fatal)?;
        let raw = raw
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| HandlerError::fatal("event time is not an integer"))?;
        Ok((0..decoded.rows.len())
            .map(|row| {
                if raw.is_null(row) {
                    return kafka_time(row);
                }
                let v = raw.value(row);
                if per_ms < 0 {
                    v.saturating_mul(-per_ms)
                } else {
                    v.div_euclid(per_ms)
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod simulation;

/// Lineage column names.
pub(crate) const LINEAGE_TOPIC: &str = "_kafka_topic";
pub(crate) const LINEAGE_PARTITION: &str = "_kafka_partition";
pub(crate) const LINEAGE_OFFSET: &str = "_kafka_offset";
pub(crate) const LINEAGE_TIMESTAMP: &str = "_kafka_timestamp";
pub(crate) const LINEAGE_SCHEMA_ID: &str = "_schema_id";

/// The decoded batch with the lineage columns appended.
fn with_lineage(
    decoded: &tributary_core::schema::arrow::DecodedBatch,
    records: &[&InboundRecord],
) -> Result<RecordBatch, HandlerError> {
    let rows: Vec<&InboundRecord> = decoded.rows.iter().map(|i| records[*i]).collect();
    let schema = decoded.batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = decoded.batch.columns().to_vec();
    let lineage: [(Field, ArrayRef); 5] = [
        (
            Field::new(LINEAGE_TOPIC, DataType::Utf8, false),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.topic.as_str()),
            )),
        ),
        (
            Field::new(LINEAGE_PARTITION, DataType::Int32, false),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.partition),
            )),
        ),
        (
            Field::new(LINEAGE_OFFSET, DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset))),
        ),
        (
            Field::new(
                LINEAGE_TIMESTAMP,
                DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
                true,
            ),
            Arc::new(
                TimestampMillisecondArray::from(
                    rows.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>(),
                )
                .with_timezone("+00:00"),
            ),
        ),
        (
            Field::new(LINEAGE_SCHEMA_ID, DataType::Int32, false),
            Arc::new(Int32Array::from_iter_values(
                rows.iter()
                    .map(|_| i32::try_from(decoded.schema_id).unwrap_or(i32::MAX)),
            )),
        ),
    ];
    for (field, column) in lineage {
        fields.push(Arc::new(field));
        columns.push(column);
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    RecordBatch::try_new(schema, columns).map_err(HandlerError::fatal)
}

/// Why the last offset of a file in the lake could not be read.
#[derive(Debug)]
enum FooterError {
    /// The store failed (retried by the caller), or the object is gone.
    Store(object_store::Error),
    /// The object is not a file this archive wrote.
    Invalid(String),
}

impl From<object_store::Error> for FooterError {
    fn from(e: object_store::Error) -> Self {
        Self::Store(e)
    }
}

/// Reads the last offset recorded in a Parquet file's footer.
async fn read_last_offset(lake: &Lake, path: &Path, size: u64) -> Result<i64, FooterError> {
    let invalid = |what: &str| FooterError::Invalid(format!("{path} {what}"));
    if size < 12 {
        return Err(invalid(&format!("is not a parquet file ({size} bytes)")));
    }
    let tail = lake.store().get_range(path, size - 8..size).await?;
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if &tail[4..8] != b"PAR1" || len + 8 > size {
        return Err(invalid("has no parquet footer"));
    }
    let footer = lake
        .store()
        .get_range(path, size - 8 - len..size - 8)
        .await?;
    let metadata = ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| invalid(&format!("has an unreadable footer: {e}")))?;
    metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == META_LAST_OFFSET))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| invalid("does not say which offsets it holds"))
}

impl BatchHandler for Archiver {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        for (record, error) in self.process(batch).await? {
            out.dead_letter(record, "decode", &error).await?;
        }
        Ok(())
    }

    fn commit_positions(&self) -> Option<Vec<(String, i32, i64)>> {
        Some(
            self.partitions
                .iter()
                .map(|((topic, partition), state)| {
                    // Rule 3: never inside a durable file, whether written or found.
                    let position = state.file.as_ref().map_or_else(
                        || state.next.max(state.skip_through + 1),
                        |f| f.first_offset,
                    );
                    (topic.clone(), *partition, position)
                })
                .collect(),
        )
    }

    async fn tick(&mut self, _out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.close_all(Some(Duration::from_secs(self.settings.max_open_seconds)))
            .await
    }

    async fn finish(&mut self, _out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.close_all(None).await
    }

    fn partitions_revoked(&mut self, partitions: &[(String, i32)]) {
        // Their buffered records were not committed: the next owner reads them again and, by
        // the same rules, writes the same files.
        for key in partitions {
            self.partitions.remove(key);
        }
    }
}
