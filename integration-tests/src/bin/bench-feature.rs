//! Benchmark of the feature service (prints figures; not a timed test).
//!
//! ```text
//! cargo build --release --bins -p tributary-feature -p tributary-archive -p tributary-registry -p tributary-integration-tests
//! target/release/bench-feature [--broker kafka|tansu] [--records N] [--rounds R]
//! ```
//!
//! Starts the broker `--broker` names (Apache Kafka, one KRaft node, or Tansu with SQLite
//! storage; default `TRIBUTARY_TEST_BROKER`, else Apache Kafka) and the registry, produces `N`
//! `raw.web_events` records (about 200 bytes, 50,000 users, two hours of event time), then, `R`
//! times in turn on that same topic, each with a fresh consumer group:
//!
//! 1. the archive service (the release binary) writing the topic to a local lake;
//! 2. the feature service computing a hopping window (1 h every 15 min, so each record updates
//!    four windows) with three aggregations (count, sum of the amount, distinct pages) per user.
//!
//! Both are timed the same way from their metrics, polled every 20 ms: from the first record
//! consumed until all `N` are handled — handed to the archiver by the consumer loop (which
//! hands the next batch only once the previous one was handled; files are written as they fill
//! or age, so the last file's write is not in the archive's time), applied to the window state
//! with outputs and changelog acknowledged for the feature service. The figure is the
//! ratio feature / archive (target >= 1.0); CPU-seconds per million records of each (over the
//! process's whole life) and of the broker (its process: for Apache Kafka the JVM) while each
//! ran are printed too, and how many window results and changelog records the feature service
//! wrote. Each round runs its own copy of the view (`bench_hopping_<round>`), so
//! that it starts from an empty changelog rather than restoring the previous round's.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tributary_core::bus::{BusMetrics, KafkaConfig, OutboundRecord, Producer, create_topics};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::wire;
use tributary_integration_tests::bench::{
    BROKER_USAGE, Event, Snapshot, broker_or_default, clock_ticks_per_second, counter_sum,
    parse_broker, print_machine, produce_chunks, repo_schemas_with, start_broker, ticks_at_exit,
};
use tributary_integration_tests::{
    Archive, BrokerKind, Feature, Registry, Service, run_beside_services, unique,
};

const INPUT: &str = "raw.web_events";
const OUTPUT: &str = "bench.user_features";
const POLL: Duration = Duration::from_millis(20);
const PASS_TIMEOUT: Duration = Duration::from_secs(900);

const OUTPUT_SCHEMA: &str = r#"{"type": "record", "name": "UserFeatures", "namespace": "bench", "fields": [
  {"name": "user_id", "type": "string"},
  {"name": "window_start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "window_end", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "events", "type": "long"},
  {"name": "amount", "type": "double"},
  {"name": "pages", "type": "long"}
]}"#;

const USAGE: &str = "usage: bench-feature [--broker kafka|tansu] [--records N] [--rounds R]
  --records N  records produced and read by every pass (default 500000)
  --rounds R   rounds of (archive, feature) (default 2)";

fn main() -> Result<()> {
    let usage = format!("{USAGE}\n{BROKER_USAGE}");
    let mut records = 500_000usize;
    let mut rounds = 2usize;
    let mut broker = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> Result<usize> {
            let v = args
                .next()
                .with_context(|| format!("{arg} needs a value\n{usage}"))?;
            v.replace('_', "")
                .parse()
                .with_context(|| format!("{arg} {v}\n{usage}"))
        };
        match arg.as_str() {
            "--records" => records = value()?,
            "--rounds" => rounds = value()?,
            "--broker" => broker = Some(parse_broker(args.next(), &usage)?),
            "-h" | "--help" => {
                println!("{usage}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{usage}"),
        }
    }
    ensure!(records >= 1_000 && rounds >= 1, "{usage}");
    let broker = broker_or_default(broker, &usage)?;
    run_beside_services(&[
        "tributary-feature",
        "tributary-archive",
        "tributary-registry",
    ])?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(broker, records, rounds))
}

/// The repository's catalog plus the benchmark's views (one per round, so that each round
/// starts with an empty changelog topic of its own) and their output topic.
fn bench_schemas(dir: &Path, rounds: usize) -> Result<()> {
    std::fs::write(dir.join(format!("{OUTPUT}-value.avsc")), OUTPUT_SCHEMA)?;
    let mut extra = format!(
        r#"
[[topic]]
name = "{OUTPUT}"
key_field = "user_id"
event_time_field = "window_end"
"#
    );
    for round in 1..=rounds {
        extra.push_str(&format!(
            r#"
[[feature]]
name = "{}"
input = "{INPUT}"
output = "{OUTPUT}"
entity = "user_id"
window = {{ type = "hopping", size = "1h", slide = "15m" }}
allowed_lateness = "1m"
aggregation = [
  {{ name = "events", fn = "count" }},
  {{ name = "amount", fn = "sum", expr = "CAST(amount AS DOUBLE)" }},
  {{ name = "pages", fn = "distinct_count", expr = "page['url']" }},
]
"#,
            view_name(round)
        ));
    }
    repo_schemas_with(dir, &extra)
}

fn view_name(round: usize) -> String {
    format!("bench_hopping_{round}")
}

/// Records in a topic (sum of high-water marks less low-water marks).
fn records_in(kafka: &KafkaConfig, topic: &str) -> Result<i64> {
    let consumer: BaseConsumer = kafka.client_config().create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut total = 0;
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            total += high - low;
        }
    }
    Ok(total)
}

#[derive(Debug, Clone)]
struct Pass {
    name: &'static str,
    seconds: f64,
    records: u64,
    /// The service over its whole life.
    cpu_ticks: u64,
    /// The broker from just before the service started until it exited.
    broker_ticks: u64,
    /// The rest of the machine meanwhile.
    other_ticks: u64,
}

impl Pass {
    fn rate(&self) -> f64 {
        self.records as f64 / self.seconds
    }
}

async fn run(kind: BrokerKind, records: usize, rounds: usize) -> Result<()> {
    let tick = clock_ticks_per_second()? as f64;
    println!("bench-feature: {records} records of {INPUT}, {rounds} round(s)");
    print_machine(Some(kind));
    let schemas = tempfile::tempdir()?;
    bench_schemas(schemas.path(), rounds)?;
    let catalog = Catalog::load(schemas.path())?;
    let broker = start_broker(kind)?;
    let broker_pid = broker.pid().context("the broker has no process")?;
    let kafka = broker.kafka();
    create_topics(&kafka, &catalog.topic_specs(1)).await?;
    let registry = Registry::start(&broker)?;
    let client = registry.client()?;
    let input = catalog.topic(INPUT).context("no input topic")?;
    let id = client
        .register(&input.value_subject(), &input.value_schema_json)
        .await?;
    let started = Instant::now();
    let chunks: Vec<Vec<OutboundRecord>> = (0..records)
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(|c| {
            c.iter()
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
    let mut producer_kafka = kafka.clone();
    producer_kafka
        .extra
        .insert("delivery.timeout.ms".into(), "600000".into());
    let producer = Producer::new(&producer_kafka, BusMetrics::default())?;
    produce_chunks(&producer, Arc::new(chunks), 16).await?;
    drop(producer);
    println!(
        "produced {records} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut passes = Vec::new();
    for round in 1..=rounds {
        let lake = tempfile::tempdir()?;
        let before = Snapshot::take(broker_pid)?;
        let archive = Archive::start(
            &broker,
            &registry,
            &format!(
                "group_id = \"{}\"\nmax_open_seconds = 2",
                unique("bench-archive")
            ),
            &format!("url = \"file://{}\"", lake.path().display()),
            "",
        )?;
        let a = timed(
            "archive",
            archive,
            records as u64,
            "tributary_bus_records_consumed_total",
            (broker_pid, before),
        )
        .await?;
        println!("round {round}: archive {:.0} records/s", a.rate());
        passes.push(a);
        let outputs_before = records_in(&kafka, OUTPUT).unwrap_or(0);
        let before = Snapshot::take(broker_pid)?;
        let feature = Feature::start(
            &broker,
            &registry,
            schemas.path(),
            &format!(
                "group_id = \"{}\"\nonly = [\"{}\"]",
                unique("bench-feature"),
                view_name(round)
            ),
            "",
        )?;
        let f = timed(
            "feature",
            feature,
            records as u64,
            "tributary_feature_records_in_total",
            (broker_pid, before),
        )
        .await?;
        let changelog = records_in(
            &kafka,
            &format!("_tributary.feature.{}.changelog", view_name(round)),
        )?;
        let outputs = records_in(&kafka, OUTPUT)? - outputs_before;
        println!(
            "round {round}: feature {:.0} records/s; wrote {outputs} window results and {changelog} changelog records ({:.2} and {:.2} per input record)",
            f.rate(),
            outputs as f64 / records as f64,
            changelog as f64 / records as f64
        );
        passes.push(f);
    }
    let best = |name: &str| {
        passes
            .iter()
            .filter(|p| p.name == name)
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
            .cloned()
    };
    let all = |name: &str| {
        passes
            .iter()
            .filter(|p| p.name == name)
            .map(|p| format!("{:.0}", p.rate()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let archive = best("archive").context("no archive pass")?;
    let feature = best("feature").context("no feature pass")?;
    println!();
    println!(
        "| service | records/s (best of {rounds}) | all rounds | CPU-s per million records | CPU-s per M, broker | CPU-s of other processes |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, p) in [
        ("archive (zstd Parquet to a local lake)", &archive),
        (
            "feature (hopping 1 h / 15 min, count + sum + distinct count per user)",
            &feature,
        ),
    ] {
        let per_million = |ticks: u64| ticks as f64 / tick / (p.records as f64 / 1e6);
        println!(
            "| {label} | {:.0} | {} | {:.1} | {:.1} | {:.1} |",
            p.rate(),
            all(p.name),
            per_million(p.cpu_ticks),
            per_million(p.broker_ticks),
            p.other_ticks as f64 / tick
        );
    }
    let ratio = feature.rate() / archive.rate();
    println!();
    println!(
        "CPU-s per million records: each service's over its whole life, the broker's from just before the service started until it exited; other processes: CPU-seconds the rest of the machine used meanwhile (the registry, the kernel, anything else running; not this process, the broker or the service): more than a few means the pass shared the cores."
    );
    println!();
    println!(
        "feature vs archive on the same topic: {ratio:.2} (target >= 1.0: {})",
        if ratio >= 1.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Times a service from its first consumed record until `done_metric` reaches `records`, then
/// stops it and reads its CPU time, and the broker's since `before` (taken just before the
/// service started).
async fn timed<S: std::ops::DerefMut<Target = Service>>(
    name: &'static str,
    mut service: S,
    records: u64,
    done_metric: &str,
    (broker_pid, before): (u32, Snapshot),
) -> Result<Pass> {
    let pid = service.pid().context("no pid")?;
    let url = format!("{}/metrics", service.admin_url()?);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let (seconds, counted) = loop {
        ensure!(service.is_running(), "{name} exited: {}", service.log());
        ensure!(
            started.elapsed() < PASS_TIMEOUT,
            "{name}: too slow: {}",
            service.log()
        );
        let Ok(response) = client.get(&url).send().await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let text = response.text().await.unwrap_or_default();
        let consumed = counter_sum(&text, "tributary_bus_records_consumed_total");
        let done = counter_sum(&text, done_metric);
        let now = Instant::now();
        if consumed > 0 && first.is_none() {
            first = Some((now, done));
        }
        if done >= records {
            let (t0, d0) = first.unwrap_or((now, 0));
            ensure!(
                now > t0,
                "all records came out between two polls: too few to time; raise --records"
            );
            break ((now - t0).as_secs_f64().max(1e-3), done - d0);
        }
        tokio::time::sleep(POLL).await;
    };
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let ticks = ticks_at_exit(pid, Duration::from_secs(120))?;
    let after = Snapshot::take(broker_pid)?;
    ensure!(service.stop()?, "{name}: unclean stop: {}", service.log());
    Ok(Pass {
        name,
        seconds,
        records: counted,
        cpu_ticks: ticks,
        broker_ticks: after.broker.saturating_sub(before.broker),
        other_ticks: before.others_until(&after, ticks),
    })
}
