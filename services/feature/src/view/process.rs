//! Processing a batch of a partition's input: decoding, the SQL, and each record added to its
//! windows or set aside (rejected or late), then the windows the watermark passed emitted.

use tributary_core::bus::{InboundRecord, OutboundRecord};

use super::View;
use super::windows::{Event, Windowing, apply};

/// A record the view could not use: its index in the batch, the error class and message.
pub(crate) type Rejected = (usize, &'static str, String);

/// What a batch produced.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) outputs: Vec<OutboundRecord>,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) late: Vec<Rejected>,
    pub(crate) emitted: u64,
}

/// The farthest event time from 1970 a record may have, in milliseconds: chrono's range (about
/// 262,000 years each way), far inside i64, so that window starts, ends and lateness never
/// overflow.
pub(super) const MAX_EVENT_TIME_MS: i64 = 8_210_266_876_799_999;

impl View {
    /// Updates the state of `partition` with its records (in offset order) and returns what to
    /// produce. Records below the partition's restored offset were counted before a restart
    /// and are skipped.
    pub(crate) async fn process(
        &mut self,
        partition: i32,
        records: &[&InboundRecord],
    ) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        let next_offset = self.partitions.get(&partition).map_or(0, |s| s.next_offset);
        let fresh: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].offset >= next_offset && records[i].payload.is_some())
            .collect();
        let last_offset = records.iter().map(|r| r.offset).max();
        let payloads: Vec<&[u8]> = fresh
            .iter()
            .filter_map(|&i| records[i].payload.as_deref())
            .collect();
        let decoded = self.decoder.decode(payloads.iter().copied());
        for (index, error) in decoded.errors {
            outcome
                .rejected
                .push((fresh[index], "decode", error.to_string()));
        }
        let mut rows = Vec::new();
        for batch in decoded.batches {
            let produced = match self.table.run(&self.statement, batch.batch.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    // Find the records at fault one by one.
                    for (row, &index) in batch.rows.iter().enumerate() {
                        match self
                            .table
                            .run(&self.statement, batch.batch.slice(row, 1))
                            .await
                        {
                            Ok(p) => rows.extend(self.rows(&p, &[fresh[index]])?),
                            Err(_) => outcome.rejected.push((fresh[index], "sql", e.to_string())),
                        }
                    }
                    continue;
                }
            };
            let indices: Vec<usize> = batch.rows.iter().map(|&i| fresh[i]).collect();
            rows.extend(self.rows(&produced, &indices)?);
        }
        rows.sort_by_key(|r| r.index);

        let windowing = Windowing {
            window: self.window,
            lateness: self.lateness,
            aggs: &self.aggs,
        };
        let lateness = self.lateness;
        let state = self.partitions.entry(partition).or_default();
        for row in rows {
            let Some(entity) = row.entity else {
                outcome.rejected.push((
                    row.index,
                    "entity",
                    "the entity expression is null".to_string(),
                ));
                continue;
            };
            let Some(time) = row.time else {
                outcome
                    .rejected
                    .push((row.index, "time", "the event time is null".to_string()));
                continue;
            };
            // Window arithmetic near the ends of i64 would overflow: such a time is corrupt.
            if !(-MAX_EVENT_TIME_MS..=MAX_EVENT_TIME_MS).contains(&time) {
                outcome.rejected.push((
                    row.index,
                    "time",
                    format!(
                        "the event time {time} ms is out of range (more than {MAX_EVENT_TIME_MS} ms from 1970)"
                    ),
                ));
                continue;
            }
            let watermark = state.watermark.unwrap_or(i64::MIN);
            let event = Event {
                entity: &entity,
                time,
                values: &row.values,
            };
            let accepted = apply(state, &windowing, &event, watermark);
            if !accepted {
                outcome.late.push((
                    row.index,
                    "late",
                    format!(
                        "feature {}: event time {time} is {} ms behind the partition's watermark {watermark}; every window it falls in closed (allowed lateness {lateness} ms)",
                        self.name,
                        watermark.saturating_sub(time)
                    ),
                ));
            }
            state.watermark = Some(state.watermark.map_or(time, |w| w.max(time)));
            state.touched.insert(entity);
        }
        if let Some(last) = last_offset {
            state.next_offset = state.next_offset.max(last + 1);
        }
        self.finish_batch(partition, &mut outcome)?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::MAX_EVENT_TIME_MS;
    use crate::view::testing::{record, view};

    /// Event times at the ends of i64 overflowed the window arithmetic (#18); they are
    /// rejected with the reason, and the records around them counted.
    #[tokio::test]
    async fn absurd_event_times_are_rejected_not_an_overflow() {
        for window in [
            r#"{ type = "tumbling", size = "1m" }"#,
            r#"{ type = "hopping", size = "1m", slide = "20s" }"#,
            r#"{ type = "session", gap = "20s" }"#,
        ] {
            let (_d, mut v) = view(window, "0s").await;
            let records = [
                record(0, "a", i64::MIN, "view", None),
                record(1, "a", 1_000, "view", None),
                record(2, "a", i64::MAX, "view", None),
                record(3, "a", -MAX_EVENT_TIME_MS - 1, "view", None),
            ];
            let out = v
                .process(0, &records.iter().collect::<Vec<_>>())
                .await
                .unwrap();
            let rejected: Vec<usize> = out.rejected.iter().map(|(i, _, _)| *i).collect();
            assert_eq!(rejected, vec![0, 2, 3], "{window}: {:?}", out.rejected);
            assert!(out.rejected.iter().all(|(_, class, _)| *class == "time"));
            assert!(v.open_windows() > 0, "{window}: the good record counted");
        }
    }
}
