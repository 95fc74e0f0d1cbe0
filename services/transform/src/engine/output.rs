//! Running the SQL on the rows kept, fitting the result to the output schema and encoding it.

use arrow::array::RecordBatch;
use bytes::Bytes;
use tributary_core::schema::arrow::AvroBatchEncoder;
use tributary_core::schema::conform::key_text;

use super::{InputPlan, Rejection};

/// Runs the SQL on validated, deduplicated rows, fits the result to the output schema and
/// encodes it, keyed by the output's key field.
pub(super) async fn transform(
    input: &InputPlan,
    encoder: &mut AvroBatchEncoder,
    key_field: Option<&str>,
    batch: RecordBatch,
) -> Result<Vec<(Option<Vec<u8>>, Bytes)>, (Rejection, String)> {
    let produced = input
        .run(&input.plan, batch)
        .await
        .map_err(|e| (Rejection::Sql, e.to_string()))?;
    let mut out = Vec::new();
    for b in produced {
        if b.num_rows() == 0 {
            continue;
        }
        let conformed = input.conformer.apply(&b).map_err(|errors| {
            let message = errors
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join("; ");
            (Rejection::Output, message)
        })?;
        let payloads = encoder
            .encode(&conformed)
            .map_err(|e| (Rejection::Output, e.to_string()))?;
        let keys = match key_field {
            None => vec![None; conformed.num_rows()],
            Some(field) => {
                let column = conformed
                    .column_by_name(field)
                    .ok_or_else(|| (Rejection::Output, format!("no key field {field}")))?;
                key_text(column).map_err(|e| (Rejection::Output, e.to_string()))?
            }
        };
        out.extend(keys.into_iter().zip(payloads));
    }
    Ok(out)
}
