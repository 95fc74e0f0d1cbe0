//! A real outside Confluent client (Python confluent-kafka's SchemaRegistryClient, AvroSerializer,
//! AvroDeserializer) against Tributary's registry and a real broker, in both directions.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apache_avro::Schema;
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tributary_core::bus::{
    BatchHandler, BoxError, BusMetrics, ConsumerLoopConfig, HandlerError, InboundRecord,
    OutboundRecord, Output, Producer, TopicSpec, create_topics, run_consumer,
};
use tributary_core::schema::arrow::AvroBatchDecoder;
use tributary_core::schema::json::json_to_avro_datum;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::schema::wire;
use tributary_integration_tests::{Broker, Registry, init_logs, unique};

const COUNT: i64 = 500;

/// The same schema and records as integration-tests/python/interop.py.
const SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"interop","fields":[
  {"name":"id","type":"long"},
  {"name":"customer","type":"string"},
  {"name":"email","type":["null","string"],"default":null},
  {"name":"total","type":"double"},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}},
  {"name":"placed_at","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"tags","type":{"type":"array","items":"string"}}]}"#;

fn record(i: i64) -> Value {
    let status = ["NEW", "PAID", "SHIPPED"][(i % 3) as usize];
    json!({
        "id": i,
        "customer": format!("customer-{}", i % 13),
        "email": if i % 3 == 0 { Value::Null } else { json!(format!("c{i}@shop.test")) },
        "total": i as f64 * 1.25,
        "status": status,
        "placed_at": 1_700_000_000_000_i64 + i,
        "tags": (0..i % 4).map(|j| format!("t{j}")).collect::<Vec<_>>(),
    })
}

fn python(args: &[&str]) -> Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/interop.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .context("run python3 interop.py")?;
    if !output.status.success() {
        bail!(
            "interop.py {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tributary_producer_to_confluent_deserializer() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let registry = Registry::start(&broker)?;
    let topic = unique("t-interop-out");
    create_topics(
        &broker.kafka(),
        &[TopicSpec {
            name: topic.clone(),
            partitions: 2,
            config: vec![],
        }],
    )
    .await?;

    let client = registry.client()?;
    let id = client.register(&format!("{topic}-value"), SCHEMA).await?;
    let schema = Schema::parse_str(SCHEMA)?;
    let producer = Producer::new(&broker.kafka(), BusMetrics::default())?;
    let records = (0..COUNT)
        .map(|i| {
            let body = json_to_avro_datum(&record(i), &schema)?;
            Ok(OutboundRecord::new(
                &topic,
                Some(i.to_string().into_bytes()),
                wire::frame(id, &body),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    producer.send_all(&records).await?;

    let out = python(&[
        "consume",
        "--bootstrap",
        &broker.bootstrap(),
        "--registry",
        &registry.url(),
        "--registry-auth",
        &registry.user_info(),
        "--topic",
        &topic,
        "--count",
        &COUNT.to_string(),
    ])?;
    let mut decoded: BTreeMap<i64, Value> = BTreeMap::new();
    for line in out.lines() {
        let v: Value = serde_json::from_str(line)?;
        decoded.insert(v["id"].as_i64().context("id")?, v);
    }
    assert_eq!(decoded.len(), COUNT as usize);
    for (i, v) in &decoded {
        assert_eq!(v, &record(*i), "record {i} as AvroDeserializer decoded it");
    }
    Ok(())
}

/// (customer, email, status) of each decoded record, by id.
type Rows = Arc<Mutex<BTreeMap<i64, (String, Option<String>, String)>>>;

/// Decodes each batch through the registry and Arrow, keeping a few columns per record.
struct Decode {
    registry: RegistryClient,
    decoder: AvroBatchDecoder,
    rows: Rows,
}

impl BatchHandler for Decode {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        _out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        self.decode(batch).await.map_err(HandlerError::Fatal)
    }
}

impl Decode {
    async fn decode(&mut self, batch: &[InboundRecord]) -> Result<(), BoxError> {
        let payloads: Vec<&[u8]> = batch
            .iter()
            .map(|r| r.payload.as_deref().unwrap_or_default())
            .collect();
        for p in &payloads {
            let (id, _) = wire::parse(p)?;
            if !self.decoder.is_registered(id) {
                let schema = self.registry.schema_by_id(id).await?;
                self.decoder.register(id, &schema)?;
            }
        }
        let output = self.decoder.decode(payloads.iter().copied());
        if let Some((index, error)) = output.errors.first() {
            return Err(format!("record {index} did not decode: {error}").into());
        }
        let mut rows = self.rows.lock().map_err(|_| "poisoned")?;
        for decoded in output.batches {
            let b = &decoded.batch;
            let col = |name: &str| {
                b.column_by_name(name)
                    .ok_or_else(|| format!("no column {name}"))
            };
            let ids = col("id")?.as_primitive::<Int64Type>().clone();
            let customers = col("customer")?.as_string::<i32>().clone();
            let emails = col("email")?.as_string::<i32>().clone();
            let statuses = arrow::compute::cast(col("status")?, &arrow::datatypes::DataType::Utf8)?;
            let statuses = statuses.as_string::<i32>();
            for row in 0..b.num_rows() {
                let email = (!emails.is_null(row)).then(|| emails.value(row).to_string());
                rows.insert(
                    ids.value(row),
                    (
                        customers.value(row).to_string(),
                        email,
                        statuses.value(row).to_string(),
                    ),
                );
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_serializer_to_tributary_consumer() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let registry = Registry::start(&broker)?;
    let topic = unique("t-interop-in");
    create_topics(
        &broker.kafka(),
        &[TopicSpec {
            name: topic.clone(),
            partitions: 2,
            config: vec![],
        }],
    )
    .await?;
    python(&[
        "produce",
        "--bootstrap",
        &broker.bootstrap(),
        "--registry",
        &registry.url(),
        "--registry-auth",
        &registry.user_info(),
        "--topic",
        &topic,
        "--count",
        &COUNT.to_string(),
    ])?;

    // The serializer registered the schema itself under <topic>-value.
    let client = registry.client()?;
    let latest = client
        .subject_version(
            &format!("{topic}-value"),
            tributary_core::schema::registry::Version::Latest,
        )
        .await?;
    assert_eq!(latest.version, 1);

    let rows = Arc::new(Mutex::new(BTreeMap::new()));
    let mut handler = Decode {
        registry: client,
        decoder: AvroBatchDecoder::new(None, 1024),
        rows: rows.clone(),
    };
    let shutdown = CancellationToken::new();
    let kafka = broker.kafka();
    let config = ConsumerLoopConfig::new(unique("g-interop"), vec![topic.clone()], "interop");
    let producer = Producer::new(&kafka, BusMetrics::default())?;
    let stop = shutdown.clone();
    let watcher_rows = rows.clone();
    let watcher = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while watcher_rows.lock().map(|r| r.len()).unwrap_or(0) < COUNT as usize
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.cancel();
    });
    run_consumer(
        &kafka,
        &config,
        &producer,
        &BusMetrics::default(),
        &mut handler,
        shutdown,
    )
    .await?;
    watcher.await?;

    let rows = rows.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    assert_eq!(rows.len(), COUNT as usize);
    for (i, (customer, email, status)) in rows.iter() {
        let expected = record(*i);
        assert_eq!(Some(customer.as_str()), expected["customer"].as_str());
        assert_eq!(email.as_deref(), expected["email"].as_str());
        assert_eq!(Some(status.as_str()), expected["status"].as_str());
    }
    Ok(())
}
