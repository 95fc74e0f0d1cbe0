//! The archive as the consumer loop's batch handler.

use std::time::Duration;

use tributary_core::bus::{BatchHandler, HandlerError, InboundRecord, Output};

use super::Archiver;

impl BatchHandler for Archiver {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        for (record, error) in self.process(batch).await? {
            out.dead_letter(record, "decode", &error).await?;
        }
        Ok(())
    }

    fn commit_positions(&self) -> Option<Vec<(String, i32, i64)>> {
        Some(
            self.partitions
                .iter()
                .map(|((topic, partition), state)| {
                    (topic.clone(), *partition, state.commit_position())
                })
                .collect(),
        )
    }

    async fn tick(&mut self, _out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.close_all(Some(Duration::from_secs(self.settings.max_open_seconds)))
            .await
    }

    async fn finish(&mut self, _out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.close_all(None).await
    }

    fn partitions_revoked(&mut self, partitions: &[(String, i32)]) {
        // Their buffered records were not committed: the next owner reads them again and, by
        // the same rules, writes the same files.
        for key in partitions {
            self.partitions.remove(key);
        }
    }
}
