//! Processing a batch of one input topic: decode, add the lookups, check the rules, dedup.

use std::sync::Arc;

use anyhow::Context;
use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::Schema;
use tokio_util::sync::CancellationToken;
use tributary_core::bus::InboundRecord;
use tributary_core::schema::conform::key_text;
use tributary_core::schema::registry::{
    RegistryClient, RegistryError, learn_writer_schemas, try_learn_writer_schemas,
};

use tributary_core::schema::columns::column_at;

use super::columns::event_times;
use super::output::transform;
use super::{Outcome, Rejection, Transform};

impl Transform {
    /// Asks the registry for the writer schemas of `records` (of input `topic`) the input's
    /// decoder does not know yet, once: the batch handler calls it for every input before any
    /// output of the batch is made, so that a registry outage leaves nothing behind and the
    /// consumer loop can hand the batch again ([`HandlerError::Unavailable`]).
    ///
    /// [`HandlerError::Unavailable`]: tributary_core::bus::HandlerError::Unavailable
    pub(crate) async fn learn_schemas(
        &mut self,
        topic: &str,
        records: &[&InboundRecord],
        registry: &RegistryClient,
    ) -> Result<(), RegistryError> {
        let Some(input) = self.inputs.get_mut(topic) else {
            return Ok(());
        };
        let payloads: Vec<&[u8]> = records
            .iter()
            .filter_map(|r| r.payload.as_deref())
            .collect();
        try_learn_writer_schemas(registry, &mut input.decoder, &payloads).await
    }

    /// Transforms records of one input topic. An `Err` is a failure of the service (the
    /// registry unreachable until shutdown, a broken plan), not of a record.
    pub(crate) async fn process(
        &mut self,
        topic: &str,
        records: &[&InboundRecord],
        registry: &RegistryClient,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        let Self {
            inputs,
            lookups,
            rules,
            dedup,
            encoder,
            key_field,
            ..
        } = self;
        let Some(input) = inputs.get_mut(topic) else {
            return Ok(outcome);
        };
        for (table, _) in lookups.iter_mut() {
            table.refresh(registry, shutdown).await?;
        }
        // Indexes (in `records`) of the records with a value.
        let mut present = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if r.payload.is_some() {
                present.push(i);
            } else {
                outcome.tombstones += 1;
            }
        }
        let payloads: Vec<&[u8]> = present
            .iter()
            .filter_map(|&i| records.get(i).and_then(|r| r.payload.as_deref()))
            .collect();
        learn_writer_schemas(registry, &mut input.decoder, &payloads, shutdown).await?;
        let decoded = input.decoder.decode(payloads.iter().copied());
        for (index, error) in decoded.errors {
            outcome
                .rejected
                .push((present[index], Rejection::Decode, error.to_string()));
        }
        for batch in decoded.batches {
            let rows: Vec<usize> = batch.rows.iter().map(|&i| present[i]).collect();
            let mut columns = batch.batch.columns().to_vec();
            for (table, key) in lookups.iter() {
                let keys = column_at(&batch.batch, key).context("lookup key column")?;
                let keys = key_text(&keys).map_err(anyhow::Error::msg)?;
                columns.push(table.column(&keys)?);
            }
            let batch = RecordBatch::try_new(input.schema.clone(), columns)
                .context("the decoded batch does not have the input's schema")?;
            let mut keep = vec![true; rows.len()];

            if let Some(plan) = &input.rules_plan {
                let checked = input.run(plan, batch.clone()).await.context("rules")?;
                let checked = concat_batches(
                    &checked
                        .first()
                        .map_or_else(|| Arc::new(Schema::empty()), |b| b.schema()),
                    &checked,
                )?;
                for (r, rule) in rules.iter().enumerate() {
                    let column = checked.column(r);
                    let column = column
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .context("a rule column is boolean")?;
                    for (row, k) in keep.iter_mut().enumerate() {
                        if *k && !(column.is_valid(row) && column.value(row)) {
                            *k = false;
                            outcome.rejected.push((
                                rows[row],
                                Rejection::Validation,
                                format!("rule {} failed: {}", rule.name, rule.description),
                            ));
                        }
                    }
                }
            }

            if let Some((dedup, key)) = dedup {
                let keys = column_at(&batch, key).context("dedup key column")?;
                let times = match &input.time_column {
                    Some(t) => event_times(&column_at(&batch, t).context("event time column")?)?,
                    None => rows
                        .iter()
                        .map(|&i| records[i].timestamp_ms.unwrap_or_default())
                        .collect(),
                };
                // Only records that passed the rules count as seen.
                let candidates: Vec<usize> = (0..rows.len()).filter(|&r| keep[r]).collect();
                let mask = BooleanArray::from(keep.clone());
                let keys = arrow::compute::filter(&keys, &mask)?;
                let times: Vec<i64> = candidates.iter().map(|&r| times[r]).collect();
                for (r, kept) in candidates
                    .into_iter()
                    .zip(dedup.keep(&keys, &times).map_err(anyhow::Error::msg)?)
                {
                    if !kept {
                        keep[r] = false;
                        outcome.duplicates += 1;
                    }
                }
            }

            let kept_rows: Vec<usize> = rows
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(r, _)| *r)
                .collect();
            if kept_rows.is_empty() {
                continue;
            }
            let batch = if kept_rows.len() == rows.len() {
                batch
            } else {
                filter_record_batch(&batch, &BooleanArray::from(keep))?
            };
            let key_field = key_field.as_deref();
            match transform(input, encoder, key_field, batch.clone()).await {
                Ok(out) => outcome.outputs.extend(out),
                Err(_) => {
                    // Find the records at fault: run them one at a time.
                    for (row, &index) in kept_rows.iter().enumerate() {
                        match transform(input, encoder, key_field, batch.slice(row, 1)).await {
                            Ok(out) => outcome.outputs.extend(out),
                            Err((why, message)) => outcome.rejected.push((index, why, message)),
                        }
                    }
                }
            }
        }
        outcome.rejected.sort_by_key(|(i, _, _)| *i);
        Ok(outcome)
    }
}
