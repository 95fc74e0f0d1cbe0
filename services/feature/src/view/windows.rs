//! How one record updates its entity's windows: tumbling and hopping windows it falls in,
//! and sessions it opens, extends or merges.

use tributary_core::schema::features::Window;

use super::Agg;
use super::state::{PartitionState, WindowState};
use crate::agg::{AggState, Scalar};

/// How a view windows its records: the window, the allowed lateness and the aggregations each
/// window holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Windowing<'a> {
    pub(super) window: Window,
    /// Milliseconds a window stays open after its end.
    pub(super) lateness: i64,
    pub(super) aggs: &'a [Agg],
}

/// One record, evaluated: its entity, its event time (ms) and a value per aggregation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Event<'a> {
    pub(super) entity: &'a str,
    pub(super) time: i64,
    pub(super) values: &'a [Scalar],
}

/// Adds a record to every open window it falls in, given the partition's `watermark`; false
/// when there was none (late).
pub(super) fn apply(
    state: &mut PartitionState,
    windowing: &Windowing<'_>,
    event: &Event<'_>,
    watermark: i64,
) -> bool {
    let &Windowing {
        window,
        lateness,
        aggs,
    } = windowing;
    let &Event {
        entity,
        time,
        values,
    } = event;
    let open = |end: i64| end.saturating_add(lateness) > watermark;
    let new_window = |end: i64| WindowState {
        end,
        aggs: aggs.iter().map(|a| AggState::new(a.function)).collect(),
        emitted: false,
    };
    let add = |w: &mut WindowState| {
        for (s, v) in w.aggs.iter_mut().zip(values) {
            s.add(v, time);
        }
    };
    let mut accepted = false;
    match window {
        Window::Tumbling(size) | Window::Hopping(size, _) => {
            let slide = match window {
                Window::Hopping(_, slide) => slide,
                _ => size,
            };
            let last_start = time.div_euclid(slide) * slide;
            let mut start = last_start;
            while start > time - size {
                let end = start + size;
                if open(end) {
                    if state.window(entity, start).is_none() {
                        state.insert(entity, start, new_window(end));
                    }
                    let emitted = match state
                        .entities
                        .get_mut(entity)
                        .and_then(|windows| windows.get_mut(&start))
                    {
                        Some(w) => {
                            add(w);
                            w.emitted
                        }
                        None => false,
                    };
                    if emitted {
                        state.reemit.insert((entity.to_string(), start));
                    }
                    accepted = true;
                }
                start -= slide;
            }
            if accepted {
                state.mark_dirty(entity);
            }
        }
        Window::Session(gap) => {
            let starts: Vec<i64> = state
                .entities
                .get(entity)
                .map(|windows| windows.keys().copied().collect())
                .unwrap_or_default();
            // Open sessions this record joins: it is less than `gap` from their records.
            let joined: Vec<i64> = starts
                .into_iter()
                .filter(|s| {
                    state
                        .window(entity, *s)
                        .is_some_and(|w| open(w.end) && time < w.end && time > s - gap)
                })
                .collect();
            if joined.is_empty() && !open(time.saturating_add(gap)) {
                return false;
            }
            let mut merged = new_window(time.saturating_add(gap));
            let mut start = time;
            let mut was_emitted = false;
            for s in &joined {
                if let Some(w) = state.remove(entity, *s) {
                    merged.end = merged.end.max(w.end);
                    for (a, b) in merged.aggs.iter_mut().zip(&w.aggs) {
                        a.merge(b);
                    }
                    was_emitted |= w.emitted;
                    start = start.min(*s);
                }
            }
            add(&mut merged);
            merged.emitted = was_emitted && joined.contains(&start);
            if merged.emitted {
                state.reemit.insert((entity.to_string(), start));
            }
            state.insert(entity, start, merged);
            accepted = true;
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use apache_avro::types::Value as Avro;
    use tributary_core::bus::InboundRecord;

    use crate::view::testing::{emitted, field, inbound, record, view};

    #[tokio::test]
    async fn tumbling_windows_are_emitted_when_the_watermark_passes_and_late_records_reemit() {
        let (_d, mut v) = view(r#"{ type = "tumbling", size = "1m" }"#, "30s").await;
        let records = [
            record(0, "a", 1_000, "view", None),
            record(1, "a", 2_000, "buy", Some(5.5)),
            record(2, "b", 59_000, "view", None),
            record(3, "a", 61_000, "view", None), // passes the end of [0, 60 s)
        ];
        let refs: Vec<&InboundRecord> = records.iter().collect();
        let out = v.process(0, &refs).await.unwrap();
        let rows = emitted(&out);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let a = rows
            .iter()
            .find(|r| *field(r, "user") == Avro::String("a".into()))
            .unwrap();
        assert_eq!(*field(a, "n"), Avro::Long(2));
        assert_eq!(*field(a, "buys"), Avro::Long(1));
        assert_eq!(*field(a, "spent"), Avro::Double(5.5));
        assert_eq!(
            *field(a, "last_kind"),
            Avro::Union(1, Box::new(Avro::String("buy".into())))
        );
        assert_eq!(*field(a, "window_end"), Avro::TimestampMillis(60_000));

        // 20 s late: within the lateness, the window is updated and emitted again.
        let late = [
            record(4, "a", 40_000, "buy", Some(1.0)),
            record(5, "a", 80_000, "view", None),
        ];
        let out = v
            .process(0, &late.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let rows = emitted(&out);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(*field(&rows[0], "n"), Avro::Long(3));
        assert_eq!(*field(&rows[0], "spent"), Avro::Double(6.5));
        // 90 s behind the watermark (100 s): [0, 60 s) closed at 60 s + 30 s lateness.
        let too_late = [
            record(6, "a", 100_000, "view", None),
            record(7, "a", 10_000, "buy", None),
        ];
        let out = v
            .process(0, &too_late.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(out.late.len(), 1);
        assert_eq!(out.late[0].0, 1);
        assert!(out.late[0].2.contains("90000 ms behind"), "{:?}", out.late);
    }

    #[tokio::test]
    async fn hopping_windows_count_a_record_in_each_window_it_falls_in() {
        let (_d, mut v) = view(r#"{ type = "hopping", size = "1m", slide = "20s" }"#, "0s").await;
        let records = [
            record(0, "a", 50_000, "view", None),
            record(1, "a", 200_000, "view", None),
        ];
        let out = v
            .process(0, &records.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let mut starts: Vec<Avro> = emitted(&out)
            .iter()
            .map(|r| field(r, "window_start").clone())
            .collect();
        starts.sort_by_key(|a| format!("{a:?}"));
        // 50 s is in [0, 60), [20, 80) and [40, 100).
        assert_eq!(
            starts,
            vec![
                Avro::TimestampMillis(0),
                Avro::TimestampMillis(20_000),
                Avro::TimestampMillis(40_000)
            ]
        );
    }

    #[tokio::test]
    async fn sessions_merge_when_a_record_bridges_them_and_state_survives_a_restore() {
        let (_d, mut v) = view(r#"{ type = "session", gap = "20s" }"#, "1m").await;
        let first = [
            record(0, "a", 0, "view", None),
            record(1, "a", 5_000, "view", None),
            record(2, "a", 30_000, "view", None),
        ];
        let out = v
            .process(0, &first.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        // Sessions [0, 25 s) and [30 s, 50 s); the watermark (30 s) passed the first's end.
        let rows = emitted(&out);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            *field(&rows[0], "window_end"),
            Avro::TimestampMillis(25_000)
        );
        assert_eq!(*field(&rows[0], "n"), Avro::Long(2));
        // Restore into a fresh view from the changelog it wrote: same state.
        let changelog = inbound(&v.checkpoint().unwrap());
        assert!(!v.unsaved());
        assert!(v.checkpoint().unwrap().is_empty(), "nothing new to save");
        let restored = v.restore(&changelog).unwrap();
        assert_eq!(restored.entities, v.partitions[&0].entities);
        assert_eq!(restored.next_offset, 3);
        assert_eq!(restored.checkpointed, 3);
        assert!(!restored.unsaved());
        // Offsets already counted are skipped after a restore.
        v.partitions.insert(0, restored);
        let again = v
            .process(0, &first.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        assert!(again.outputs.is_empty());
        // 20 s bridges [0, 25 s) and [30 s, 50 s): one session [0, 50 s) of 4 records, emitted
        // again once the watermark passes its end.
        let bridge = [
            record(3, "a", 20_000, "view", None),
            record(4, "a", 100_000, "view", None),
        ];
        let out = v
            .process(0, &bridge.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let rows = emitted(&out);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(*field(&rows[0], "window_start"), Avro::TimestampMillis(0));
        assert_eq!(
            *field(&rows[0], "window_end"),
            Avro::TimestampMillis(50_000)
        );
        assert_eq!(*field(&rows[0], "n"), Avro::Long(4));
    }
}
