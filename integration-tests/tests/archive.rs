//! The archive service through a real broker and registry into a local lake (and S3 on moto),
//! read back in Rust and by DuckDB (python/lake_sql.py).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use apache_avro::Schema;
use arrow::array::{Int32Array, Int64Array, RecordBatch};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tributary_core::bus::{BusMetrics, OutboundRecord, Producer};
use tributary_core::lake::Lake;
use tributary_core::schema::json::json_to_avro_datum;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::schema::wire;
use tributary_integration_tests::{
    Archive, Broker, BrokerKind, FileStamp, Registry, S3, committed_and_end, create_catalog_topics,
    init_logs, parquet_files, repo_catalog, unique,
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
    let client = registry.client()?;
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

// ---------------------------------------------------------------------------------------------
// The issue's "must show": a schema change read by DuckDB, crashes, poison records, S3.
// ---------------------------------------------------------------------------------------------

const TOPIC: &str = "raw.web_events";
/// 2025-11-24T16:00:00Z: events start on an hour boundary.
const BASE_MS: i64 = 1_764_000_000_000;
/// The group the archive runs in (its default `group_id`).
const ARCHIVE_GROUP: &str = "tributary-archive";

/// A broker with the catalog's topics, a registry, and the catalog's `raw.web_events` value
/// schema registered as v1.
struct Bench {
    broker: Broker,
    registry: Registry,
    client: RegistryClient,
    v1_id: u32,
    v1: Schema,
    v1_json: String,
}

impl Bench {
    async fn start() -> Result<Self> {
        init_logs();
        let broker = Broker::start()?;
        create_catalog_topics(&broker).await?;
        let registry = Registry::start(&broker)?;
        let client = registry.client()?;
        let catalog = repo_catalog()?;
        let topic = catalog
            .topic(TOPIC)
            .context("raw.web_events in the catalog")?;
        let v1_id = client
            .register(&topic.value_subject(), &topic.value_schema_json)
            .await?;
        Ok(Self {
            broker,
            registry,
            client,
            v1_id,
            v1: Schema::parse_str(&topic.value_schema_json)?,
            v1_json: topic.value_schema_json.clone(),
        })
    }

    fn producer(&self) -> Result<Producer> {
        Ok(Producer::new(&self.broker.kafka(), BusMetrics::default())?)
    }

    /// Starts the archive on a local lake folder.
    fn archive(&self, lake: &Path, archive_keys: &str) -> Result<Archive> {
        Archive::start(
            &self.broker,
            &self.registry,
            archive_keys,
            &format!("url = \"file://{}\"", lake.display()),
            "",
        )
    }
}

/// Event `i` of a run whose events are `step_ms` apart; with a campaign (schema v2) or without.
fn event(i: i64, step_ms: i64, campaign: bool) -> Value {
    let mut v = json!({
        "event_id": format!("0b6f2d3c-7f1e-4d8a-9a53-{:012x}", i),
        "user_id": format!("user-{}", i % 101),
        "event_type": if i % 10 == 0 { "purchase" } else { "page_view" },
        "occurred_at": BASE_MS + i * step_ms,
        "page": {"url": format!("https://shop.test/p/{i}")},
        "amount": if i % 10 == 0 { json!(cents_text(amount_cents(i))) } else { Value::Null },
        "properties": if i % 4 == 0 { json!({"ab": format!("v{}", i % 3)}) } else { json!({}) },
    });
    if campaign {
        v["campaign"] = json!(format!("camp-{}", i % 7));
    }
    v
}

fn amount_cents(i: i64) -> i64 {
    i % 10_000 + 1
}

fn cents_text(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Events `range` framed with schema `id`, keyed by user.
fn framed(
    range: std::ops::Range<i64>,
    id: u32,
    schema: &Schema,
    make: impl Fn(i64) -> Value,
) -> Result<Vec<OutboundRecord>> {
    range
        .map(|i| {
            let value = make(i);
            let key = value["user_id"].as_str().map(|s| s.as_bytes().to_vec());
            Ok(OutboundRecord::new(
                TOPIC,
                key,
                wire::frame(id, &json_to_avro_datum(&value, schema)?),
            ))
        })
        .collect()
}

/// Produces in chunks (the producer's queue holds 100,000 records) and returns where each landed.
async fn produce(producer: &Producer, records: &[OutboundRecord]) -> Result<Vec<(i32, i64)>> {
    let mut out = Vec::with_capacity(records.len());
    for chunk in records.chunks(10_000) {
        out.extend(
            producer
                .send_all(chunk)
                .await?
                .into_iter()
                .map(|d| (d.partition, d.offset)),
        );
    }
    Ok(out)
}

/// FNV-1a, 64 bits: the content fingerprint of an object.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// (size, FNV-1a hash) of an object's content.
type Fingerprint = (u64, u64);

/// One Parquet object of the lake as read at some moment.
#[derive(Debug, Clone)]
struct LakeFile {
    size: u64,
    hash: u64,
    /// (partition, offset, schema id) of every row.
    rows: Vec<(i32, i64, i32)>,
    /// The `tributary.*` key/value metadata of the footer.
    meta: BTreeMap<String, String>,
}

fn int32s(batch: &RecordBatch, name: &str) -> Result<Int32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>().cloned())
        .with_context(|| format!("no Int32 column {name}"))
}

impl LakeFile {
    fn parse(bytes: Bytes) -> Result<Self> {
        let size = bytes.len() as u64;
        let hash = fnv1a(&bytes);
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
        let meta = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kv| {
                kv.iter()
                    .filter(|k| k.key.starts_with("tributary."))
                    .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["_kafka_partition", "_kafka_offset", "_schema_id"],
        );
        let mut rows = Vec::new();
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let p = int32s(&batch, "_kafka_partition")?;
            let s = int32s(&batch, "_schema_id")?;
            let o = batch
                .column_by_name("_kafka_offset")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .context("no Int64 column _kafka_offset")?;
            for i in 0..batch.num_rows() {
                rows.push((p.value(i), o.value(i), s.value(i)));
            }
        }
        Ok(Self {
            size,
            hash,
            rows,
            meta,
        })
    }

    fn meta_i64(&self, key: &str) -> Result<i64> {
        self.meta
            .get(key)
            .with_context(|| format!("no {key} in the footer"))?
            .parse()
            .with_context(|| format!("{key} is not a number"))
    }
}

/// Watches a lake while the archive writes it: every object each time its content may have
/// changed, so an object that ever shows two different contents is caught.
#[derive(Debug, Default)]
struct LakeWatch {
    /// Latest content of each `.parquet` key (relative to the watched root).
    files: BTreeMap<String, LakeFile>,
    /// (size, modification time, inode) of local files when last read: unchanged means unread.
    stamps: BTreeMap<String, FileStamp>,
    /// Keys seen with two different contents: (key, before, after).
    overwritten: Vec<(String, Fingerprint, Fingerprint)>,
    /// Keys that disappeared.
    deleted: Vec<String>,
    /// Objects that could not be read as Parquet: (key, error).
    unreadable: BTreeMap<String, String>,
}

impl LakeWatch {
    fn record(&mut self, key: String, bytes: Bytes) {
        let file = match LakeFile::parse(bytes.clone()) {
            Ok(f) => f,
            Err(e) => {
                // Kept as content anyway: a later complete version counts as an overwrite.
                self.unreadable.insert(key.clone(), e.to_string());
                LakeFile {
                    size: bytes.len() as u64,
                    hash: fnv1a(&bytes),
                    rows: Vec::new(),
                    meta: BTreeMap::new(),
                }
            }
        };
        if let Some(old) = self.files.get(&key)
            && (old.size, old.hash) != (file.size, file.hash)
        {
            self.overwritten
                .push((key.clone(), (old.size, old.hash), (file.size, file.hash)));
        }
        self.files.insert(key, file);
    }

    fn forget_missing(&mut self, present: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.files.remove(&key);
            self.stamps.remove(&key);
            self.deleted.push(key);
        }
    }

    /// Looks at every `.parquet` file under a local folder.
    fn poll_dir(&mut self, root: &Path) -> Result<()> {
        let mut present = BTreeSet::new();
        for (key, path, stamp) in parquet_files(root)? {
            present.insert(key.clone());
            if self.stamps.get(&key) == Some(&stamp) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            self.stamps.insert(key.clone(), stamp);
            self.record(key, Bytes::from(bytes));
        }
        self.forget_missing(&present);
        Ok(())
    }

    /// Looks at every `.parquet` object of a lake (object storage), reading the new ones.
    async fn poll_lake(&mut self, lake: &Lake) -> Result<()> {
        let root = lake.root().to_string();
        let objects: Vec<object_store::ObjectMeta> =
            lake.store().list(Some(lake.root())).try_collect().await?;
        let mut present = BTreeSet::new();
        for object in objects {
            let full = object.location.to_string();
            if !full.ends_with(".parquet") {
                continue;
            }
            let key = full
                .strip_prefix(&format!("{root}/"))
                .unwrap_or(&full)
                .to_string();
            present.insert(key.clone());
            let etag = object.e_tag.clone().unwrap_or_default();
            let stamp = (object.size, SystemTime::UNIX_EPOCH, fnv1a(etag.as_bytes()));
            if self.stamps.get(&key) == Some(&stamp) {
                continue;
            }
            let bytes = lake.store().get(&object.location).await?.bytes().await?;
            self.stamps.insert(key.clone(), stamp);
            self.record(key, bytes);
        }
        self.forget_missing(&present);
        Ok(())
    }

    /// Rows in the lake, duplicates included.
    fn row_count(&self) -> usize {
        self.files.values().map(|f| f.rows.len()).sum()
    }

    /// Checks the lake holds exactly the `produced` records (partition, offset), each once, in
    /// files whose keys, footers and offset ranges agree and were never overwritten.
    fn assert_exactly_once(&self, produced: &[(i32, i64)]) -> Result<()> {
        assert!(
            self.overwritten.is_empty(),
            "objects overwritten with different content: {:?}",
            self.overwritten
        );
        assert!(
            self.deleted.is_empty(),
            "objects deleted: {:?}",
            self.deleted
        );
        assert!(
            self.unreadable.is_empty(),
            "objects that are not whole Parquet files: {:?}",
            self.unreadable
        );
        let mut rows: Vec<(i32, i64)> = Vec::new();
        let mut ranges: BTreeMap<i32, Vec<(i64, i64, &str)>> = BTreeMap::new();
        for (key, file) in &self.files {
            let (partition, first, last) = (
                file.meta_i64("tributary.partition")?,
                file.meta_i64("tributary.offset.first")?,
                file.meta_i64("tributary.offset.last")?,
            );
            let schema_id = file.meta_i64("tributary.schema.id")?;
            assert_eq!(
                file.meta.get("tributary.topic").map(String::as_str),
                Some(TOPIC),
                "{key}"
            );
            assert!(!file.rows.is_empty(), "{key} holds no row");
            let offsets: Vec<i64> = file.rows.iter().map(|r| r.1).collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "{key}: offsets not increasing"
            );
            assert_eq!(
                (offsets.first().copied(), offsets.last().copied()),
                (Some(first), Some(last)),
                "{key}: footer offsets {first}..={last} disagree with the rows"
            );
            for (p, _, s) in &file.rows {
                assert_eq!(
                    i64::from(*p),
                    partition,
                    "{key}: a row of another partition"
                );
                assert_eq!(i64::from(*s), schema_id, "{key}: mixes schema ids");
            }
            assert!(
                key.ends_with(&format!("/{TOPIC}+{partition}+{first}.parquet")),
                "{key} is not named after its partition and first offset"
            );
            let p = i32::try_from(partition)?;
            ranges.entry(p).or_default().push((first, last, key));
            rows.extend(file.rows.iter().map(|r| (r.0, r.1)));
        }
        for (partition, list) in &mut ranges {
            list.sort();
            for w in list.windows(2) {
                assert!(
                    w[0].1 < w[1].0,
                    "partition {partition}: {} ({}..={}) overlaps {} ({}..={})",
                    w[0].2,
                    w[0].0,
                    w[0].1,
                    w[1].2,
                    w[1].0,
                    w[1].1
                );
            }
        }
        let distinct: BTreeSet<(i32, i64)> = rows.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            rows.len(),
            "{} duplicate rows",
            rows.len() - distinct.len()
        );
        let expected: BTreeSet<(i32, i64)> = produced.iter().copied().collect();
        let missing = expected.difference(&distinct).count();
        let extra = distinct.difference(&expected).count();
        assert_eq!(
            (missing, extra),
            (0, 0),
            "{missing} produced records missing from the lake, {extra} not produced"
        );
        Ok(())
    }
}

/// Files under `root` that are not `.parquet` (staging files of interrupted writes).
fn other_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_none_or(|e| e != "parquet") {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

/// Polls the lake folder until it holds at least `total` rows.
async fn wait_for_rows(
    watch: &mut LakeWatch,
    lake: &Path,
    archive: &mut Archive,
    total: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        watch.poll_dir(lake)?;
        if watch.row_count() >= total {
            return Ok(());
        }
        if Instant::now() > deadline || !archive.is_running() {
            bail!(
                "archived {} of {total} rows\n{}",
                watch.row_count(),
                archive.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs SQL in DuckDB (python/lake_sql.py); one result (rows of JSON values) per statement.
fn duckdb(statements: &[String]) -> Result<Vec<Vec<Vec<Value>>>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/lake_sql.py");
    let output = Command::new("python3")
        .arg(script)
        .args(statements)
        .output()
        .context("run python3 lake_sql.py (pip install duckdb)")?;
    if !output.status.success() {
        bail!(
            "lake_sql.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let results: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    results
        .into_iter()
        .map(|r| {
            let rows: Vec<Vec<Value>> = serde_json::from_value(r["rows"].clone())?;
            Ok(rows)
        })
        .collect()
}

/// A record read back from a topic: (key, payload, headers).
type ReadRecord = (Option<Vec<u8>>, Vec<u8>, BTreeMap<String, String>);

/// Reads `topic` (partition 0) from the start until `count` records arrived or `wait` passed.
fn read_topic(
    broker: &Broker,
    topic: &str,
    count: usize,
    wait: Duration,
) -> Result<Vec<ReadRecord>> {
    let consumer: BaseConsumer = broker
        .kafka()
        .client_config()
        .set("group.id", unique("g-read"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            message.key().map(<[u8]>::to_vec),
            message.payload().unwrap_or_default().to_vec(),
            headers,
        ));
    }
    Ok(out)
}

/// 100,000 records over 3 partitions, a compatible schema change half-way, several hours of
/// event time: DuckDB reads the topic as one table with the expected types, every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_a_hundred_thousand_records_across_a_schema_change() -> Result<()> {
    let started = Instant::now();
    let bench = Bench::start().await?;
    let lake = tempfile::tempdir()?;
    let total: i64 = 100_000;
    let half = total / 2;
    // Five hours of event time; the schema changes at 2.5 h, inside an hour.
    let step_ms = 5 * 3_600_000 / total;

    let mut v2: Value = serde_json::from_str(&bench.v1_json)?;
    v2["fields"]
        .as_array_mut()
        .context("fields")?
        .push(json!({"name": "campaign", "type": ["null", "string"], "default": null}));
    let v2_json = v2.to_string();
    let v2_schema = Schema::parse_str(&v2_json)?;

    let producer = bench.producer()?;
    let first = framed(0..half, bench.v1_id, &bench.v1, |i| {
        event(i, step_ms, false)
    })?;
    let mut produced = produce(&producer, &first).await?;
    let v2_id = bench
        .client
        .register(&format!("{TOPIC}-value"), &v2_json)
        .await?;
    assert_ne!(v2_id, bench.v1_id, "v2 is a new schema");
    let second = framed(half..total, v2_id, &v2_schema, |i| event(i, step_ms, true))?;
    produced.extend(produce(&producer, &second).await?);
    let produced_at = started.elapsed();

    let mut archive = bench.archive(
        lake.path(),
        "max_file_records = 20000\nmax_open_seconds = 2",
    )?;
    let mut watch = LakeWatch::default();
    wait_for_rows(
        &mut watch,
        lake.path(),
        &mut archive,
        total as usize,
        Duration::from_secs(150),
    )
    .await?;
    let archived_at = started.elapsed();
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.poll_dir(lake.path())?;
    exactly_once(&watch, &produced, &archive)?;
    for (partition, committed, end) in committed_and_end(&bench.broker, ARCHIVE_GROUP, TOPIC)? {
        assert_eq!(
            committed, end,
            "partition {partition}: committed after a clean stop"
        );
    }

    let src = format!(
        "read_parquet('{}/{TOPIC}/**/*.parquet', hive_partitioning = true, union_by_name = true, filename = true)",
        lake.path().display()
    );
    let mut results = duckdb(&[
        "SET TimeZone = 'UTC'".to_string(),
        format!(
            "SELECT count(*), count(DISTINCT (_kafka_partition, _kafka_offset)), count(DISTINCT _kafka_partition), count(DISTINCT filename), count(DISTINCT (dt, hr)) FROM {src}"
        ),
        format!("DESCRIBE SELECT * FROM {src}"),
        format!(
            "SELECT _schema_id, count(*), count(campaign), count(DISTINCT campaign) FROM {src} GROUP BY ALL ORDER BY 1"
        ),
        format!(
            "SELECT filename FROM {src} GROUP BY filename HAVING count(DISTINCT _schema_id) > 1"
        ),
        // Each row is event i (from its URL): its values, schema and hour partition must match.
        format!(
            "WITH t AS (SELECT *, CAST(split_part(page.url, '/', 5) AS BIGINT) AS i FROM {src}) \
             SELECT count(*) FILTER (WHERE epoch_ms(occurred_at) != {BASE_MS} + i * {step_ms}), \
                    count(*) FILTER (WHERE (i < {half}) != (campaign IS NULL)), \
                    count(*) FILTER (WHERE campaign != 'camp-' || CAST(i % 7 AS VARCHAR)), \
                    count(*) FILTER (WHERE (i < {half}) != (_schema_id = {})), \
                    count(*) FILTER (WHERE epoch_ms(occurred_at) // 3600000 != epoch_ms(CAST(CAST(dt AS VARCHAR) AS DATE)::TIMESTAMP) // 3600000 + CAST(hr AS INTEGER)), \
                    count(*) FILTER (WHERE (i % 10 = 0) != (amount IS NOT NULL)), \
                    CAST(sum(amount) AS VARCHAR), \
                    sum(cardinality(properties)), \
                    count(*) FILTER (WHERE page.referrer IS NOT NULL), \
                    count(DISTINCT i) \
             FROM t",
            bench.v1_id
        ),
    ])?;
    results.remove(0);
    let counts = &results[0][0];
    assert_eq!(
        counts[..3],
        [json!(total), json!(total), json!(3)],
        "rows, distinct (partition, offset), partitions"
    );
    let types: BTreeMap<String, String> = results[1]
        .iter()
        .map(|row| {
            (
                row[0].as_str().unwrap_or_default().to_string(),
                row[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expect_type = |column: &str, expected: &str| {
        assert_eq!(
            types.get(column).map(String::as_str),
            Some(expected),
            "DuckDB type of {column} (all: {types:?})"
        );
    };
    expect_type("occurred_at", "TIMESTAMP WITH TIME ZONE");
    expect_type("amount", "DECIMAL(12,2)");
    expect_type("page", "STRUCT(url VARCHAR, referrer VARCHAR)");
    expect_type("properties", "MAP(VARCHAR, VARCHAR)");
    expect_type("campaign", "VARCHAR");
    expect_type("user_id", "VARCHAR");
    expect_type("_kafka_partition", "INTEGER");
    expect_type("_kafka_offset", "BIGINT");
    expect_type("_schema_id", "INTEGER");
    expect_type("_kafka_timestamp", "TIMESTAMP WITH TIME ZONE");
    assert!(
        types.contains_key("dt") && types.contains_key("hr"),
        "hive partition columns: {types:?}"
    );
    let per_schema = &results[2];
    assert_eq!(
        per_schema,
        &vec![
            vec![json!(bench.v1_id), json!(half), json!(0), json!(0)],
            vec![
                json!(v2_id),
                json!(total - half),
                json!(total - half),
                json!(7)
            ],
        ],
        "(schema id, rows, campaigns set, distinct campaigns): v1 rows read campaign as NULL"
    );
    assert!(
        results[3].is_empty(),
        "files mixing schema ids: {:?}",
        results[3]
    );
    let expected_amount: i64 = (0..total).filter(|i| i % 10 == 0).map(amount_cents).sum();
    let expected_properties = (0..total).filter(|i| i % 4 == 0).count();
    assert_eq!(
        results[4][0],
        vec![
            json!(0),
            json!(0),
            json!(0),
            json!(0),
            json!(0),
            json!(0),
            json!(cents_text(expected_amount)),
            json!(expected_properties),
            json!(0),
            json!(total),
        ],
        "per-row values: (time, campaign presence, campaign value, schema id, hour partition, amount presence) mismatches, sum(amount), map entries, referrers, distinct events"
    );
    let files = counts[3].as_i64().unwrap_or_default();
    let hours = counts[4].as_i64().unwrap_or_default();
    assert_eq!(hours, 5, "(dt, hr) partitions");
    eprintln!(
        "100k: produced in {produced_at:?}, archived after {archived_at:?}, checked after {:?}; {files} files, {hours} hour partitions",
        started.elapsed()
    );
    Ok(())
}

/// [`LakeWatch::assert_exactly_once`]; on a failure the archive's log (every run of it) is
/// printed too, so it shows the offsets each run started from and the files it wrote.
fn exactly_once(watch: &LakeWatch, produced: &[(i32, i64)], archive: &Archive) -> Result<()> {
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        watch.assert_exactly_once(produced)
    }));
    match checked {
        Ok(result) => result,
        Err(panic) => {
            eprintln!("archive log:\n{}", archive.log());
            std::panic::resume_unwind(panic)
        }
    }
}

/// SIGKILL three times while files are being written: every record ends up in the lake exactly
/// once, and no object is ever overwritten with different content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_while_writing_neither_lose_nor_duplicate_nor_overwrite() -> Result<()> {
    let started = Instant::now();
    let bench = Bench::start().await?;
    let lake = tempfile::tempdir()?;
    let total: i64 = 60_000;
    // Two hours of event time.
    let step_ms = 2 * 3_600_000 / total;
    let records = framed(0..total, bench.v1_id, &bench.v1, |i| {
        event(i, step_ms, false)
    })?;
    let produced = produce(&bench.producer()?, &records).await?;

    // A killed member leaves the group only when its session times out (45 s by default):
    // 6 s keeps the three restarts short.
    let mut archive = Archive::start(
        &bench.broker,
        &bench.registry,
        "max_file_records = 2000\nmax_open_seconds = 2\nbatch_records = 1000",
        &format!("url = \"file://{}\"", lake.path().display()),
        "[kafka.extra]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
    )?;
    let mut watch = LakeWatch::default();
    // Kill right after new files appear (between a write and its commit is the risky moment),
    // at staggered points of the run; each restart must make progress before the next kill.
    let mut kills = Vec::new();
    for (n, threshold) in [5_000_usize, 18_000, 32_000].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            watch.poll_dir(lake.path())?;
            if watch.row_count() >= threshold {
                break;
            }
            if Instant::now() > deadline || !archive.is_running() {
                bail!(
                    "before kill {}: archived {} rows\n{}",
                    n + 1,
                    watch.row_count(),
                    archive.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Stagger the moment within the write cycle: right away, a little later, later still.
        tokio::time::sleep(Duration::from_millis(100 * n as u64)).await;
        archive.kill()?;
        watch.poll_dir(lake.path())?;
        kills.push((started.elapsed(), watch.row_count()));
        archive.restart()?;
    }
    wait_for_rows(
        &mut watch,
        lake.path(),
        &mut archive,
        total as usize,
        Duration::from_secs(120),
    )
    .await?;
    // Let it settle: a duplicate written late would still show up.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch.poll_dir(lake.path())?;
    }
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.poll_dir(lake.path())?;
    exactly_once(&watch, &produced, &archive)?;
    for (partition, committed, end) in committed_and_end(&bench.broker, ARCHIVE_GROUP, TOPIC)? {
        assert_eq!(
            committed, end,
            "partition {partition}: committed after a clean stop"
        );
    }
    let replays = archive.log().matches("file already in the lake").count();
    eprintln!(
        "crashes: kills at (time, rows in the lake) {kills:?}; {} files; {replays} replays found a file already in the lake; {} other files left in the lake folder; {:?} in all",
        watch.files.len(),
        other_files(lake.path()).len(),
        started.elapsed()
    );
    assert!(
        kills.iter().all(|(_, rows)| *rows < total as usize),
        "every kill came before the lake was complete: {kills:?}"
    );
    assert!(
        replays > 0,
        "some kill fell between a file's write and its commit, so a replay met the file"
    );
    Ok(())
}

/// Records the outside producer of [`killed_five_times_under_an_outside_producer`] writes.
const OUTSIDE_RECORDS: i64 = 200_000;

/// The fault suite's first scenario (docs/reliability.md): an outside producer (Python
/// confluent-kafka with its `AvroSerializer`, against our registry) writes 200,000 events,
/// 5,000 a second (2,000 on Tansu, whose restarts wait for the session), while the archive is SIGKILLed five times at random moments (within 2 s of
/// each run's first new file; the seed is printed, `TRIBUTARY_FAULT_SEED` replays it). Every
/// record must be in the lake exactly once, in files never replaced and never overlapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_under_an_outside_producer() -> Result<()> {
    use rand::Rng;
    let started = Instant::now();
    let bench = Bench::start().await?;
    let lake = tempfile::tempdir()?;
    let (seed, mut rng) = tributary_integration_tests::faults::fault_rng()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/interop.py");
    // On Tansu restarts wait for the dead member's session (`replacement_delay`; seen here
    // without: no progress after the fourth restart), so records come more slowly for the five
    // kills to fall while they still arrive.
    let down = bench.broker.replacement_delay();
    let rate = if bench.broker.kind() == BrokerKind::Tansu {
        "2000"
    } else {
        "5000"
    };
    let mut producer = Command::new("python3")
        .arg(script)
        // 5,000 records a second (Kafka): the five kills (each followed by a 6 s session
        // timeout) fall while records still arrive.
        .args([
            "produce",
            "--records",
            "web_events",
            "--rate",
            rate,
            "--bootstrap",
        ])
        .arg(bench.broker.bootstrap())
        .arg("--registry")
        .arg(bench.registry.url())
        .arg("--registry-auth")
        .arg(bench.registry.user_info())
        .args(["--topic", TOPIC, "--count", &OUTSIDE_RECORDS.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("start python3 interop.py produce")?;
    // Sessions of 6 s keep the five restarts short (a killed member leaves the group only when
    // its session times out).
    let mut archive = Archive::start(
        &bench.broker,
        &bench.registry,
        "max_file_records = 5000\nmax_open_seconds = 2\nbatch_records = 1000",
        &format!("url = \"file://{}\"", lake.path().display()),
        "[kafka.extra]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
    )?;
    let mut watch = LakeWatch::default();
    let mut kills = Vec::new();
    let mut rows_at_kill = 0;
    for n in 1..=5 {
        // Once this run of the archive has written something (or everything is in), a random
        // moment within the next two seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            watch.poll_dir(lake.path())?;
            let rows = watch.row_count();
            if rows > rows_at_kill || rows >= OUTSIDE_RECORDS as usize {
                break;
            }
            if Instant::now() > deadline || !archive.is_running() {
                bail!(
                    "before kill {n}: no progress from {rows} rows (seed {seed})\n{}",
                    archive.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_000))).await;
        archive.kill()?;
        watch.poll_dir(lake.path())?;
        rows_at_kill = watch.row_count();
        kills.push(format!(
            "{:.1} s, {rows_at_kill} rows",
            started.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(down).await;
        archive.restart()?;
    }
    let status = tokio::task::block_in_place(|| producer.wait())?;
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = producer.stderr.take() {
            std::io::Read::read_to_string(&mut err, &mut stderr)?;
        }
        bail!("the outside producer failed ({status}): {stderr}");
    }
    let produced_at = started.elapsed();
    // The topic holds exactly what the producer wrote (it is idempotent): offsets 0..end.
    let ends = committed_and_end(&bench.broker, ARCHIVE_GROUP, TOPIC)?;
    let produced: Vec<(i32, i64)> = ends
        .iter()
        .flat_map(|(p, _, end)| (0..*end).map(move |o| (*p, o)))
        .collect();
    assert_eq!(
        produced.len() as i64,
        OUTSIDE_RECORDS,
        "records in the topic (seed {seed})"
    );
    wait_for_rows(
        &mut watch,
        lake.path(),
        &mut archive,
        produced.len(),
        Duration::from_secs(180),
    )
    .await?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch.poll_dir(lake.path())?;
    }
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.poll_dir(lake.path())?;
    let rows = watch.row_count();
    exactly_once(&watch, &produced, &archive)?;
    let replays = archive.log().matches("file already in the lake").count();
    println!(
        "archive killed 5 times under an outside producer (seed {seed}): {} records, {rows} rows in the lake, lost 0, duplicated 0, objects replaced 0; \
         kills at {}; {} files; {replays} replays found a file already in the lake; \
         produced in {produced_at:.1?}, all archived after {:.1?}",
        produced.len(),
        kills.join("; "),
        watch.files.len(),
        started.elapsed()
    );
    Ok(())
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on a new folder. Mounting needs
    /// root: CI runs as root; elsewhere the test says so and fails.
    fn mount(size: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .context("run mount")?;
        if !status.success() {
            bail!(
                "mount -t tmpfs failed ({status}): this test fills a small file system and needs root"
            );
        }
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Grows the file system to `size`, keeping its files.
    fn resize(&self, size: &str) -> Result<()> {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "remount {}: {status}",
            self.path().display()
        );
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// The archive's `/readyz`: status and body (status 0 while the admin server does not answer
/// yet).
async fn readyz(archive: &Archive) -> Result<(u16, String)> {
    match reqwest::get(format!("{}/readyz", archive.admin_url()?)).await {
        Ok(answer) => Ok((answer.status().as_u16(), answer.text().await?)),
        Err(e) if e.is_connect() => Ok((0, e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The fault suite's disk-full scenario (docs/reliability.md): the lake is a 512 KiB tmpfs that
/// fills. Readers never see a partial Parquet file, `/readyz` answers 503 with the reason while
/// the disk is full, and once the file system grows every record reaches the lake exactly once
/// and the archive is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_loses_nothing() -> Result<()> {
    let bench = Bench::start().await?;
    let lake = Tmpfs::mount("512k")?;
    let total: i64 = 40_000;
    let step_ms = 2 * 3_600_000 / total;
    let records = framed(0..total, bench.v1_id, &bench.v1, |i| {
        event(i, step_ms, false)
    })?;
    let produced = produce(&bench.producer()?, &records).await?;
    // Uncompressed files fill 512 KiB after a few thousand records.
    let mut archive = bench.archive(
        lake.path(),
        "max_file_records = 1000\nmax_open_seconds = 1\nbatch_records = 1000\ncompression = \"none\"",
    )?;
    let mut watch = LakeWatch::default();
    let deadline = Instant::now() + Duration::from_secs(90);
    let reason = loop {
        watch.poll_dir(lake.path())?;
        let (status, body) = readyz(&archive).await?;
        if status == 503 && body.contains("lake:") {
            break body;
        }
        if Instant::now() > deadline || !archive.is_running() {
            bail!(
                "the archive never reported the full lake: /readyz {status} {body:?}, {} rows\n{}",
                watch.row_count(),
                archive.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let full_at = watch.row_count();
    // While full, for a few seconds: nothing half-written is visible, the archive keeps
    // running and says why it is not ready.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch.poll_dir(lake.path())?;
    }
    assert!(
        watch.unreadable.is_empty(),
        "partial Parquet files visible: {:?}",
        watch.unreadable
    );
    assert!(
        archive.is_running(),
        "the archive died on a full disk\n{}",
        archive.log()
    );
    let (status, still) = readyz(&archive).await?;
    assert_eq!(
        status, 503,
        "still not ready while the disk is full: {still}"
    );
    assert!(
        full_at < total as usize,
        "the lake filled before every record: {full_at} rows"
    );

    lake.resize("64m")?;
    let freed = Instant::now();
    wait_for_rows(
        &mut watch,
        lake.path(),
        &mut archive,
        total as usize,
        Duration::from_secs(120),
    )
    .await?;
    let recovered = freed.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(&archive).await?;
        if status == 200 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not ready 30 s after the last file: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.poll_dir(lake.path())?;
    exactly_once(&watch, &produced, &archive)?;
    let write_errors = archive
        .log()
        .matches("writing a file failed; retrying")
        .count();
    println!(
        "disk full: {total} records; the 512 KiB lake filled at {full_at} rows; /readyz said {reason:?}; \
         {write_errors} failed writes retried, no partial file visible; every record in the lake {recovered:.1?} \
         after the file system grew; lost 0, duplicated 0, objects replaced 0; {} other files left in the lake folder",
        other_files(lake.path()).len()
    );
    Ok(())
}

/// For each partition, the offsets from 0 that the lake holds without a gap: the position a
/// committed offset may reach.
fn durable_through(watch: &LakeWatch) -> BTreeMap<i32, i64> {
    let mut offsets: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for file in watch.files.values() {
        for (partition, offset, _) in &file.rows {
            offsets.entry(*partition).or_default().insert(*offset);
        }
    }
    offsets
        .into_iter()
        .map(|(partition, set)| {
            let mut next = 0;
            while set.contains(&next) {
                next += 1;
            }
            (partition, next)
        })
        .collect()
}

/// What [`an_object_store_outage_loses_nothing`] saw at its checks.
#[derive(Debug, Default)]
struct OutageChecks {
    checks: usize,
    /// Committed positions found ahead of the lake.
    ahead: Vec<String>,
    /// Checks at which `/readyz` answered 503.
    unready: usize,
}

impl OutageChecks {
    /// Compares the committed positions with what the lake holds, and asks `/readyz`.
    async fn check(
        &mut self,
        watch: &mut LakeWatch,
        lake: &Lake,
        broker: &Broker,
        archive: &Archive,
    ) -> Result<()> {
        // Positions first, then the lake: a file is durable before its offsets are committed,
        // so whatever was committed before the listing must be in it (the other order would see
        // a file written and committed between the two reads as "ahead").
        let committed =
            tokio::task::block_in_place(|| committed_and_end(broker, ARCHIVE_GROUP, TOPIC))?;
        watch.poll_lake(lake).await?;
        let durable = durable_through(watch);
        for (partition, position, _) in committed {
            let through = durable.get(&partition).copied().unwrap_or(0);
            if position > through {
                self.ahead.push(format!(
                    "partition {partition}: committed {position}, the lake holds 0..{through}"
                ));
            }
        }
        self.checks += 1;
        if readyz(archive).await?.0 == 503 {
            self.unready += 1;
        }
        Ok(())
    }
}

/// The fault suite's object-store outage (docs/reliability.md): records arrive for about 70 s;
/// from the 5th second a fault-injecting proxy between the archive and the S3 server answers
/// 500, resets connections and stalls them 10 s, in turns of 5 s, for 60 s. Checked every half
/// second: no committed offset is ahead of the files in the lake. At the end every record is in
/// the lake exactly once, and the archive is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_loses_nothing() -> Result<()> {
    use tributary_integration_tests::faults::{Fault, FaultProxy};
    let started = Instant::now();
    let bench = Bench::start().await?;
    let s3 = S3::start().await?;
    let proxy = FaultProxy::start(s3.port()).await?;
    let config = s3.lake("archive");
    let lake_keys = format!(
        "url = \"{}\"\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_access_key_id = \"test\"\ns3_secret_access_key = \"test\"\nallow_http = true",
        config.url,
        proxy.endpoint()
    );
    let total: i64 = 42_000;
    let step_ms = 2 * 3_600_000 / total;
    let records = framed(0..total, bench.v1_id, &bench.v1, |i| {
        event(i, step_ms, false)
    })?;
    // 300 records every half second: about 70 s of arrivals.
    let producer = bench.producer()?;
    let feed = tokio::spawn(async move {
        let mut placed = Vec::with_capacity(records.len());
        for chunk in records.chunks(300) {
            placed.extend(
                producer
                    .send_all(chunk)
                    .await?
                    .into_iter()
                    .map(|d| (d.partition, d.offset)),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::Ok(placed)
    });
    let mut archive = Archive::start(
        &bench.broker,
        &bench.registry,
        "max_file_records = 1000\nmax_open_seconds = 1",
        &lake_keys,
        "",
    )?;
    // The test reads the lake straight from the S3 server, not through the proxy.
    let lake = Lake::open(&config)?;
    let mut watch = LakeWatch::default();
    let mut seen = OutageChecks::default();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rows_before = {
        watch.poll_lake(&lake).await?;
        watch.row_count()
    };
    let outage = Instant::now();
    let faults = [
        Fault::ServerError,
        Fault::Reset,
        Fault::Stall(Duration::from_secs(10)),
    ];
    for turn in 0..12 {
        proxy.set(faults[turn % faults.len()]);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            seen.check(&mut watch, &lake, &bench.broker, &archive)
                .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    proxy.set(Fault::Pass);
    let rows_at_end_of_outage = watch.row_count();
    let ended = Instant::now();
    let outage_took = ended - outage;
    let produced = feed.await??;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        seen.check(&mut watch, &lake, &bench.broker, &archive)
            .await?;
        if watch.row_count() >= produced.len() && readyz(&archive).await?.0 == 200 {
            break;
        }
        if Instant::now() > deadline || !archive.is_running() {
            bail!(
                "{} of {} rows in the lake 180 s after the outage; /readyz {:?}\n{}",
                watch.row_count(),
                produced.len(),
                readyz(&archive).await?,
                archive.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recovered = ended.elapsed();
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.poll_lake(&lake).await?;
    exactly_once(&watch, &produced, &archive)?;
    assert!(
        seen.ahead.is_empty(),
        "committed offsets ahead of the lake ({} of {} checks): {:?}",
        seen.ahead.len(),
        seen.checks,
        seen.ahead
    );
    let write_errors = archive
        .log()
        .matches("writing a file failed; retrying")
        .count();
    println!(
        "object-store outage: {} records; 60 s of faults ({}); {rows_before} rows in the lake before, \
         {rows_at_end_of_outage} at its end; {write_errors} failed writes retried by the archive; /readyz 503 in \
         {} of {} checks; committed offsets ahead of the lake in 0 checks; every record in the lake \
         and ready {recovered:.1?} after the outage ({outage_took:.1?} of faults, {:.1?} in all); lost 0, duplicated 0, objects replaced 0",
        produced.len(),
        proxy.counts.summary(),
        seen.unready,
        seen.checks,
        started.elapsed()
    );
    Ok(())
}

/// A bad magic byte, an unknown schema id and a truncated body between good records: the good
/// ones are archived, the bad ones land in `dlq.archive` with their source and error, and the
/// archive keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic() -> Result<()> {
    let bench = Bench::start().await?;
    let lake = tempfile::tempdir()?;
    let producer = bench.producer()?;
    let body = json_to_avro_datum(&event(0, 1000, false), &bench.v1)?;
    let mut bad_magic = wire::frame(bench.v1_id, &body);
    bad_magic[0] = 1;
    let unknown_id = wire::frame(9999, &body);
    let full = wire::frame(bench.v1_id, &body);
    let truncated = full[..full.len() - 3].to_vec();
    let poison = [
        (bad_magic, "wrong magic byte 0x01"),
        (unknown_id, "unknown schema id 9999"),
        (truncated, "truncated avro body"),
    ];

    let mut produced = Vec::new();
    let mut poison_at = Vec::new();
    let mut next = 0;
    for (payload, _) in &poison {
        let good = framed(next..next + 500, bench.v1_id, &bench.v1, |i| {
            event(i, 1000, false)
        })?;
        produced.extend(produce(&producer, &good).await?);
        next += 500;
        let record = OutboundRecord::new(TOPIC, Some(b"poison".to_vec()), payload.clone());
        let at = producer.send(&record).await?;
        poison_at.push((at.partition, at.offset));
    }
    let good = framed(next..next + 500, bench.v1_id, &bench.v1, |i| {
        event(i, 1000, false)
    })?;
    produced.extend(produce(&producer, &good).await?);
    next += 500;

    let mut archive = bench.archive(
        lake.path(),
        "max_file_records = 20000\nmax_open_seconds = 1",
    )?;
    let mut watch = LakeWatch::default();
    wait_for_rows(
        &mut watch,
        lake.path(),
        &mut archive,
        produced.len(),
        Duration::from_secs(60),
    )
    .await?;
    let letters = tokio::task::block_in_place(|| {
        read_topic(&bench.broker, "dlq.archive", 3, Duration::from_secs(30))
    })?;
    assert_eq!(letters.len(), 3, "dead letters: {letters:?}");
    for (((key, payload, headers), (sent, message)), (partition, offset)) in
        letters.iter().zip(&poison).zip(&poison_at)
    {
        assert_eq!(key.as_deref(), Some(&b"poison"[..]), "original key");
        assert_eq!(payload, sent, "original bytes");
        let h = |name: &str| headers.get(name).map(String::as_str).unwrap_or_default();
        assert_eq!(h("tributary.source.topic"), TOPIC);
        assert_eq!(h("tributary.source.partition"), partition.to_string());
        assert_eq!(h("tributary.source.offset"), offset.to_string());
        assert_eq!(h("tributary.stage"), "archive");
        assert_eq!(h("tributary.error.class"), "decode");
        assert!(
            h("tributary.error.message").contains(message),
            "error message {:?} should say {message:?}",
            h("tributary.error.message")
        );
    }
    assert!(archive.is_running(), "still running\n{}", archive.log());

    // And it keeps archiving.
    let more = framed(next..next + 500, bench.v1_id, &bench.v1, |i| {
        event(i, 1000, false)
    })?;
    produced.extend(produce(&producer, &more).await?);
    wait_for_rows(
        &mut watch,
        lake.path(),
        &mut archive,
        produced.len(),
        Duration::from_secs(60),
    )
    .await?;
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.poll_dir(lake.path())?;
    exactly_once(&watch, &produced, &archive)?;
    Ok(())
}

/// A dead letter that is the last record of its partition in a batch, after good records of
/// the same partition: once everything is handled and the archive stopped cleanly, its offset
/// is committed, so a restart does not dead-letter it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_after_good_records_is_committed() -> Result<()> {
    let bench = Bench::start().await?;
    let lake = tempfile::tempdir()?;
    let producer = bench.producer()?;
    let mut records = framed(0..100, bench.v1_id, &bench.v1, |i| event(i, 1000, false))?;
    records.push(OutboundRecord::new(
        TOPIC,
        Some(b"poison".to_vec()),
        wire::frame(9999, b"\x02"),
    ));
    for r in &mut records {
        r.partition = Some(0);
    }
    let produced = produce(&producer, &records).await?;
    let good = &produced[..100];

    let mut archive = bench.archive(lake.path(), "max_open_seconds = 1")?;
    let mut watch = LakeWatch::default();
    wait_for_rows(
        &mut watch,
        lake.path(),
        &mut archive,
        100,
        Duration::from_secs(60),
    )
    .await?;
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.assert_exactly_once(good)?;
    let letters = tokio::task::block_in_place(|| {
        read_topic(&bench.broker, "dlq.archive", 2, Duration::from_secs(5))
    })?;
    assert_eq!(letters.len(), 1, "one dead letter");
    let positions = committed_and_end(&bench.broker, ARCHIVE_GROUP, TOPIC)?;
    let p0 = positions.iter().find(|p| p.0 == 0).map(|p| (p.1, p.2));

    // A restart must read nothing again.
    archive.kill()?;
    tokio::time::sleep(bench.broker.replacement_delay()).await;
    archive.restart()?;
    let again = tokio::task::block_in_place(|| {
        read_topic(&bench.broker, "dlq.archive", 2, Duration::from_secs(8))
    })?;
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    assert_eq!(
        (p0, again.len()),
        (Some((101, 101)), 1),
        "((committed, end) of partition 0 after a clean stop, dead letters after a restart)"
    );
    Ok(())
}

/// The measured attack of #18 (a): anyone who reaches the registry registers a schema with an
/// array of nulls, then produces one 16-byte record claiming 2,000,000,000 of them. The archive
/// panicked inside arrow-avro on it, and again on every restart: one record stopped the
/// archive of every topic. It is now dead-lettered with the reason, in bounded time and
/// memory, and the records around it are archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_claiming_billions_of_nulls_is_dead_lettered() -> Result<()> {
    let bench = Bench::start().await?;
    let lake = tempfile::tempdir()?;
    let producer = bench.producer()?;
    let attacker = bench
        .client
        .register(
            "anything-value",
            r#"{"type":"record","name":"X","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
        )
        .await?;
    // 2,000,000,000 zig-zagged, then the end block.
    let attack = wire::frame(attacker, &[0x80, 0xd0, 0xac, 0xf3, 0x0e, 0x00]);
    assert_eq!(attack.len(), 11);
    let mut records = framed(0..50, bench.v1_id, &bench.v1, |i| event(i, 1000, false))?;
    records.push(OutboundRecord::new(TOPIC, Some(b"attack".to_vec()), attack));
    records.extend(framed(50..100, bench.v1_id, &bench.v1, |i| {
        event(i, 1000, false)
    })?);
    for r in &mut records {
        r.partition = Some(0);
    }
    let produced = produce(&producer, &records).await?;
    let good: Vec<(i32, i64)> = produced
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 50)
        .map(|(_, p)| *p)
        .collect();

    let mut archive = bench.archive(lake.path(), "max_open_seconds = 1")?;
    let mut watch = LakeWatch::default();
    wait_for_rows(
        &mut watch,
        lake.path(),
        &mut archive,
        100 - 1,
        Duration::from_secs(60),
    )
    .await?;
    let letters = tokio::task::block_in_place(|| {
        read_topic(&bench.broker, "dlq.archive", 1, Duration::from_secs(10))
    })?;
    assert!(archive.is_running(), "{}", archive.log());
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.assert_exactly_once(&good)?;
    assert_eq!(letters.len(), 1, "one dead letter");
    let (key, _, headers) = &letters[0];
    assert_eq!(key.as_deref(), Some(&b"attack"[..]));
    let reason = headers.values().cloned().collect::<Vec<_>>().join(" | ");
    assert!(
        reason.contains("refused before decoding") && reason.contains("take no bytes"),
        "{reason}"
    );
    Ok(())
}

/// The archive writing to `s3://` (moto): every record once, listed through object_store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_to_s3() -> Result<()> {
    let bench = Bench::start().await?;
    let s3 = S3::start().await?;
    let total: i64 = 5_000;
    let records = framed(0..total, bench.v1_id, &bench.v1, |i| event(i, 1000, false))?;
    let produced = produce(&bench.producer()?, &records).await?;
    let config = s3.lake("archive");
    let lake_keys = format!(
        "url = \"{}\"\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_access_key_id = \"test\"\ns3_secret_access_key = \"test\"\nallow_http = true",
        config.url,
        s3.endpoint()
    );
    let mut archive = Archive::start(
        &bench.broker,
        &bench.registry,
        "max_file_records = 1000\nmax_open_seconds = 2",
        &lake_keys,
        "",
    )?;
    let lake = Lake::open(&config)?;
    let mut watch = LakeWatch::default();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        watch.poll_lake(&lake).await?;
        if watch.row_count() >= total as usize {
            break;
        }
        if Instant::now() > deadline || !archive.is_running() {
            bail!(
                "archived {} of {total} rows to S3\n{}",
                watch.row_count(),
                archive.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(archive.stop()?, "clean exit on SIGTERM\n{}", archive.log());
    watch.poll_lake(&lake).await?;
    watch.assert_exactly_once(&produced)?;
    assert!(
        watch
            .files
            .keys()
            .all(|k| k.starts_with(&format!("{TOPIC}/dt=2025-11-2"))),
        "keys under <root>/<topic>/dt=../hr=..: {:?}",
        watch.files.keys().collect::<Vec<_>>()
    );
    Ok(())
}
