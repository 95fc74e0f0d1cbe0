//! A trigger compiled from its declaration, its state, and how records and time move it.
//!
//! Rows of the inputs are profiled (each feature's values) into tumbling windows of
//! `window_rows` rows. The first complete window after start is the reference; each later
//! window is compared with it (PSI, KS, Wasserstein for numbers, JS for categories) when it
//! closes. Policies are checked when a window closes, when the volume threshold is crossed, and
//! on every tick (schedules; conditions held back by the cooldown). When the combined policies
//! fire and no cooldown is running, a `train.requests` record is produced; the reference becomes
//! the latest window (the data the model is trained on), the volume count restarts, the firing
//! drift policy is disarmed until its measures fall below `threshold * rearm_below`, and the
//! actions are queued.
//!
//! The state (profiles, counts, positions per input partition, the last trigger, pending
//! actions) is written to the state topic with every batch's outputs, before the batch's
//! offsets are stored; after a restart, input below the stored positions is skipped, so the
//! decisions are those an uninterrupted run would make.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};
use apache_avro::Schema;
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};
use tributary_core::bus::{InboundRecord, OutboundRecord};
use tributary_core::schema::arrow::{AvroBatchDecoder, arrow_schema_for};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::triggers::{Combine, PolicyDecl, TriggerDecl};
use tributary_core::schema::wire;
use tributary_sql::{InputTable, Statement};

use crate::actions::{ActionKind, PendingAction};
use crate::cron::Cron;
use crate::drift::{self, Profile};

/// The topic requests go to.
pub(crate) const REQUESTS_TOPIC: &str = "train.requests";

/// One drift measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Measure {
    pub(crate) feature: String,
    pub(crate) metric: String,
    pub(crate) value: f64,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// Next offset per input `topic:partition`; input below is already counted.
    pub(crate) positions: BTreeMap<String, i64>,
    /// Offset per input partition where the data of the next request starts.
    pub(crate) range_start: BTreeMap<String, i64>,
    pub(crate) rows_since_trigger: u64,
    pub(crate) window_rows: u64,
    pub(crate) current: Profile,
    pub(crate) last_window: Option<Profile>,
    pub(crate) reference: Option<Profile>,
    /// Measures of the last window compared with the reference, until a request uses them.
    pub(crate) measures: Vec<Measure>,
    /// Measures of the last window compared with the reference (for the metrics).
    pub(crate) reported: Vec<Measure>,
    /// Drift policies disarmed after firing (hysteresis).
    pub(crate) disarmed: Vec<String>,
    pub(crate) last_trigger_ms: Option<i64>,
    pub(crate) triggers: u64,
    pub(crate) schedule_checked_ms: Option<i64>,
    pub(crate) from_time: Option<i64>,
    pub(crate) to_time: Option<i64>,
    pub(crate) pending: Vec<PendingAction>,
}

struct InputPlan {
    decoder: AvroBatchDecoder,
    table: InputTable,
    statement: Statement,
    /// Features computed by this input's statement, in column order after `__time`.
    features: Vec<(String, bool)>,
}

/// A policy whose condition holds: its name, why, and its drift measures with thresholds.
type Firing = (String, String, Vec<(Measure, f64)>);

/// What happened, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Events {
    pub(crate) fired: Vec<String>,
    pub(crate) suppressed: u64,
    pub(crate) windows: u64,
    pub(crate) rejected: Vec<(usize, String)>,
}

/// A running trigger.
pub(crate) struct Trigger {
    pub(crate) decl: TriggerDecl,
    inputs: HashMap<String, InputPlan>,
    crons: Vec<(String, Cron)>,
    cooldown_ms: i64,
    request_schema: Schema,
    pub(crate) request_id_schema: u32,
    archive_prefix: String,
    pub(crate) state: State,
    pub(crate) dirty: bool,
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("name", &self.decl.name)
            .finish_non_exhaustive()
    }
}

impl Trigger {
    pub(crate) async fn plan(
        decl: &TriggerDecl,
        catalog: &Catalog,
        archive_root: &str,
    ) -> anyhow::Result<Self> {
        let name = &decl.name;
        let mut inputs = HashMap::new();
        for topic in &decl.inputs {
            let t = catalog
                .topic(topic)
                .with_context(|| format!("trigger {name}: no topic {topic}"))?;
            let features: Vec<(String, bool)> = decl
                .features
                .iter()
                .filter(|f| f.topic.as_deref().unwrap_or(&decl.inputs[0]) == topic)
                .map(|f| (f.name.clone(), f.categorical))
                .collect();
            let time = t
                .event_time_field
                .clone()
                .map_or("NULL".to_string(), |f| format!("\"{f}\""));
            let mut columns = vec![format!("{time} AS \"__time\"")];
            for f in decl
                .features
                .iter()
                .filter(|f| features.iter().any(|(n, _)| *n == f.name))
            {
                columns.push(format!("({}) AS \"{}\"", f.expr, f.name.replace('"', "")));
            }
            let table = InputTable::new(arrow_schema_for(&t.value_schema_json)?)?;
            let statement = table
                .plan(&format!("SELECT {} FROM input", columns.join(", ")))
                .await
                .with_context(|| format!("trigger {name}: the features of {topic}"))?;
            inputs.insert(
                topic.clone(),
                InputPlan {
                    decoder: AvroBatchDecoder::new(Some(t.value_schema_json.clone()), 8192),
                    table,
                    statement,
                    features,
                },
            );
        }
        let mut crons = Vec::new();
        for p in &decl.policies {
            if let PolicyDecl::Schedule { name: policy, cron } = p {
                crons.push((
                    policy.clone(),
                    Cron::parse(cron)
                        .map_err(|e| anyhow::anyhow!("trigger {name}: policy {policy}: {e}"))?,
                ));
            }
        }
        let requests = catalog
            .topic(REQUESTS_TOPIC)
            .with_context(|| format!("the catalog has no {REQUESTS_TOPIC} topic"))?;
        Ok(Self {
            decl: decl.clone(),
            inputs,
            crons,
            cooldown_ms: decl
                .cooldown_ms()
                .map_err(|e| anyhow::anyhow!("trigger {name}: {e}"))?,
            request_schema: requests.value_schema.clone(),
            request_id_schema: 0,
            archive_prefix: format!("{}/{}/", archive_root.trim_end_matches('/'), decl.inputs[0]),
            state: State::default(),
            dirty: false,
        })
    }

    pub(crate) fn decoder(&mut self, topic: &str) -> Option<&mut AvroBatchDecoder> {
        self.inputs.get_mut(topic).map(|i| &mut i.decoder)
    }

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
        let with_value: Vec<usize> = fresh
            .iter()
            .copied()
            .filter(|&i| records[i].payload.is_some())
            .collect();
        let payloads: Vec<&[u8]> = with_value
            .iter()
            .filter_map(|&i| records[i].payload.as_deref())
            .collect();
        let decoded = input.decoder.decode(payloads.iter().copied());
        for (index, error) in decoded.errors {
            events.rejected.push((with_value[index], error.to_string()));
        }
        // Feature values per record index.
        let mut rows: BTreeMap<usize, (Option<i64>, Vec<Value>)> = BTreeMap::new();
        for batch in decoded.batches {
            let produced = input
                .table
                .run(&input.statement, batch.batch.clone())
                .await
                .context("the features' SQL")?;
            let mut next = batch.rows.iter();
            for b in produced {
                let values = columns(&b, &input.features)?;
                for r in 0..b.num_rows() {
                    let index = with_value[*next.next().context("rows")?];
                    rows.insert(
                        index,
                        (values.0[r], values.1.iter().map(|c| c[r].clone()).collect()),
                    );
                }
            }
        }
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
            for ((name, categorical), v) in features.iter().zip(values) {
                match (v, categorical) {
                    (Value::Number(x), false) => self.state.current.add_number(name, x),
                    (Value::Number(x), true) => {
                        self.state.current.add_category(name, &format!("{x}"))
                    }
                    (Value::Text(s), true) => self.state.current.add_category(name, &s),
                    (Value::Text(s), false) => {
                        if let Ok(x) = s.parse() {
                            self.state.current.add_number(name, x);
                        }
                    }
                    (Value::Null, _) => {}
                }
            }
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

    fn volume_crossed(&self) -> bool {
        self.decl.policies.iter().any(|p| matches!(p, PolicyDecl::Volume { rows, .. } if self.state.rows_since_trigger == *rows))
    }

    /// Ends the current window: the first becomes the reference; later ones are measured.
    fn close_window(&mut self) {
        let window = std::mem::take(&mut self.state.current);
        self.state.window_rows = 0;
        match &self.state.reference {
            None => {
                self.state.reference = Some(window.clone());
                self.state.measures.clear();
            }
            Some(reference) => {
                let mut measures = Vec::new();
                for f in &self.decl.features {
                    if reference.samples(&f.name) < self.decl.min_samples
                        || window.samples(&f.name) < self.decl.min_samples
                    {
                        continue;
                    }
                    if f.categorical {
                        if let (Some(r), Some(c)) = (
                            reference.categorical.get(&f.name),
                            window.categorical.get(&f.name),
                        ) {
                            measures.push(measure(&f.name, "js", drift::js(r, c)));
                        }
                    } else if let (Some(r), Some(c)) =
                        (reference.numeric.get(&f.name), window.numeric.get(&f.name))
                    {
                        measures.push(measure(&f.name, "psi", drift::psi(r, c)));
                        measures.push(measure(&f.name, "ks", drift::ks(r, c)));
                        measures.push(measure(&f.name, "wasserstein", drift::wasserstein(r, c)));
                    }
                }
                self.state.reported = measures.clone();
                self.state.measures = measures;
            }
        }
        self.state.last_window = Some(window);
        self.rearm();
    }

    /// Re-arms disarmed drift policies whose measures all fell below the hysteresis line.
    fn rearm(&mut self) {
        let measures = self.state.measures.clone();
        let decl = self.decl.clone();
        self.state.disarmed.retain(|name| {
            let Some(PolicyDecl::Drift {
                thresholds,
                rearm_below,
                ..
            }) = decl.policies.iter().find(|p| p.name() == name)
            else {
                return false;
            };
            let calm = measures.iter().all(|m| {
                thresholds
                    .get(&m.metric)
                    .is_none_or(|t| m.value < t * rearm_below)
            });
            !calm || measures.is_empty()
        });
    }

    /// Which policies' conditions hold now, and why.
    fn firing(&self, now_ms: i64) -> Vec<Firing> {
        let mut out = Vec::new();
        for p in &self.decl.policies {
            match p {
                PolicyDecl::Volume { name, rows } => {
                    if self.state.rows_since_trigger >= *rows {
                        out.push((
                            name.clone(),
                            format!(
                                "{} new rows since the last request (at least {rows})",
                                self.state.rows_since_trigger
                            ),
                            Vec::new(),
                        ));
                    }
                }
                PolicyDecl::Schedule { name, cron } => {
                    let since = self
                        .state
                        .last_trigger_ms
                        .max(self.state.schedule_checked_ms)
                        .unwrap_or(now_ms);
                    if self
                        .crons
                        .iter()
                        .any(|(n, c)| n == name && c.fired_between(since, now_ms))
                    {
                        out.push((
                            name.clone(),
                            format!("schedule {cron:?} came due"),
                            Vec::new(),
                        ));
                    }
                }
                PolicyDecl::Drift {
                    name,
                    thresholds,
                    combine,
                    ..
                } => {
                    if self.state.disarmed.contains(name) {
                        continue;
                    }
                    let checked: Vec<(Measure, f64)> = self
                        .state
                        .measures
                        .iter()
                        .filter_map(|m| thresholds.get(&m.metric).map(|t| (m.clone(), *t)))
                        .collect();
                    let over: Vec<&(Measure, f64)> =
                        checked.iter().filter(|(m, t)| m.value > *t).collect();
                    let fires = match combine {
                        Combine::Any => !over.is_empty(),
                        Combine::All => !checked.is_empty() && over.len() == checked.len(),
                    };
                    if fires {
                        let reason = over
                            .iter()
                            .map(|(m, t)| {
                                format!("{} {} {:.4} > {t}", m.feature, m.metric, m.value)
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        out.push((name.clone(), format!("drift: {reason}"), checked));
                    }
                }
            }
        }
        out
    }

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
        // Reset for the next request.
        self.state.last_trigger_ms = Some(now_ms);
        self.state.rows_since_trigger = 0;
        self.state.range_start = self.state.positions.clone();
        self.state.from_time = None;
        self.state.to_time = None;
        if let Some(window) = &self.state.last_window {
            self.state.reference = Some(window.clone());
        }
        for f in &firing {
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
        self.dirty = true;
        Ok(Some(record))
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

fn measure(feature: &str, metric: &str, value: f64) -> Measure {
    Measure {
        feature: feature.to_string(),
        metric: metric.to_string(),
        value,
    }
}

fn tp(topic: &str, partition: i32) -> String {
    format!("{topic}:{partition}")
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

/// A feature value.
#[derive(Debug, Clone)]
enum Value {
    Null,
    Number(f64),
    Text(String),
}

type Columns = (Vec<Option<i64>>, Vec<Vec<Value>>);

/// The time column and the feature columns of a batch of the features' SQL.
fn columns(batch: &RecordBatch, features: &[(String, bool)]) -> anyhow::Result<Columns> {
    let time = match batch.column(0).data_type() {
        DataType::Null => vec![None; batch.num_rows()],
        DataType::Timestamp(_, _) => ints(&cast(
            &cast(
                batch.column(0),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?,
            &DataType::Int64,
        )?)?,
        _ => ints(&cast(batch.column(0), &DataType::Int64)?)?,
    };
    let mut values = Vec::with_capacity(features.len());
    for (i, (_, categorical)) in features.iter().enumerate() {
        let column = batch.column(i + 1);
        let numeric =
            column.data_type().is_numeric() || matches!(column.data_type(), DataType::Boolean);
        if numeric && !categorical {
            let c = cast(column, &DataType::Float64)?;
            let c = c
                .as_any()
                .downcast_ref::<Float64Array>()
                .context("numbers")?;
            values.push(
                c.iter()
                    .map(|v| {
                        v.filter(|x| x.is_finite())
                            .map_or(Value::Null, Value::Number)
                    })
                    .collect(),
            );
        } else {
            let c = cast(column, &DataType::Utf8)?;
            let c = c.as_any().downcast_ref::<StringArray>().context("text")?;
            values.push(
                c.iter()
                    .map(|v| v.map_or(Value::Null, |s| Value::Text(s.to_string())))
                    .collect(),
            );
        }
    }
    Ok((time, values))
}

fn ints(column: &ArrayRef) -> anyhow::Result<Vec<Option<i64>>> {
    let c = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .context("integers")?;
    Ok(c.iter().collect())
}

/// Checks the state after a restore belongs to this declaration's features.
pub(crate) fn restore(trigger: &mut Trigger, bytes: &[u8]) -> anyhow::Result<()> {
    let state: State = serde_json::from_slice(bytes).context("trigger state")?;
    if state.triggers > 0 && state.last_trigger_ms.is_none() {
        bail!("inconsistent state: triggers without a time");
    }
    trigger.state = state;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn the_repository_triggers_plan() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let catalog = Catalog::load(&dir).unwrap();
        assert!(!catalog.triggers.is_empty());
        for decl in &catalog.triggers {
            if let Err(e) = Trigger::plan(decl, &catalog, "file:///lake").await {
                panic!("{e:#}");
            }
        }
    }

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
