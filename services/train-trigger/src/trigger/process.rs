//! Input records into the current window, with the policy checks they cause.

use tributary_core::bus::{InboundRecord, OutboundRecord};

use super::features::feature_rows;
use super::{Events, Trigger};

impl Trigger {
    /// Profiles the records of one input topic (in offset order per partition) and checks the
    /// policies at each window's close and volume crossing. Returns the requests produced.
    pub(crate) async fn process(
        &mut self,
        topic: &str,
        records: &[&InboundRecord],
        now_ms: i64,
        events: &mut Events,
    ) -> anyhow::Result<Vec<OutboundRecord>> {
        let mut out = Vec::new();
        let fresh: Vec<usize> = (0..records.len())
            .filter(|&i| {
                let r = records[i];
                r.offset
                    >= self
                        .state
                        .positions
                        .get(&tp(&r.topic, r.partition))
                        .copied()
                        .unwrap_or(0)
            })
            .collect();
        if fresh.is_empty() {
            return Ok(out);
        }
        let Some(input) = self.inputs.get_mut(topic) else {
            return Ok(out);
        };
        let mut rows = feature_rows(input, records, &fresh, events).await?;
        let features = input.features.clone();
        for &i in &fresh {
            let r = records[i];
            let key = tp(&r.topic, r.partition);
            self.state
                .range_start
                .entry(key.clone())
                .or_insert(r.offset);
            self.state.positions.insert(key, r.offset + 1);
            self.dirty = true;
            let Some((time, values)) = rows.remove(&i) else {
                continue;
            };
            let time = time.or(r.timestamp_ms);
            if let Some(t) = time {
                self.state.from_time = Some(self.state.from_time.map_or(t, |f| f.min(t)));
                self.state.to_time = Some(self.state.to_time.map_or(t + 1, |x| x.max(t + 1)));
            }
            self.profile(&features, values);
            self.state.rows_since_trigger += 1;
            self.state.window_rows += 1;
            let mut check = self.volume_crossed();
            if self.state.window_rows >= self.decl.window_rows {
                self.close_window();
                events.windows += 1;
                check = true;
            }
            if check && let Some(request) = self.check(now_ms, events)? {
                out.push(request);
            }
        }
        Ok(out)
    }
}

fn tp(topic: &str, partition: i32) -> String {
    format!("{topic}:{partition}")
}
