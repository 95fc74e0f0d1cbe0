//! Benchmark of the ingest service (prints figures; not a timed test). See docs/benchmarks.md.
//!
//! ```text
//! cargo build --release --bins -p tributary-ingest -p tributary-registry -p tributary-integration-tests
//! target/release/bench-ingest [--broker kafka|tansu] [--records N] [--batch B] [--concurrency C] [--rounds R]
//! ```
//!
//! Starts the broker `--broker` names (Apache Kafka, one KRaft node, or Tansu with SQLite
//! storage; default `TRIBUTARY_TEST_BROKER`, else Apache Kafka), the registry and the ingest
//! service (the release binaries beside this one), then sends the same `raw.web_events` records
//! through two paths, `C` batches of `B` records in flight:
//!
//! - raw produce: the records Avro-encoded once beforehand, framed with the registry id and
//!   produced by this process with the shared producer (`Producer::send_all`);
//! - ingest: the same records as JSON arrays POSTed to `/v1/topics/raw.web_events/records`.
//!
//! The records are split into `R` rounds; each round sends its slice through both paths,
//! alternating which goes first, so that drift weighs on both alike. It prints both rates, their
//! ratio (the brief's target: >= 0.5 with 100-record POSTs), the CPU-seconds per million records
//! of ingest, the broker (its process: for Apache Kafka the JVM), this process and the rest of
//! the machine on each path, and where the working process's CPU went by thread. The broker bounds the rates on a small machine, so the
//! ratio and the CPU-seconds are what judge ingest. Finally it reads the topic back: every
//! record must be there exactly twice, byte-identical through both paths and keyed by
//! `user_id`, or the benchmark fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::task::JoinSet;
use tributary_core::bus::{BusMetrics, KafkaConfig, OutboundRecord, Producer};
use tributary_core::schema::wire;
use tributary_core::telemetry::new_registry;
use tributary_integration_tests::bench::{
    BROKER_USAGE, Event, broker_label, broker_or_default, broker_ticks, clock_ticks_per_second,
    machine_ticks, parse_broker, print_machine, start_broker,
};
use tributary_integration_tests::{
    Broker, BrokerKind, Ingest, Registry, create_catalog_topics, repo_catalog, run_beside_services,
};

const TOPIC: &str = "raw.web_events";
const API_KEY: &str = "bench-key";
/// Records sent through each path before the measured part (connections, metadata, caches).
const WARMUP_RECORDS: usize = 2_000;
const USAGE: &str = "usage: bench-ingest [--broker kafka|tansu] [--records N] [--batch B] [--concurrency C] [--rounds R]
  --records N      records sent through each path (default 200000)
  --batch B        records per produce call and per POST (default 100)
  --concurrency C  batches in flight at once (default 16)
  --rounds R       rounds the records are split into, alternating which path goes first (default 4)";

#[derive(Debug, Clone, Copy)]
struct Options {
    broker: BrokerKind,
    records: usize,
    batch: usize,
    concurrency: usize,
    rounds: usize,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let usage = format!("{USAGE}\n{BROKER_USAGE}");
        let mut broker = None;
        let mut o = Self {
            broker: BrokerKind::Kafka,
            records: 200_000,
            batch: 100,
            concurrency: 16,
            rounds: 4,
        };
        while let Some(arg) = args.next() {
            let target = match arg.as_str() {
                "--broker" => {
                    broker = Some(parse_broker(args.next(), &usage)?);
                    continue;
                }
                "--records" => &mut o.records,
                "--batch" => &mut o.batch,
                "--concurrency" => &mut o.concurrency,
                "--rounds" => &mut o.rounds,
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other}\n{usage}"),
            };
            let value = args
                .next()
                .with_context(|| format!("{arg} needs a value"))?;
            *target = value
                .replace('_', "")
                .parse()
                .with_context(|| format!("{arg} {value}: not a whole number"))?;
        }
        ensure!(
            o.records > 0 && o.batch > 0 && o.concurrency > 0 && o.rounds > 0,
            "--records, --batch, --concurrency and --rounds must be positive"
        );
        o.broker = broker_or_default(broker, &usage)?;
        Ok(o)
    }
}

fn main() -> Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    run_beside_services(&["tributary-ingest", "tributary-registry"])?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // On Ctrl-C or SIGTERM the benchmark is dropped, which stops the broker, registry and ingest.
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(options) => result,
            () = interrupted() => bail!("interrupted"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Completes on SIGINT or SIGTERM (never, if the handlers cannot be installed).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn run(o: Options) -> Result<()> {
    let tick = clock_ticks_per_second()? as f64;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "bench-ingest: {} records per path (+{WARMUP_RECORDS} warm-up) in {} rounds, {} per batch, {} batches in flight",
        o.records, o.rounds, o.batch, o.concurrency
    );
    print_machine(Some(o.broker));

    let broker = start_broker(o.broker)?;
    let kafka = producer_settings(&broker)?;
    println!(
        "producer settings of both paths: linger.ms={}, compression={}, acks=all, idempotent",
        kafka.linger_ms, kafka.compression
    );
    create_catalog_topics(&broker).await?;
    let registry = Registry::start(&broker)?;
    let keys = format!(
        "rate_limit_records_per_second = 1000000000.0\nrate_limit_burst = 1000000000.0\nmax_records_per_request = {}\n\n[[ingest.credentials]]\nname = \"bench\"\nsecret = \"{API_KEY}\"\ntopics = [\"{TOPIC}\"]\n",
        o.batch.max(1000)
    );
    let ingest = Ingest::start(&broker, &registry, &keys, "")?;
    let processes = [
        Process {
            name: "tributary-ingest".to_string(),
            pid: ingest.pid().context("ingest has no process")?,
            broker: false,
        },
        Process {
            name: format!("broker ({})", broker_label(o.broker)),
            pid: broker.pid().context("the broker has no process")?,
            broker: true,
        },
        Process {
            name: "bench-ingest (this process)".to_string(),
            pid: std::process::id(),
            broker: false,
        },
    ];

    // The id ingest registered at start (registering the same text returns it).
    let topic = repo_catalog()?
        .topic(TOPIC)
        .with_context(|| format!("{TOPIC} is not in the catalog"))?
        .clone();
    let schema_id = registry
        .client()?
        .register(&topic.value_subject(), &topic.value_schema_json)
        .await?;

    // The records, measured ones first, then the warm-up ones, each prepared once for both
    // paths: keyed and framed Avro for the producer, JSON array bodies for ingest.
    let total = o.records + WARMUP_RECORDS;
    let events: Vec<Event> = (0..total).map(Event::generate).collect();
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|e| wire::frame(schema_id, &e.avro()))
        .collect();
    let mut raw_chunks = Vec::new();
    let mut bodies = Vec::new();
    for range in chunk_ranges(o.records, o.batch).chain(
        chunk_ranges(WARMUP_RECORDS, o.batch).map(|r| r.start + o.records..r.end + o.records),
    ) {
        raw_chunks.push(
            range
                .clone()
                .map(|i| {
                    let key = events[i].user_id.clone().into_bytes();
                    OutboundRecord::new(TOPIC, Some(key), payloads[i].clone())
                })
                .collect::<Vec<_>>(),
        );
        let items: Vec<String> = events[range].iter().map(Event::json).collect();
        bodies.push(format!("[{}]", items.join(",")));
    }
    let (raw_chunks, bodies) = (Arc::new(raw_chunks), Arc::new(bodies));
    println!(
        "records: {:.0} B framed Avro, {:.0} B JSON on average",
        payloads.iter().map(Vec::len).sum::<usize>() as f64 / total as f64,
        bodies.iter().map(String::len).sum::<usize>() as f64 / total as f64
    );

    let producer = Producer::new(&kafka, BusMetrics::register(&mut new_registry()))?;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/topics/{TOPIC}/records", ingest.url());
    let send = async |path: Path, chunks: std::ops::Range<usize>| match path {
        Path::Raw => produce_raw(&producer, &raw_chunks, chunks, o.concurrency).await,
        Path::Ingest => post_batches(&client, &url, &bodies, chunks, o.concurrency).await,
    };

    // Warm-up, then rounds alternating the order of the paths, so that drift (the broker's
    // growing database, other load on the machine) weighs on both alike.
    let measured = o.records.div_ceil(o.batch);
    send(Path::Raw, measured..raw_chunks.len()).await?;
    send(Path::Ingest, measured..raw_chunks.len()).await?;
    // CPU ticks of each process, then of the whole machine.
    let mut totals = [
        Totals::new(processes.len() + 1),
        Totals::new(processes.len() + 1),
    ];
    for round in 0..o.rounds {
        let chunks = measured * round / o.rounds..measured * (round + 1) / o.rounds;
        let n: usize = raw_chunks[chunks.clone()].iter().map(Vec::len).sum();
        let order = if round.is_multiple_of(2) {
            [Path::Raw, Path::Ingest]
        } else {
            [Path::Ingest, Path::Raw]
        };
        let mut rates = [0.0; 2];
        for path in order {
            // The process doing the path's work: this one (raw) or ingest.
            let worker = processes[if matches!(path, Path::Raw) { 2 } else { 0 }].pid;
            let threads_before = thread_ticks(worker)?;
            let before = cpu_ticks(&processes)?;
            let started = Instant::now();
            send(path, chunks.clone()).await?;
            let elapsed = started.elapsed();
            let after = cpu_ticks(&processes)?;
            let t = &mut totals[path as usize];
            t.add(n, elapsed, &before, &after);
            for (name, ticks) in thread_ticks(worker)? {
                let start = threads_before.get(&name).copied().unwrap_or(0);
                *t.threads.entry(name).or_default() += ticks.saturating_sub(start);
            }
            rates[path as usize] = n as f64 / elapsed.as_secs_f64();
        }
        println!(
            "round {}: {n} records, raw produce {:.0} rec/s, ingest {:.0} rec/s, ratio {:.2}",
            round + 1,
            rates[0],
            rates[1],
            rates[1] / rates[0]
        );
    }
    producer.flush(Duration::from_secs(10))?;
    drop(producer);

    let [raw, http] = &totals;
    let ratio = http.rate() / raw.rate();
    println!();
    println!(
        "| records | batch | in flight | raw produce rec/s | ingest rec/s | ratio ingest/raw | target | ingest CPU-s per M records |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {:.0} | {:.0} | {:.2} | >= 0.5 ({}) | {:.1} |",
        o.records,
        o.batch,
        o.concurrency,
        raw.rate(),
        http.rate(),
        ratio,
        if ratio >= 0.5 { "met" } else { "NOT met" },
        http.cpu_per_million(0, tick),
    );
    println!();
    println!("| CPU-seconds per million records | raw produce | ingest |");
    println!("|---|---:|---:|");
    for (i, Process { name, .. }) in processes.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.1} |",
            raw.cpu_per_million(i, tick),
            http.cpu_per_million(i, tick)
        );
    }
    // The machine's busy time beyond our three processes: other programs skew the figures.
    let machine = processes.len();
    let others = |t: &Totals| {
        t.cpu_per_million(machine, tick)
            - (0..machine)
                .map(|i| t.cpu_per_million(i, tick))
                .sum::<f64>()
    };
    println!(
        "| other processes on the machine | {:.1} | {:.1} |",
        others(raw).max(0.0),
        others(http).max(0.0)
    );
    let available = |t: &Totals| cores as f64 * t.elapsed.as_secs_f64() / (t.records as f64 / 1e6);
    println!(
        "| whole machine, of {cores} cores x wall time | {:.1} of {:.1} | {:.1} of {:.1} |",
        raw.cpu_per_million(machine, tick),
        available(raw),
        http.cpu_per_million(machine, tick),
        available(http)
    );
    println!();
    println!(
        "| CPU-seconds per million records, by thread | bench-ingest, raw produce | tributary-ingest, ingest |"
    );
    println!("|---|---:|---:|");
    let names: std::collections::BTreeSet<&String> =
        raw.threads.keys().chain(http.threads.keys()).collect();
    for name in names {
        let per_million = |t: &Totals| {
            t.threads.get(name).copied().unwrap_or(0) as f64 / tick / (t.records as f64 / 1e6)
        };
        let (r, h) = (per_million(raw), per_million(http));
        if r >= 0.05 || h >= 0.05 {
            println!("| {name} | {r:.1} | {h:.1} |");
        }
    }
    println!();
    println!(
        "wall time: raw produce {:.2} s, ingest {:.2} s",
        raw.elapsed.as_secs_f64(),
        http.elapsed.as_secs_f64(),
    );

    // Both paths landed everything, byte for byte.
    let kafka = broker.kafka();
    let expected = Arc::new((payloads, events));
    let verified =
        tokio::task::spawn_blocking(move || verify(&kafka, &expected.0, &expected.1, 2)).await??;
    println!(
        "verified: {verified} records on {TOPIC} (2 x {total}), each byte-identical through both paths and keyed by user_id"
    );
    drop(ingest);
    drop(registry);
    drop(broker);
    Ok(())
}

/// The two ways records reach the topic.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// `Producer::send_all` of pre-encoded records, in this process.
    Raw = 0,
    /// JSON POSTs to the ingest service.
    Ingest = 1,
}

/// What one path took over all rounds.
#[derive(Debug)]
struct Totals {
    records: usize,
    elapsed: Duration,
    /// CPU clock ticks per process.
    cpu: Vec<u64>,
    /// CPU clock ticks of the process doing the path's work, by thread name.
    threads: std::collections::BTreeMap<String, u64>,
}

impl Totals {
    fn new(processes: usize) -> Self {
        Self {
            records: 0,
            elapsed: Duration::ZERO,
            cpu: vec![0; processes],
            threads: Default::default(),
        }
    }

    fn add(&mut self, records: usize, elapsed: Duration, before: &[u64], after: &[u64]) {
        self.records += records;
        self.elapsed += elapsed;
        for (total, (b, a)) in self.cpu.iter_mut().zip(before.iter().zip(after)) {
            *total += a.saturating_sub(*b);
        }
    }

    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_per_million(&self, process: usize, ticks_per_second: f64) -> f64 {
        self.cpu[process] as f64 / ticks_per_second / (self.records as f64 / 1e6)
    }
}

/// `0..n` cut into ranges of `batch`.
fn chunk_ranges(n: usize, batch: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n)
        .step_by(batch)
        .map(move |start| start..(start + batch).min(n))
}

/// The producer settings of the raw path: the service defaults, with the two settings the
/// environment may change for ingest (which reads `TRIBUTARY__*` variables on top of its
/// file) applied alike, so both paths produce the same way.
fn producer_settings(broker: &Broker) -> Result<KafkaConfig> {
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    for (name, value) in std::env::vars() {
        match name.as_str() {
            "TRIBUTARY__KAFKA__LINGER_MS" => {
                kafka.linger_ms = value
                    .parse()
                    .with_context(|| format!("{name}={value}: not a whole number"))?;
            }
            "TRIBUTARY__KAFKA__COMPRESSION" => kafka.compression = value,
            _ if name.starts_with("TRIBUTARY__") => {
                eprintln!("warning: {name} is set and reaches ingest's configuration only");
            }
            _ => {}
        }
    }
    Ok(kafka)
}

/// Produces the chunks `range` with `send_all`, `concurrency` chunks in flight.
async fn produce_raw(
    producer: &Producer,
    chunks: &Arc<Vec<Vec<OutboundRecord>>>,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (producer, chunks, next) = (producer.clone(), Arc::clone(chunks), Arc::clone(&next));
        let end = range.end;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return anyhow::Ok(());
                }
                let delivered = producer.send_all(&chunks[i]).await.context("raw produce")?;
                ensure!(
                    delivered.len() == chunks[i].len(),
                    "not every record delivered"
                );
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// POSTs the bodies `range`, `concurrency` requests in flight; anything but 200 fails.
async fn post_batches(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<String>>,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next) = (
            client.clone(),
            url.to_string(),
            Arc::clone(bodies),
            Arc::clone(&next),
        );
        let end = range.end;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return anyhow::Ok(());
                }
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-api-key", API_KEY)
                    .body(bodies[i].clone())
                    .send()
                    .await
                    .context("post to ingest")?;
                let status = response.status();
                let text = response.text().await.context("read ingest's answer")?;
                ensure!(status == 200, "ingest answered {status}: {text}");
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// Reads the whole topic and checks that it holds each expected payload exactly `copies` times,
/// keyed by its user id, and nothing else. Returns the number of records read.
fn verify(
    kafka: &tributary_core::bus::KafkaConfig,
    payloads: &[Vec<u8>],
    events: &[Event],
    copies: u8,
) -> Result<usize> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set(
            "group.id",
            tributary_integration_tests::unique("bench-verify"),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(TOPIC), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut in_topic = 0;
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(TOPIC, p, timeout)?;
        in_topic += high - low;
        if high > low {
            ends.insert(p, high);
            assignment.add_partition_offset(TOPIC, p, Offset::Offset(low))?;
        }
    }
    let expected = payloads.len() * usize::from(copies);
    ensure!(
        usize::try_from(in_topic)? == expected,
        "the high-water marks of {TOPIC} add up to {in_topic} records, expected {expected}"
    );
    consumer.assign(&assignment)?;

    let index: HashMap<&[u8], usize> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_slice(), i))
        .collect();
    ensure!(index.len() == payloads.len(), "generated payloads repeat");
    let mut seen = vec![0u8; payloads.len()];
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ends.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "read only {read} of {expected} records"
        );
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        read += 1;
        let payload = message.payload().unwrap_or_default();
        let Some(&i) = index.get(payload) else {
            bail!(
                "partition {} offset {} holds a payload not sent by the benchmark:\n  {}\n{}",
                message.partition(),
                message.offset(),
                hex(payload),
                explain_unknown(payload, payloads)
            );
        };
        ensure!(
            message.key() == Some(events[i].user_id.as_bytes()),
            "record {i} has key {:?}, expected {}",
            message.key().map(String::from_utf8_lossy),
            events[i].user_id
        );
        seen[i] += 1;
        if ends.get(&message.partition()) == Some(&(message.offset() + 1)) {
            ends.remove(&message.partition());
        }
    }
    if let Some(i) = seen.iter().position(|&c| c != copies) {
        bail!(
            "record {i} is on the topic {} times, expected {copies}",
            seen[i]
        );
    }
    Ok(read)
}

/// Finds the expected payload with the same event id (its last 12 hex digits are the index).
fn explain_unknown(payload: &[u8], payloads: &[Vec<u8>]) -> String {
    // Framing (5 bytes), the event id's length (1 byte), then 36 characters.
    let id = payload.get(6..42).map(String::from_utf8_lossy);
    let index = id
        .as_deref()
        .and_then(|id| id.get(24..))
        .and_then(|tail| usize::from_str_radix(tail, 16).ok());
    match index.and_then(|i| payloads.get(i)) {
        Some(p) => format!("expected for the same event id:\n  {}", hex(p)),
        None => "no record of the benchmark has its event id".to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A process whose CPU the benchmark reads.
#[derive(Debug)]
struct Process {
    name: String,
    pid: u32,
    /// The broker: its children count too ([`broker_ticks`]).
    broker: bool,
}

/// CPU time (user + system) of each process, in clock ticks, from `/proc/<pid>/stat`, then
/// the busy time of the whole machine (all but idle and iowait, from `/proc/stat`).
fn cpu_ticks(processes: &[Process]) -> Result<Vec<u64>> {
    let mut ticks = processes
        .iter()
        .map(|p| {
            if p.broker {
                broker_ticks(p.pid)
            } else {
                tributary_integration_tests::bench::cpu_ticks(p.pid)
            }
            .with_context(|| format!("CPU time of {}", p.name))
        })
        .collect::<Result<Vec<_>>>()?;
    ticks.push(machine_ticks()?);
    Ok(ticks)
}

/// CPU time of a process's threads in clock ticks, summed by thread name without trailing
/// digits (`rdk:broker1` and `rdk:broker2` are `rdk:broker`).
fn thread_ticks(pid: u32) -> Result<HashMap<String, u64>> {
    let mut by_name = HashMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("list the threads of process {pid}"))?;
    for task in tasks.filter_map(Result::ok) {
        // A thread may end between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].trim_end_matches(|c: char| c.is_ascii_digit());
        let fields: Vec<u64> = stat[close + 1..]
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        *by_name.entry(name.to_string()).or_default() += fields.iter().sum::<u64>();
    }
    Ok(by_name)
}
