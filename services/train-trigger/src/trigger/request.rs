//! The decision to request retraining, the `train.requests` record, and the reset after it.

use std::collections::BTreeMap;

use tributary_core::bus::OutboundRecord;
use tributary_core::schema::triggers::{Combine, PolicyDecl};
use tributary_core::schema::wire;

use super::policy::Firing;
use super::{Events, Measure, REQUESTS_TOPIC, Trigger};
use crate::actions::{ActionKind, PendingAction};

impl Trigger {
    /// Checks the policies; produces a request when they fire outside a cooldown.
    pub(crate) fn check(
        &mut self,
        now_ms: i64,
        events: &mut Events,
    ) -> anyhow::Result<Option<OutboundRecord>> {
        let firing = self.firing(now_ms);
        let fires = match self.decl.combine {
            Combine::Any => !firing.is_empty(),
            Combine::All => firing.len() == self.decl.policies.len(),
        };
        // A schedule is due once: remember how far it was checked.
        if self.state.schedule_checked_ms.is_none_or(|c| c < now_ms) && !self.crons.is_empty() {
            self.state.schedule_checked_ms = Some(now_ms);
            self.dirty = true;
        }
        if !fires {
            return Ok(None);
        }
        if let Some(last) = self.state.last_trigger_ms
            && now_ms - last < self.cooldown_ms
        {
            events.suppressed += 1;
            tracing::info!(trigger = %self.decl.name, policies = ?firing.iter().map(|f| &f.0).collect::<Vec<_>>(), cooldown_left_ms = self.cooldown_ms - (now_ms - last), "trigger suppressed by the cooldown");
            return Ok(None);
        }
        self.request(now_ms, &firing, events).map(Some)
    }

    /// The request for the firing policies; the state is reset for the next one and the
    /// request's actions are queued.
    fn request(
        &mut self,
        now_ms: i64,
        firing: &[Firing],
        events: &mut Events,
    ) -> anyhow::Result<OutboundRecord> {
        let policy = firing
            .iter()
            .map(|f| f.0.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let reason = firing
            .iter()
            .map(|f| f.1.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let drift: Vec<(Measure, f64)> = firing.iter().flat_map(|f| f.2.clone()).collect();
        self.state.triggers += 1;
        let request_id = request_id(&self.decl.name, self.state.triggers, &self.state.positions);
        let main_input = &self.decl.inputs[0];
        let ranges: Vec<(String, i32, i64, i64)> = self
            .state
            .positions
            .iter()
            .filter_map(|(key, end)| {
                let (topic, partition) = key.rsplit_once(':')?;
                (topic == main_input).then(|| {
                    let start = self.state.range_start.get(key).copied().unwrap_or(0);
                    (
                        topic.to_string(),
                        partition.parse().unwrap_or(0),
                        start,
                        *end,
                    )
                })
            })
            .collect();
        let from = self.state.from_time.unwrap_or(now_ms);
        let to = self.state.to_time.unwrap_or(now_ms);
        let request = serde_json::json!({
            "request_id": request_id,
            "model": self.decl.model,
            "policy": policy,
            "reason": reason,
            "requested_at": now_ms,
            "drift": drift.iter().map(|(m, t)| serde_json::json!({"feature": m.feature, "metric": m.metric, "value": m.value, "threshold": t})).collect::<Vec<_>>(),
            "data": {
                "topics": ranges.iter().map(|(t, p, s, e)| serde_json::json!({"topic": t, "partition": p, "start_offset": s, "end_offset": e})).collect::<Vec<_>>(),
                "archive_prefix": self.archive_prefix,
                "from_time": from,
                "to_time": to,
            }
        });
        let record = self.encode(&request)?;
        tracing::info!(trigger = %self.decl.name, %policy, %reason, %request_id, "retraining requested");
        events.fired.extend(firing.iter().map(|f| f.0.clone()));
        self.reset(now_ms, firing);
        self.queue_actions(request_id, request);
        self.dirty = true;
        Ok(record)
    }

    /// Resets for the next request: the volume count and the data range restart, the reference
    /// becomes the latest window, and the firing drift policies are disarmed.
    fn reset(&mut self, now_ms: i64, firing: &[Firing]) {
        self.state.last_trigger_ms = Some(now_ms);
        self.state.rows_since_trigger = 0;
        self.state.range_start = self.state.positions.clone();
        self.state.from_time = None;
        self.state.to_time = None;
        if let Some(window) = &self.state.last_window {
            self.state.reference = Some(window.clone());
        }
        for f in firing {
            if self
                .decl
                .policies
                .iter()
                .any(|p| p.name() == f.0 && matches!(p, PolicyDecl::Drift { .. }))
            {
                self.state.disarmed.push(f.0.clone());
            }
        }
        self.state.measures.clear();
    }

    /// Queues the declared actions (a webhook, a Kubernetes Job) of a request.
    fn queue_actions(&mut self, request_id: String, request: serde_json::Value) {
        if self.decl.webhook.is_some() {
            self.state.pending.push(PendingAction {
                request_id: request_id.clone(),
                kind: ActionKind::Webhook,
                request: request.clone(),
            });
        }
        if self.decl.kubernetes_job.is_some() {
            self.state.pending.push(PendingAction {
                request_id,
                kind: ActionKind::KubernetesJob,
                request,
            });
        }
    }

    fn encode(&self, request: &serde_json::Value) -> anyhow::Result<OutboundRecord> {
        let value = tributary_core::schema::json::json_to_avro(request, &self.request_schema)
            .map_err(|e| anyhow::anyhow!("the request does not fit {REQUESTS_TOPIC}: {e}"))?;
        let body = apache_avro::to_avro_datum(&self.request_schema, value)?;
        Ok(OutboundRecord::new(
            REQUESTS_TOPIC,
            Some(self.decl.model.clone().into_bytes()),
            wire::frame(self.request_id_schema, &body),
        ))
    }
}

/// A request id that is the same when a replay makes the same decision: a version-4-shaped
/// UUID from hashes of the trigger, its count and the input positions.
fn request_id(name: &str, count: u64, positions: &BTreeMap<String, i64>) -> String {
    let text = format!("{name}|{count}|{positions:?}");
    let h1 = fnv1a(text.as_bytes(), 0xcbf2_9ce4_8422_2325);
    let h2 = fnv1a(text.as_bytes(), 0x8422_2325_cbf2_9ce4);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&h1.to_be_bytes());
    b[8..].copy_from_slice(&h2.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn request_ids_repeat_for_the_same_decision_only() {
        let p = BTreeMap::from([("t:0".to_string(), 10)]);
        assert_eq!(request_id("a", 1, &p), request_id("a", 1, &p));
        assert_ne!(request_id("a", 1, &p), request_id("a", 2, &p));
        let id = request_id("a", 1, &p);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
