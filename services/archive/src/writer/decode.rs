//! From Avro payloads to Arrow: writer schemas from the registry, lineage columns, row times.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tracing::warn;
use tributary_core::bus::{HandlerError, InboundRecord};
use tributary_core::schema::arrow::DecodedBatch;
use tributary_core::schema::wire;

use super::{
    Archiver, LINEAGE_OFFSET, LINEAGE_PARTITION, LINEAGE_SCHEMA_ID, LINEAGE_TIMESTAMP,
    LINEAGE_TOPIC,
};

impl Archiver {
    /// Makes every writer schema of the batch known to the decoder, asking the registry for new
    /// ids (retrying while it is unreachable; an id it does not know is left for the decoder to
    /// report, and the record goes to the dead-letter topic).
    pub(super) async fn learn_schemas(&mut self, payloads: &[&[u8]]) -> Result<(), HandlerError> {
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

    /// Each row's time in milliseconds: the catalog's event-time field, else the Kafka timestamp.
    pub(super) fn row_times(
        &self,
        decoded: &DecodedBatch,
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

/// The decoded batch with the lineage columns appended.
pub(super) fn with_lineage(
    decoded: &DecodedBatch,
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
