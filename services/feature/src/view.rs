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
//! State: at each checkpoint (chosen by the service), every entity changed since the last one
//! (all its open windows in one record, `changelog.rs`) and the partition's next offset and
//! watermark are written to the view's compacted changelog topic (same partition as the input);
//! the input offsets are committed only up to the last acknowledged checkpoint. A replica given
//! a partition restores its windows from the changelog and skips input below the restored
//! offset, so a crash neither loses nor double-counts a record.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use crate::changelog::{self, Key};

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

/// The format-1 (JSON) progress record, read on restore.
#[derive(Debug, Clone, Copy, Deserialize)]
struct LegacyMeta {
    next_offset: i64,
    watermark: i64,
}

type WindowKey = (String, i64);

/// The state of one input partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    next_offset: i64,
    watermark: Option<i64>,
    /// Each entity's windows by start.
    entities: HashMap<String, BTreeMap<i64, WindowState>>,
    /// (end, entity, start) of every window, to find those to emit and drop.
    by_end: BTreeSet<(i64, String, i64)>,
    /// Entities changed since the last checkpoint.
    dirty: HashSet<String>,
    /// Format-1 keys read at restore: tombstoned by the next checkpoint.
    legacy_keys: HashSet<Vec<u8>>,
    /// The restore found a late progress record of an older checkpoint after the newest one:
    /// the next checkpoint writes the progress record again, so that compaction keeps the newest.
    rewrite_meta: bool,
    /// Updated after being emitted: to emit again.
    reemit: HashSet<WindowKey>,
    touched: HashSet<String>,
    /// The next offset as of the last checkpoint (or restore): everything below it is in the
    /// changelog, acknowledged once the checkpoint's records are.
    checkpointed: i64,
}

impl PartitionState {
    fn window(&self, entity: &str, start: i64) -> Option<&WindowState> {
        self.entities.get(entity).and_then(|w| w.get(&start))
    }

    fn insert(&mut self, entity: &str, start: i64, window: WindowState) {
        self.by_end.insert((window.end, entity.to_string(), start));
        match self.entities.get_mut(entity) {
            Some(windows) => {
                windows.insert(start, window);
            }
            None => {
                self.entities
                    .insert(entity.to_string(), BTreeMap::from([(start, window)]));
            }
        }
        self.mark_dirty(entity);
    }

    fn remove(&mut self, entity: &str, start: i64) -> Option<WindowState> {
        let windows = self.entities.get_mut(entity)?;
        let window = windows.remove(&start)?;
        if windows.is_empty() {
            self.entities.remove(entity);
        }
        let key = (entity.to_string(), start);
        self.by_end.remove(&(window.end, key.0.clone(), start));
        self.reemit.remove(&key);
        self.mark_dirty(entity);
        Some(window)
    }

    fn mark_dirty(&mut self, entity: &str) {
        if !self.dirty.contains(entity) {
            self.dirty.insert(entity.to_string());
        }
    }

    /// Whether the changelog lacks anything of this partition.
    fn unsaved(&self) -> bool {
        self.next_offset != self.checkpointed
            || !self.dirty.is_empty()
            || !self.legacy_keys.is_empty()
            || self.rewrite_meta
    }
}

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

/// An entity's latest window, kept for the lookup endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Latest {
    start: i64,
    end: i64,
    emitted: bool,
    values: Vec<Scalar>,
}

/// The latest values of each entity of a view, served by the lookup endpoint.
#[derive(Debug, Default)]
pub(crate) struct OnlineValues {
    view: String,
    names: Vec<String>,
    latest: HashMap<String, Latest>,
}

impl OnlineValues {
    /// The lookup's answer for `entity`, if this replica has values for it.
    pub(crate) fn lookup(&self, entity: &str) -> Option<serde_json::Value> {
        let latest = self.latest.get(entity)?;
        let features: serde_json::Map<String, serde_json::Value> = self
            .names
            .iter()
            .zip(&latest.values)
            .map(|(name, value)| {
                let v = match value {
                    Scalar::Null => serde_json::Value::Null,
                    Scalar::Number(x) => serde_json::json!(x),
                    Scalar::Text(t) => serde_json::json!(t),
                };
                (name.clone(), v)
            })
            .collect();
        Some(serde_json::json!({
            "view": self.view,
            "entity": entity,
            "window_start": latest.start,
            "window_end": latest.end,
            "final": latest.emitted,
            "features": features,
        }))
    }
}

/// Shared with the lookup endpoint.
pub(crate) type Online = Arc<RwLock<OnlineValues>>;

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
        let names = aggs.iter().map(|a| a.name.clone()).collect();
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
            online: Arc::new(RwLock::new(OnlineValues {
                view: name.clone(),
                names,
                latest: HashMap::new(),
            })),
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
        self.partitions.values().map(|p| p.by_end.len()).sum()
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
    fn restore(&self, records: &[InboundRecord]) -> anyhow::Result<PartitionState> {
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

    /// Emits what the watermark passed, drops closed windows and updates the online values.
    fn finish_batch(&mut self, partition: i32, outcome: &mut Outcome) -> anyhow::Result<()> {
        let Some(mut state) = self.partitions.remove(&partition) else {
            return Ok(());
        };
        let result = self.finish_partition(&mut state, outcome);
        self.partitions.insert(partition, state);
        result
    }

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
        {
            let mut online = self.online.write().unwrap_or_else(PoisonError::into_inner);
            for entity in state.touched.drain() {
                // The entity's latest window: the one that starts last.
                let Some((start, w)) = state
                    .entities
                    .get(&entity)
                    .and_then(|windows| windows.iter().next_back())
                else {
                    continue;
                };
                let values = self
                    .aggs
                    .iter()
                    .zip(&w.aggs)
                    .map(|(a, s)| s.result(a.quantile))
                    .collect();
                online.latest.insert(
                    entity,
                    Latest {
                        start: *start,
                        end: w.end,
                        emitted: w.emitted,
                        values,
                    },
                );
            }
        }
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

    fn output_record(
        &self,
        entity: &str,
        start: i64,
        w: &WindowState,
    ) -> anyhow::Result<OutboundRecord> {
        let Schema::Record(record) = &self.output_schema else {
            bail!("the output schema is not a record");
        };
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            let scalar = match field.name.as_str() {
                "window_start" => Scalar::Number(start as f64),
                "window_end" => Scalar::Number(w.end as f64),
                n if n == self.key_field => Scalar::Text(entity.to_string()),
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
            Some(entity.as_bytes().to_vec()),
            wire::frame(self.output_id, &body),
        ))
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
            // Moved out column by column, row by row: no copy of any text.
            let mut columns: Vec<std::vec::IntoIter<Scalar>> =
                values.into_iter().map(Vec::into_iter).collect();
            for (entity, time) in entity.into_iter().zip(time) {
                let index = *next.next().context("more rows than records")?;
                rows.push(Row {
                    index,
                    entity,
                    time,
                    values: columns
                        .iter_mut()
                        .map(|c| c.next().unwrap_or(Scalar::Null))
                        .collect(),
                });
            }
        }
        Ok(rows)
    }
}

/// The farthest event time from 1970 a record may have, in milliseconds: chrono's range (about
/// 262,000 years each way), far inside i64, so that window starts, ends and lateness never
/// overflow.
const MAX_EVENT_TIME_MS: i64 = 8_210_266_876_799_999;

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

    /// Produced records as read back from the topic.
    fn inbound(records: &[OutboundRecord]) -> Vec<InboundRecord> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| InboundRecord {
                topic: r.topic.clone(),
                partition: r.partition.unwrap_or(0),
                offset: i as i64,
                key: r.key.clone(),
                payload: r.payload.clone(),
                timestamp_ms: None,
                headers: r.headers.clone(),
            })
            .collect()
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
