//! Per-partition state: the open file with its buffered rows, and the position to commit.

use std::time::Instant;

use arrow::array::{Array, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::kernels::cmp::gt;
use arrow::compute::{filter_record_batch, take_record_batch};
use tributary_core::bus::{HandlerError, InboundRecord};

use super::LINEAGE_OFFSET;
use crate::paths::Bucket;

/// A file being gathered for a partition: its key in the lake and its buffered rows.
pub(super) struct OpenFile {
    pub(super) key: String,
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) bucket: Bucket,
    pub(super) schema_id: u32,
    pub(super) first_offset: i64,
    pub(super) last_offset: i64,
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) batches: Vec<RecordBatch>,
    /// Rows of the batch being handled that go to this file, not yet taken into `batches`.
    pub(super) pending_rows: Vec<u32>,
    pub(super) opened: Instant,
}

impl OpenFile {
    /// A file for `record`'s partition whose first record is `record`.
    pub(super) fn new(key: String, record: &InboundRecord, bucket: Bucket, schema_id: u32) -> Self {
        Self {
            key,
            topic: record.topic.clone(),
            partition: record.partition,
            bucket,
            schema_id,
            first_offset: record.offset,
            last_offset: record.offset,
            records: 0,
            bytes: 0,
            batches: Vec::new(),
            pending_rows: Vec::new(),
            opened: Instant::now(),
        }
    }

    /// Drops the rows at or below `last` (another file holds them); the first offset moves to
    /// the first row left.
    pub(super) fn drop_through(&mut self, last: i64) -> Result<(), HandlerError> {
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

    /// Moves the rows gathered for the file in the current batch into its buffered batches.
    pub(super) fn take_pending(&mut self, full: &RecordBatch) -> Result<(), HandlerError> {
        if self.pending_rows.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(std::mem::take(&mut self.pending_rows));
        let part = take_record_batch(full, &indices).map_err(HandlerError::fatal)?;
        self.bytes += part.get_array_memory_size() as u64;
        self.records += part.num_rows() as u64;
        self.batches.push(part);
        Ok(())
    }
}

/// What the archive holds of a partition.
pub(super) struct PartitionState {
    pub(super) file: Option<OpenFile>,
    /// Next offset to read (last handled + 1).
    pub(super) next: i64,
    /// Records at or below this offset are already in the lake (found after a replay).
    pub(super) skip_through: i64,
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

impl PartitionState {
    /// The position to commit. Rule 3: never inside a durable file, whether written or found.
    pub(super) fn commit_position(&self) -> i64 {
        self.file
            .as_ref()
            .map_or_else(|| self.next.max(self.skip_through + 1), |f| f.first_offset)
    }
}
