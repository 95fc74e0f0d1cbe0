//! PostgreSQL sources (`[[source]] type = "postgres"`): tables of a database into topics, as
//! records in Debezium's envelope (`id`, `before`, `after`, `op`, `source`, `ts_ms`).
//!
//! Two modes share this module's pieces (connection, the table's columns, the Avro schema
//! derived from them, the record built from a row's text values, progress records):
//! [`cdc`] reads the write-ahead log through a logical replication slot (pgoutput), [`poll`]
//! queries on an incrementing and/or timestamp column.
//!
//! Every value is read in its text form (pgoutput sends text; queries select `column::text`),
//! with the session's `TimeZone = UTC` and `DateStyle = ISO`, and converted by [`types`].

mod cdc;
pub(crate) mod pgoutput;
mod poll;
mod types;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, bail};
use apache_avro::types::Value;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tributary_core::bus::{DeadLetter, dead_letter_record};
use tributary_core::bus::{KafkaConfig, OutboundRecord, Producer, read_partition};
use tributary_core::schema::catalog::Topic;
use tributary_core::schema::registry::{RegistryClient, Version};
use tributary_core::schema::sources::{PostgresDecl, PostgresMode, TableDecl, expand_env};
use tributary_core::schema::wire;

use self::types::PgType;

/// What a PostgreSQL source needs from the service.
pub(crate) struct SourceContext {
    pub decl: PostgresDecl,
    /// The catalog's topics, by name.
    pub topics: BTreeMap<String, Topic>,
    pub registry: RegistryClient,
    pub kafka: KafkaConfig,
    pub producer: Producer,
    /// Compacted topic holding snapshot and polling progress (key `postgres/<source>/<table>`).
    pub progress_topic: String,
    pub metrics: crate::metrics::IngestMetrics,
}

impl SourceContext {
    /// Sends records (each marked whether it is a dead letter) of tables, waits for the broker's
    /// acknowledgement and counts them.
    async fn deliver(&self, records: Vec<(String, OutboundRecord, bool)>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (labels, out): (Vec<(String, bool)>, Vec<OutboundRecord>) = records
            .into_iter()
            .map(|(table, record, ok)| ((table, ok), record))
            .unzip();
        self.producer
            .send_all(&out)
            .await
            .with_context(|| format!("source {}: produce", self.decl.name))?;
        for (table, ok) in &labels {
            let label = crate::metrics::SourceTableLabel {
                source: self.decl.name.clone(),
                table: table.clone(),
            };
            let family = if *ok {
                &self.metrics.source_records
            } else {
                &self.metrics.source_dead_letters
            };
            family.get_or_create(&label).inc();
        }
        Ok(())
    }
}

/// Runs a source until `shutdown`; a failure is logged and retried after a pause (the source
/// resumes from its acknowledged position), so a database restart does not stop ingest.
pub(crate) async fn run(ctx: SourceContext, shutdown: CancellationToken) {
    let ctx = Arc::new(ctx);
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let result = match ctx.decl.mode {
            PostgresMode::Cdc => cdc::run(&ctx, &shutdown).await,
            PostgresMode::Poll => poll::run(&ctx, &shutdown).await,
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                error!(source = %ctx.decl.name, error = format!("{e:#}"), retry_in_s = pause.as_secs(), "postgresql source failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Connects with the source's URL and password; the password is never logged.
async fn connect(decl: &PostgresDecl) -> anyhow::Result<tokio_postgres::Client> {
    let url = expand_env(&decl.url).map_err(|e| anyhow::anyhow!("source {}: {e}", decl.name))?;
    let mut config = tokio_postgres::Config::from_str(&url)
        .with_context(|| format!("source {}: the url is not a PostgreSQL URL", decl.name))?;
    if let Some(password) = decl
        .password()
        .map_err(|e| anyhow::anyhow!("source {}: {e}", decl.name))?
    {
        config.password(password);
    }
    config.application_name("tributary-ingest");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| {
            format!(
                "source {}: connect to {} database {}",
                decl.name,
                config
                    .get_hosts()
                    .first()
                    .map(|h| format!("{h:?}"))
                    .unwrap_or_default(),
                config.get_dbname().unwrap_or("(default)")
            )
        })?;
    let name = decl.name.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(source = %name, error = %e, "postgresql connection closed");
        }
    });
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 3; SET bytea_output = 'hex'",
        )
        .await
        .context("set the session's formats")?;
    Ok(client)
}

/// An identifier, quoted for SQL.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column of a table.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    ty: PgType,
    type_oid: u32,
    typmod: i32,
    /// The type's name for casts (`bigint`, `timestamp with time zone`).
    sql_type: String,
    not_null: bool,
    key: bool,
}

/// The columns of a table, from the system catalog.
async fn table_columns(
    client: &tokio_postgres::Client,
    table: &TableDecl,
) -> anyhow::Result<Vec<Column>> {
    let (schema, name) = table.qualified();
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, \
                    format_type(a.atttypid, NULL), a.attnotnull, \
                    COALESCE(a.attnum = ANY(i.indkey), false) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &name],
        )
        .await
        .with_context(|| format!("read the columns of {}", table.table))?;
    if rows.is_empty() {
        bail!(
            "table {} does not exist (or this user cannot see it)",
            table.table
        );
    }
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: i64 = row.try_get(1)?;
        let typmod: i32 = row.try_get(2)?;
        let oid = u32::try_from(oid).context("type oid")?;
        columns.push(Column {
            name: row.try_get(0)?,
            ty: PgType::from_oid(oid, typmod),
            type_oid: oid,
            typmod,
            sql_type: row.try_get(3)?,
            not_null: row.try_get(4)?,
            key: row.try_get(5)?,
        });
    }
    if !columns.iter().any(|c| c.key) {
        bail!(
            "table {} has no primary key: a source needs one for the record key",
            table.table
        );
    }
    for c in &columns {
        if !is_avro_name(&c.name) {
            bail!(
                "table {}: column {:?} is not a valid Avro field name (letters, digits and _, not starting with a digit); rename it or read it through a view",
                table.table,
                c.name
            );
        }
    }
    Ok(columns)
}

fn is_avro_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `c`, `u`, `d` or `r`, in the envelope's enum order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Update,
    Delete,
    Read,
}

impl Op {
    fn symbol(self) -> (usize, &'static str) {
        match self {
            Self::Create => (0, "c"),
            Self::Update => (1, "u"),
            Self::Delete => (2, "d"),
            Self::Read => (3, "r"),
        }
    }
}

/// Where a change came from (the envelope's `source`).
#[derive(Debug, Clone, Copy)]
struct Origin {
    lsn: Option<u64>,
    txid: Option<u32>,
    /// Commit time (or read time), milliseconds since the epoch.
    ts_ms: i64,
}

/// A row's values in text form, in column order (`None` is SQL NULL).
type TextRow = Vec<Option<String>>;

/// A table being read: its columns, topic and the schema records are written with.
struct TableState {
    decl: TableDecl,
    topic: Topic,
    columns: Vec<Column>,
    /// Nullability of each field in the schema in use (`true`: a union with null).
    nullable: Vec<bool>,
    schema: apache_avro::Schema,
    schema_id: u32,
    database: String,
}

impl TableState {
    /// Reads the table's columns and derives (and if needed registers) its schema.
    async fn open(
        ctx: &SourceContext,
        client: &tokio_postgres::Client,
        decl: &TableDecl,
    ) -> anyhow::Result<Self> {
        let topic = ctx
            .topics
            .get(&decl.topic)
            .with_context(|| format!("topic {} is not in the catalog", decl.topic))?
            .clone();
        let columns = table_columns(client, decl).await?;
        let database: String = client
            .query_one("SELECT current_database()::text", &[])
            .await?
            .try_get(0)?;
        let mut state = Self {
            decl: decl.clone(),
            topic,
            columns: Vec::new(),
            nullable: Vec::new(),
            schema: apache_avro::Schema::Null,
            schema_id: 0,
            database,
        };
        state.adopt(ctx, columns).await?;
        Ok(state)
    }

    /// Switches to a new column list: derives the schema for it, reusing the subject's latest
    /// version when that already describes these columns, registering a new version otherwise
    /// (the registry refuses one that is not compatible under the topic's level).
    async fn adopt(&mut self, ctx: &SourceContext, columns: Vec<Column>) -> anyhow::Result<()> {
        let subject = self.topic.value_subject();
        let latest = match ctx
            .registry
            .subject_version(&subject, Version::Latest)
            .await
        {
            Ok(s) => Some(s),
            Err(e) if e.error_code() == Some(40401) => None,
            Err(e) => {
                return Err(e).with_context(|| format!("read the latest schema of {subject}"));
            }
        };
        let latest_json: Option<serde_json::Value> = latest
            .as_ref()
            .map(|s| serde_json::from_str(&s.schema))
            .transpose()
            .with_context(|| format!("the latest schema of {subject} is not JSON"))?;
        let derived = derive_schema(&self.decl, &columns, latest_json.as_ref());
        let (text, id) = match (&latest, &latest_json) {
            (Some(l), Some(lj)) if same_shape(lj, &derived.json) => (l.schema.clone(), l.id),
            _ => {
                let text = derived.json.to_string();
                let id = ctx.registry.register(&subject, &text).await.with_context(|| {
                    format!(
                        "register the schema derived from the columns of {} under {subject} (a change the topic's compatibility level does not allow stops the source; nothing is lost)",
                        self.decl.table
                    )
                })?;
                info!(source = %ctx.decl.name, table = %self.decl.table, subject, id, "registered a schema derived from the table's columns");
                (text, id)
            }
        };
        self.schema = tributary_core::schema::parse_avro_schema(&text)
            .with_context(|| format!("parse the schema of {subject}"))?;
        self.schema_id = id;
        self.nullable = derived.nullable;
        self.columns = columns;
        Ok(())
    }

    /// The record of one change. `key_row` holds the key columns' values (the new row, or the
    /// old one for a delete).
    fn record(
        &self,
        source: &str,
        op: Op,
        before: Option<&TextRow>,
        after: Option<&TextRow>,
        key_row: &TextRow,
        origin: Origin,
    ) -> Result<OutboundRecord, String> {
        let keys: Vec<usize> = (0..self.columns.len())
            .filter(|i| self.columns[*i].key)
            .collect();
        let mut key_texts = Vec::with_capacity(keys.len());
        for i in &keys {
            match key_row.get(*i).cloned().flatten() {
                Some(t) => key_texts.push(t),
                None => return Err(format!("key column {} is null", self.columns[*i].name)),
            }
        }
        let key_text = key_texts.join(",");
        let id = match keys.as_slice() {
            [only] => self.columns[*only]
                .ty
                .parse(&key_text)
                .map_err(|e| format!("column {}: {e}", self.columns[*only].name))?,
            _ => Value::String(key_text.clone()),
        };
        let row = |values: Option<&TextRow>| -> Result<Value, String> {
            let Some(values) = values else {
                return Ok(Value::Union(0, Box::new(Value::Null)));
            };
            let mut fields = Vec::with_capacity(self.columns.len());
            for (i, c) in self.columns.iter().enumerate() {
                let v = match (values.get(i).cloned().flatten(), self.nullable[i]) {
                    (None, true) => Value::Union(0, Box::new(Value::Null)),
                    (None, false) => return Err(format!("column {} is null", c.name)),
                    (Some(t), nullable) => {
                        let v =
                            c.ty.parse(&t)
                                .map_err(|e| format!("column {}: {e}", c.name))?;
                        if nullable {
                            Value::Union(1, Box::new(v))
                        } else {
                            v
                        }
                    }
                };
                fields.push((c.name.clone(), v));
            }
            Ok(Value::Union(1, Box::new(Value::Record(fields))))
        };
        let (schema, table) = self.decl.qualified();
        let (index, symbol) = op.symbol();
        let opt_long = |v: Option<i64>| match v {
            Some(v) => Value::Union(1, Box::new(Value::Long(v))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let envelope = Value::Record(vec![
            ("id".into(), id),
            ("before".into(), row(before)?),
            ("after".into(), row(after)?),
            ("op".into(), Value::Enum(index as u32, symbol.into())),
            (
                "source".into(),
                Value::Record(vec![
                    ("connector".into(), Value::String(source.to_string())),
                    ("db".into(), Value::String(self.database.clone())),
                    ("schema".into(), Value::String(schema.to_string())),
                    ("table".into(), Value::String(table.to_string())),
                    (
                        "lsn".into(),
                        opt_long(origin.lsn.and_then(|l| i64::try_from(l).ok())),
                    ),
                    ("txid".into(), opt_long(origin.txid.map(i64::from))),
                    ("ts_ms".into(), Value::TimestampMillis(origin.ts_ms)),
                ]),
            ),
            ("ts_ms".into(), Value::TimestampMillis(now_ms)),
        ]);
        let body = apache_avro::to_avro_datum(&self.schema, envelope)
            .map_err(|e| format!("encode: {e}"))?;
        Ok(OutboundRecord::new(
            self.topic.name.clone(),
            Some(key_text.into_bytes()),
            wire::frame(self.schema_id, &body),
        ))
    }

    /// A dead letter for a row that could not be turned into a record: the row's text values
    /// as JSON, and why.
    fn dead_letter(
        &self,
        source: &str,
        row: &TextRow,
        lsn: Option<u64>,
        why: &str,
    ) -> OutboundRecord {
        let values: serde_json::Map<String, serde_json::Value> = self
            .columns
            .iter()
            .zip(row)
            .map(|(c, v)| (c.name.clone(), json!(v)))
            .collect();
        let message = format!("source {source}: table {}: {why}", self.decl.table);
        let origin = format!("postgres:{source}/{}", self.decl.table);
        let letter = DeadLetter {
            stage: "ingest",
            source_topic: &origin,
            partition: -1,
            offset: lsn.and_then(|l| i64::try_from(l).ok()).unwrap_or(-1),
            error_class: "postgres_row",
            message: &message,
        };
        dead_letter_record(
            &letter,
            None,
            serde_json::to_vec(&values).unwrap_or_default(),
        )
    }

    /// The record of a change, or its dead letter.
    fn record_or_dead_letter(
        &self,
        source: &str,
        op: Op,
        before: Option<&TextRow>,
        after: Option<&TextRow>,
        key_row: &TextRow,
        origin: Origin,
    ) -> (OutboundRecord, bool) {
        match self.record(source, op, before, after, key_row, origin) {
            Ok(r) => (r, true),
            Err(why) => {
                let row = after.or(before).unwrap_or(key_row);
                (self.dead_letter(source, row, origin.lsn, &why), false)
            }
        }
    }

    /// The select list reading every column as text.
    fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `"schema"."table"`.
    fn quoted_table(&self) -> String {
        let (schema, table) = self.decl.qualified();
        format!("{}.{}", quote_ident(schema), quote_ident(table))
    }
}

/// The text values of a query row.
fn text_row(row: &tokio_postgres::Row) -> anyhow::Result<TextRow> {
    (0..row.len())
        .map(|i| {
            row.try_get::<_, Option<String>>(i)
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// A schema derived from columns: the Avro JSON and each column's nullability in it.
struct Derived {
    json: serde_json::Value,
    nullable: Vec<bool>,
}

/// The envelope schema for a table's columns. Names (of the envelope, the row record, the
/// enum and the source record) and docs come from the subject's latest version when there is
/// one, so an unchanged table derives the schema the catalog declared. A column is nullable
/// when the database allows NULL, when the latest version has it nullable, or when the latest
/// version lacks it (a new column must have a default to stay compatible).
fn derive_schema(
    table: &TableDecl,
    columns: &[Column],
    latest: Option<&serde_json::Value>,
) -> Derived {
    let (schema, name) = table.qualified();
    let latest_row = latest.and_then(row_record);
    let latest_fields: BTreeMap<&str, &serde_json::Value> = latest_row
        .and_then(|r| r.get("fields"))
        .and_then(|f| f.as_array())
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| Some((f.get("name")?.as_str()?, f)))
                .collect()
        })
        .unwrap_or_default();
    let namespace = latest
        .and_then(|l| l.get("namespace"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("io.tributary.db.{schema}"));
    let pascal = pascal_case(name);
    let envelope_name = name_of(latest, &format!("{pascal}Change"));
    let row_name = name_of(latest_row, &format!("{pascal}Row"));
    let op_name = latest
        .and_then(|l| field_type(l, "op"))
        .map(|t| name_of(Some(t), "Op"))
        .unwrap_or_else(|| "Op".into());
    let source_name = latest
        .and_then(|l| field_type(l, "source"))
        .map(|t| name_of(Some(t), "Source"))
        .unwrap_or_else(|| "Source".into());

    let mut nullable = Vec::with_capacity(columns.len());
    let fields: Vec<serde_json::Value> = columns
        .iter()
        .map(|c| {
            let previous = latest_fields.get(c.name.as_str());
            let was_nullable = previous
                .and_then(|f| f.get("type"))
                .map(|t| t.as_array().is_some_and(|u| u.iter().any(|x| x == "null")));
            let is_nullable = !c.not_null || was_nullable.unwrap_or(latest.is_some());
            nullable.push(is_nullable);
            let mut field = if is_nullable {
                json!({"name": c.name, "type": ["null", c.ty.avro()], "default": null})
            } else {
                json!({"name": c.name, "type": c.ty.avro()})
            };
            if let Some(doc) = previous.and_then(|f| f.get("doc")) {
                field["doc"] = doc.clone();
            }
            field
        })
        .collect();
    let keys: Vec<&Column> = columns.iter().filter(|c| c.key).collect();
    let id_type = match keys.as_slice() {
        [only] => only.ty.avro(),
        _ => json!("string"),
    };
    let doc = |v: Option<&serde_json::Value>, default: String| {
        v.and_then(|v| v.get("doc"))
            .cloned()
            .unwrap_or(serde_json::Value::String(default))
    };
    let field_doc = |field: &str, default: &str| {
        latest
            .and_then(|l| l.get("fields"))
            .and_then(|f| f.as_array())
            .and_then(|fs| fs.iter().find(|f| f.get("name") == Some(&json!(field))))
            .and_then(|f| f.get("doc"))
            .cloned()
            .unwrap_or_else(|| json!(default))
    };
    let json = json!({
        "type": "record",
        "name": envelope_name,
        "namespace": namespace,
        "doc": doc(latest, format!("One change to a row of the PostgreSQL table {schema}.{name}, in Debezium's envelope")),
        "fields": [
            {"name": "id", "type": id_type, "doc": field_doc("id", "Primary key of the changed row (key columns joined by commas when there are several); the message key")},
            {"name": "before", "type": ["null", {
                "type": "record",
                "name": row_name,
                "doc": doc(latest_row, format!("A row of {schema}.{name}")),
                "fields": fields
            }], "default": null, "doc": field_doc("before", "The row before the change; null for inserts, snapshot reads and when the table's replica identity does not give it")},
            {"name": "after", "type": ["null", row_name], "default": null, "doc": field_doc("after", "The row after the change; null for deletes")},
            {"name": "op", "type": {"type": "enum", "name": op_name, "symbols": ["c", "u", "d", "r"]}, "doc": field_doc("op", "c insert, u update, d delete, r read (snapshot or polling)")},
            {"name": "source", "type": {
                "type": "record",
                "name": source_name,
                "fields": [
                    {"name": "connector", "type": "string"},
                    {"name": "db", "type": "string"},
                    {"name": "schema", "type": "string"},
                    {"name": "table", "type": "string"},
                    {"name": "lsn", "type": ["null", "long"], "default": null},
                    {"name": "txid", "type": ["null", "long"], "default": null},
                    {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}}
                ]
            }, "doc": field_doc("source", "Where the change came from")},
            {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}, "doc": field_doc("ts_ms", "When ingest captured the change")}
        ]
    });
    Derived { json, nullable }
}

/// The row record of an envelope schema (the record in `before`'s union).
fn row_record(envelope: &serde_json::Value) -> Option<&serde_json::Value> {
    field_type(envelope, "before")?
        .as_array()?
        .iter()
        .find(|t| t.get("type") == Some(&json!("record")))
}

fn field_type<'a>(record: &'a serde_json::Value, field: &str) -> Option<&'a serde_json::Value> {
    record
        .get("fields")?
        .as_array()?
        .iter()
        .find(|f| f.get("name") == Some(&json!(field)))?
        .get("type")
}

fn name_of(v: Option<&serde_json::Value>, default: &str) -> String {
    v.and_then(|v| v.get("name"))
        .and_then(|n| n.as_str())
        .map(|n| n.rsplit('.').next().unwrap_or(n).to_string())
        .unwrap_or_else(|| default.to_string())
}

fn pascal_case(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            cs.next()
                .map(|f| f.to_ascii_uppercase().to_string() + cs.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Whether two envelope schemas have the same id type and the same row fields (names, order,
/// types), ignoring docs: then the latest version can carry the rows as they are.
fn same_shape(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    fn strip(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let kept: serde_json::Map<_, _> = m
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "doc" | "aliases"))
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect();
                // `{"type": "string"}` and `"string"` are the same type.
                if kept.len() == 1
                    && let Some(t @ serde_json::Value::String(_)) = kept.get("type")
                {
                    return t.clone();
                }
                serde_json::Value::Object(kept)
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(strip).collect())
            }
            other => other.clone(),
        }
    }
    let part = |v: &serde_json::Value| {
        (
            field_type(v, "id").map(strip),
            row_record(v).and_then(|r| r.get("fields")).map(strip),
        )
    };
    part(a) == part(b)
}

/// The progress record key of a table.
fn progress_key(source: &str, table: &str) -> String {
    format!("postgres/{source}/{table}")
}

/// Reads the source's progress records (latest per table).
async fn read_progress<T: for<'de> Deserialize<'de>>(
    ctx: &SourceContext,
) -> anyhow::Result<BTreeMap<String, T>> {
    let prefix = progress_key(&ctx.decl.name, "");
    let mut out = BTreeMap::new();
    for r in read_partition(&ctx.kafka, &ctx.progress_topic, 0)
        .await
        .context("read the postgresql progress topic")?
    {
        let Some(table) = r
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(&prefix))
        else {
            continue;
        };
        match r.payload.as_deref().map(serde_json::from_slice::<T>) {
            Some(Ok(p)) => {
                out.insert(table.to_string(), p);
            }
            _ => {
                out.remove(table);
            }
        }
    }
    Ok(out)
}

/// Writes a table's progress (after what it describes was acknowledged).
async fn save_progress<T: Serialize>(
    ctx: &SourceContext,
    table: &str,
    progress: &T,
) -> anyhow::Result<()> {
    let record = OutboundRecord::new(
        ctx.progress_topic.clone(),
        Some(progress_key(&ctx.decl.name, table).into_bytes()),
        serde_json::to_vec(progress)?,
    );
    ctx.producer
        .send(&record)
        .await
        .context("write the source's progress")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn column(name: &str, ty: PgType, not_null: bool, key: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            type_oid: 0,
            typmod: -1,
            sql_type: String::new(),
            not_null,
            key,
        }
    }

    fn table() -> TableDecl {
        TableDecl {
            table: "shop.orders".into(),
            topic: "db.shop.orders".into(),
            incrementing_column: None,
            timestamp_column: None,
        }
    }

    #[test]
    fn the_catalogs_orders_schema_is_what_its_columns_derive() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/db.shop.orders-value.avsc"
        ))
        .unwrap();
        let catalog: serde_json::Value = serde_json::from_str(&text).unwrap();
        let columns = vec![
            column("order_id", PgType::Int8, true, true),
            column("customer_id", PgType::Int8, true, false),
            column("status", PgType::Text, true, false),
            column(
                "total",
                PgType::Numeric {
                    precision: 12,
                    scale: 2,
                },
                true,
                false,
            ),
            column("currency", PgType::Text, true, false),
            column("ordered_at", PgType::TimestampTz, true, false),
        ];
        let derived = derive_schema(&table(), &columns, Some(&catalog));
        assert!(same_shape(&catalog, &derived.json), "{}", derived.json);
        assert_eq!(derived.nullable, vec![false; 6]);
        apache_avro::Schema::parse(&derived.json).unwrap();

        // An added column (NOT NULL in the database) is nullable with a default: compatible.
        let mut more = columns.clone();
        more.push(column("coupon", PgType::Text, true, false));
        let evolved = derive_schema(&table(), &more, Some(&catalog));
        assert!(!same_shape(&catalog, &evolved.json));
        assert_eq!(evolved.nullable.last(), Some(&true));
        let fields = row_record(&evolved.json).unwrap()["fields"].clone();
        assert_eq!(fields[6]["default"], serde_json::Value::Null);
        assert_eq!(fields[0]["doc"], serde_json::Value::Null);
        assert_eq!(fields[1]["doc"].as_str(), Some("References shop.customers"));
    }

    #[test]
    fn without_a_previous_version_names_come_from_the_table() {
        let columns = vec![
            column("id", PgType::Int4, true, true),
            column("note", PgType::Text, false, false),
        ];
        let d = derive_schema(
            &TableDecl {
                table: "public.line_items".into(),
                ..table()
            },
            &columns,
            None,
        );
        assert_eq!(d.json["name"], "LineItemsChange");
        assert_eq!(d.json["namespace"], "io.tributary.db.public");
        assert_eq!(d.nullable, vec![false, true]);
        assert_eq!(d.json["fields"][0]["type"], "int");
        apache_avro::Schema::parse(&d.json).unwrap();
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert!(is_avro_name("_a1") && !is_avro_name("1a") && !is_avro_name("a-b"));
    }
}
