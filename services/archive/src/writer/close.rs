//! Closing open files: one partition's, those open too long or all, the largest under pressure.

use std::time::Duration;

use tributary_core::bus::HandlerError;

use super::Archiver;

impl Archiver {
    fn buffered_bytes(&self) -> u64 {
        self.partitions
            .values()
            .filter_map(|p| p.file.as_ref())
            .map(|f| f.bytes)
            .sum()
    }

    /// Closes the file of a partition, if open, and writes it; records that files found in the
    /// way hold are skipped from then on.
    pub(super) async fn close(&mut self, key: &(String, i32)) -> Result<(), HandlerError> {
        let file = self.partitions.get_mut(key).and_then(|p| p.file.take());
        if let Some(file) = file
            && let Some(last) = self.write(file).await?
            && let Some(state) = self.partitions.get_mut(key)
        {
            state.skip_through = state.skip_through.max(last);
        }
        Ok(())
    }

    pub(super) async fn close_all(
        &mut self,
        only_older_than: Option<Duration>,
    ) -> Result<(), HandlerError> {
        let keys: Vec<(String, i32)> = self
            .partitions
            .iter()
            .filter(|(_, p)| {
                p.file
                    .as_ref()
                    .is_some_and(|f| only_older_than.is_none_or(|age| f.opened.elapsed() >= age))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.close(&key).await?;
        }
        Ok(())
    }

    /// Writes the largest files early while the buffered total is over the limit.
    pub(super) async fn relieve_memory(&mut self) -> Result<(), HandlerError> {
        while self.buffered_bytes() > self.settings.max_buffered_bytes {
            let largest = self
                .partitions
                .iter()
                .filter_map(|(k, p)| p.file.as_ref().map(|f| (f.bytes, k.clone())))
                .max()
                .map(|(_, k)| k);
            let Some(key) = largest else { break };
            self.metrics.early_flushes.inc();
            self.close(&key).await?;
        }
        Ok(())
    }
}
