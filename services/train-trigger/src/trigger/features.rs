//! Feature values of input records: decoded, run through the features' SQL, read per row.

use std::collections::BTreeMap;

use anyhow::Context;
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use tributary_core::bus::InboundRecord;

use super::{Events, InputPlan};

/// The time and the feature values of each record of `fresh` that has a value, by record index;
/// the records that cannot be decoded go to `events.rejected`.
pub(super) async fn feature_rows(
    input: &mut InputPlan,
    records: &[&InboundRecord],
    fresh: &[usize],
    events: &mut Events,
) -> anyhow::Result<BTreeMap<usize, (Option<i64>, Vec<Value>)>> {
    let with_value: Vec<usize> = fresh
        .iter()
        .copied()
        .filter(|&i| records[i].payload.is_some())
        .collect();
    let payloads: Vec<&[u8]> = with_value
        .iter()
        .filter_map(|&i| records[i].payload.as_deref())
        .collect();
    let decoded = input.decoder.decode(payloads.iter().copied());
    for (index, error) in decoded.errors {
        events.rejected.push((with_value[index], error.to_string()));
    }
    // Feature values per record index.
    let mut rows: BTreeMap<usize, (Option<i64>, Vec<Value>)> = BTreeMap::new();
    for batch in decoded.batches {
        let produced = input
            .table
            .run(&input.statement, batch.batch.clone())
            .await
            .context("the features' SQL")?;
        let mut next = batch.rows.iter();
        for b in produced {
            let values = columns(&b, &input.features)?;
            for r in 0..b.num_rows() {
                let index = with_value[*next.next().context("rows")?];
                rows.insert(
                    index,
                    (values.0[r], values.1.iter().map(|c| c[r].clone()).collect()),
                );
            }
        }
    }
    Ok(rows)
}

/// A feature value.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Null,
    Number(f64),
    Text(String),
}

type Columns = (Vec<Option<i64>>, Vec<Vec<Value>>);

/// The time column and the feature columns of a batch of the features' SQL.
fn columns(batch: &RecordBatch, features: &[(String, bool)]) -> anyhow::Result<Columns> {
    let time = match batch.column(0).data_type() {
        DataType::Null => vec![None; batch.num_rows()],
        DataType::Timestamp(_, _) => ints(&cast(
            &cast(
                batch.column(0),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?,
            &DataType::Int64,
        )?)?,
        _ => ints(&cast(batch.column(0), &DataType::Int64)?)?,
    };
    let mut values = Vec::with_capacity(features.len());
    for (i, (_, categorical)) in features.iter().enumerate() {
        let column = batch.column(i + 1);
        let numeric =
            column.data_type().is_numeric() || matches!(column.data_type(), DataType::Boolean);
        if numeric && !categorical {
            let c = cast(column, &DataType::Float64)?;
            let c = c
                .as_any()
                .downcast_ref::<Float64Array>()
                .context("numbers")?;
            values.push(
                c.iter()
                    .map(|v| {
                        v.filter(|x| x.is_finite())
                            .map_or(Value::Null, Value::Number)
                    })
                    .collect(),
            );
        } else {
            let c = cast(column, &DataType::Utf8)?;
            let c = c.as_any().downcast_ref::<StringArray>().context("text")?;
            values.push(
                c.iter()
                    .map(|v| v.map_or(Value::Null, |s| Value::Text(s.to_string())))
                    .collect(),
            );
        }
    }
    Ok((time, values))
}

fn ints(column: &ArrayRef) -> anyhow::Result<Vec<Option<i64>>> {
    let c = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .context("integers")?;
    Ok(c.iter().collect())
}
