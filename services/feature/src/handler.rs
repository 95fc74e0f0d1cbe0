//! The feature service's batch handler over the consumer loop.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tributary_core::bus::{
    BatchHandler, DeadLetter, HandlerError, InboundRecord, KafkaConfig, Output, dead_letter_record,
};
use tributary_core::schema::registry::{RegistryClient, learn_writer_schemas};

use crate::metrics::{Metrics, ViewLabel};
use crate::view::View;

/// The batch handler: hands each view its input records, sends outputs, late records and
/// dead letters, and checkpoints the views' state to their changelogs.
pub(crate) struct Features {
    pub(crate) views: Vec<View>,
    /// Longest time between checkpoints while records arrive.
    pub(crate) checkpoint_interval: Duration,
    /// Most records handled between checkpoints.
    pub(crate) checkpoint_records: u64,
    pub(crate) since_checkpoint: u64,
    pub(crate) last_checkpoint: Instant,
    pub(crate) registry: RegistryClient,
    pub(crate) kafka: KafkaConfig,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features")
            .field("views", &self.views.len())
            .finish_non_exhaustive()
    }
}

impl Features {
    /// Writes every view's unsaved state to its changelog (acknowledged with the batch's
    /// output, after which [`BatchHandler::commit_positions`] reports the new positions).
    async fn checkpoint(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        for view in &mut self.views {
            let records = view.checkpoint().map_err(|e| {
                HandlerError::fatal(format!("feature {}: checkpoint: {e:#}", view.name))
            })?;
            for record in records {
                out.send(record).await?;
            }
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

impl BatchHandler for Features {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        for view in &mut self.views {
            let label = ViewLabel {
                view: view.name.clone(),
            };
            // The view's records by partition, each in offset order.
            let mut by_partition: Vec<(i32, Vec<&InboundRecord>)> = Vec::new();
            for r in batch.iter().filter(|r| r.topic == view.input_topic) {
                match by_partition.iter_mut().find(|(p, _)| *p == r.partition) {
                    Some((_, records)) => records.push(r),
                    None => by_partition.push((r.partition, vec![r])),
                }
            }
            for (partition, records) in by_partition {
                view.ensure_restored(&self.kafka, partition)
                    .await
                    .map_err(|e| HandlerError::fatal(format!("feature {}: {e:#}", view.name)))?;
                let payloads: Vec<&[u8]> = records
                    .iter()
                    .filter_map(|r| r.payload.as_deref())
                    .collect();
                learn_writer_schemas(&self.registry, view.decoder(), &payloads, &self.shutdown)
                    .await?;
                let outcome = view
                    .process(partition, &records)
                    .await
                    .map_err(|e| HandlerError::fatal(format!("feature {}: {e:#}", view.name)))?;
                self.metrics
                    .records_in
                    .get_or_create(&label)
                    .inc_by(records.len() as u64);
                self.metrics
                    .emitted
                    .get_or_create(&label)
                    .inc_by(outcome.emitted);
                for record in outcome.outputs {
                    out.send(record).await?;
                }
                for (index, class, message) in outcome.rejected {
                    if let Some(r) = records.get(index) {
                        self.metrics.rejected.get_or_create(&label).inc();
                        out.dead_letter(r, class, &format!("feature {}: {message}", view.name))
                            .await?;
                    }
                }
                for (index, class, message) in outcome.late {
                    let Some(r) = records.get(index) else {
                        continue;
                    };
                    self.metrics.late.get_or_create(&label).inc();
                    match &view.late_topic {
                        None => out.dead_letter(r, class, &message).await?,
                        Some(topic) => {
                            let letter = DeadLetter {
                                stage: "feature",
                                source_topic: &r.topic,
                                partition: r.partition,
                                offset: r.offset,
                                error_class: class,
                                message: &message,
                            };
                            let mut record = dead_letter_record(
                                &letter,
                                r.key.clone(),
                                r.payload.clone().unwrap_or_default(),
                            );
                            record.topic = topic.clone();
                            out.send(record).await?;
                        }
                    }
                }
            }
            self.metrics
                .open_windows
                .get_or_create(&label)
                .set(i64::try_from(view.open_windows()).unwrap_or(i64::MAX));
        }
        self.since_checkpoint += batch.len() as u64;
        if self.since_checkpoint >= self.checkpoint_records
            || self.last_checkpoint.elapsed() >= self.checkpoint_interval
        {
            self.checkpoint(out).await?;
        }
        Ok(())
    }

    /// Offsets follow the checkpoints: a partition's position is stored only once the
    /// changelog records covering it (of every view reading it) were acknowledged, which the
    /// loop ensures by settling the batch's output before asking.
    fn commit_positions(&self) -> Option<Vec<(String, i32, i64)>> {
        let mut positions: HashMap<(&str, i32), i64> = HashMap::new();
        for view in &self.views {
            for (partition, next) in view.checkpointed() {
                positions
                    .entry((view.input_topic.as_str(), partition))
                    .and_modify(|p| *p = (*p).min(next))
                    .or_insert(next);
            }
        }
        Some(
            positions
                .into_iter()
                .map(|((topic, partition), next)| (topic.to_string(), partition, next))
                .collect(),
        )
    }

    async fn tick(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        if self.views.iter().any(View::unsaved) {
            self.checkpoint(out).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.checkpoint(out).await
    }

    fn partitions_revoked(&mut self, partitions: &[(String, i32)]) {
        for view in &mut self.views {
            for (topic, partition) in partitions {
                if *topic == view.input_topic {
                    view.partitions.remove(partition);
                }
            }
        }
    }
}
