//! Request bodies to Kafka records: JSON (one object or an array), NDJSON, or one
//! Confluent-framed Avro record; each validated against the topic's schema, keyed by the
//! catalog's key field.

use apache_avro::types::Value as Avro;
use apache_avro::{Schema, from_avro_datum, to_avro_datum};
use serde_json::Value as Json;
use tributary_core::bus::OutboundRecord;
use tributary_core::schema::bounded::{BoundError, DatumBound};
use tributary_core::schema::catalog::Topic;
use tributary_core::schema::json::json_to_avro;
use tributary_core::schema::wire;

/// How a body is encoded, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `application/json`: one object or an array of objects.
    Json,
    /// `application/x-ndjson` (or `application/jsonl`): one object per line.
    NdJson,
    /// `application/vnd.confluent.avro`: one record in the Confluent wire format.
    Avro,
}

impl BodyKind {
    /// The kind of a Content-Type header value, parameters ignored.
    pub(crate) fn from_content_type(value: &str) -> Option<Self> {
        let mime = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(Self::Json),
            "application/x-ndjson" | "application/jsonl" | "application/ndjson" => {
                Some(Self::NdJson)
            }
            "application/vnd.confluent.avro" | "application/avro" => Some(Self::Avro),
            _ => None,
        }
    }
}

/// A record of the request that is not valid; the whole request is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordError {
    /// Index of the record in the request (0 for a single record).
    pub(crate) record: usize,
    /// Field path, `$` for the record itself.
    pub(crate) path: String,
    /// What is wrong.
    pub(crate) message: String,
}

impl RecordError {
    fn new(record: usize, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            record,
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A topic ready to take records: its catalog entry and the registry id of its schema.
#[derive(Debug, Clone)]
pub(crate) struct TopicCodec {
    pub(crate) topic: Topic,
    pub(crate) schema_id: u32,
    /// What an Avro record written with the topic's schema may claim (see `accept_avro`).
    pub(crate) bound: DatumBound,
}

/// Splits a JSON or NDJSON body into records.
pub(crate) fn json_records(kind: BodyKind, body: &[u8]) -> Result<Vec<Json>, RecordError> {
    match kind {
        BodyKind::Json => match serde_json::from_slice::<Json>(body) {
            Ok(Json::Array(items)) => Ok(items),
            Ok(other) => Ok(vec![other]),
            Err(e) => Err(RecordError::new(
                0,
                "$",
                format!("body is not valid json: {e}"),
            )),
        },
        BodyKind::NdJson => {
            let text = std::str::from_utf8(body)
                .map_err(|e| RecordError::new(0, "$", format!("body is not utf-8: {e}")))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, line)| {
                    serde_json::from_str(line).map_err(|e| {
                        RecordError::new(i, "$", format!("line is not valid json: {e}"))
                    })
                })
                .collect()
        }
        BodyKind::Avro => Err(RecordError::new(0, "$", "not a json body")),
    }
}

impl TopicCodec {
    /// Validates JSON records and encodes each in the wire format, keyed by the key field.
    pub(crate) fn encode_json(&self, values: &[Json]) -> Result<Vec<OutboundRecord>, RecordError> {
        values
            .iter()
            .enumerate()
            .map(|(i, json)| {
                let avro = json_to_avro(json, &self.topic.value_schema)
                    .map_err(|e| RecordError::new(i, e.path.clone(), e.message.clone()))?;
                let key = self.key_of(&avro);
                let body = to_avro_datum(&self.topic.value_schema, avro)
                    .map_err(|e| RecordError::new(i, "$", format!("cannot encode: {e}")))?;
                Ok(OutboundRecord::new(
                    &self.topic.name,
                    key,
                    wire::frame(self.schema_id, &body),
                ))
            })
            .collect()
    }

    /// Validates one framed Avro record written with `writer` (the schema of its id), which the
    /// topic's schema must be able to read, and keys it. The bytes are produced as they came.
    pub(crate) fn accept_avro(
        &self,
        framed: &[u8],
        writer: &Schema,
    ) -> Result<OutboundRecord, RecordError> {
        let (id, mut body) =
            wire::parse(framed).map_err(|e| RecordError::new(0, "$", e.to_string()))?;
        // Before the decoder trusts the record's item counts: a few bytes can claim billions
        // of items (schema/bounded.rs).
        let bound = if id == self.schema_id {
            None
        } else {
            Some(
                DatumBound::from_json(&tributary_core::schema::compat::canonical(writer))
                    .map_err(|e| RecordError::new(0, "$", e.to_string()))?,
            )
        };
        match bound.as_ref().unwrap_or(&self.bound).check(body) {
            // The decoder below names what is malformed more precisely.
            Ok(()) | Err(BoundError::Malformed(_)) => {}
            Err(e) => {
                return Err(RecordError::new(
                    0,
                    "$",
                    format!("avro body refused before decoding: {e}"),
                ));
            }
        }
        let value =
            from_avro_datum(writer, &mut body, Some(&self.topic.value_schema)).map_err(|e| {
                RecordError::new(
                    0,
                    "$",
                    format!("avro body does not decode with the topic's schema: {e}"),
                )
            })?;
        if !body.is_empty() {
            return Err(RecordError::new(
                0,
                "$",
                format!("{} bytes after the avro record", body.len()),
            ));
        }
        Ok(OutboundRecord::new(
            &self.topic.name,
            self.key_of(&value),
            framed.to_vec(),
        ))
    }

    /// The message key: the key field's value as text (no key when the topic has no key field
    /// or the value is null).
    fn key_of(&self, value: &Avro) -> Option<Vec<u8>> {
        let field = self.topic.key_field.as_deref()?;
        let Avro::Record(fields) = value else {
            return None;
        };
        let (_, v) = fields.iter().find(|(name, _)| name == field)?;
        key_text(v).map(String::into_bytes)
    }
}

fn key_text(v: &Avro) -> Option<String> {
    match v {
        Avro::String(s) => Some(s.clone()),
        Avro::Int(n) => Some(n.to_string()),
        Avro::Long(n) => Some(n.to_string()),
        Avro::Uuid(u) => Some(u.to_string()),
        Avro::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Avro::Union(_, inner) => key_text(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::path::Path;
    use tributary_core::schema::catalog::Catalog;

    fn codec() -> TopicCodec {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let topic = Catalog::load(&dir)
            .unwrap()
            .topic("raw.web_events")
            .unwrap()
            .clone();
        TopicCodec {
            bound: DatumBound::from_json(&topic.value_schema_json).unwrap(),
            topic,
            schema_id: 42,
        }
    }

    fn event(user: &str) -> Json {
        serde_json::json!({
            "event_id": "0b6f2d3c-7f1e-4d8a-9a53-1c2b3d4e5f60", "user_id": user, "event_type": "page_view",
            "occurred_at": 1_764_000_000_000_i64, "page": {"url": "https://shop.test/"}, "properties": {}
        })
    }

    #[test]
    fn content_types() {
        assert_eq!(
            BodyKind::from_content_type("application/json; charset=utf-8"),
            Some(BodyKind::Json)
        );
        assert_eq!(
            BodyKind::from_content_type("application/x-ndjson"),
            Some(BodyKind::NdJson)
        );
        assert_eq!(
            BodyKind::from_content_type("application/vnd.confluent.avro"),
            Some(BodyKind::Avro)
        );
        assert_eq!(BodyKind::from_content_type("text/plain"), None);
    }

    #[test]
    fn json_bodies_split_into_records() {
        assert_eq!(
            json_records(BodyKind::Json, br#"{"a":1}"#).unwrap().len(),
            1
        );
        assert_eq!(
            json_records(BodyKind::Json, br#"[{"a":1},{"a":2}]"#)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            json_records(BodyKind::NdJson, b"{\"a\":1}\n\n{\"a\":2}\n")
                .unwrap()
                .len(),
            2
        );
        let e = json_records(BodyKind::NdJson, b"{\"a\":1}\n{oops\n").unwrap_err();
        assert_eq!(e.record, 1);
        assert!(json_records(BodyKind::Json, b"{").is_err());
    }

    #[test]
    fn records_are_framed_and_keyed() {
        let c = codec();
        let records = c.encode_json(&[event("u-1"), event("u-2")]).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].key.as_deref(), Some(&b"u-2"[..]));
        let payload = records[0].payload.as_deref().unwrap();
        let (id, _) = wire::parse(payload).unwrap();
        assert_eq!(id, 42);
        // The same bytes are accepted as an Avro body and keep their key.
        let again = c.accept_avro(payload, &c.topic.value_schema).unwrap();
        assert_eq!(again.key.as_deref(), Some(&b"u-1"[..]));
        assert_eq!(again.payload.as_deref(), Some(payload));
    }

    /// The measured attack (#18 b): 16 bytes claiming 400,000,000 nulls grew ingest to 13.5 GB.
    /// Refused before decoding, at once; so is the topic's own schema claiming more map
    /// entries than bytes.
    #[test]
    fn avro_bodies_claiming_billions_of_items_are_refused_before_decoding() {
        let c = codec();
        let attacker = Schema::parse_str(
            r#"{"type":"record","name":"X","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
        )
        .unwrap();
        // 400,000,000 zig-zagged, then the end block.
        let framed = wire::frame(99, &[0x80, 0x90, 0xbc, 0xfd, 0x02, 0x00]);
        let started = std::time::Instant::now();
        let e = c.accept_avro(&framed, &attacker).unwrap_err();
        assert!(e.message.contains("refused before decoding"), "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));

        // raw.web_events with its properties map claiming 400,000,000 entries.
        let mut event = event("u");
        event["properties"] = serde_json::json!({"k": "v"});
        let good = c.encode_json(&[event]).unwrap().remove(0).payload.unwrap();
        // The map is the last field: its count (1, zig-zag 2) is followed by "k", "v", 0.
        let tail = [2, 2, b'k', 2, b'v', 0];
        assert!(good.ends_with(&tail), "{good:?}");
        let mut huge = good[..good.len() - tail.len()].to_vec();
        huge.extend([0x80, 0x90, 0xbc, 0xfd, 0x02, 2, b'k', 2, b'v', 0]);
        let e = c.accept_avro(&huge, &c.topic.value_schema).unwrap_err();
        assert!(e.message.contains("claims 400000000 items"), "{e:?}");
    }

    #[test]
    fn invalid_records_name_the_record_and_field() {
        let c = codec();
        let mut bad = event("u");
        bad["page"]["url"] = serde_json::json!(7);
        let e = c.encode_json(&[event("u"), bad]).unwrap_err();
        assert_eq!((e.record, e.path.as_str()), (1, "$.page.url"), "{e:?}");

        let good = c
            .encode_json(&[event("u")])
            .unwrap()
            .remove(0)
            .payload
            .unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(
            c.accept_avro(&trailing, &c.topic.value_schema)
                .unwrap_err()
                .message
                .contains("after the avro record")
        );
        assert!(
            c.accept_avro(&good[..good.len() - 3], &c.topic.value_schema)
                .is_err()
        );
        assert!(c.accept_avro(&[1, 2], &c.topic.value_schema).is_err());
    }
}
