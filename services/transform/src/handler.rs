//! The transform service's batch handler over the consumer loop.

use tokio_util::sync::CancellationToken;
use tributary_core::bus::{BatchHandler, HandlerError, InboundRecord, OutboundRecord, Output};
use tributary_core::schema::registry::{RegistryClient, ShuttingDown};

use crate::engine::Transform;
use crate::metrics::{LookupLabel, RejectLabel, TransformLabel, TransformMetrics};

/// The batch handler: hands each topic's records to the transforms that read it.
pub(crate) struct Transformer {
    pub(crate) transforms: Vec<Transform>,
    pub(crate) registry: RegistryClient,
    pub(crate) metrics: TransformMetrics,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("transforms", &self.transforms.len())
            .finish_non_exhaustive()
    }
}

impl BatchHandler for Transformer {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        // The batch's records by topic, each in offset order.
        let mut by_topic: Vec<(&str, Vec<&InboundRecord>)> = Vec::new();
        for record in batch {
            match by_topic.iter_mut().find(|(t, _)| *t == record.topic) {
                Some((_, records)) => records.push(record),
                None => by_topic.push((&record.topic, vec![record])),
            }
        }
        // Every writer schema first: a registry outage then fails the batch before anything of
        // it is sent, and the loop hands it again after a backoff.
        for transform in &mut self.transforms {
            for (topic, records) in &by_topic {
                transform
                    .learn_schemas(topic, records, &self.registry)
                    .await
                    .map_err(|e| HandlerError::unavailable("the schema registry", e))?;
            }
        }
        for transform in &mut self.transforms {
            let label = TransformLabel {
                transform: transform.name.clone(),
            };
            for (topic, records) in &by_topic {
                if !transform.input_topics().any(|t| t == topic) {
                    continue;
                }
                let outcome = transform
                    .process(topic, records, &self.registry, &self.shutdown)
                    .await
                    .map_err(|e| match e.downcast_ref::<ShuttingDown>() {
                        Some(_) => HandlerError::Interrupted(format!(
                            "transform {}: {e:#}",
                            transform.name
                        )),
                        None => HandlerError::fatal(format!("transform {}: {e:#}", transform.name)),
                    })?;
                self.metrics
                    .records_in
                    .get_or_create(&label)
                    .inc_by(records.len() as u64);
                self.metrics
                    .duplicates
                    .get_or_create(&label)
                    .inc_by(outcome.duplicates);
                self.metrics
                    .tombstones
                    .get_or_create(&label)
                    .inc_by(outcome.tombstones);
                let produced = outcome.outputs.len() as u64;
                for (key, payload) in outcome.outputs {
                    out.send(OutboundRecord::new(
                        transform.output_topic.clone(),
                        key,
                        payload.to_vec(),
                    ))
                    .await?;
                }
                self.metrics
                    .records_out
                    .get_or_create(&label)
                    .inc_by(produced);
                for (index, why, message) in outcome.rejected {
                    let Some(record) = records.get(index) else {
                        continue;
                    };
                    self.metrics
                        .rejected
                        .get_or_create(&RejectLabel {
                            transform: transform.name.clone(),
                            class: why.class().to_string(),
                        })
                        .inc();
                    out.dead_letter(
                        record,
                        why.class(),
                        &format!("transform {}: {message}", transform.name),
                    )
                    .await?;
                }
            }
            let (lookups, dedup_keys) = transform.state_sizes();
            self.metrics
                .dedup_keys
                .get_or_create(&label)
                .set(i64::try_from(dedup_keys).unwrap_or(i64::MAX));
            for (lookup, keys) in lookups {
                self.metrics
                    .lookup_keys
                    .get_or_create(&LookupLabel {
                        transform: transform.name.clone(),
                        lookup: lookup.to_string(),
                    })
                    .set(i64::try_from(keys).unwrap_or(i64::MAX));
            }
        }
        Ok(())
    }
}
