//! A feature view compiled from its declaration, its per-partition window state, and how a batch
//! of its input updates that state and emits windows.
//!
//! Event time: each input partition has a watermark, the latest event time seen in it. A record
//! updates every window it falls in that is still open (`end + allowed_lateness` beyond the
//! watermark); a record with no open window is late and goes to the late topic with the reason.
//! At the end of a batch, windows whose end the watermark passed are emitted (again, if a late
//! record updated them since), and windows past `end + allowed_lateness` are dropped. The
//! watermark is per partition because an entity's records all land in one partition: a slow
//! partition never makes another's records late, and the state of a partition moves between
//! replicas with it. A partition whose input stops emits nothing more until it moves again.
//!
//! State: every window changed by a batch, and the partition's next offset and watermark, are
//! written to the view's compacted changelog topic (same partition as the input), and those
//! writes are acknowledged before the batch's offsets are stored. A replica given a partition
//! restores its windows from the changelog and skips input below the restored offset, so a crash
//! neither loses nor double-counts a record.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::{Context, bail};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};
use tributary_core::bus::{InboundRecord, KafkaConfig, OutboundRecord, read_partition};
use tributary_core::schema::arrow::{AvroBatchDecoder, arrow_schema_for};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::features::{AggregateFn, FeatureViewDecl, Window};
use tributary_core::schema::wire;
use tributary_sql::{InputTable, Statement};

use crate::agg::{AggState, Scalar};

/// One aggregation, compiled.
#[derive(Debug, Clone)]
struct Agg {
    name: String,
    function: AggregateFn,
    quantile: f64,
    has_expr: bool,
    has_filter: bool,
}

/// One window's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowState {
    pub(crate) end: i64,
    pub(crate) aggs: Vec<AggState>,
    pub(crate) emitted: bool,
}

/// The changelog's record of a partition's progress.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Meta {
    next_offset: i64,
    watermark: i64,
}

/// Key of the progress record in a changelog partition (no entity starts with NUL).
const META_KEY: &[u8] = b"\0meta";

type WindowKey = (String, i64);

/// The state of one input partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    next_offset: i64,
    watermark: Option<i64>,
    windows: HashMap<WindowKey, WindowState>,
    /// (end, entity, start) of every window, to find those to emit and drop.
    by_end: BTreeSet<(i64, String, i64)>,
    /// Starts of each entity's windows.
    by_entity: HashMap<String, BTreeSet<i64>>,
    /// Changed since the last changelog write.
    dirty: HashSet<WindowKey>,
    /// Dropped since the last changelog write.
    removed: HashSet<WindowKey>,
    /// Updated after being emitted: to emit again.
    reemit: HashSet<WindowKey>,
    touched: HashSet<String>,
}

impl PartitionState {
    fn insert(&mut self, key: WindowKey, window: WindowState) {
        self.by_end.insert((window.end, key.0.clone(), key.1));
        self.by_entity
            .entry(key.0.clone())
            .or_default()
            .insert(key.1);
        self.windows.insert(key, window);
    }

    fn remove(&mut self, key: &WindowKey) -> Option<WindowState> {
        let window = self.windows.remove(key)?;
        self.by_end.remove(&(window.end, key.0.clone(), key.1));
        if let Some(starts) = self.by_entity.get_mut(&key.0) {
            starts.remove(&key.1);
            if starts.is_empty() {
                self.by_entity.remove(&key.0);
            }
        }
        self.dirty.remove(key);
        self.reemit.remove(key);
        self.removed.insert(key.clone());
        Some(window)
    }
}

/// A record the view could not use: its index in the batch, the error class and message.
pub(crate) type Rejected = (usize, &'static str, String);

/// What a batch produced.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) outputs: Vec<OutboundRecord>,
    pub(crate) changelog: Vec<OutboundRecord>,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) late: Vec<Rejected>,
    pub(crate) emitted: u64,
}

/// The latest values of an entity, served by the lookup endpoint.
pub(crate) type Online = Arc<RwLock<HashMap<String, serde_json::Value>>>;

/// A running feature view.
pub(crate) struct View {
    pub(crate) name: String,
    pub(crate) input_topic: String,
    pub(crate) output_topic: String,
    pub(crate) late_topic: Option<String>,
    pub(crate) changelog_topic: String,
    pub(crate) input_partitions: i32,
    window: Window,
    lateness: i64,
    aggs: Vec<Agg>,
    decoder: AvroBatchDecoder,
    table: InputTable,
    statement: Statement,
    output_schema: Schema,
    output_schema_json: String,
    pub(crate) output_subject: String,
    output_id: u32,
    key_field: String,
    pub(crate) partitions: HashMap<i32, PartitionState>,
    pub(crate) online: Online,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl View {
    /// Plans a view against the catalog's schemas (no network).
    pub(crate) async fn plan(decl: &FeatureViewDecl, catalog: &Catalog) -> anyhow::Result<Self> {
        let name = &decl.name;
        let input = catalog
            .topic(&decl.input)
            .with_context(|| format!("feature {name}: no topic {}", decl.input))?;
        let output = catalog
            .topic(&decl.output)
            .with_context(|| format!("feature {name}: no topic {}", decl.output))?;
        let window = decl
            .window
            .resolve()
            .map_err(|e| anyhow::anyhow!("feature {name}: {e}"))?;
        let lateness = decl
            .lateness_ms()
            .map_err(|e| anyhow::anyhow!("feature {name}: {e}"))?;
        let time = decl
            .time
            .clone()
            .or_else(|| input.event_time_field.clone())
            .with_context(|| format!("feature {name}: no event time"))?;
        let mut columns = vec![
            format!("CAST(({}) AS VARCHAR) AS \"__entity\"", decl.entity),
            format!("({time}) AS \"__time\""),
        ];
        let mut aggs = Vec::new();
        for (i, a) in decl.aggregations.iter().enumerate() {
            if let Some(expr) = &a.expr {
                columns.push(format!("({expr}) AS \"__v{i}\""));
            }
            if let Some(filter) = &a.filter {
                columns.push(format!("COALESCE(({filter}), false) AS \"__w{i}\""));
            }
            aggs.push(Agg {
                name: a.name.clone(),
                function: a.function,
                quantile: a.quantile.unwrap_or(0.5),
                has_expr: a.expr.is_some(),
                has_filter: a.filter.is_some(),
            });
        }
        let sql = format!("SELECT {} FROM input", columns.join(", "));
        let table = InputTable::new(arrow_schema_for(&input.value_schema_json)?)?;
        let statement = table.plan(&sql).await.with_context(|| {
            format!(
                "feature {name}: the entity, time and aggregation expressions over {}",
                input.name
            )
        })?;
        match statement
            .schema()
            .field_with_name("__time")
            .map(|f| f.data_type().clone())
        {
            Ok(DataType::Timestamp(_, _) | DataType::Int64 | DataType::Int32) => {}
            Ok(other) => bail!(
                "feature {name}: the event time {time} is {other}, not a timestamp or milliseconds"
            ),
            Err(e) => bail!("feature {name}: {e}"),
        }
        let key_field = output
            .key_field
            .clone()
            .with_context(|| format!("feature {name}: {} has no key_field", output.name))?;
        Ok(Self {
            name: name.clone(),
            input_topic: input.name.clone(),
            output_topic: output.name.clone(),
            late_topic: decl.late_topic.clone(),
            changelog_topic: decl.changelog_topic(),
            input_partitions: input.partitions,
            window,
            lateness,
            aggs,
            decoder: AvroBatchDecoder::new(Some(input.value_schema_json.clone()), 8192),
            table,
            statement,
            output_schema: output.value_schema.clone(),
            output_schema_json: output.value_schema_json.clone(),
            output_subject: output.value_subject(),
            output_id: 0,
            key_field,
            partitions: HashMap::new(),
            online: Arc::default(),
        })
    }

    /// The output schema's text (for registration).
    pub(crate) fn output_schema_json(&self) -> &str {
        &self.output_schema_json
    }

    /// Sets the registry id of the output schema.
    pub(crate) fn set_output_id(&mut self, id: u32) {
        self.output_id = id;
    }

    /// The decoder, for learning writer schemas.
    pub(crate) fn decoder(&mut self) -> &mut AvroBatchDecoder {
        &mut self.decoder
    }

    /// Windows held over all partitions.
    pub(crate) fn open_windows(&self) -> usize {
        self.partitions.values().map(|p| p.windows.len()).sum()
    }

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
            windows = state.windows.len(),
            next_offset = state.next_offset,
            "restored window state"
        );
        self.partitions.insert(partition, state);
        Ok(())
    }

    /// A partition's state from its changelog records, in offset order.
    fn restore(&self, records: &[InboundRecord]) -> anyhow::Result<PartitionState> {
        let mut state = PartitionState::default();
        let mut windows: HashMap<WindowKey, WindowState> = HashMap::new();
        for r in records {
            let key = r.key.as_deref().unwrap_or_default();
            if key == META_KEY {
                if let Some(payload) = &r.payload {
                    let meta: Meta =
                        serde_json::from_slice(payload).context("changelog progress record")?;
                    state.next_offset = meta.next_offset;
                    state.watermark = Some(meta.watermark);
                }
                continue;
            }
            let window_key = parse_key(key).context("changelog key")?;
            match &r.payload {
                Some(payload) => {
                    let window: WindowState =
                        serde_json::from_slice(payload).context("changelog window record")?;
                    windows.insert(window_key, window);
                }
                None => {
                    windows.remove(&window_key);
                }
            }
        }
        for (key, window) in windows {
            state.insert(key, window);
        }
        Ok(state)
    }

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

        let window = self.window;
        let lateness = self.lateness;
        let aggs = self.aggs.clone();
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
            let watermark = state.watermark.unwrap_or(i64::MIN);
            let accepted = apply(
                state,
                window,
                lateness,
                &aggs,
                &entity,
                time,
                &row.values,
                watermark,
            );
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

    /// Emits what the watermark passed, drops closed windows, writes the changelog and the
    /// online values.
    fn finish_batch(&mut self, partition: i32, outcome: &mut Outcome) -> anyhow::Result<()> {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        let watermark = state.watermark.unwrap_or(i64::MIN);
        let mut to_emit: Vec<WindowKey> = state
            .by_end
            .range(..=(watermark, String::from('\u{10ffff}'), i64::MAX))
            .map(|(_, entity, start)| (entity.clone(), *start))
            .filter(|key| state.windows.get(key).is_some_and(|w| !w.emitted))
            .collect();
        to_emit.extend(state.reemit.drain());
        to_emit.sort();
        to_emit.dedup();
        let mut emitted = Vec::new();
        for key in to_emit {
            if let Some(w) = state.windows.get_mut(&key)
                && w.end <= watermark
            {
                w.emitted = true;
                state.dirty.insert(key.clone());
                emitted.push((key.clone(), w.clone()));
            }
        }
        // The online values: each touched entity's latest window (before closed ones go).
        let touched: Vec<String> = state.touched.drain().collect();
        let mut latest: Vec<(String, WindowKey, WindowState)> = Vec::new();
        for entity in touched {
            // The entity's latest window: the one that starts last.
            let best = state
                .by_entity
                .get(&entity)
                .and_then(|starts| starts.iter().next_back())
                .and_then(|start| {
                    let key = (entity.clone(), *start);
                    state.windows.get(&key).map(|w| (key, w.clone()))
                });
            if let Some((k, w)) = best {
                latest.push((entity, k, w));
            }
        }
        let closed: Vec<WindowKey> = state
            .by_end
            .range(
                ..=(
                    watermark.saturating_sub(self.lateness),
                    String::from('\u{10ffff}'),
                    i64::MAX,
                ),
            )
            .map(|(_, entity, start)| (entity.clone(), *start))
            .collect();
        for key in &closed {
            state.remove(key);
        }
        // The changelog: windows changed, windows gone, then the progress record.
        let topic = self.changelog_topic.clone();
        for key in state.dirty.drain() {
            if let Some(w) = state.windows.get(&key) {
                outcome.changelog.push(OutboundRecord {
                    topic: topic.clone(),
                    key: Some(window_key_bytes(&key)),
                    payload: Some(serde_json::to_vec(w)?),
                    headers: Vec::new(),
                    partition: Some(partition),
                });
            }
        }
        for key in state.removed.drain() {
            outcome.changelog.push(OutboundRecord {
                topic: topic.clone(),
                key: Some(window_key_bytes(&key)),
                payload: None,
                headers: Vec::new(),
                partition: Some(partition),
            });
        }
        let meta = Meta {
            next_offset: state.next_offset,
            watermark,
        };
        outcome.changelog.push(OutboundRecord {
            topic,
            key: Some(META_KEY.to_vec()),
            payload: Some(serde_json::to_vec(&meta)?),
            headers: Vec::new(),
            partition: Some(partition),
        });
        for (key, w) in emitted {
            outcome.outputs.push(self.output_record(&key, &w)?);
            outcome.emitted += 1;
        }
        let mut online = self.online.write().unwrap_or_else(PoisonError::into_inner);
        for (entity, key, w) in latest {
            online.insert(entity, self.online_json(&key, &w));
        }
        Ok(())
    }

    fn output_record(&self, key: &WindowKey, w: &WindowState) -> anyhow::Result<OutboundRecord> {
        let Schema::Record(record) = &self.output_schema else {
            bail!("the output schema is not a record");
        };
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            let scalar = match field.name.as_str() {
                "window_start" => Scalar::Number(key.1 as f64),
                "window_end" => Scalar::Number(w.end as f64),
                n if n == self.key_field => Scalar::Text(key.0.clone()),
                n => {
                    let i = self
                        .aggs
                        .iter()
                        .position(|a| a.name == n)
                        .with_context(|| format!("no aggregation for field {n}"))?;
                    w.aggs[i].result(self.aggs[i].quantile)
                }
            };
            fields.push((field.name.clone(), to_avro(&field.schema, &scalar)?));
        }
        let body = apache_avro::to_avro_datum(&self.output_schema, Avro::Record(fields))?;
        Ok(OutboundRecord::new(
            self.output_topic.clone(),
            Some(key.0.clone().into_bytes()),
            wire::frame(self.output_id, &body),
        ))
    }

    fn online_json(&self, key: &WindowKey, w: &WindowState) -> serde_json::Value {
        let features: serde_json::Map<String, serde_json::Value> = self
            .aggs
            .iter()
            .zip(&w.aggs)
            .map(|(a, s)| {
                let v = match s.result(a.quantile) {
                    Scalar::Null => serde_json::Value::Null,
                    Scalar::Number(x) => serde_json::json!(x),
                    Scalar::Text(t) => serde_json::json!(t),
                };
                (a.name.clone(), v)
            })
            .collect();
        serde_json::json!({
            "view": self.name,
            "entity": key.0,
            "window_start": key.1,
            "window_end": w.end,
            "final": w.emitted,
            "features": features,
        })
    }

    /// The rows of the SQL's output, with the index (in the batch) of the record of each.
    fn rows(&self, produced: &[RecordBatch], indices: &[usize]) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(indices.len());
        let mut next = indices.iter();
        for batch in produced {
            let entity = text_column(batch.column(0))?;
            let time = millis_column(batch.column(1))?;
            let mut values: Vec<Vec<Scalar>> = Vec::with_capacity(self.aggs.len());
            let mut col = 2;
            for agg in &self.aggs {
                let n = batch.num_rows();
                let mut v = if agg.has_expr {
                    let c = scalars(batch.column(col))?;
                    col += 1;
                    c
                } else {
                    vec![Scalar::Number(1.0); n]
                };
                if agg.has_filter {
                    let w = batch
                        .column(col)
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .context("a where column is boolean")?;
                    col += 1;
                    for (r, value) in v.iter_mut().enumerate() {
                        if !(w.is_valid(r) && w.value(r)) {
                            *value = Scalar::Null;
                        }
                    }
                }
                values.push(v);
            }
            for r in 0..batch.num_rows() {
                let index = *next.next().context("more rows than records")?;
                rows.push(Row {
                    index,
                    entity: entity[r].clone(),
                    time: time[r],
                    values: values.iter().map(|v| v[r].clone()).collect(),
                });
            }
        }
        Ok(rows)
    }
}

/// One input record, evaluated.
#[derive(Debug)]
struct Row {
    index: usize,
    entity: Option<String>,
    time: Option<i64>,
    values: Vec<Scalar>,
}

/// Adds a record to every open window it falls in; false when there was none (late).
#[allow(clippy::too_many_arguments)]
fn apply(
    state: &mut PartitionState,
    window: Window,
    lateness: i64,
    aggs: &[Agg],
    entity: &str,
    time: i64,
    values: &[Scalar],
    watermark: i64,
) -> bool {
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
                    let key = (entity.to_string(), start);
                    if !state.windows.contains_key(&key) {
                        state.insert(key.clone(), new_window(end));
                    }
                    if let Some(w) = state.windows.get_mut(&key) {
                        add(w);
                        if w.emitted {
                            state.reemit.insert(key.clone());
                        }
                    }
                    state.dirty.insert(key);
                    accepted = true;
                }
                start -= slide;
            }
        }
        Window::Session(gap) => {
            let starts: Vec<i64> = state
                .by_entity
                .get(entity)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            // Open sessions this record joins: it is less than `gap` from their records.
            let joined: Vec<i64> = starts
                .into_iter()
                .filter(|s| {
                    state
                        .windows
                        .get(&(entity.to_string(), *s))
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
                let key = (entity.to_string(), *s);
                if let Some(w) = state.remove(&key) {
                    merged.end = merged.end.max(w.end);
                    for (a, b) in merged.aggs.iter_mut().zip(&w.aggs) {
                        a.merge(b);
                    }
                    was_emitted |= w.emitted;
                    start = start.min(*s);
                }
            }
            add(&mut merged);
            let key = (entity.to_string(), start);
            // The session keeps its start: it was not really removed.
            state.removed.remove(&key);
            merged.emitted = was_emitted && joined.contains(&start);
            if merged.emitted {
                state.reemit.insert(key.clone());
            }
            state.insert(key.clone(), merged);
            state.dirty.insert(key);
            accepted = true;
        }
    }
    accepted
}

fn window_key_bytes(key: &WindowKey) -> Vec<u8> {
    format!("{}\u{1f}{}", key.0, key.1).into_bytes()
}

fn parse_key(bytes: &[u8]) -> anyhow::Result<WindowKey> {
    let text = std::str::from_utf8(bytes)?;
    let (entity, start) = text.rsplit_once('\u{1f}').context("no separator")?;
    Ok((entity.to_string(), start.parse()?))
}

fn text_column(column: &ArrayRef) -> anyhow::Result<Vec<Option<String>>> {
    let text = cast(column, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .context("text")?;
    Ok(text.iter().map(|v| v.map(str::to_string)).collect())
}

fn millis_column(column: &ArrayRef) -> anyhow::Result<Vec<Option<i64>>> {
    let millis = match column.data_type() {
        DataType::Timestamp(_, _) => cast(
            &cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            &DataType::Int64,
        )?,
        _ => cast(column, &DataType::Int64)?,
    };
    let millis = millis
        .as_any()
        .downcast_ref::<Int64Array>()
        .context("millis")?;
    Ok(millis.iter().collect())
}

/// A column as scalars: numbers and timestamps (milliseconds) as numbers, the rest as text.
fn scalars(column: &ArrayRef) -> anyhow::Result<Vec<Scalar>> {
    let numeric = match column.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => Some(cast(
            &cast(
                &cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
                &DataType::Int64,
            )?,
            &DataType::Float64,
        )?),
        t if t.is_numeric() => Some(cast(column, &DataType::Float64)?),
        DataType::Boolean => Some(cast(column, &DataType::Float64)?),
        _ => None,
    };
    if let Some(numbers) = numeric {
        let numbers = numbers
            .as_any()
            .downcast_ref::<Float64Array>()
            .context("numbers")?;
        return Ok(numbers
            .iter()
            .map(|v| v.map_or(Scalar::Null, Scalar::Number))
            .collect());
    }
    Ok(text_column(column)?
        .into_iter()
        .map(|v| v.map_or(Scalar::Null, Scalar::Text))
        .collect())
}

/// A result as the Avro type of its output field. A null where the field takes none becomes
/// 0 (or "").
fn to_avro(schema: &Schema, value: &Scalar) -> anyhow::Result<Avro> {
    if let Schema::Union(union) = schema {
        let null = union
            .variants()
            .iter()
            .position(|v| matches!(v, Schema::Null));
        let other = union
            .variants()
            .iter()
            .position(|v| !matches!(v, Schema::Null));
        return match (value, null, other) {
            (Scalar::Null, Some(n), _) => Ok(Avro::Union(u32::try_from(n)?, Box::new(Avro::Null))),
            (_, _, Some(o)) => Ok(Avro::Union(
                u32::try_from(o)?,
                Box::new(to_avro(&union.variants()[o], value)?),
            )),
            _ => bail!("unsupported union {schema:?}"),
        };
    }
    let number = match value {
        Scalar::Number(x) => *x,
        Scalar::Null => 0.0,
        Scalar::Text(t) => t.parse().unwrap_or(0.0),
    };
    Ok(match schema {
        Schema::Long => Avro::Long(number.round() as i64),
        Schema::Int => Avro::Int(number.round() as i32),
        Schema::Double => Avro::Double(number),
        Schema::Float => Avro::Float(number as f32),
        Schema::TimestampMillis => Avro::TimestampMillis(number as i64),
        Schema::TimestampMicros => Avro::TimestampMicros((number as i64).saturating_mul(1000)),
        Schema::String => Avro::String(match value {
            Scalar::Text(t) => t.clone(),
            Scalar::Number(x) => format!("{x}"),
            Scalar::Null => String::new(),
        }),
        Schema::Boolean => Avro::Boolean(number != 0.0),
        other => bail!("output fields of type {other:?} are not supported"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const IN: &str = r#"{"type": "record", "name": "E", "fields": [
        {"name": "user", "type": "string"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "kind", "type": "string"},
        {"name": "amount", "type": ["null", "double"], "default": null}]}"#;
    const OUT: &str = r#"{"type": "record", "name": "F", "fields": [
        {"name": "user", "type": "string"},
        {"name": "window_start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "window_end", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "n", "type": "long"},
        {"name": "buys", "type": "long"},
        {"name": "spent", "type": "double"},
        {"name": "last_kind", "type": ["null", "string"], "default": null}]}"#;

    async fn view(window: &str, lateness: &str) -> (tempfile::TempDir, View) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.in-value.avsc"), IN).unwrap();
        std::fs::write(dir.path().join("t.out-value.avsc"), OUT).unwrap();
        let toml = format!(
            r#"
[[topic]]
name = "t.in"
event_time_field = "at"

[[topic]]
name = "t.out"
key_field = "user"

[[feature]]
name = "v"
input = "t.in"
output = "t.out"
entity = "user"
window = {window}
allowed_lateness = "{lateness}"
aggregation = [
  {{ name = "n", fn = "count" }},
  {{ name = "buys", fn = "count", where = "kind = 'buy'" }},
  {{ name = "spent", fn = "sum", expr = "amount" }},
  {{ name = "last_kind", fn = "last", expr = "kind" }},
]
"#
        );
        std::fs::write(dir.path().join("catalog.toml"), toml).unwrap();
        let catalog = Catalog::load(dir.path()).unwrap();
        let mut v = View::plan(&catalog.features[0], &catalog).await.unwrap();
        v.decoder().register(1, IN).unwrap();
        v.set_output_id(2);
        (dir, v)
    }

    fn record(offset: i64, user: &str, at: i64, kind: &str, amount: Option<f64>) -> InboundRecord {
        let schema = Schema::parse_str(IN).unwrap();
        let value = Avro::Record(vec![
            ("user".into(), Avro::String(user.into())),
            ("at".into(), Avro::TimestampMillis(at)),
            ("kind".into(), Avro::String(kind.into())),
            (
                "amount".into(),
                match amount {
                    Some(a) => Avro::Union(1, Box::new(Avro::Double(a))),
                    None => Avro::Union(0, Box::new(Avro::Null)),
                },
            ),
        ]);
        InboundRecord {
            topic: "t.in".into(),
            partition: 0,
            offset,
            key: Some(user.as_bytes().to_vec()),
            payload: Some(wire::frame(
                1,
                &apache_avro::to_avro_datum(&schema, value).unwrap(),
            )),
            timestamp_ms: None,
            headers: Vec::new(),
        }
    }

    fn emitted(outcome: &Outcome) -> Vec<Vec<(String, Avro)>> {
        let schema = Schema::parse_str(OUT).unwrap();
        outcome
            .outputs
            .iter()
            .map(|r| {
                let (_, mut body) = wire::parse(r.payload.as_deref().unwrap()).unwrap();
                match apache_avro::from_avro_datum(&schema, &mut body, None).unwrap() {
                    Avro::Record(f) => f,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    fn field<'a>(row: &'a [(String, Avro)], name: &str) -> &'a Avro {
        &row.iter().find(|(n, _)| n == name).unwrap().1
    }

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
        let changelog: Vec<InboundRecord> = out
            .changelog
            .iter()
            .enumerate()
            .map(|(i, r)| InboundRecord {
                topic: r.topic.clone(),
                partition: 0,
                offset: i as i64,
                key: r.key.clone(),
                payload: r.payload.clone(),
                timestamp_ms: None,
                headers: Vec::new(),
            })
            .collect();
        let restored = v.restore(&changelog).unwrap();
        assert_eq!(restored.windows, v.partitions[&0].windows);
        assert_eq!(restored.next_offset, 3);
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

#[cfg(test)]
mod repository {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    #[tokio::test]
    async fn the_repository_views_plan() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let catalog = tributary_core::schema::catalog::Catalog::load(&dir).unwrap();
        assert!(!catalog.features.is_empty());
        for decl in &catalog.features {
            if let Err(e) = super::View::plan(decl, &catalog).await {
                panic!("{e:#}");
            }
        }
    }
}
