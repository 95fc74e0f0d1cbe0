//! Columns of a decoded batch: fields of nested records, and event times in milliseconds.

use anyhow::Context;
use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};

/// A column, or a field of a nested record (`a.b`), of a batch.
pub(super) fn column_at(batch: &RecordBatch, path: &str) -> Option<ArrayRef> {
    let mut parts = path.split('.');
    let mut column = batch.column_by_name(parts.next()?)?.clone();
    for part in parts {
        let parent = column.as_any().downcast_ref::<StructArray>()?;
        let child = parent.column_by_name(part)?.clone();
        // A field of a null record is null.
        column = match parent.nulls() {
            Some(nulls) => {
                let combined = arrow::buffer::NullBuffer::union(Some(nulls), child.nulls());
                arrow::array::make_array(
                    child
                        .to_data()
                        .into_builder()
                        .nulls(combined)
                        .build()
                        .ok()?,
                )
            }
            None => child,
        };
    }
    Some(column)
}

/// Event times in milliseconds (a null counts as 0).
pub(super) fn event_times(column: &ArrayRef) -> anyhow::Result<Vec<i64>> {
    let millis = match column.data_type() {
        DataType::Timestamp(_, _) => cast(
            &cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            &DataType::Int64,
        )?,
        _ => cast(column, &DataType::Int64)?,
    };
    let millis = millis
        .as_any()
        .downcast_ref::<Int64Array>()
        .context("event times cast to Int64")?;
    Ok((0..millis.len())
        .map(|i| {
            if millis.is_valid(i) {
                millis.value(i)
            } else {
                0
            }
        })
        .collect())
}
