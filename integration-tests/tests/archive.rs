//! The archive service through a real broker and registry into a local lake.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use apache_avro::Schema;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use tributary_core::bus::{BusMetrics, OutboundRecord, Producer};
use tributary_core::schema::json::json_to_avro_datum;
use tributary_core::schema::registry::{RegistryClient, RegistryConfig};
use tributary_core::schema::wire;
use tributary_integration_tests::{
    Archive, Broker, Registry, create_catalog_topics, init_logs, repo_catalog,
};

fn web_event(i: i64) -> Value {
    json!({
        "event_id": format!("0b6f2d3c-7f1e-4d8a-9a53-{:012x}", i),
        "user_id": format!("user-{}", i % 11),
        "event_type": "page_view",
        "occurred_at": 1_764_000_000_000_i64 + i * 1000,
        "page": {"url": format!("https://shop.test/p/{i}")},
        "properties": {}
    })
}

/// (partition, offset) of every row in the Parquet files under `dir`.
fn archived_rows(dir: &Path) -> Result<Vec<(i32, i64)>> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path)?)?
                    .build()?;
                for batch in reader {
                    let batch = batch?;
                    let p = batch.column_by_name("_kafka_partition").and_then(|c| {
                        c.as_any()
                            .downcast_ref::<arrow::array::Int32Array>()
                            .cloned()
                    });
                    let o = batch.column_by_name("_kafka_offset").and_then(|c| {
                        c.as_any()
                            .downcast_ref::<arrow::array::Int64Array>()
                            .cloned()
                    });
                    let (Some(p), Some(o)) = (p, o) else {
                        bail!("{} has no lineage columns", path.display())
                    };
                    rows.extend(
                        p.values()
                            .iter()
                            .zip(o.values().iter())
                            .map(|(p, o)| (*p, *o)),
                    );
                }
            }
        }
    }
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_a_topic_to_parquet() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    create_catalog_topics(&broker).await?;
    let registry = Registry::start(&broker)?;
    let lake = tempfile::tempdir()?;
    let client = RegistryClient::new(&RegistryConfig::new(registry.url()))?;
    let catalog = repo_catalog()?;
    let topic = catalog
        .topic("raw.web_events")
        .ok_or_else(|| anyhow::anyhow!("no topic"))?;
    let id = client
        .register(&topic.value_subject(), &topic.value_schema_json)
        .await?;
    let schema = Schema::parse_str(&topic.value_schema_json)?;
    let producer = Producer::new(&broker.kafka(), BusMetrics::default())?;
    let total = 3000;
    let records = (0..total)
        .map(|i| {
            Ok(OutboundRecord::new(
                "raw.web_events",
                Some(format!("user-{}", i % 11).into_bytes()),
                wire::frame(id, &json_to_avro_datum(&web_event(i), &schema)?),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    producer.send_all(&records).await?;

    let mut archive = Archive::start(
        &broker,
        &registry,
        "max_file_records = 500\nmax_open_seconds = 2",
        &format!("url = \"file://{}\"", lake.path().display()),
        "",
    )?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = archived_rows(lake.path()).unwrap_or_default();
        if rows.len() >= total as usize {
            break;
        }
        if Instant::now() > deadline || !archive.is_running() {
            bail!("archived {} of {total}\n{}", rows.len(), archive.log());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    let rows = archived_rows(lake.path())?;
    let distinct: BTreeSet<(i32, i64)> = rows.iter().copied().collect();
    assert_eq!(
        (rows.len(), distinct.len()),
        (total as usize, total as usize),
        "exactly once"
    );
    Ok(())
}
