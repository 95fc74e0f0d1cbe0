//! For tests of the consume-process-produce services: a broker and registry with a catalog's topics,
//! JSON records produced as Avro, records read back as JSON.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use serde_json::{Value, json};
use tributary_core::bus::{BusMetrics, OutboundRecord, Producer, create_topics};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::json::json_to_avro_datum;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::schema::wire;

use crate::{Broker, ReadRecord, Registry, init_logs, read_all};

/// A broker with a catalog's topics, a registry, and a producer of JSON records as Avro.
#[derive(Debug)]
pub struct Stack {
    /// The broker.
    pub broker: Broker,
    /// The registry service.
    pub registry: Registry,
    /// A client of it.
    pub client: RegistryClient,
    /// A producer (never times out: see the comment in `start`).
    pub producer: Producer,
    /// The catalog whose topics were created.
    pub catalog: Catalog,
}

impl Stack {
    /// Starts a broker with the topics of the catalog in `schemas`, and a registry.
    pub async fn start(schemas: &Path) -> Result<Self> {
        init_logs();
        let broker = Broker::start()?;
        let catalog = Catalog::load(schemas)?;
        create_topics(&broker.kafka(), &catalog.topic_specs(1)).await?;
        let registry = Registry::start(&broker)?;
        let client = registry.client()?;
        let mut kafka = broker.kafka();
        // Tansu fails after librdkafka bumps an idempotent producer's epoch: never time out.
        kafka
            .extra
            .insert("delivery.timeout.ms".into(), "300000".into());
        let producer = Producer::new(&kafka, BusMetrics::default())?;
        Ok(Self {
            broker,
            registry,
            client,
            producer,
            catalog,
        })
    }

    /// Produces JSON values (validated and encoded with the topic's catalog schema) with keys.
    pub async fn produce(&self, topic: &str, records: &[(&str, Value)]) -> Result<()> {
        let t = self.catalog.topic(topic).context("topic not in catalog")?;
        let id = self
            .client
            .register(&t.value_subject(), &t.value_schema_json)
            .await?;
        let out: Vec<OutboundRecord> = records
            .iter()
            .map(|(key, value)| {
                Ok(OutboundRecord::new(
                    topic,
                    Some(key.as_bytes().to_vec()),
                    wire::frame(id, &json_to_avro_datum(value, &t.value_schema)?),
                ))
            })
            .collect::<Result<_>>()?;
        self.producer.send_all(&out).await?;
        Ok(())
    }

    /// A JSON value in the wire format of `topic`'s catalog schema (registered on first use).
    pub async fn encode(&self, topic: &str, value: &Value) -> Result<Vec<u8>> {
        let t = self.catalog.topic(topic).context("topic not in catalog")?;
        let id = self
            .client
            .register(&t.value_subject(), &t.value_schema_json)
            .await?;
        Ok(wire::frame(
            id,
            &json_to_avro_datum(value, &t.value_schema)?,
        ))
    }

    /// Produces raw bytes.
    pub async fn produce_raw(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<()> {
        self.producer
            .send(&OutboundRecord::new(
                topic,
                Some(key.as_bytes().to_vec()),
                payload,
            ))
            .await?;
        Ok(())
    }

    /// Reads `count` records of `topic` (waiting up to `wait`) and decodes them to JSON.
    pub async fn read(
        &self,
        topic: &str,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<(String, Value)>> {
        let broker_records = read_all(&self.broker, topic, count, wait)?;
        let mut out = Vec::new();
        for r in broker_records {
            out.push((key_of(&r), self.decode(&r.payload).await?));
        }
        Ok(out)
    }

    /// Decodes a Confluent-framed Avro payload to JSON with its registered schema.
    pub async fn decode(&self, payload: &[u8]) -> Result<Value> {
        let (id, mut body) = wire::parse(payload)?;
        let schema = Schema::parse_str(&self.client.schema_by_id(id).await?)?;
        let value = apache_avro::from_avro_datum(&schema, &mut body, None)?;
        if !body.is_empty() {
            bail!("{} bytes left after the record", body.len());
        }
        to_json(value)
    }
}

/// A record's key as text.
pub fn key_of(r: &ReadRecord) -> String {
    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned()
}

/// Avro values as plain JSON: unions unwrapped, enums and uuids as strings, decimals as their
/// unscaled integer.
pub fn to_json(value: Avro) -> Result<Value> {
    Ok(match value {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) | Avro::Date(i) => json!(i),
        Avro::Long(i)
        | Avro::TimestampMillis(i)
        | Avro::TimestampMicros(i)
        | Avro::LocalTimestampMillis(i)
        | Avro::LocalTimestampMicros(i) => json!(i),
        Avro::Float(f) => json!(f),
        Avro::Double(f) => json!(f),
        Avro::String(s) | Avro::Enum(_, s) => json!(s),
        Avro::Uuid(u) => json!(u.to_string()),
        Avro::Bytes(b) => json!(b),
        Avro::Decimal(d) => {
            let bytes: Vec<u8> = Vec::try_from(&d)?;
            let mut n: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
                -1
            } else {
                0
            };
            for b in bytes {
                n = (n << 8) | i128::from(b);
            }
            json!(n)
        }
        Avro::Union(_, inner) => to_json(*inner)?,
        Avro::Record(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| Ok((k, to_json(v)?)))
                .collect::<Result<_>>()?,
        ),
        Avro::Map(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| Ok((k, to_json(v)?)))
                .collect::<Result<_>>()?,
        ),
        Avro::Array(items) => Value::Array(items.into_iter().map(to_json).collect::<Result<_>>()?),
        other => bail!("unexpected avro value {other:?}"),
    })
}
