//! A transform compiled from its declaration, and how it runs on a batch of one input topic:
//! decode (Avro to Arrow through the registry), add the lookup columns, check the rules, drop
//! duplicates, run the SQL, fit the result to the output schema and encode it. Records that fail
//! a step are returned as rejected, with the step and the reason, and the others go on.
//!
//! The SQL is planned once at start-up over an in-memory table named `input` whose contents are
//! swapped before each run. It must be row-wise (projections, filters, functions, `CASE`,
//! `UNNEST`): a batch is an arbitrary cut of a stream, so aggregates, joins, sorts, windows and
//! limits over it would mean nothing and are refused at start-up. Row-wise plans keep the input
//! order, so changes of one key stay in order.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StructArray};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tributary_core::bus::{InboundRecord, KafkaConfig};
use tributary_core::schema::arrow::{AvroBatchDecoder, AvroBatchEncoder, arrow_schema_for};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::{RegistryClient, learn_writer_schemas};
use tributary_core::schema::transforms::TransformDecl;
use tributary_sql::{InputTable, Statement};

use crate::dedup::Dedup;
use crate::lookup::LookupTable;
use crate::rules::{self, Rule};
use tributary_core::schema::conform::{Conformer, key_text};

/// Why a record did not reach the output (the dead letter's error class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not Confluent-framed Avro the registry and the input schema can read.
    Decode,
    /// Broke a declared rule.
    Validation,
    /// The SQL failed on it (a cast, a function).
    Sql,
    /// What the SQL made of it does not fit the output schema.
    Output,
}

impl Rejection {
    pub(crate) fn class(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Validation => "validation",
            Self::Sql => "sql",
            Self::Output => "output",
        }
    }
}

/// What a batch became.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Output records (key, payload), in input order.
    pub(crate) outputs: Vec<(Option<Vec<u8>>, Bytes)>,
    /// Records that failed, as (index in the batch, why, message), in input order.
    pub(crate) rejected: Vec<(usize, Rejection, String)>,
    /// Records dropped as duplicates.
    pub(crate) duplicates: u64,
    /// Tombstones skipped (nothing to transform).
    pub(crate) tombstones: u64,
}

/// The SQL of one input topic, planned.
struct InputPlan {
    schema: SchemaRef,
    decoder: AvroBatchDecoder,
    table: InputTable,
    plan: Statement,
    rules_plan: Option<Statement>,
    conformer: Conformer,
    /// Column holding the event time for deduplication (else the Kafka timestamp).
    time_column: Option<String>,
}

impl std::fmt::Debug for InputPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputPlan")
            .field("schema", &self.schema)
            .field("time_column", &self.time_column)
            .finish_non_exhaustive()
    }
}

/// A running transform.
#[derive(Debug)]
pub(crate) struct Transform {
    pub(crate) name: String,
    pub(crate) output_topic: String,
    output_schema: String,
    output_subject: String,
    target: SchemaRef,
    key_field: Option<String>,
    inputs: HashMap<String, InputPlan>,
    lookups: Vec<(LookupTable, String)>,
    rules: Vec<Rule>,
    dedup: Option<(Dedup, String)>,
    encoder: AvroBatchEncoder,
}

impl Transform {
    /// Plans a declaration without touching the network: the SQL and the rules over every
    /// input (with the lookup columns), the check that the SQL's output fits the output schema,
    /// and the dedup columns. Every error names the transform and what is wrong.
    pub(crate) async fn plan(decl: &TransformDecl, catalog: &Catalog) -> anyhow::Result<Self> {
        let name = &decl.name;
        let topic = |t: &str| {
            catalog
                .topic(t)
                .with_context(|| format!("transform {name}: topic {t} is not in the catalog"))
        };
        let output = topic(&decl.output)?;
        let target = arrow_schema_for(&output.value_schema_json)?;
        // The id is set by `start`, once the registry has the schema.
        let encoder = AvroBatchEncoder::new(0, &output.value_schema_json, target.clone())?;

        let mut lookups = Vec::new();
        for l in &decl.lookups {
            let lookup_topic = topic(&l.topic)?;
            let table = LookupTable::new(&l.name, &l.topic, &lookup_topic.value_schema_json)
                .with_context(|| format!("transform {name}: lookup {}", l.name))?;
            lookups.push((table, l.key.clone()));
        }

        let mut inputs = HashMap::new();
        let mut rules_compiled = Vec::new();
        let mut dedup = None;
        for input_name in &decl.inputs {
            let input = topic(input_name)?;
            let decoded = arrow_schema_for(&input.value_schema_json)?;
            for (table, key) in &lookups {
                if rules::field_type(&decoded, key).is_none() {
                    bail!(
                        "transform {name}: lookup {}: key {key} is not a column of {input_name}",
                        table.name
                    );
                }
                if decoded.field_with_name(&table.name).is_ok() {
                    bail!(
                        "transform {name}: lookup {} has the name of a column of {input_name}",
                        table.name
                    );
                }
            }
            let mut fields: Vec<Field> = decoded
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.extend(lookups.iter().map(|(t, _)| t.field()));
            let schema = Arc::new(Schema::new(fields));

            let table = InputTable::new(schema.clone())?;
            let plan = table
                .plan(&decl.sql)
                .await
                .with_context(|| format!("transform {name}: the SQL over {input_name}"))?;
            let conformer = Conformer::new(plan.schema(), target.clone()).map_err(|problems| {
                anyhow::anyhow!(
                    "transform {name}: what the SQL makes of {input_name} does not fit the schema of {}: {problems}",
                    output.name
                )
            })?;
            let (rules_sql, compiled) = rules::compile(&decl.rules, &schema)
                .map_err(|e| anyhow::anyhow!("transform {name}: {e}"))?;
            let rules_plan =
                match rules_sql {
                    Some(sql) => Some(table.plan(&sql).await.with_context(|| {
                        format!("transform {name}: the rules over {input_name}")
                    })?),
                    None => None,
                };
            rules_compiled = compiled;

            let time_column = match &decl.dedup {
                Some(d) => {
                    if rules::field_type(&schema, &d.key).is_none() {
                        bail!(
                            "transform {name}: dedup key {} is not a column of {input_name}",
                            d.key
                        );
                    }
                    let time = d
                        .time_field
                        .clone()
                        .or_else(|| input.event_time_field.clone());
                    if let Some(t) = &time {
                        match rules::field_type(&schema, t) {
                            Some(DataType::Timestamp(_, _) | DataType::Int64) => {}
                            _ => bail!(
                                "transform {name}: dedup time field {t} of {input_name} must be a timestamp or long"
                            ),
                        }
                    }
                    let window = d
                        .window_ms()
                        .map_err(|e| anyhow::anyhow!("transform {name}: {e}"))?;
                    dedup = Some((Dedup::new(window), d.key.clone()));
                    time
                }
                None => None,
            };

            let input_plan = InputPlan {
                schema,
                decoder: AvroBatchDecoder::new(Some(input.value_schema_json.clone()), 8192),
                table,
                plan,
                rules_plan,
                conformer,
                time_column,
            };
            inputs.insert(input_name.clone(), input_plan);
        }
        Ok(Self {
            name: name.clone(),
            output_topic: output.name.clone(),
            output_schema: output.value_schema_json.clone(),
            output_subject: output.value_subject(),
            key_field: output.key_field.clone(),
            inputs,
            lookups,
            rules: rules_compiled,
            dedup,
            target,
            encoder,
        })
    }

    /// Makes a planned transform ready to run: registers the output schema (its id goes in
    /// front of every output record) and loads the lookup tables from their topics.
    pub(crate) async fn start(
        mut self,
        registry: &RegistryClient,
        kafka: &KafkaConfig,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let name = &self.name;
        let id = registry
            .register(&self.output_subject, &self.output_schema)
            .await
            .with_context(|| {
                format!(
                    "transform {name}: register the schema of {}",
                    self.output_topic
                )
            })?;
        self.encoder = AvroBatchEncoder::new(id, &self.output_schema, self.target.clone())?;
        for (table, _) in &mut self.lookups {
            table
                .start(kafka, shutdown)
                .await
                .with_context(|| format!("transform {name}: lookup {}", table.name))?;
            table.refresh(registry, shutdown).await?;
        }
        Ok(self)
    }

    /// The input topics.
    pub(crate) fn input_topics(&self) -> impl Iterator<Item = &String> {
        self.inputs.keys()
    }

    /// Keys held by each lookup table, and by the deduplication window.
    pub(crate) fn state_sizes(&self) -> (Vec<(&str, usize)>, usize) {
        (
            self.lookups
                .iter()
                .map(|(t, _)| (t.name.as_str(), t.len()))
                .collect(),
            self.dedup.as_ref().map_or(0, |(d, _)| d.len()),
        )
    }

    /// Transforms records of one input topic. An `Err` is a failure of the service (the
    /// registry unreachable until shutdown, a broken plan), not of a record.
    pub(crate) async fn process(
        &mut self,
        topic: &str,
        records: &[&InboundRecord],
        registry: &RegistryClient,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        let Self {
            inputs,
            lookups,
            rules,
            dedup,
            encoder,
            key_field,
            ..
        } = self;
        let Some(input) = inputs.get_mut(topic) else {
            return Ok(outcome);
        };
        for (table, _) in lookups.iter_mut() {
            table.refresh(registry, shutdown).await?;
        }
        // Indexes (in `records`) of the records with a value.
        let mut present = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if r.payload.is_some() {
                present.push(i);
            } else {
                outcome.tombstones += 1;
            }
        }
        let payloads: Vec<&[u8]> = present
            .iter()
            .filter_map(|&i| records.get(i).and_then(|r| r.payload.as_deref()))
            .collect();
        learn_writer_schemas(registry, &mut input.decoder, &payloads, shutdown).await?;
        let decoded = input.decoder.decode(payloads.iter().copied());
        for (index, error) in decoded.errors {
            outcome
                .rejected
                .push((present[index], Rejection::Decode, error.to_string()));
        }
        for batch in decoded.batches {
            let rows: Vec<usize> = batch.rows.iter().map(|&i| present[i]).collect();
            let mut columns = batch.batch.columns().to_vec();
            for (table, key) in lookups.iter() {
                let keys = column_at(&batch.batch, key).context("lookup key column")?;
                let keys = key_text(&keys).map_err(anyhow::Error::msg)?;
                columns.push(table.column(&keys)?);
            }
            let batch = RecordBatch::try_new(input.schema.clone(), columns)
                .context("the decoded batch does not have the input's schema")?;
            let mut keep = vec![true; rows.len()];

            if let Some(plan) = &input.rules_plan {
                let checked = input.run(plan, batch.clone()).await.context("rules")?;
                let checked = concat_batches(
                    &checked
                        .first()
                        .map_or_else(|| Arc::new(Schema::empty()), |b| b.schema()),
                    &checked,
                )?;
                for (r, rule) in rules.iter().enumerate() {
                    let column = checked.column(r);
                    let column = column
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .context("a rule column is boolean")?;
                    for (row, k) in keep.iter_mut().enumerate() {
                        if *k && !(column.is_valid(row) && column.value(row)) {
                            *k = false;
                            outcome.rejected.push((
                                rows[row],
                                Rejection::Validation,
                                format!("rule {} failed: {}", rule.name, rule.description),
                            ));
                        }
                    }
                }
            }

            if let Some((dedup, key)) = dedup {
                let keys = column_at(&batch, key).context("dedup key column")?;
                let times = match &input.time_column {
                    Some(t) => event_times(&column_at(&batch, t).context("event time column")?)?,
                    None => rows
                        .iter()
                        .map(|&i| records[i].timestamp_ms.unwrap_or_default())
                        .collect(),
                };
                // Only records that passed the rules count as seen.
                let candidates: Vec<usize> = (0..rows.len()).filter(|&r| keep[r]).collect();
                let mask = BooleanArray::from(keep.clone());
                let keys = arrow::compute::filter(&keys, &mask)?;
                let times: Vec<i64> = candidates.iter().map(|&r| times[r]).collect();
                for (r, kept) in candidates
                    .into_iter()
                    .zip(dedup.keep(&keys, &times).map_err(anyhow::Error::msg)?)
                {
                    if !kept {
                        keep[r] = false;
                        outcome.duplicates += 1;
                    }
                }
            }

            let kept_rows: Vec<usize> = rows
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(r, _)| *r)
                .collect();
            if kept_rows.is_empty() {
                continue;
            }
            let batch = if kept_rows.len() == rows.len() {
                batch
            } else {
                filter_record_batch(&batch, &BooleanArray::from(keep))?
            };
            let key_field = key_field.as_deref();
            match transform(input, encoder, key_field, batch.clone()).await {
                Ok(out) => outcome.outputs.extend(out),
                Err(_) => {
                    // Find the records at fault: run them one at a time.
                    for (row, &index) in kept_rows.iter().enumerate() {
                        match transform(input, encoder, key_field, batch.slice(row, 1)).await {
                            Ok(out) => outcome.outputs.extend(out),
                            Err((why, message)) => outcome.rejected.push((index, why, message)),
                        }
                    }
                }
            }
        }
        outcome.rejected.sort_by_key(|(i, _, _)| *i);
        Ok(outcome)
    }
}

/// Runs the SQL on validated, deduplicated rows, fits the result to the output schema and
/// encodes it, keyed by the output's key field.
async fn transform(
    input: &InputPlan,
    encoder: &mut AvroBatchEncoder,
    key_field: Option<&str>,
    batch: RecordBatch,
) -> Result<Vec<(Option<Vec<u8>>, Bytes)>, (Rejection, String)> {
    let produced = input
        .run(&input.plan, batch)
        .await
        .map_err(|e| (Rejection::Sql, e.to_string()))?;
    let mut out = Vec::new();
    for b in produced {
        if b.num_rows() == 0 {
            continue;
        }
        let conformed = input.conformer.apply(&b).map_err(|errors| {
            let message = errors
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join("; ");
            (Rejection::Output, message)
        })?;
        let payloads = encoder
            .encode(&conformed)
            .map_err(|e| (Rejection::Output, e.to_string()))?;
        let keys = match key_field {
            None => vec![None; conformed.num_rows()],
            Some(field) => {
                let column = conformed
                    .column_by_name(field)
                    .ok_or_else(|| (Rejection::Output, format!("no key field {field}")))?;
                key_text(column).map_err(|e| (Rejection::Output, e.to_string()))?
            }
        };
        out.extend(keys.into_iter().zip(payloads));
    }
    Ok(out)
}

impl InputPlan {
    /// Runs a statement over `batch` as the table `input`.
    async fn run(
        &self,
        statement: &Statement,
        batch: RecordBatch,
    ) -> Result<Vec<RecordBatch>, tributary_sql::DataFusionError> {
        self.table.run(statement, batch).await
    }
}

/// A column, or a field of a nested record (`a.b`), of a batch.
pub(crate) fn column_at(batch: &RecordBatch, path: &str) -> Option<ArrayRef> {
    let mut parts = path.split('.');
    let mut column = batch.column_by_name(parts.next()?)?.clone();
    for part in parts {
        let parent = column.as_any().downcast_ref::<StructArray>()?;
        let child = parent.column_by_name(part)?.clone();
        // A field of a null record is null.
        column = match parent.nulls() {
            Some(nulls) => {
                let combined = arrow::buffer::NullBuffer::union(Some(nulls), child.nulls());
                arrow::array::make_array(
                    child
                        .to_data()
                        .into_builder()
                        .nulls(combined)
                        .build()
                        .ok()?,
                )
            }
            None => child,
        };
    }
    Some(column)
}

/// Event times in milliseconds (a null counts as 0).
fn event_times(column: &ArrayRef) -> anyhow::Result<Vec<i64>> {
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
        .context("event times cast to Int64")?;
    Ok((0..millis.len())
        .map(|i| {
            if millis.is_valid(i) {
                millis.value(i)
            } else {
                0
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::path::Path;
    use tributary_core::schema::registry::RegistryConfig;

    #[tokio::test]
    async fn the_repository_transforms_plan() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let catalog = Catalog::load(&dir).unwrap();
        assert!(!catalog.transforms.is_empty());
        for decl in &catalog.transforms {
            if let Err(e) = Transform::plan(decl, &catalog).await {
                panic!("{e:#}");
            }
        }
    }

    const IN: &str = r#"{"type": "record", "name": "In", "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": ["null", "string"], "default": null},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "n", "type": "string"}]}"#;
    const OUT: &str = r#"{"type": "record", "name": "Out", "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "n", "type": "int"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["small", "big"]}}]}"#;

    fn catalog(sql: &str, extra: &str) -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.in-value.avsc"), IN).unwrap();
        std::fs::write(dir.path().join("t.out-value.avsc"), OUT).unwrap();
        let toml = format!(
            "[[topic]]\nname = \"t.in\"\nevent_time_field = \"at\"\n\n[[topic]]\nname = \"t.out\"\nkey_field = \"id\"\n\n[[transform]]\nname = \"t\"\ninputs = [\"t.in\"]\noutput = \"t.out\"\nsql = \"\"\"{sql}\"\"\"\n{extra}\n"
        );
        std::fs::write(dir.path().join("catalog.toml"), toml).unwrap();
        let catalog = Catalog::load(dir.path()).unwrap();
        (dir, catalog)
    }

    const SQL: &str = "SELECT id, upper(name) AS name, CAST(n AS INT) AS n, CASE WHEN CAST(n AS INT) > 9 THEN 'big' ELSE 'small' END AS kind FROM input WHERE id <> 0";

    fn record(offset: i64, id: i64, name: Option<&str>, at: i64, n: &str) -> InboundRecord {
        let schema = apache_avro::Schema::parse_str(IN).unwrap();
        let value = apache_avro::types::Value::Record(vec![
            ("id".into(), apache_avro::types::Value::Long(id)),
            (
                "name".into(),
                match name {
                    Some(s) => apache_avro::types::Value::Union(
                        1,
                        Box::new(apache_avro::types::Value::String(s.into())),
                    ),
                    None => apache_avro::types::Value::Union(
                        0,
                        Box::new(apache_avro::types::Value::Null),
                    ),
                },
            ),
            ("at".into(), apache_avro::types::Value::TimestampMillis(at)),
            ("n".into(), apache_avro::types::Value::String(n.into())),
        ]);
        let body = apache_avro::to_avro_datum(&schema, value).unwrap();
        InboundRecord {
            topic: "t.in".into(),
            partition: 0,
            offset,
            key: None,
            payload: Some(tributary_core::schema::wire::frame(7, &body)),
            timestamp_ms: None,
            headers: Vec::new(),
        }
    }

    async fn planned(sql: &str, extra: &str) -> Transform {
        let (_dir, catalog) = catalog(sql, extra);
        let mut t = Transform::plan(&catalog.transforms[0], &catalog)
            .await
            .unwrap();
        t.inputs
            .get_mut("t.in")
            .unwrap()
            .decoder
            .register(7, IN)
            .unwrap();
        t
    }

    fn decode_out(payload: &[u8]) -> apache_avro::types::Value {
        let schema = apache_avro::Schema::parse_str(OUT).unwrap();
        let (_, mut body) = tributary_core::schema::wire::parse(payload).unwrap();
        apache_avro::from_avro_datum(&schema, &mut body, None).unwrap()
    }

    #[tokio::test]
    async fn a_batch_goes_through_rules_dedup_sql_and_the_output_schema() {
        let rules = "dedup = { key = \"id\", window = \"1m\" }\n[[transform.rule]]\nname = \"n_is_digits\"\nfield = \"n\"\npattern = \"[0-9]+\"\n";
        let mut t = planned(SQL, rules).await;
        let registry = RegistryClient::new(&RegistryConfig::new("http://127.0.0.1:9")).unwrap();
        let shutdown = CancellationToken::new();
        let records = [
            record(0, 1, Some("ann"), 0, "3"),
            record(1, 2, Some("bob"), 0, "x"), // breaks n_is_digits
            record(2, 1, Some("ann"), 30_000, "3"), // duplicate of offset 0
            record(3, 0, Some("zed"), 0, "5"), // filtered out by the SQL
            record(4, 3, None, 0, "12"),       // name null: the output requires one
            record(5, 4, Some("dee"), 0, "99999999999"), // n does not fit an int
            record(6, 5, Some("eve"), 0, "10"),
        ];
        let refs: Vec<&InboundRecord> = records.iter().collect();
        let outcome = t
            .process("t.in", &refs, &registry, &shutdown)
            .await
            .unwrap();
        assert_eq!(outcome.duplicates, 1);
        let rejected: Vec<(usize, Rejection)> = outcome
            .rejected
            .iter()
            .map(|(i, why, _)| (*i, *why))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (1, Rejection::Validation),
                (4, Rejection::Output),
                (5, Rejection::Sql)
            ]
        );
        assert!(
            outcome.rejected[0].2.contains("rule n_is_digits failed"),
            "{:?}",
            outcome.rejected
        );
        assert!(
            outcome.rejected[1].2.contains("field name is null"),
            "{:?}",
            outcome.rejected
        );
        let keys: Vec<Option<Vec<u8>>> = outcome.outputs.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![Some(b"1".to_vec()), Some(b"5".to_vec())]);
        let last = decode_out(&outcome.outputs[1].1);
        assert_eq!(
            last,
            apache_avro::types::Value::Record(vec![
                ("id".into(), apache_avro::types::Value::Long(5)),
                (
                    "name".into(),
                    apache_avro::types::Value::String("EVE".into())
                ),
                ("n".into(), apache_avro::types::Value::Int(10)),
                (
                    "kind".into(),
                    apache_avro::types::Value::Enum(1, "big".into())
                ),
            ])
        );
    }

    /// A change record: `after` is null for a delete, `before` for an insert.
    const CHANGE: &str = r#"{"type":"record","name":"Change","fields":[
        {"name":"id","type":"long"},
        {"name":"before","type":["null",{"type":"record","name":"Row","fields":[
            {"name":"status","type":"string"},{"name":"total","type":"long"}]}],"default":null},
        {"name":"after","type":["null","Row"],"default":null}]}"#;
    const STATUS: &str = r#"{"type":"record","name":"Status","fields":[
        {"name":"id","type":"long"},{"name":"status","type":"string"},{"name":"total","type":"long"}]}"#;

    #[tokio::test]
    async fn fields_of_a_null_record_are_null_in_rules_and_sql() {
        use apache_avro::types::Value as V;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.in-value.avsc"), CHANGE).unwrap();
        std::fs::write(dir.path().join("c.out-value.avsc"), STATUS).unwrap();
        std::fs::write(
            dir.path().join("catalog.toml"),
            "[[topic]]\nname = \"c.in\"\n\n[[topic]]\nname = \"c.out\"\n\n[[transform]]\n\
             name = \"c\"\ninputs = [\"c.in\"]\noutput = \"c.out\"\nsql = \"\"\"SELECT id, \
             COALESCE(after['status'], before['status']) AS status, \
             COALESCE(after['total'], before['total']) AS total FROM input\"\"\"\n\
             [[transform.rule]]\nname = \"status_word\"\nfield = \"after.status\"\npattern = \"[a-z]+\"\n\
             [[transform.rule]]\nname = \"total_positive\"\nfield = \"after.total\"\nmin = 1\n",
        )
        .unwrap();
        let catalog = Catalog::load(dir.path()).unwrap();
        let mut t = Transform::plan(&catalog.transforms[0], &catalog)
            .await
            .unwrap();
        t.inputs
            .get_mut("c.in")
            .unwrap()
            .decoder
            .register(9, CHANGE)
            .unwrap();
        let schema = apache_avro::Schema::parse_str(CHANGE).unwrap();
        let row = |status: &str, total: i64| {
            V::Union(
                1,
                Box::new(V::Record(vec![
                    ("status".into(), V::String(status.into())),
                    ("total".into(), V::Long(total)),
                ])),
            )
        };
        let null = || V::Union(0, Box::new(V::Null));
        let change = |offset: i64, id: i64, before: V, after: V| {
            let value = V::Record(vec![
                ("id".into(), V::Long(id)),
                ("before".into(), before),
                ("after".into(), after),
            ]);
            InboundRecord {
                topic: "c.in".into(),
                partition: 0,
                offset,
                key: None,
                payload: Some(tributary_core::schema::wire::frame(
                    9,
                    &apache_avro::to_avro_datum(&schema, value).unwrap(),
                )),
                timestamp_ms: None,
                headers: Vec::new(),
            }
        };
        let records = [
            change(0, 1, null(), row("pending", 5)),
            change(1, 1, row("pending", 5), row("paid", 5)),
            // A delete: the rules see a null after.status and after.total, which pass.
            change(2, 1, row("paid", 5), null()),
            change(3, 2, null(), row("Bad Status", 5)),
        ];
        let refs: Vec<&InboundRecord> = records.iter().collect();
        let registry = RegistryClient::new(&RegistryConfig::new("http://127.0.0.1:9")).unwrap();
        let outcome = t
            .process("c.in", &refs, &registry, &CancellationToken::new())
            .await
            .unwrap();
        let rejected: Vec<usize> = outcome.rejected.iter().map(|(i, _, _)| *i).collect();
        assert_eq!(rejected, vec![3], "{:?}", outcome.rejected);
        let out_schema = apache_avro::Schema::parse_str(STATUS).unwrap();
        let statuses: Vec<V> = outcome
            .outputs
            .iter()
            .map(|(_, payload)| {
                let (_, mut body) = tributary_core::schema::wire::parse(payload).unwrap();
                apache_avro::from_avro_datum(&out_schema, &mut body, None).unwrap()
            })
            .collect();
        let expected = |status: &str| {
            V::Record(vec![
                ("id".into(), V::Long(1)),
                ("status".into(), V::String(status.into())),
                ("total".into(), V::Long(5)),
            ])
        };
        assert_eq!(
            statuses,
            vec![expected("pending"), expected("paid"), expected("paid")]
        );
    }

    #[tokio::test]
    async fn plans_that_are_not_row_wise_or_do_not_fit_are_refused() {
        let (_d, c) = catalog("SELECT id, max(name) AS name FROM input GROUP BY id", "");
        let e = Transform::plan(&c.transforms[0], &c).await.unwrap_err();
        assert!(format!("{e:#}").contains("an aggregate"), "{e:#}");
        let (_d, c) = catalog("SELECT id, name, n FROM input", "");
        let e = format!(
            "{:#}",
            Transform::plan(&c.transforms[0], &c).await.unwrap_err()
        );
        assert!(
            e.contains("does not fit the schema of t.out: no column kind"),
            "{e}"
        );
        let (_d, c) = catalog("SELECT id, nope FROM input", "");
        let e = format!(
            "{:#}",
            Transform::plan(&c.transforms[0], &c).await.unwrap_err()
        );
        assert!(
            e.contains("transform t: the SQL over t.in") && e.contains("nope"),
            "{e}"
        );
    }
}
