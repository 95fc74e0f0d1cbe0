//! The SQL's Arrow output read into rows of scalars: each record's entity, event time and
//! aggregation inputs.

use anyhow::Context;
use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use tributary_core::schema::columns::millis;

use super::View;
use crate::agg::Scalar;

/// One input record, evaluated.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) index: usize,
    pub(super) entity: Option<String>,
    pub(super) time: Option<i64>,
    pub(super) values: Vec<Scalar>,
}

impl View {
    /// The rows of the SQL's output, with the index (in the batch) of the record of each.
    pub(super) fn rows(
        &self,
        produced: &[RecordBatch],
        indices: &[usize],
    ) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(indices.len());
        let mut next = indices.iter();
        for batch in produced {
            let entity = text_column(batch.column(0))?;
            let time = millis_column(batch.column(1))?;
            let mut values: Vec<Vec<Scalar>> = Vec::with_capacity(self.aggs.len());
            let mut col = 2;
            for agg in &self.aggs {
                let n = batch.num_rows();
                let mut v = if agg.has_expr {
                    let c = scalars(batch.column(col))?;
                    col += 1;
                    c
                } else {
                    vec![Scalar::Number(1.0); n]
                };
                if agg.has_filter {
                    let w = batch
                        .column(col)
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .context("a where column is boolean")?;
                    col += 1;
                    for (r, value) in v.iter_mut().enumerate() {
                        if !(w.is_valid(r) && w.value(r)) {
                            *value = Scalar::Null;
                        }
                    }
                }
                values.push(v);
            }
            // Moved out column by column, row by row: no copy of any text.
            let mut columns: Vec<std::vec::IntoIter<Scalar>> =
                values.into_iter().map(Vec::into_iter).collect();
            for (entity, time) in entity.into_iter().zip(time) {
                let index = *next.next().context("more rows than records")?;
                rows.push(Row {
                    index,
                    entity,
                    time,
                    values: columns
                        .iter_mut()
                        .map(|c| c.next().unwrap_or(Scalar::Null))
                        .collect(),
                });
            }
        }
        Ok(rows)
    }
}

/// A column cast to text.
fn text_column(column: &ArrayRef) -> anyhow::Result<Vec<Option<String>>> {
    let text = cast(column, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .context("text")?;
    Ok(text.iter().map(|v| v.map(str::to_string)).collect())
}

/// A time column (a timestamp, a date, or milliseconds) as milliseconds.
fn millis_column(column: &ArrayRef) -> anyhow::Result<Vec<Option<i64>>> {
    Ok(millis(column)?.iter().collect())
}

/// A column as scalars: numbers and timestamps (milliseconds) as numbers, the rest as text.
fn scalars(column: &ArrayRef) -> anyhow::Result<Vec<Scalar>> {
    let numeric = match column.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            Some(cast(&millis(column)?, &DataType::Float64)?)
        }
        t if t.is_numeric() => Some(cast(column, &DataType::Float64)?),
        DataType::Boolean => Some(cast(column, &DataType::Float64)?),
        _ => None,
    };
    if let Some(numbers) = numeric {
        let numbers = numbers
            .as_any()
            .downcast_ref::<Float64Array>()
            .context("numbers")?;
        return Ok(numbers
            .iter()
            .map(|v| v.map_or(Scalar::Null, Scalar::Number))
            .collect());
    }
    Ok(text_column(column)?
        .into_iter()
        .map(|v| v.map_or(Scalar::Null, Scalar::Text))
        .collect())
}
