//! What the tests of the view share: a view over a small catalog, its input records, and its
//! output read back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use tributary_core::bus::{InboundRecord, OutboundRecord};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::wire;

use super::View;
use super::process::Outcome;

/// The input topic's schema: events of users.
pub(super) const IN: &str = r#"{"type": "record", "name": "E", "fields": [
    {"name": "user", "type": "string"},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "kind", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": null}]}"#;
/// The output topic's schema: the features of a user's window.
pub(super) const OUT: &str = r#"{"type": "record", "name": "F", "fields": [
    {"name": "user", "type": "string"},
    {"name": "window_start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "window_end", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "n", "type": "long"},
    {"name": "buys", "type": "long"},
    {"name": "spent", "type": "double"},
    {"name": "last_kind", "type": ["null", "string"], "default": null}]}"#;

/// A view with `window` and `allowed_lateness`, counting events and buys, summing amounts
/// and keeping the last kind; the directory holds its catalog.
pub(super) async fn view(window: &str, lateness: &str) -> (tempfile::TempDir, View) {
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

/// An input record at `offset`: `user` did `kind` at `at` (ms).
pub(super) fn record(
    offset: i64,
    user: &str,
    at: i64,
    kind: &str,
    amount: Option<f64>,
) -> InboundRecord {
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
pub(super) fn inbound(records: &[OutboundRecord]) -> Vec<InboundRecord> {
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

/// The windows a batch emitted, decoded.
pub(super) fn emitted(outcome: &Outcome) -> Vec<Vec<(String, Avro)>> {
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

/// A field of an emitted window.
pub(super) fn field<'a>(row: &'a [(String, Avro)], name: &str) -> &'a Avro {
    &row.iter().find(|(n, _)| n == name).unwrap().1
}
