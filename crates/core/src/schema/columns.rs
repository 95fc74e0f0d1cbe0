//! Columns of decoded batches as the services read them: a nested field by its path, times as
//! milliseconds.

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StructArray, make_array};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::error::ArrowError;

/// A column, or a field of a nested record (`a.b`), of a batch; `None` if the path names no
/// column. A field of a null record is null.
pub fn column_at(batch: &RecordBatch, path: &str) -> Option<ArrayRef> {
    let mut parts = path.split('.');
    let mut column = batch.column_by_name(parts.next()?)?.clone();
    for part in parts {
        let parent = column.as_any().downcast_ref::<StructArray>()?;
        let child = parent.column_by_name(part)?.clone();
        column = match parent.nulls() {
            Some(nulls) => {
                let combined = NullBuffer::union(Some(nulls), child.nulls());
                make_array(
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

/// A time column as milliseconds since the epoch: timestamps of any unit and dates are
/// converted, integers are taken as milliseconds already. Nulls stay null.
pub fn millis(column: &ArrayRef) -> Result<Int64Array, ArrowError> {
    let millis = match column.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => cast(
            &cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            &DataType::Int64,
        )?,
        _ => cast(column, &DataType::Int64)?,
    };
    Ok(millis.as_primitive::<Int64Type>().clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use arrow::array::{
        Date32Array, Int32Array, StringArray, TimestampMicrosecondArray, TimestampSecondArray,
    };
    use arrow::datatypes::{Field, Fields, Schema};

    use super::*;

    #[test]
    fn times_of_every_unit_become_milliseconds_and_nulls_stay() {
        let micros: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1_500_999), None]));
        assert_eq!(
            millis(&micros).unwrap(),
            Int64Array::from(vec![Some(1_500), None])
        );
        let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(vec![Some(2)]));
        assert_eq!(millis(&seconds).unwrap(), Int64Array::from(vec![2_000]));
        let days: ArrayRef = Arc::new(Date32Array::from(vec![Some(1)]));
        assert_eq!(millis(&days).unwrap(), Int64Array::from(vec![86_400_000]));
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(7), None]));
        assert_eq!(
            millis(&ints).unwrap(),
            Int64Array::from(vec![Some(7), None])
        );
        let text: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        assert_eq!(
            millis(&text).unwrap(),
            Int64Array::from(vec![None]),
            "not a number: null"
        );
    }

    #[test]
    fn nested_fields_are_found_by_path_and_a_null_parent_makes_them_null() {
        let url: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b")]));
        let page = StructArray::new(
            Fields::from(vec![Field::new("url", DataType::Utf8, true)]),
            vec![url],
            Some(NullBuffer::from(vec![true, false])),
        );
        let schema = Schema::new(vec![Field::new("page", page.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(page)]).unwrap();
        let urls = column_at(&batch, "page.url").unwrap();
        let urls = urls.as_string::<i32>();
        assert_eq!(urls.iter().collect::<Vec<_>>(), vec![Some("a"), None]);
        assert!(column_at(&batch, "page.missing").is_none());
        assert!(column_at(&batch, "nothing").is_none());
        assert!(column_at(&batch, "page").is_some());
    }
}
