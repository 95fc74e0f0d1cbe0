//! The end of a batch: windows the watermark passed emitted (again, if updated since), the
//! online values updated, and windows past the allowed lateness dropped.

use std::sync::PoisonError;

use super::View;
use super::process::Outcome;
use super::state::{PartitionState, WindowKey};

impl View {
    /// Emits what the watermark passed, drops closed windows and updates the online values.
    pub(super) fn finish_batch(
        &mut self,
        partition: i32,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        let Some(mut state) = self.partitions.remove(&partition) else {
            return Ok(());
        };
        let result = self.finish_partition(&mut state, outcome);
        self.partitions.insert(partition, state);
        result
    }

    /// Emits the windows of `state` the watermark passed (and those updated since they were),
    /// updates the online values and drops the windows past the allowed lateness.
    fn finish_partition(
        &self,
        state: &mut PartitionState,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        let watermark = state.watermark.unwrap_or(i64::MIN);
        let mut to_emit: Vec<WindowKey> = state
            .by_end
            .range(..=(watermark, String::from('\u{10ffff}'), i64::MAX))
            .filter(|(_, entity, start)| state.window(entity, *start).is_some_and(|w| !w.emitted))
            .map(|(_, entity, start)| (entity.clone(), *start))
            .collect();
        to_emit.extend(state.reemit.drain());
        to_emit.sort();
        to_emit.dedup();
        let mut emitted = Vec::new();
        for (entity, start) in to_emit {
            let Some(w) = state
                .entities
                .get_mut(&entity)
                .and_then(|windows| windows.get_mut(&start))
            else {
                continue;
            };
            if w.end <= watermark {
                w.emitted = true;
                emitted.push(self.output_record(&entity, start, w)?);
                state.mark_dirty(&entity);
            }
        }
        outcome.emitted += emitted.len() as u64;
        outcome.outputs.extend(emitted);
        // The online values: each touched entity's latest window (before closed ones go).
        self.online
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .update(&self.aggs, state);
        let closed: Vec<(i64, String, i64)> = state
            .by_end
            .range(
                ..=(
                    watermark.saturating_sub(self.lateness),
                    String::from('\u{10ffff}'),
                    i64::MAX,
                ),
            )
            .cloned()
            .collect();
        for (_, entity, start) in &closed {
            state.remove(entity, *start);
        }
        Ok(())
    }
}
