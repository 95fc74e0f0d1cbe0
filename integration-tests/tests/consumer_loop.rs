//! The at-least-once consumer loop through a real broker: 10,000 Confluent-framed Avro records,
//! a consumer dropped mid-way without a clean shutdown, a restart, nothing lost, and committed
//! offsets at the high-water mark.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apache_avro::types::Value;
use apache_avro::{Schema, from_avro_datum, to_avro_datum};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tributary_core::bus::{
    BatchHandler, BusMetrics, ConsumerLoopConfig, HandlerError, InboundRecord, OutboundRecord,
    Output, Producer, TopicSpec, create_topics, run_consumer,
};
use tributary_core::schema::wire;
use tributary_integration_tests::{Broker, init_logs, unique};

const RECORDS: i64 = 10_000;
const PARTITIONS: i32 = 3;
const SCHEMA_ID: u32 = 7;
const SCHEMA: &str = r#"{"type":"record","name":"Reading","fields":[
    {"name":"seq","type":"long"},{"name":"sensor","type":"string"},{"name":"value","type":"double"}]}"#;

/// Every record is decoded; its sequence number is echoed to an output topic, and every 1000th
/// record is dead-lettered instead.
struct Echo {
    schema: Schema,
    output_topic: String,
    seen: Arc<Mutex<Vec<i64>>>,
}

impl BatchHandler for Echo {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        let mut seqs = Vec::with_capacity(batch.len());
        for record in batch {
            let payload = record
                .payload
                .as_deref()
                .ok_or_else(|| HandlerError::fatal("tombstone"))?;
            let (id, mut body) = wire::parse(payload).map_err(HandlerError::fatal)?;
            if id != SCHEMA_ID {
                return Err(HandlerError::fatal(format!("unexpected schema id {id}")));
            }
            let Value::Record(fields) =
                from_avro_datum(&self.schema, &mut body, None).map_err(HandlerError::fatal)?
            else {
                return Err(HandlerError::fatal("not a record"));
            };
            let Some((_, Value::Long(seq))) = fields.first() else {
                return Err(HandlerError::fatal("no seq"));
            };
            if seq % 1000 == 0 {
                out.dead_letter(record, "test", &format!("seq {seq} is a multiple of 1000"))
                    .await?;
            } else {
                out.send(OutboundRecord::new(
                    &self.output_topic,
                    record.key.clone(),
                    seq.to_string().into_bytes(),
                ))
                .await?;
            }
            seqs.push(*seq);
        }
        self.seen
            .lock()
            .map_err(|_| HandlerError::fatal("poisoned"))?
            .extend(seqs);
        Ok(())
    }
}

fn distinct(seen: &Mutex<Vec<i64>>) -> usize {
    seen.lock()
        .map(|s| s.iter().collect::<BTreeSet<_>>().len())
        .unwrap_or(0)
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_across_an_unclean_stop() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let input = unique("t-input");
    let output = unique("t-output");
    let group = unique("g-loop");
    let stage = unique("stage");
    let dlq = format!("dlq.{stage}");
    let specs: Vec<TopicSpec> = [&input, &output, &dlq]
        .iter()
        .map(|name| TopicSpec {
            name: (*name).clone(),
            partitions: PARTITIONS,
            config: vec![],
        })
        .collect();
    create_topics(&kafka, &specs).await?;

    // Produce 10,000 framed Avro records with the shared producer.
    let schema = Schema::parse_str(SCHEMA)?;
    let metrics = BusMetrics::default();
    let producer = Producer::new(&kafka, metrics.clone())?;
    let records: Vec<OutboundRecord> = (0..RECORDS)
        .map(|seq| {
            let value = Value::Record(vec![
                ("seq".into(), Value::Long(seq)),
                (
                    "sensor".into(),
                    Value::String(format!("sensor-{}", seq % 17)),
                ),
                ("value".into(), Value::Double(seq as f64 * 0.5)),
            ]);
            let body = to_avro_datum(&schema, value)?;
            Ok(OutboundRecord::new(
                &input,
                Some(format!("sensor-{}", seq % 17).into_bytes()),
                wire::frame(SCHEMA_ID, &body),
            ))
        })
        .collect::<Result<_>>()?;
    for chunk in records.chunks(2000) {
        producer.send_all(chunk).await?;
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut config = ConsumerLoopConfig::new(&group, vec![input.clone()], &stage);
    config.max_batch_records = 250;

    // First consumer: dropped mid-way (its task aborted), no clean shutdown.
    let first = {
        let (kafka, config, producer, metrics) = (
            kafka.clone(),
            config.clone(),
            producer.clone(),
            metrics.clone(),
        );
        let mut handler = Echo {
            schema: schema.clone(),
            output_topic: output.clone(),
            seen: seen.clone(),
        };
        tokio::spawn(async move {
            run_consumer(
                &kafka,
                &config,
                &producer,
                &metrics,
                &mut handler,
                CancellationToken::new(),
            )
            .await
        })
    };
    wait_until(
        "the first consumer to see 4,000 records",
        Duration::from_secs(120),
        || distinct(&seen) >= 4000,
    )
    .await?;
    first.abort();
    let _ = first.await;
    let before_restart = distinct(&seen);
    assert!(
        before_restart < RECORDS as usize,
        "the first consumer must be stopped mid-way, saw {before_restart}"
    );

    // Second consumer in the same group: resumes from the committed offsets.
    let shutdown = CancellationToken::new();
    let second = {
        let (kafka, config, producer, metrics, shutdown) = (
            kafka.clone(),
            config.clone(),
            producer.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        let mut handler = Echo {
            schema: schema.clone(),
            output_topic: output.clone(),
            seen: seen.clone(),
        };
        tokio::spawn(async move {
            run_consumer(&kafka, &config, &producer, &metrics, &mut handler, shutdown).await
        })
    };
    wait_until("every record to be seen", Duration::from_secs(180), || {
        distinct(&seen) == RECORDS as usize
    })
    .await?;
    shutdown.cancel();
    let stats = second.await?.context("second consumer")?;

    let all = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let unique_seqs: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(
        unique_seqs,
        (0..RECORDS).collect::<BTreeSet<_>>(),
        "every record seen at least once"
    );
    let duplicates = all.len() - unique_seqs.len();
    println!(
        "seen {} deliveries of {RECORDS} records ({duplicates} duplicates after the unclean stop); \
         first consumer saw {before_restart}, second handled {} records",
        all.len(),
        stats.records
    );

    // Committed offsets of the group are at the high-water mark of every partition.
    let probe: BaseConsumer = kafka.client_config().set("group.id", &group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&input, p);
    }
    let committed = probe.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut total = 0;
    for p in 0..PARTITIONS {
        let (_low, high) = probe.fetch_watermarks(&input, p, Duration::from_secs(10))?;
        let offset = committed.find_partition(&input, p).map(|e| e.offset());
        assert_eq!(
            offset,
            Some(Offset::Offset(high)),
            "partition {p}: committed offset vs high-water mark {high}"
        );
        total += high;
    }
    assert_eq!(total, RECORDS);

    // Everything the handler produced was acknowledged: the outputs and dead letters are there.
    let (outputs, letters) = read_outputs(&kafka, &output, &dlq).await?;
    let expected_out: BTreeSet<i64> = (0..RECORDS).filter(|s| s % 1000 != 0).collect();
    assert_eq!(outputs, expected_out);
    assert_eq!(
        letters.len(),
        10,
        "one dead letter per multiple of 1000: {letters:?}"
    );
    for headers in letters.values() {
        assert_eq!(headers.get("tributary.source.topic"), Some(&input));
        assert_eq!(headers.get("tributary.stage"), Some(&stage));
        assert_eq!(
            headers.get("tributary.error.class"),
            Some(&"test".to_string())
        );
        assert!(
            headers
                .get("tributary.source.offset")
                .is_some_and(|o| o.parse::<i64>().is_ok())
        );
        assert!(
            headers
                .get("tributary.error.message")
                .is_some_and(|m| m.contains("multiple of 1000"))
        );
    }
    Ok(())
}

/// Reads the output topic (distinct sequence numbers) and the dead letters (headers by payload).
async fn read_outputs(
    kafka: &tributary_core::bus::KafkaConfig,
    output: &str,
    dlq: &str,
) -> Result<(BTreeSet<i64>, BTreeMap<Vec<u8>, BTreeMap<String, String>>)> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique("g-read"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[output, dlq])?;
    let mut outputs = BTreeSet::new();
    let mut letters = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (outputs.len() < (RECORDS - 10) as usize || letters.len() < 10)
        && Instant::now() < deadline
    {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let payload = message.payload().unwrap_or_default();
        if message.topic() == output {
            outputs.insert(std::str::from_utf8(payload)?.parse::<i64>()?);
        } else {
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
            letters.insert(payload.to_vec(), headers);
        }
    }
    Ok((outputs, letters))
}

/// Remembers which partitions it was told it lost.
struct Counting {
    seen: Arc<Mutex<Vec<(i32, i64)>>>,
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
}

impl BatchHandler for Counting {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        _out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        // Slow enough that the second consumer joins while the first is mid-stream.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.seen
            .lock()
            .map_err(|_| HandlerError::fatal("poisoned"))?
            .extend(batch.iter().map(|r| (r.partition, r.offset)));
        Ok(())
    }

    fn partitions_revoked(&mut self, partitions: &[(String, i32)]) {
        if let Ok(mut r) = self.revoked.lock() {
            r.extend_from_slice(partitions);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_mid_stream_loses_nothing() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let (topic, group) = (unique("t-rebalance"), unique("g-rebalance"));
    let partitions = 4;
    create_topics(
        &kafka,
        &[TopicSpec {
            name: topic.clone(),
            partitions,
            config: vec![],
        }],
    )
    .await?;
    let producer = Producer::new(&kafka, BusMetrics::default())?;
    let total = 8000;
    let records: Vec<OutboundRecord> = (0..total)
        .map(|i| {
            let mut r = OutboundRecord::new(&topic, None, vec![1; 100]);
            r.partition = Some(i % partitions);
            r
        })
        .collect();
    producer.send_all(&records).await?;

    let mut config = ConsumerLoopConfig::new(&group, vec![topic.clone()], "rebalance");
    config.max_batch_records = 50;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let spawn = |seen: Arc<Mutex<Vec<(i32, i64)>>>, revoked: Arc<Mutex<Vec<(String, i32)>>>| {
        let (kafka, config, producer, shutdown) = (
            kafka.clone(),
            config.clone(),
            producer.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let metrics = BusMetrics::default();
            let mut handler = Counting { seen, revoked };
            run_consumer(&kafka, &config, &producer, &metrics, &mut handler, shutdown).await
        })
    };
    let first = spawn(seen.clone(), revoked.clone());
    wait_until(
        "the first consumer to start",
        Duration::from_secs(60),
        || seen.lock().map(|s| s.len() >= 500).unwrap_or(false),
    )
    .await?;
    let second = spawn(seen.clone(), Arc::new(Mutex::new(Vec::new())));
    let distinct = || {
        seen.lock()
            .map(|s| s.iter().collect::<BTreeSet<_>>().len())
            .unwrap_or(0)
    };
    wait_until("every record", Duration::from_secs(180), || {
        distinct() == total as usize
    })
    .await?;
    shutdown.cancel();
    first.await?.context("first consumer")?;
    second.await?.context("second consumer")?;

    let all = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let set: BTreeSet<(i32, i64)> = all.iter().copied().collect();
    assert_eq!(set.len(), total as usize, "every record seen");
    let lost_partitions = revoked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .len();
    assert!(
        lost_partitions > 0,
        "the first consumer was told which partitions it lost"
    );
    println!(
        "{} deliveries for {total} records; first consumer lost {lost_partitions} partitions",
        all.len()
    );
    Ok(())
}

/// Keeps records in per-partition buffers and makes them "durable" 300 at a time (as a file
/// writer does), on ticks, and on finish; commits only what is durable.
struct Buffering {
    buffers: BTreeMap<i32, Vec<i64>>,
    next: BTreeMap<i32, i64>,
    durable: Arc<Mutex<Vec<(i32, i64)>>>,
    topic: String,
}

impl Buffering {
    fn flush(&mut self, partition: i32) {
        if let Some(buffer) = self.buffers.get_mut(&partition)
            && let Ok(mut durable) = self.durable.lock()
        {
            durable.extend(buffer.drain(..).map(|o| (partition, o)));
        }
    }
}

impl BatchHandler for Buffering {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        _out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        for r in batch {
            self.buffers.entry(r.partition).or_default().push(r.offset);
            self.next.insert(r.partition, r.offset + 1);
            if self.buffers[&r.partition].len() >= 300 {
                self.flush(r.partition);
            }
        }
        Ok(())
    }

    fn commit_positions(&self) -> Option<Vec<(String, i32, i64)>> {
        Some(
            self.next
                .iter()
                .map(|(p, next)| {
                    let first_pending = self.buffers.get(p).and_then(|b| b.first().copied());
                    (self.topic.clone(), *p, first_pending.unwrap_or(*next))
                })
                .collect(),
        )
    }

    async fn tick(&mut self, _out: &mut Output<'_>) -> Result<(), HandlerError> {
        let partitions: Vec<i32> = self.buffers.keys().copied().collect();
        for p in partitions {
            self.flush(p);
        }
        Ok(())
    }

    async fn finish(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.tick(out).await
    }

    fn partitions_revoked(&mut self, partitions: &[(String, i32)]) {
        for (_, p) in partitions {
            self.buffers.remove(p);
            self.next.remove(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_records_are_committed_only_once_durable() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let (topic, group) = (unique("t-buffer"), unique("g-buffer"));
    create_topics(
        &kafka,
        &[TopicSpec {
            name: topic.clone(),
            partitions: 2,
            config: vec![],
        }],
    )
    .await?;
    let producer = Producer::new(&kafka, BusMetrics::default())?;
    let total = 5_000;
    let records: Vec<OutboundRecord> = (0..total)
        .map(|i| OutboundRecord::new(&topic, Some(format!("k{i}").into_bytes()), vec![7; 50]))
        .collect();
    producer.send_all(&records).await?;

    let durable = Arc::new(Mutex::new(Vec::new()));
    let mut config = ConsumerLoopConfig::new(&group, vec![topic.clone()], "buffer");
    config.max_batch_records = 100;
    config.tick_interval = Some(Duration::from_millis(500));
    let durable_count = || durable.lock().map(|d| d.len()).unwrap_or(0);
    let handler = || Buffering {
        buffers: BTreeMap::new(),
        next: BTreeMap::new(),
        durable: durable.clone(),
        topic: topic.clone(),
    };

    // First run: stopped without a clean shutdown once some records are durable.
    let first = {
        let (kafka, config, producer, mut handler) =
            (kafka.clone(), config.clone(), producer.clone(), handler());
        tokio::spawn(async move {
            run_consumer(
                &kafka,
                &config,
                &producer,
                &BusMetrics::default(),
                &mut handler,
                CancellationToken::new(),
            )
            .await
        })
    };
    wait_until("some durable records", Duration::from_secs(60), || {
        durable_count() >= 1200
    })
    .await?;
    first.abort();
    let _ = first.await;
    // Nothing beyond the durable records was committed.
    let durable_before: BTreeSet<(i32, i64)> = durable
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .copied()
        .collect();
    let probe: BaseConsumer = kafka.client_config().set("group.id", &group).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    tpl.add_partition(&topic, 1);
    let committed = probe.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
    for p in 0..2 {
        if let Some(Offset::Offset(c)) = committed.find_partition(&topic, p).map(|e| e.offset()) {
            for o in 0..c {
                assert!(
                    durable_before.contains(&(p, o)),
                    "partition {p} committed {c} but offset {o} was never durable"
                );
            }
        }
    }

    // Second run: the remainder arrives; the last partial buffers become durable by the tick
    // (no more records come), and the clean stop commits everything.
    let shutdown = CancellationToken::new();
    let second = {
        let (kafka, config, producer, shutdown, mut handler) = (
            kafka.clone(),
            config.clone(),
            producer.clone(),
            shutdown.clone(),
            handler(),
        );
        tokio::spawn(async move {
            run_consumer(
                &kafka,
                &config,
                &producer,
                &BusMetrics::default(),
                &mut handler,
                shutdown,
            )
            .await
        })
    };
    let distinct = || {
        durable
            .lock()
            .map(|d| d.iter().collect::<BTreeSet<_>>().len())
            .unwrap_or(0)
    };
    wait_until(
        "every record durable (the tick flushes the tail)",
        Duration::from_secs(120),
        || distinct() == total,
    )
    .await?;
    shutdown.cancel();
    second.await?.context("second run")?;
    let committed = probe.committed_offsets(tpl, Duration::from_secs(10))?;
    for p in 0..2 {
        let (_, high) = probe.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
        assert_eq!(
            committed.find_partition(&topic, p).map(|e| e.offset()),
            Some(Offset::Offset(high))
        );
    }
    Ok(())
}
