//! The Avro envelope schema derived from a table's columns, in Debezium's shape.

use std::collections::BTreeMap;

use serde_json::json;
use tributary_core::schema::sources::TableDecl;

use super::db::Column;

/// A schema derived from columns: the Avro JSON and each column's nullability in it.
pub(super) struct Derived {
    pub(super) json: serde_json::Value,
    pub(super) nullable: Vec<bool>,
}

/// The envelope schema for a table's columns. Names (of the envelope, the row record, the
/// enum and the source record) and docs come from the subject's latest version when there is
/// one, so an unchanged table derives the schema the catalog declared. A column is nullable
/// when the database allows NULL, when the latest version has it nullable, or when the latest
/// version lacks it (a new column must have a default to stay compatible).
pub(super) fn derive_schema(
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
pub(super) fn same_shape(a: &serde_json::Value, b: &serde_json::Value) -> bool {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::postgres::types::PgType;

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
}
