//! Checkpoints: the changelog records that save each partition's changed entities and
//! progress, and the input offsets they cover.

use tributary_core::bus::OutboundRecord;

use super::View;
use super::state::PartitionState;
use crate::changelog;

impl View {
    /// Whether any partition has state the changelog lacks.
    pub(crate) fn unsaved(&self) -> bool {
        self.partitions.values().any(PartitionState::unsaved)
    }

    /// The changelog records that save every partition's state: for each, the entities changed
    /// since the last checkpoint (a tombstone for those with no window left), then the progress
    /// record. Once they are acknowledged, [`View::checkpointed`] may be committed.
    pub(crate) fn checkpoint(&mut self) -> anyhow::Result<Vec<OutboundRecord>> {
        let mut records = Vec::new();
        for (&partition, state) in &mut self.partitions {
            if !state.unsaved() {
                continue;
            }
            let stamp = changelog::encode_stamp(state.next_offset);
            let record = |key: Vec<u8>, payload: Option<Vec<u8>>| OutboundRecord {
                topic: self.changelog_topic.clone(),
                key: Some(key),
                payload,
                headers: vec![(changelog::STAMP_HEADER.to_string(), stamp.clone())],
                partition: Some(partition),
            };
            // Format-1 keys first: an entity's format-2 record after them supersedes them.
            for key in state.legacy_keys.drain() {
                records.push(record(key, None));
            }
            for entity in state.dirty.drain() {
                let payload = match state.entities.get(&entity) {
                    Some(windows) => {
                        let mut value = Vec::with_capacity(64 * windows.len());
                        changelog::encode_entity(windows, &mut value)?;
                        Some(value)
                    }
                    None => None,
                };
                records.push(record(changelog::entity_key(&entity), payload));
            }
            let meta =
                changelog::encode_meta(state.next_offset, state.watermark.unwrap_or(i64::MIN));
            records.push(record(changelog::META_KEY.to_vec(), Some(meta)));
            state.checkpointed = state.next_offset;
            state.rewrite_meta = false;
        }
        Ok(records)
    }

    /// Per partition, the next input offset the last checkpoint covers.
    pub(crate) fn checkpointed(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.partitions
            .iter()
            .map(|(&partition, state)| (partition, state.checkpointed))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::changelog;
    use crate::view::testing::{inbound, record, view};

    #[tokio::test]
    async fn checkpoints_write_each_changed_entity_once_and_restore_to_the_same_state() {
        let (_d, mut v) = view(r#"{ type = "hopping", size = "1m", slide = "20s" }"#, "10s").await;
        let batches = [
            vec![
                record(0, "a", 1_000, "view", None),
                record(1, "a", 2_000, "buy", Some(2.0)),
                record(2, "b", 3_000, "view", None),
            ],
            vec![
                record(3, "a", 30_000, "view", None),
                record(4, "c", 90_000, "view", None),
            ],
        ];
        let mut changelog = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            v.process(0, &batch.iter().collect::<Vec<_>>())
                .await
                .unwrap();
            let records = v.checkpoint().unwrap();
            if i == 0 {
                // One record per entity (a: 3 windows, b: 3 windows), then the progress record.
                assert_eq!(records.len(), 3, "{records:?}");
            }
            changelog.extend(records);
        }
        // The watermark (90 s) is past end + lateness of a's and b's windows up to [20 s, 80 s)
        // : tombstones for b, whose windows all closed.
        let b_key = changelog::entity_key("b");
        assert!(
            changelog
                .iter()
                .any(|r| r.key.as_deref() == Some(b_key.as_slice()) && r.payload.is_none())
        );
        let restored = v.restore(&inbound(&changelog)).unwrap();
        assert_eq!(restored.entities, v.partitions[&0].entities);
        assert_eq!(restored.by_end, v.partitions[&0].by_end);
        assert_eq!(restored.next_offset, 5);
        assert_eq!(restored.watermark, Some(90_000));
        assert_eq!(v.checkpointed().collect::<Vec<_>>(), vec![(0, 5)]);
    }
}
