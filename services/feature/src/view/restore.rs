//! Restoring a partition's window state from its changelog: either format, the legacy
//! (format-1, JSON) one included, and the late records of a paused replica told apart.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use serde::Deserialize;
use tributary_core::bus::{InboundRecord, KafkaConfig, read_partition};

use super::View;
use super::state::{PartitionState, WindowState};
use crate::changelog::{self, Key};

/// The format-1 (JSON) progress record, read on restore.
#[derive(Debug, Clone, Copy, Deserialize)]
struct LegacyMeta {
    next_offset: i64,
    watermark: i64,
}

impl View {
    /// Restores a partition's state from the changelog, if not done yet.
    pub(crate) async fn ensure_restored(
        &mut self,
        kafka: &KafkaConfig,
        partition: i32,
    ) -> anyhow::Result<()> {
        if self.partitions.contains_key(&partition) {
            return Ok(());
        }
        let records = read_partition(kafka, &self.changelog_topic, partition)
            .await
            .with_context(|| format!("restore {} partition {partition}", self.changelog_topic))?;
        let state = self.restore(&records)?;
        tracing::info!(
            view = %self.name,
            partition,
            windows = state.by_end.len(),
            next_offset = state.next_offset,
            "restored window state"
        );
        self.partitions.insert(partition, state);
        Ok(())
    }

    /// A partition's state from its changelog records, in offset order (either format; see
    /// `changelog.rs`).
    ///
    /// Records of two writers can interleave: a replica paused past its session wakes and
    /// writes a checkpoint of its old state after the partition's new owner wrote newer ones.
    /// Both computed the same function of the same input, so each key's newest checkpoint is
    /// right: the progress record with the highest next offset wins, and for an entity the
    /// record with the highest stamp (ties and unstamped records by log order). Keys whose last
    /// record is a late one are marked to be written again by the next checkpoint, so that
    /// the topic's compaction (which keeps the last record of a key) keeps the newest.
    pub(super) fn restore(&self, records: &[InboundRecord]) -> anyhow::Result<PartitionState> {
        let mut state = PartitionState::default();
        let mut entities: HashMap<String, BTreeMap<i64, WindowState>> = HashMap::new();
        let mut stamps: HashMap<String, i64> = HashMap::new();
        let mut late: HashSet<String> = HashSet::new();
        let mut late_records = 0_usize;
        let mut newest_meta: Option<i64> = None;
        for r in records {
            let key = r.key.as_deref().unwrap_or_default();
            let payload = r.payload.as_deref();
            match changelog::parse_key(key).context("changelog key")? {
                Key::Meta => {
                    let Some(payload) = payload else { continue };
                    let (next_offset, watermark) = if changelog::is_json(payload)? {
                        let meta: LegacyMeta =
                            serde_json::from_slice(payload).context("changelog progress record")?;
                        (meta.next_offset, meta.watermark)
                    } else {
                        changelog::decode_meta(payload).context("changelog progress record")?
                    };
                    if newest_meta.is_some_and(|newest| next_offset < newest) {
                        state.rewrite_meta = true;
                        late_records += 1;
                        continue;
                    }
                    newest_meta = Some(next_offset);
                    state.rewrite_meta = false;
                    state.next_offset = next_offset;
                    state.watermark = Some(watermark);
                }
                Key::Entity(entity) => {
                    let stamp = changelog::decode_stamp(&r.headers)
                        .with_context(|| format!("changelog record of {entity:?}"))?
                        .unwrap_or(i64::MIN);
                    if stamps.get(entity).is_some_and(|&newest| stamp < newest) {
                        late.insert(entity.to_string());
                        late_records += 1;
                        continue;
                    }
                    stamps.insert(entity.to_string(), stamp);
                    late.remove(entity);
                    match payload {
                        Some(payload) => {
                            let windows = changelog::decode_entity(payload)
                                .with_context(|| format!("changelog record of {entity:?}"))?;
                            entities.insert(entity.to_string(), windows);
                        }
                        None => {
                            entities.remove(entity);
                        }
                    }
                }
                Key::Window(entity, start) => match payload {
                    Some(payload) => {
                        let window: WindowState =
                            serde_json::from_slice(payload).context("changelog window record")?;
                        entities
                            .entry(entity.to_string())
                            .or_default()
                            .insert(start, window);
                        state.legacy_keys.insert(key.to_vec());
                    }
                    None => {
                        if let Some(windows) = entities.get_mut(entity) {
                            windows.remove(&start);
                        }
                        state.legacy_keys.remove(key);
                    }
                },
            }
        }
        for (entity, windows) in entities {
            for (start, window) in windows {
                state.insert(&entity, start, window);
            }
        }
        // Entities still in format 1: rewritten in format 2 by the next checkpoint; so are
        // those whose last record is a late one.
        state.dirty.clear();
        for key in &state.legacy_keys {
            if let Ok(Key::Window(entity, _)) = changelog::parse_key(key) {
                state.dirty.insert(entity.to_string());
            }
        }
        state.dirty.extend(late);
        if late_records > 0 {
            tracing::warn!(
                view = %self.name,
                changelog = %self.changelog_topic,
                records = late_records,
                next_offset = state.next_offset,
                "late changelog records of an older checkpoint ignored (a replica paused past \
                 its session wrote them after the partition moved); the newest kept"
            );
        }
        state.checkpointed = state.next_offset;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;

    use tributary_core::bus::{InboundRecord, OutboundRecord};
    use tributary_core::schema::features::AggregateFn;

    use crate::agg::AggState;
    use crate::view::state::WindowState;
    use crate::view::testing::{emitted, inbound, record, view};

    /// The failure the fault suite's frozen feature replica found: the old owner of a partition,
    /// paused past its session, wakes and checkpoints its old state after the new owner's
    /// newer checkpoints. Restoring in log order took the late records, so the next owner
    /// re-emitted a window with the old count and skipped the records in between.
    #[tokio::test]
    async fn a_late_checkpoint_of_a_paused_owner_does_not_replace_the_new_owners() {
        let (_d, mut zombie) = view(r#"{ type = "tumbling", size = "1m" }"#, "0s").await;
        let (_d2, mut owner) = view(r#"{ type = "tumbling", size = "1m" }"#, "0s").await;
        let input = [
            record(0, "a", 1_000, "view", None),
            record(1, "b", 2_000, "view", None),
            record(2, "a", 3_000, "buy", Some(1.0)),
            record(3, "a", 4_000, "view", None),
            record(4, "b", 5_000, "view", None),
            record(5, "a", 61_000, "view", None),
        ];
        let batch = |from: usize, to: usize| input[from..to].iter().collect::<Vec<_>>();
        // The first owner counts 0..=2 and checkpoints, then is paused; the new owner restores
        // that checkpoint, counts 3..=5 and checkpoints twice.
        zombie.process(0, &batch(0, 3)).await.unwrap();
        let mut log = zombie.checkpoint().unwrap();
        let restored = owner.restore(&inbound(&log)).unwrap();
        owner.partitions.insert(0, restored);
        owner.process(0, &batch(3, 5)).await.unwrap();
        log.extend(owner.checkpoint().unwrap());
        let out = owner.process(0, &batch(5, 6)).await.unwrap();
        assert_eq!(emitted(&out).len(), 2, "a's and b's first minute closed");
        log.extend(owner.checkpoint().unwrap());
        // The paused owner wakes with record 3 in its batch and checkpoints: a, and progress 4.
        zombie.process(0, &batch(3, 4)).await.unwrap();
        let late = zombie.checkpoint().unwrap();
        assert!(late.len() >= 2, "{late:?}");
        log.extend(late);

        let state = owner.restore(&inbound(&log)).unwrap();
        let newest = &owner.partitions[&0];
        assert_eq!(state.next_offset, 6);
        assert_eq!(state.watermark, newest.watermark);
        assert_eq!(state.entities, newest.entities);
        assert_eq!(state.by_end, newest.by_end);
        // The late keys are written again by the next checkpoint, so that compaction, which
        // keeps a key's last record, keeps the newest.
        assert!(state.unsaved());
        assert!(state.dirty.contains("a"), "{:?}", state.dirty);
        owner.partitions.insert(0, state);
        log.extend(owner.checkpoint().unwrap());
        let mut last: HashMap<Vec<u8>, InboundRecord> = HashMap::new();
        for r in inbound(&log) {
            last.insert(r.key.clone().unwrap_or_default(), r);
        }
        let compacted: Vec<InboundRecord> = last.into_values().collect();
        let again = owner.restore(&compacted).unwrap();
        assert_eq!(again.next_offset, 6);
        assert_eq!(again.entities, owner.partitions[&0].entities);
        assert!(!again.unsaved());
    }

    #[tokio::test]
    async fn the_json_format_is_restored_and_rewritten_at_the_next_checkpoint() {
        let (_d, v) = view(r#"{ type = "tumbling", size = "1m" }"#, "0s").await;
        let window = |n: u64| WindowState {
            end: 60_000,
            aggs: vec![
                AggState::Count(n),
                AggState::Count(0),
                AggState::Sum(0.0),
                AggState::new(AggregateFn::Last),
            ],
            emitted: false,
        };
        let json = |w: WindowState| Some(serde_json::to_vec(&w).unwrap());
        let old = |key: &str, payload: Option<Vec<u8>>| OutboundRecord {
            topic: "c".into(),
            key: Some(key.as_bytes().to_vec()),
            payload,
            headers: Vec::new(),
            partition: Some(0),
        };
        let records = inbound(&[
            old("a\u{1f}0", json(window(1))),
            old("gone\u{1f}0", json(window(1))),
            old("a\u{1f}0", json(window(2))),
            old("gone\u{1f}0", None),
            old(
                "\0meta",
                Some(br#"{"next_offset": 7, "watermark": 5000}"#.to_vec()),
            ),
        ]);
        let mut state = v.restore(&records).unwrap();
        assert_eq!(state.next_offset, 7);
        assert_eq!(state.watermark, Some(5_000));
        assert_eq!(state.window("a", 0), Some(&window(2)));
        assert!(state.window("gone", 0).is_none());
        assert!(state.unsaved(), "the old keys are to be replaced");
        let mut v = v;
        v.partitions.insert(0, std::mem::take(&mut state));
        let migration = v.checkpoint().unwrap();
        let keys: Vec<&[u8]> = migration.iter().filter_map(|r| r.key.as_deref()).collect();
        assert_eq!(keys[0], &b"a\x1f0"[..], "old keys tombstoned first");
        assert!(migration[0].payload.is_none());
        // Restoring the old records followed by the migration gives the same state.
        let mut all: Vec<OutboundRecord> = Vec::new();
        for r in &records {
            all.push(OutboundRecord {
                topic: r.topic.clone(),
                key: r.key.clone(),
                payload: r.payload.clone(),
                headers: Vec::new(),
                partition: Some(0),
            });
        }
        all.extend(migration);
        let again = v.restore(&inbound(&all)).unwrap();
        assert_eq!(again.entities, v.partitions[&0].entities);
        assert!(!again.unsaved());
        // A version this build does not know is an error, not a silent reset.
        let mut future = inbound(&all);
        if let Some(p) = future.last_mut().and_then(|r| r.payload.as_mut()) {
            p[0] = 3;
        }
        assert!(v.restore(&future).is_err());
    }
}
