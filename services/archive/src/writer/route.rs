//! A batch's rows to their partitions' open files: rewinds, what the lake holds, cuts, positions.

use std::time::Duration;

use arrow::array::RecordBatch;
use tracing::{info, warn};
use tributary_core::bus::{HandlerError, InboundRecord};
use tributary_core::schema::arrow::DecodedBatch;

use super::Archiver;
use super::decode::with_lineage;
use super::partition::{OpenFile, PartitionState};
use crate::paths::{Bucket, object_key};

impl Archiver {
    /// Handles a batch: archives it, writes files early under memory pressure or when open too
    /// long, and returns the records that cannot be decoded, with why, for the dead-letter topic.
    pub(super) async fn process<'r>(
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

    /// Archives a decoded batch: each row goes to its partition's open file, a new one where the
    /// open file is cut.
    async fn archive_batch(
        &mut self,
        records: &[&InboundRecord],
        decoded: DecodedBatch,
    ) -> Result<(), HandlerError> {
        let full = with_lineage(&decoded, records)?;
        let times = self.row_times(&decoded, records)?;
        let mut touched: Vec<(String, i32)> = Vec::new();
        for (row, &index) in decoded.rows.iter().enumerate() {
            let record = records[index];
            let key = (record.topic.clone(), record.partition);
            let bucket = Bucket::of_millis(times[row]);
            let Some(needs_new) = self.place(&key, record, bucket, decoded.schema_id) else {
                continue;
            };
            if needs_new {
                self.cut(&key, &full).await?;
                if !self.open(&key, record, bucket, decoded.schema_id).await? {
                    continue;
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
                file.take_pending(&full)?;
            }
        }
        Ok(())
    }

    /// Where a record goes in its partition: `None` when the lake already holds it, else whether
    /// it needs a new file (none is open, or the open one is cut by the hour, the schema or the
    /// size). A rewound partition (a record at or below what it handled) starts over.
    fn place(
        &mut self,
        key: &(String, i32),
        record: &InboundRecord,
        bucket: Bucket,
        schema_id: u32,
    ) -> Option<bool> {
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
            return None;
        }
        Some(match &state.file {
            None => true,
            Some(f) => {
                f.bucket != bucket
                    || f.schema_id != schema_id
                    || f.records + f.pending_rows.len() as u64 >= self.settings.max_file_records
                    || f.bytes >= self.settings.max_file_bytes
            }
        })
    }

    /// Cuts the partition's open file, if any: its rows of the batch are taken, and it is
    /// written.
    async fn cut(&mut self, key: &(String, i32), full: &RecordBatch) -> Result<(), HandlerError> {
        if let Some(state) = self.partitions.get_mut(key)
            && let Some(file) = state.file.as_mut()
        {
            file.take_pending(full)?;
        }
        self.close(key).await
    }

    /// Opens the partition's file at `record`, unless a file in the lake holds the record:
    /// then `false`, and the records that file holds are skipped.
    async fn open(
        &mut self,
        key: &(String, i32),
        record: &InboundRecord,
        bucket: Bucket,
        schema_id: u32,
    ) -> Result<bool, HandlerError> {
        if self
            .partitions
            .get(key)
            .is_some_and(|s| record.offset <= s.skip_through)
        {
            // The file just closed met another writer's file that holds this record.
            return Ok(false);
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
            if let Some(state) = self.partitions.get_mut(key) {
                state.skip_through = last;
            }
            if record.offset <= last {
                return Ok(false);
            }
        }
        if let Some(state) = self.partitions.get_mut(key) {
            state.file = Some(OpenFile::new(object, record, bucket, schema_id));
        }
        Ok(true)
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
}
