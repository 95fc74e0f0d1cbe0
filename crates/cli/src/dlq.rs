//! `tributary dlq`: the latest dead letters of the pipeline, with why and where each failed and
//! the record itself, decoded through the registry when it is Avro in the Confluent framing.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tributary_core::bus::{
    BrokerInspector, DLQ_HEADERS, InboundRecord, dlq_topic, read_partition_tail,
};
use tributary_core::schema::catalog::DLQ_STAGES;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::schema::wire;

use crate::config::CliConfig;
use crate::usage;

/// What to show.
#[derive(Debug)]
pub(crate) struct DlqOptions {
    /// The stages whose topics are read (all when empty).
    pub(crate) stages: Vec<String>,
    /// How many dead letters, the latest, over the stages read.
    pub(crate) last: usize,
    /// One JSON object per line instead of text.
    pub(crate) json: bool,
}

/// One dead letter, as shown.
#[derive(Debug)]
struct Letter {
    record: InboundRecord,
    headers: HashMap<String, String>,
}

impl Letter {
    fn new(record: InboundRecord) -> Self {
        let headers = record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        Self { record, headers }
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("?")
    }
}

/// Prints the latest dead letters; `Ok(true)` (none is not a failure).
pub(crate) async fn run(
    options: &DlqOptions,
    config: &CliConfig,
    out: &mut dyn Write,
) -> Result<bool> {
    let stages: Vec<String> = if options.stages.is_empty() {
        DLQ_STAGES.iter().map(|s| s.to_string()).collect()
    } else {
        for stage in &options.stages {
            if !DLQ_STAGES.contains(&stage.as_str()) {
                return Err(usage(format!(
                    "no stage {stage:?}: the stages are {}",
                    DLQ_STAGES.join(", ")
                )));
            }
        }
        options.stages.clone()
    };
    let last = options.last.max(1);
    let partitions = partitions(config, &stages).await?;
    let mut letters = Vec::new();
    for (topic, partition) in partitions {
        let records = read_partition_tail(&config.kafka, &topic, partition, Some(last as i64))
            .await
            .with_context(|| format!("read {topic} partition {partition}"))?;
        letters.extend(records.into_iter().map(Letter::new));
    }
    letters.sort_by_key(|l| (l.record.timestamp_ms, l.record.offset));
    let skip = letters.len().saturating_sub(last);
    let letters = &letters[skip..];
    let registry = RegistryClient::new(&config.registry).ok();
    let mut schemas: HashMap<u32, Option<apache_avro::Schema>> = HashMap::new();
    if letters.is_empty() && !options.json {
        writeln!(out, "no dead letters in {}", topics_named(&stages))?;
    }
    for letter in letters {
        let value = match &letter.record.payload {
            Some(payload) => decode(payload, registry.as_ref(), &mut schemas).await,
            None => Payload::Missing,
        };
        if options.json {
            writeln!(out, "{}", as_json(letter, &value))?;
        } else {
            write_text(out, letter, &value)?;
        }
    }
    Ok(true)
}

fn topics_named(stages: &[String]) -> String {
    stages
        .iter()
        .map(|s| dlq_topic(s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The partitions of the stages' topics that exist.
async fn partitions(config: &CliConfig, stages: &[String]) -> Result<Vec<(String, i32)>> {
    let inspector = BrokerInspector::new(&config.kafka)
        .map_err(crate::kafka_error)
        .context("create a Kafka client")?
        .with_timeout(Duration::from_secs(10));
    let topics: Vec<String> = stages.iter().map(|s| dlq_topic(s)).collect();
    let cluster = inspector
        .cluster()
        .await
        .map_err(crate::kafka_error)
        .with_context(|| {
            format!(
                "read the topics of the broker at {}",
                config.kafka.bootstrap_servers
            )
        })?;
    let mut out = Vec::new();
    for topic in cluster.topics {
        if topics.contains(&topic.name) {
            out.extend(topic.partitions.iter().map(|&p| (topic.name.clone(), p)));
        }
    }
    Ok(out)
}

/// A dead letter's record, as far as it could be read.
#[derive(Debug)]
enum Payload {
    /// Avro, decoded with the writer schema of `id`.
    Avro {
        id: u32,
        value: Value,
    },
    /// Avro whose schema or body could not be read.
    Undecoded {
        id: u32,
        why: String,
        len: usize,
    },
    /// Text (a rejected JSON request body, a CSV line).
    Text(String),
    /// Bytes that are neither.
    Bytes(usize),
    Missing,
}

async fn decode(
    payload: &[u8],
    registry: Option<&RegistryClient>,
    schemas: &mut HashMap<u32, Option<apache_avro::Schema>>,
) -> Payload {
    let Ok((id, body)) = wire::parse(payload) else {
        return match std::str::from_utf8(payload) {
            Ok(text) => Payload::Text(text.to_string()),
            Err(_) => Payload::Bytes(payload.len()),
        };
    };
    if let std::collections::hash_map::Entry::Vacant(slot) = schemas.entry(id) {
        let schema = match registry {
            Some(r) => r
                .schema_by_id(id)
                .await
                .ok()
                .and_then(|text| tributary_core::schema::parse_avro_schema(&text).ok()),
            None => None,
        };
        slot.insert(schema);
    }
    let undecoded = |why: String| Payload::Undecoded {
        id,
        why,
        len: payload.len(),
    };
    let Some(Some(schema)) = schemas.get(&id) else {
        return undecoded("schema not in the registry".into());
    };
    // A dead letter can be the record that claimed billions of items: walked first.
    match tributary_core::schema::bounded::DatumBound::from_json(
        &tributary_core::schema::compat::canonical(schema),
    ) {
        Ok(bound) => {
            if let Err(e) = bound.check(body) {
                return undecoded(format!("refused before decoding: {e}"));
            }
        }
        Err(e) => return undecoded(e.to_string()),
    }
    let mut reader = body;
    let names = match apache_avro::schema::ResolvedSchema::try_from(schema) {
        Ok(resolved) => resolved.get_names().clone(),
        Err(e) => return undecoded(e.to_string()),
    };
    match apache_avro::from_avro_datum(schema, &mut reader, None) {
        Ok(value) => Payload::Avro {
            id,
            value: avro_json(&value, schema, &names),
        },
        Err(e) => undecoded(e.to_string()),
    }
}

/// An Avro value as JSON, as people read it: unions unwrapped, enums as their symbol, decimals
/// as exact text with the schema's scale, timestamps as their numbers.
fn avro_json(
    value: &apache_avro::types::Value,
    schema: &apache_avro::Schema,
    names: &apache_avro::schema::NamesRef<'_>,
) -> Value {
    use apache_avro::Schema as S;
    use apache_avro::types::Value as A;
    let schema = match schema {
        S::Ref { name } => match names.get(name) {
            Some(s) => *s,
            None => schema,
        },
        other => other,
    };
    match (value, schema) {
        (A::Union(i, inner), S::Union(u)) => match u.variants().get(*i as usize) {
            Some(s) => avro_json(inner, s, names),
            None => avro_json(inner, schema, names),
        },
        (A::Union(_, inner), _) => avro_json(inner, schema, names),
        (A::Record(fields), S::Record(r)) => Value::Object(
            fields
                .iter()
                .zip(&r.fields)
                .map(|((name, v), f)| (name.clone(), avro_json(v, &f.schema, names)))
                .collect(),
        ),
        (A::Array(items), S::Array(a)) => Value::Array(
            items
                .iter()
                .map(|v| avro_json(v, &a.items, names))
                .collect(),
        ),
        (A::Map(m), S::Map(ms)) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), avro_json(v, &ms.types, names)))
                .collect(),
        ),
        (A::Decimal(d), S::Decimal(ds)) => match Vec::<u8>::try_from(d) {
            Ok(bytes) => decimal_text(&bytes, ds.scale).map_or(Value::Null, Value::String),
            Err(_) => Value::Null,
        },
        (A::Enum(_, symbol), _) => Value::String(symbol.clone()),
        (A::Bytes(b) | A::Fixed(_, b), _) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (other, _) => Value::try_from(other.clone()).unwrap_or(Value::Null),
    }
}

/// A big-endian two's-complement unscaled decimal as text (`None` beyond 128 bits).
fn decimal_text(bytes: &[u8], scale: usize) -> Option<String> {
    if bytes.len() > 16 {
        return None;
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut wide = [fill; 16];
    wide[16 - bytes.len()..].copy_from_slice(bytes);
    let n = i128::from_be_bytes(wide);
    let digits = n.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, frac) = digits.split_at(digits.len() - scale);
    let sign = if n < 0 { "-" } else { "" };
    Some(if scale == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{frac}")
    })
}

fn when(record: &InboundRecord) -> String {
    record
        .timestamp_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "-".into())
}

fn write_text(out: &mut dyn Write, letter: &Letter, payload: &Payload) -> Result<()> {
    let [topic, partition, offset, stage, class, message] = DLQ_HEADERS;
    writeln!(
        out,
        "{}  {}  {}  from {}[{}]@{}  ({}[{}]@{})",
        when(&letter.record),
        letter.header(stage),
        letter.header(class),
        letter.header(topic),
        letter.header(partition),
        letter.header(offset),
        letter.record.topic,
        letter.record.partition,
        letter.record.offset
    )?;
    writeln!(out, "    {}", letter.header(message))?;
    if let Some(key) = &letter.record.key {
        writeln!(out, "    key: {}", String::from_utf8_lossy(key))?;
    }
    let shown = match payload {
        Payload::Avro { id, value } => format!("record (schema id {id}): {value}"),
        Payload::Undecoded { id, why, len } => {
            format!("{len} bytes, schema id {id}, not decoded: {why}")
        }
        Payload::Text(text) => format!("text: {}", text.trim_end()),
        Payload::Bytes(len) => format!("{len} bytes, not Avro nor text"),
        Payload::Missing => "no value".into(),
    };
    writeln!(out, "    {}", shorten(&shown, 600))?;
    Ok(())
}

fn as_json(letter: &Letter, payload: &Payload) -> Value {
    let [topic, partition, offset, stage, class, message] = DLQ_HEADERS;
    let (record, schema_id, text) = match payload {
        Payload::Avro { id, value } => (value.clone(), Some(*id), None),
        Payload::Undecoded { id, why, .. } => (Value::Null, Some(*id), Some(why.clone())),
        Payload::Text(text) => (Value::Null, None, Some(text.clone())),
        Payload::Bytes(_) | Payload::Missing => (Value::Null, None, None),
    };
    json!({
        "dlq_topic": letter.record.topic,
        "dlq_partition": letter.record.partition,
        "dlq_offset": letter.record.offset,
        "timestamp_ms": letter.record.timestamp_ms,
        "stage": letter.headers.get(stage),
        "error_class": letter.headers.get(class),
        "error_message": letter.headers.get(message),
        "source_topic": letter.headers.get(topic),
        "source_partition": letter.headers.get(partition).and_then(|p| p.parse::<i64>().ok()),
        "source_offset": letter.headers.get(offset).and_then(|o| o.parse::<i64>().ok()),
        "key": letter.record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "schema_id": schema_id,
        "record": record,
        "text": text,
    })
}

/// `text` cut to about `max` characters, with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn letter(payload: &[u8]) -> Letter {
        let record = tributary_core::bus::dead_letter_record(
            &tributary_core::bus::DeadLetter {
                stage: "transform",
                source_topic: "db.shop.orders",
                partition: 2,
                offset: 41,
                error_class: "validation",
                message: "rule currency_code failed",
            },
            Some(b"17".to_vec()),
            payload.to_vec(),
        );
        Letter::new(InboundRecord {
            topic: record.topic,
            partition: 0,
            offset: 5,
            key: record.key,
            payload: record.payload,
            timestamp_ms: Some(1_764_400_000_000),
            headers: record.headers,
        })
    }

    #[tokio::test]
    async fn a_letter_says_where_and_why_and_shows_the_record() {
        let schema = r#"{"type":"record","name":"R","fields":[{"name":"status","type":"string"}]}"#;
        let parsed = apache_avro::Schema::parse_str(schema).unwrap();
        let body = apache_avro::to_avro_datum(
            &parsed,
            apache_avro::types::Value::Record(vec![(
                "status".into(),
                apache_avro::types::Value::String("paid".into()),
            )]),
        )
        .unwrap();
        let framed = wire::frame(7, &body);
        let mut schemas = HashMap::from([(7, Some(parsed))]);
        let payload = decode(&framed, None, &mut schemas).await;
        let l = letter(&framed);
        let mut text = Vec::new();
        write_text(&mut text, &l, &payload).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("transform  validation  from db.shop.orders[2]@41  (dlq.transform[0]@5)"),
            "{text}"
        );
        assert!(text.contains("rule currency_code failed"), "{text}");
        assert!(
            text.contains(r#"record (schema id 7): {"status":"paid"}"#),
            "{text}"
        );
        let j = as_json(&l, &payload);
        assert_eq!(j["source_offset"], 41);
        assert_eq!(j["record"]["status"], "paid");
        assert_eq!(j["key"], "17");

        // An unknown schema id, and text.
        let unknown = decode(&wire::frame(8, &body), None, &mut schemas).await;
        assert!(
            matches!(unknown, Payload::Undecoded { id: 8, .. }),
            "{unknown:?}"
        );
        let csv = decode(b"P-1,SKU,call us\n", None, &mut schemas).await;
        assert!(
            matches!(&csv, Payload::Text(t) if t.contains("call us")),
            "{csv:?}"
        );
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(decimal_text(&[0x04, 0xe2], 2).unwrap(), "12.50");
        assert_eq!(decimal_text(&[0xff, 0x38], 2).unwrap(), "-2.00");
        assert_eq!(decimal_text(&[0x05], 3).unwrap(), "0.005");
        assert_eq!(decimal_text(&[0x07], 0).unwrap(), "7");
    }
}
