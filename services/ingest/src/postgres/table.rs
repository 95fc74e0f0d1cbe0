//! A table being read: its columns and schema, and the records (or dead letters) of its changes.

use anyhow::Context;
use apache_avro::types::Value;
use serde_json::json;
use tracing::info;
use tributary_core::bus::{DeadLetter, OutboundRecord, dead_letter_record};
use tributary_core::schema::catalog::Topic;
use tributary_core::schema::registry::Version;
use tributary_core::schema::sources::TableDecl;
use tributary_core::schema::wire;

use super::SourceContext;
use super::db::{Column, TextRow, quote_ident, table_columns};
use super::schema::{derive_schema, same_shape};

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
pub(super) struct Origin {
    pub(super) lsn: Option<u64>,
    pub(super) txid: Option<u32>,
    /// Commit time (or read time), milliseconds since the epoch.
    pub(super) ts_ms: i64,
}

/// One change to a row of a table, as its record is built from it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Change<'a> {
    pub(super) op: Op,
    /// The row before the change, when known.
    pub(super) before: Option<&'a TextRow>,
    /// The row after the change (none for a delete).
    pub(super) after: Option<&'a TextRow>,
    /// The key columns' values: the new row, or the old one for a delete.
    pub(super) key_row: &'a TextRow,
    pub(super) origin: Origin,
}

/// A table being read: its columns, topic and the schema records are written with.
pub(super) struct TableState {
    pub(super) decl: TableDecl,
    topic: Topic,
    pub(super) columns: Vec<Column>,
    /// Nullability of each field in the schema in use (`true`: a union with null).
    nullable: Vec<bool>,
    schema: apache_avro::Schema,
    schema_id: u32,
    database: String,
}

impl TableState {
    /// Reads the table's columns and derives (and if needed registers) its schema.
    pub(super) async fn open(
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
    pub(super) async fn adopt(
        &mut self,
        ctx: &SourceContext,
        columns: Vec<Column>,
    ) -> anyhow::Result<()> {
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

    /// The record of one change.
    fn record(&self, source: &str, change: Change<'_>) -> Result<OutboundRecord, String> {
        let Change {
            op,
            before,
            after,
            key_row,
            origin,
        } = change;
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
    pub(super) fn dead_letter(
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
    pub(super) fn record_or_dead_letter(
        &self,
        source: &str,
        change: Change<'_>,
    ) -> (OutboundRecord, bool) {
        match self.record(source, change) {
            Ok(r) => (r, true),
            Err(why) => {
                let row = change.after.or(change.before).unwrap_or(change.key_row);
                (
                    self.dead_letter(source, row, change.origin.lsn, &why),
                    false,
                )
            }
        }
    }

    /// The select list reading every column as text.
    pub(super) fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `"schema"."table"`.
    pub(super) fn quoted_table(&self) -> String {
        let (schema, table) = self.decl.qualified();
        format!("{}.{}", quote_ident(schema), quote_ident(table))
    }
}
