//! Benchmark of the transform service (prints figures; not a timed test).
//!
//! ```text
//! cargo build --release --bins -p tributary-transform -p tributary-registry -p tributary-integration-tests
//! target/release/bench-transform [--broker kafka|tansu] [--records N] [--batch-records B] [--rounds R] [--no-clean]
//! ```
//!
//! Starts the broker `--broker` names (Apache Kafka, one KRaft node, or Tansu with SQLite
//! storage; default `TRIBUTARY_TEST_BROKER`, else Apache Kafka) and the registry, produces `N`
//! `raw.web_events` records (about 200 bytes each), then, `R` times in turn on that same topic:
//!
//! 1. a bare consume -> produce loop: an rdkafka `BaseConsumer` (fresh group) handing every
//!    payload unchanged to an rdkafka `ThreadedProducer` with the services' producer settings
//!    (acks=all, idempotent), nothing decoded;
//! 2. the transform service (the release binary) running a pass-through transform
//!    (`SELECT * FROM input` into a topic with the same schema): decode, SQL, encode, produce,
//!    offsets stored after acknowledgement;
//! 3. unless `--no-clean`, the repository's `clean_web_events` (rules, dedup, a lookup, URL
//!    parsing), for scale.
//!
//! Every pass is timed the same way, from outside: the sum of the output topic's high-water
//! marks (records the broker acknowledged), polled every 20 ms, from the first record out until
//! all `N` are out. The figure that judges the service is the ratio of its rate to the bare
//! loop's in the same run (the target: >= 0.6 on Tansu, >= 0.8 on Apache Kafka); CPU-seconds
//! per million records are printed too: the service's over its whole life (read when it
//! exited) or this process's during the bare loop, the broker's (its process: for Apache Kafka
//! the JVM) and the rest of the machine's over the same pass.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use tributary_core::bus::{
    BusMetrics, KafkaConfig, OutboundRecord, Producer, TopicSpec, create_topics,
};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::wire;
use tributary_integration_tests::bench::{
    BROKER_USAGE, Event, Snapshot, broker_or_default, clock_ticks_per_second, cpu_ticks,
    parse_broker, print_machine, produce_chunks, repo_schemas_with, start_broker, ticks_at_exit,
};
use tributary_integration_tests::{
    Broker, BrokerKind, Registry, Transform, run_beside_services, unique,
};

const INPUT: &str = "raw.web_events";
const PASS_THROUGH: &str = "bench.passthrough";
const CLEAN: &str = "clean.web_events";
const PARTITIONS: i32 = 3;
const POLL: Duration = Duration::from_millis(20);
const PASS_TIMEOUT: Duration = Duration::from_secs(900);

const USAGE: &str = "usage: bench-transform [--broker kafka|tansu] [--records N] [--batch-records B] [--rounds R] [--no-clean]
  --records N        records produced and read by every pass (default 500000)
  --batch-records B  the transform's batch_records (default 2000)
  --rounds R         rounds of (bare loop, pass-through[, clean]) (default 2)
  --no-clean         skip the clean_web_events pass";

#[derive(Debug, Clone)]
struct Options {
    broker: BrokerKind,
    records: usize,
    batch_records: usize,
    rounds: usize,
    clean: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let usage = format!("{USAGE}\n{BROKER_USAGE}");
        let mut broker = None;
        let mut o = Self {
            broker: BrokerKind::Kafka,
            records: 500_000,
            batch_records: 2_000,
            rounds: 2,
            clean: true,
        };
        let number = |arg: &str, value: Option<String>| -> Result<usize> {
            let value = value.with_context(|| format!("{arg} needs a value\n{usage}"))?;
            value
                .replace('_', "")
                .parse()
                .with_context(|| format!("{arg} {value}: not a number\n{usage}"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--broker" => broker = Some(parse_broker(args.next(), &usage)?),
                "--records" => o.records = number(&arg, args.next())?,
                "--batch-records" => o.batch_records = number(&arg, args.next())?,
                "--rounds" => o.rounds = number(&arg, args.next())?,
                "--no-clean" => o.clean = false,
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other}\n{usage}"),
            }
        }
        ensure!(
            o.records >= 1_000 && o.rounds >= 1 && o.batch_records >= 1,
            "{usage}"
        );
        o.broker = broker_or_default(broker, &usage)?;
        Ok(o)
    }
}

fn main() -> Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    run_beside_services(&["tributary-transform", "tributary-registry"])?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(options))
}

/// One timed pass.
#[derive(Debug, Clone)]
struct Pass {
    name: &'static str,
    seconds: f64,
    records: usize,
    /// The service over its whole life, or this process during the bare loop.
    cpu_ticks: u64,
    /// The broker during the pass.
    broker_ticks: u64,
    /// The rest of the machine during the pass.
    other_ticks: u64,
}

impl Pass {
    fn rate(&self) -> f64 {
        self.records as f64 / self.seconds
    }
}

/// The schemas folder of the benchmark: the repository's catalog plus a pass-through topic with
/// the input's schema and the transform `passthrough`.
fn bench_schemas(dir: &Path) -> Result<()> {
    repo_schemas_with(
        dir,
        &format!(
            "\n[[topic]]\nname = \"{PASS_THROUGH}\"\nkey_field = \"user_id\"\n\n[[transform]]\nname = \"passthrough\"\ninputs = [\"{INPUT}\"]\noutput = \"{PASS_THROUGH}\"\nsql = \"SELECT * FROM input\"\n"
        ),
    )?;
    // The pass-through topic has the input's schema.
    std::fs::copy(
        dir.join(format!("{INPUT}-value.avsc")),
        dir.join(format!("{PASS_THROUGH}-value.avsc")),
    )?;
    Ok(())
}

async fn run(o: Options) -> Result<()> {
    let tick = clock_ticks_per_second()? as f64;
    println!(
        "bench-transform: {} records of {INPUT} ({PARTITIONS} partitions), batch_records {}, {} round(s)",
        o.records, o.batch_records, o.rounds
    );
    print_machine(Some(o.broker));
    let schemas = tempfile::tempdir()?;
    bench_schemas(schemas.path())?;
    let catalog = Catalog::load(schemas.path())?;

    let broker = start_broker(o.broker)?;
    let broker_pid = broker.pid().context("the broker has no process")?;
    let kafka = broker.kafka();
    create_topics(&kafka, &catalog.topic_specs(1)).await?;
    let registry = Registry::start(&broker)?;
    let client = registry.client()?;
    let input = catalog.topic(INPUT).context("no input topic")?;
    let id = client
        .register(&input.value_subject(), &input.value_schema_json)
        .await?;

    let produce_started = Instant::now();
    let chunks: Vec<Vec<OutboundRecord>> = (0..o.records)
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(|range| {
            range
                .iter()
                .map(|&i| {
                    let e = Event::generate(i);
                    OutboundRecord::new(
                        INPUT,
                        Some(e.user_id.clone().into_bytes()),
                        wire::frame(id, &e.avro()),
                    )
                })
                .collect()
        })
        .collect();
    let bytes: usize = chunks
        .iter()
        .flatten()
        .map(|r| r.payload.as_ref().map_or(0, Vec::len))
        .sum();
    let mut producer_kafka = kafka.clone();
    producer_kafka
        .extra
        .insert("delivery.timeout.ms".into(), "600000".into());
    let producer = Producer::new(&producer_kafka, BusMetrics::default())?;
    produce_chunks(&producer, Arc::new(chunks), 16).await?;
    drop(producer);
    println!(
        "produced {} records ({:.0} bytes each) in {:.1} s",
        o.records,
        bytes as f64 / o.records as f64,
        produce_started.elapsed().as_secs_f64()
    );

    let mut passes = Vec::new();
    for round in 1..=o.rounds {
        let bare = bare_loop(&kafka, broker_pid, o.records).await?;
        println!(
            "round {round}: bare consume->produce {:.0} records/s",
            bare.rate()
        );
        passes.push(bare);
        let t = transform_pass(
            &broker,
            &registry,
            schemas.path(),
            "passthrough",
            PASS_THROUGH,
            &o,
        )
        .await?;
        println!(
            "round {round}: transform pass-through {:.0} records/s",
            t.rate()
        );
        passes.push(t);
        if o.clean {
            let c = transform_pass(
                &broker,
                &registry,
                schemas.path(),
                "clean_web_events",
                CLEAN,
                &o,
            )
            .await?;
            println!(
                "round {round}: transform clean_web_events {:.0} records/s",
                c.rate()
            );
            passes.push(c);
        }
    }

    let best = |name: &str| -> Option<Pass> {
        passes
            .iter()
            .filter(|p| p.name == name)
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
            .cloned()
    };
    let all = |name: &str| -> String {
        passes
            .iter()
            .filter(|p| p.name == name)
            .map(|p| format!("{:.0}", p.rate()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bare = best("bare").context("no bare pass")?;
    println!();
    println!(
        "| pass | records/s (best of {}) | all rounds | vs bare loop | CPU-s per million records | CPU-s per M, broker | CPU-s of other processes |",
        o.rounds
    );
    println!("|---|---|---|---|---|---|---|");
    for name in ["bare", "passthrough", "clean_web_events"] {
        let Some(p) = best(name) else { continue };
        let label = match name {
            "bare" => "bare consume -> produce loop (rdkafka, this process)",
            "passthrough" => "transform, pass-through SQL (`SELECT * FROM input`)",
            _ => "transform, the repository's clean_web_events",
        };
        let per_million = |ticks: u64| ticks as f64 / tick / (p.records as f64 / 1e6);
        println!(
            "| {label} | {:.0} | {} | {:.2} | {:.1} | {:.1} | {:.1} |",
            p.rate(),
            all(name),
            p.rate() / bare.rate(),
            per_million(p.cpu_ticks),
            per_million(p.broker_ticks),
            p.other_ticks as f64 / tick
        );
    }
    if let Some(p) = best("passthrough") {
        let ratio = p.rate() / bare.rate();
        let target = match o.broker {
            BrokerKind::Kafka => 0.8,
            BrokerKind::Tansu => 0.6,
        };
        println!();
        println!(
            "transform pass-through vs bare consume->produce: {ratio:.2} (target on {}: >= {target}: {})",
            o.broker.name(),
            if ratio >= target { "met" } else { "NOT met" }
        );
    }
    println!(
        "CPU-s per million records: the service's over its whole life, this process's during the bare loop (its high-water-mark polling included); the broker's over the pass; other processes: CPU-seconds the rest of the machine used during the pass (more than a few means the pass shared the cores)."
    );
    Ok(())
}

/// Counts deliveries of the bare loop's producer.
struct Deliveries {
    ok: AtomicUsize,
    failed: AtomicUsize,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Creates a fresh output topic for one pass.
async fn fresh_topic(kafka: &KafkaConfig, prefix: &str) -> Result<String> {
    let name = unique(prefix);
    create_topics(
        kafka,
        &[TopicSpec {
            name: name.clone(),
            partitions: PARTITIONS,
            config: Vec::new(),
        }],
    )
    .await?;
    Ok(name)
}

/// The bare loop, timed by the output topic's high-water marks like the service.
async fn bare_loop(kafka: &KafkaConfig, broker_pid: u32, records: usize) -> Result<Pass> {
    let output = fresh_topic(kafka, "bench.bare").await?;
    let me = std::process::id();
    let cpu_before = cpu_ticks(me)?;
    let before = Snapshot::take(broker_pid)?;
    let (k, out) = (kafka.clone(), output.clone());
    let worker = tokio::task::spawn_blocking(move || copy_topic(&k, &out, records));
    let (seconds, counted) = time_output(kafka, &output, records).await?;
    worker.await??;
    let after = Snapshot::take(broker_pid)?;
    Ok(Pass {
        name: "bare",
        seconds,
        records: counted,
        cpu_ticks: cpu_ticks(me)?.saturating_sub(cpu_before),
        broker_ticks: after.broker.saturating_sub(before.broker),
        other_ticks: before.others_until(&after, 0),
    })
}

fn copy_topic(kafka: &KafkaConfig, output: &str, records: usize) -> Result<()> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique("bench-bare"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    let context = Deliveries {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    };
    // The services' producer settings: KafkaConfig's, idempotent, acks=all.
    let producer: ThreadedProducer<Deliveries> = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("delivery.timeout.ms", "600000")
        .create_with_context(context)?;
    consumer.subscribe(&[INPUT])?;
    let started = Instant::now();
    let mut read = 0;
    while read < records {
        ensure!(
            started.elapsed() < PASS_TIMEOUT,
            "bare loop read only {read} records"
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let mut record = BaseRecord::to(output).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    ensure!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce: {e}"
                    );
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        read += 1;
    }
    producer.flush(Duration::from_secs(300))?;
    let context = producer.context();
    ensure!(
        context.failed.load(Ordering::Relaxed) == 0,
        "deliveries failed"
    );
    ensure!(
        context.ok.load(Ordering::Relaxed) == records,
        "not every record delivered"
    );
    Ok(())
}

/// Seconds from the first record in `topic` until `records` are (high-water marks), and how many.
async fn time_output(kafka: &KafkaConfig, topic: &str, records: usize) -> Result<(f64, usize)> {
    let consumer: BaseConsumer = kafka.client_config().create()?;
    let started = Instant::now();
    let mut first: Option<(Instant, usize)> = None;
    loop {
        ensure!(
            started.elapsed() < PASS_TIMEOUT,
            "{topic}: not all {records} records out in time"
        );
        let total: usize = high_watermarks(&consumer, topic)?
            .values()
            .map(|&h| usize::try_from(h).unwrap_or(0))
            .sum();
        let now = Instant::now();
        if total > 0 && first.is_none() {
            first = Some((now, total));
        }
        if total >= records {
            let (t0, n0) = first.unwrap_or((now, 0));
            ensure!(
                now > t0,
                "all records came out between two polls: too few to time; raise --records"
            );
            // From the first poll that saw records: those already out then are not counted.
            return Ok(((now - t0).as_secs_f64().max(1e-3), total - n0));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn high_watermarks(consumer: &BaseConsumer, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|p| Ok((p, consumer.fetch_watermarks(topic, p, timeout)?.1)))
        .collect()
}

/// One run of the service over the whole input with a fresh group, into `output` (emptied by
/// recreating the broker's view: a fresh group reads the input again, and the output's new
/// records are counted from its high-water marks before the run).
async fn transform_pass(
    broker: &Broker,
    registry: &Registry,
    schemas: &Path,
    transform: &'static str,
    output: &str,
    o: &Options,
) -> Result<Pass> {
    let kafka = broker.kafka();
    let consumer: BaseConsumer = kafka.client_config().create()?;
    let before: usize = high_watermarks(&consumer, output)?
        .values()
        .map(|&h| usize::try_from(h).unwrap_or(0))
        .sum();
    let broker_pid = broker.pid().context("the broker has no process")?;
    let cpu_before = Snapshot::take(broker_pid)?;
    let mut service = Transform::start(
        broker,
        registry,
        schemas,
        &format!(
            "group_id = \"{}\"\nonly = [\"{transform}\"]\nbatch_records = {}",
            unique("bench-transform"),
            o.batch_records
        ),
        "",
    )?;
    let pid = service.pid().context("no pid")?;
    let started = Instant::now();
    let mut first: Option<(Instant, usize)> = None;
    let (seconds, counted) = loop {
        ensure!(
            service.is_running(),
            "the transform exited: {}",
            service.log()
        );
        ensure!(
            started.elapsed() < PASS_TIMEOUT,
            "{transform}: too slow: {}",
            service.log()
        );
        let total: usize = high_watermarks(&consumer, output)?
            .values()
            .map(|&h| usize::try_from(h).unwrap_or(0))
            .sum::<usize>()
            - before;
        let now = Instant::now();
        if total > 0 && first.is_none() {
            first = Some((now, total));
        }
        // clean_web_events drops nothing of these records (valid, unique ids).
        if total >= o.records {
            let (t0, n0) = first.unwrap_or((now, 0));
            ensure!(
                now > t0,
                "all records came out between two polls: too few to time; raise --records"
            );
            break ((now - t0).as_secs_f64().max(1e-3), total - n0);
        }
        tokio::time::sleep(POLL).await;
    };
    let pid_text = pid.to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid_text])
        .status()?;
    let ticks = ticks_at_exit(pid, Duration::from_secs(60))?;
    let cpu_after = Snapshot::take(broker_pid)?;
    ensure!(service.stop()?, "unclean stop: {}", service.log());
    Ok(Pass {
        name: transform,
        seconds,
        records: counted,
        cpu_ticks: ticks,
        broker_ticks: cpu_after.broker.saturating_sub(cpu_before.broker),
        other_ticks: cpu_before.others_until(&cpu_after, ticks),
    })
}
