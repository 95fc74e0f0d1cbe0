//! Benchmark of the archive service (prints figures; not a timed test).
//!
//! ```text
//! cargo build --release --bins -p tributary-archive -p tributary-registry -p tributary-integration-tests
//! target/release/bench-archive [--broker kafka|tansu] [--records N] [--stage-records M] [--compression zstd,none] [--no-python] [--stages-only]
//! ```
//!
//! Starts the broker `--broker` names (Apache Kafka, one KRaft node, or Tansu with SQLite
//! storage; default `TRIBUTARY_TEST_BROKER`, else Apache Kafka) and the registry, produces `N`
//! `raw.web_events` records (about 200 bytes, Avro-encoded once and framed with the registry
//! id), then reads that same topic in several ways and prints one table with the figures and the
//! brief's targets:
//!
//! 1. in-process stage rates on the first `M` payloads (single-threaded): our
//!    `AvroBatchDecoder` against bare `arrow-avro` (a `Decoder` fed the same framed bytes), alone
//!    and followed by a bare `ArrowWriter` (zstd, into memory); `--stages-only` runs just this,
//!    without a broker;
//! 2. a bare rdkafka consume loop (`BaseConsumer`, fresh group, every payload byte read, nothing
//!    decoded), once before and once after the archive runs;
//! 3. the archive service (the release binary) into a fresh file lake, once per compression: its
//!    rate from the first record it handled until all `N` rows are in the lake (rows counted from
//!    the Parquet footers; SIGTERM as soon as it has consumed everything, so the last open files
//!    are written at once instead of after `max_open_seconds`), and its CPU time over its whole
//!    life (`/proc/<pid>/stat` read when it has exited);
//! 4. `python/archive_baseline.py`: the same job with confluent-kafka + fastavro + pyarrow, its
//!    CPU time measured the same way.
//!
//! The broker bounds consume rates on a small machine, so the figures that judge the archive
//! are the ratio to the bare loop measured in the same run (the brief's targets differ by
//! broker: at least 0.6, 0.4 with zstd, on Tansu; 0.8, 0.6 with zstd, on Apache Kafka) and the
//! CPU-seconds per million records, printed for every pass and for the broker (its process: for
//! Apache Kafka the JVM) over the same pass. The lake is checked at the end of every archive
//! run: each partition's offsets `0..high water mark` in exactly one file each, or the
//! benchmark fails.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow::record_batch::RecordBatch;
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tributary_core::bus::{
    BatchHandler, BusMetrics, ConsumerLoopConfig, HandlerError, InboundRecord, KafkaConfig,
    OutboundRecord, Output, Producer, run_consumer,
};
use tributary_core::schema::arrow::AvroBatchDecoder;
use tributary_core::schema::wire;
use tributary_core::telemetry::new_registry;
use tributary_integration_tests::bench::{
    BROKER_USAGE, Event, Snapshot, broker_label, broker_or_default, broker_ticks,
    clock_ticks_per_second, cpu_ticks, parse_broker, print_machine, process_stat, produce_chunks,
    start_broker, ticks_at_exit,
};
use tributary_integration_tests::{
    Archive, Broker, BrokerKind, Registry, create_catalog_topics, repo_catalog,
    run_beside_services, unique,
};

const TOPIC: &str = "raw.web_events";
/// Records per `send_all` call while producing, and calls in flight.
const PRODUCE_CHUNK: usize = 1_000;
const PRODUCE_IN_FLIGHT: usize = 16;
/// The in-process decode is timed on segments of this many payloads, each decoded
/// `DECODE_ROUNDS` times by ours and by bare arrow-avro in turn; the fastest time of each segment
/// counts (a burst of another process's work on this small machine spoils one try of one
/// segment, not the figure).
const DECODE_SEGMENT: usize = 25_000;
const DECODE_ROUNDS: usize = 7;
/// Rounds of decode + Parquet write of all the payloads, ours and bare in turn; the fastest counts.
const WRITE_ROUNDS: usize = 5;
/// How often the archive's metrics and the lake are looked at.
const POLL: Duration = Duration::from_millis(50);
/// Longest any one consume pass may take.
const PASS_TIMEOUT: Duration = Duration::from_secs(600);
/// The Python job measured on this kind of machine before (the brief).
const PYTHON_REFERENCE_CPU_S_PER_M: f64 = 7.6;

const USAGE: &str = "usage: bench-archive [--broker kafka|tansu] [--records N] [--stage-records M] [--batch-records B]
                     [--max-open-seconds S] [--compression LIST] [--no-python] [--bus-loop]
                     [--stages-only]
  --records N           records produced and read by every pass (default 1000000)
  --stage-records M     payloads of the in-process decode / Parquet measurements (default 500000)
  --batch-records B     the archive's batch_records and the decoders' batch size (default 5000)
  --max-open-seconds S  the archive's max_open_seconds (default 5)
  --compression LIST    archive runs, comma-separated: zstd, snappy, none (default zstd,none)
  --no-python           skip the Python baseline
  --bus-loop            also time the services' consumer loop (run_consumer) with a handler that
                        does nothing, to split the archive's CPU between the loop and the archiving
  --stages-only         only the in-process decode / Parquet measurements (no broker)";

#[derive(Debug, Clone)]
struct Options {
    broker: BrokerKind,
    records: usize,
    stage_records: usize,
    batch_records: usize,
    max_open_seconds: u64,
    compressions: Vec<String>,
    python: bool,
    stages_only: bool,
    bus_loop: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let usage = format!("{USAGE}\n{BROKER_USAGE}");
        let mut broker = None;
        let mut o = Self {
            broker: BrokerKind::Kafka,
            records: 1_000_000,
            stage_records: 500_000,
            batch_records: 5_000,
            max_open_seconds: 5,
            compressions: vec!["zstd".into(), "none".into()],
            python: true,
            stages_only: false,
            bus_loop: false,
        };
        let number = |arg: &str, value: Option<String>| -> Result<u64> {
            let value = value.with_context(|| format!("{arg} needs a value"))?;
            value
                .replace('_', "")
                .parse()
                .with_context(|| format!("{arg} {value}: not a whole number"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--broker" => broker = Some(parse_broker(args.next(), &usage)?),
                "--records" => o.records = usize::try_from(number(&arg, args.next())?)?,
                "--stage-records" => {
                    o.stage_records = usize::try_from(number(&arg, args.next())?)?;
                }
                "--batch-records" => {
                    o.batch_records = usize::try_from(number(&arg, args.next())?)?;
                }
                "--max-open-seconds" => o.max_open_seconds = number(&arg, args.next())?,
                "--compression" => {
                    let list = args.next().context("--compression needs a value")?;
                    o.compressions = list.split(',').map(|s| s.trim().to_string()).collect();
                }
                "--no-python" => o.python = false,
                "--stages-only" => o.stages_only = true,
                "--bus-loop" => o.bus_loop = true,
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other}\n{usage}"),
            }
        }
        ensure!(
            o.records > 0 && o.stage_records > 0 && o.batch_records > 0 && o.max_open_seconds > 0,
            "--records, --stage-records, --batch-records and --max-open-seconds must be positive"
        );
        for c in &o.compressions {
            ensure!(
                ["zstd", "snappy", "none"].contains(&c.as_str()),
                "--compression {c}: use zstd, snappy or none"
            );
        }
        o.broker = broker_or_default(broker, &usage)?;
        Ok(o)
    }
}

fn main() -> Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    run_beside_services(&["tributary-archive", "tributary-registry"])?;
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

/// What the run measured, for the final table.
#[derive(Debug, Default)]
struct Figures {
    /// Payload bytes of the topic.
    bytes: usize,
    produce: Option<Rate>,
    stages: Option<StageRates>,
    bare: Vec<ConsumePass>,
    bus_loop: Option<ConsumePass>,
    archives: Vec<ArchiveRun>,
    python: Option<PythonRun>,
}

/// Records and payload bytes over a time.
#[derive(Debug, Clone, Copy)]
struct Rate {
    records: f64,
    bytes: f64,
    seconds: f64,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.records / self.seconds
    }
    fn mb_per_second(&self) -> f64 {
        self.bytes / 1e6 / self.seconds
    }
}

async fn run(o: Options) -> Result<()> {
    let bench_started = Instant::now();
    let tick = clock_ticks_per_second()?;
    println!(
        "bench-archive: {} records of {TOPIC}; in-process stages on {}; archive batch_records {}, max_open_seconds {}, runs: {}{}",
        o.records,
        o.stage_records.min(o.records),
        o.batch_records,
        o.max_open_seconds,
        o.compressions.join(", "),
        if o.python { "; Python baseline" } else { "" }
    );
    print_machine((!o.stages_only).then_some(o.broker));

    if o.stages_only {
        let schema = repo_catalog()?
            .topic(TOPIC)
            .with_context(|| format!("{TOPIC} is not in the catalog"))?
            .value_schema_json
            .clone();
        let payloads: Vec<Vec<u8>> = (0..o.stage_records)
            .map(|i| wire::frame(1, &Event::generate(i).avro()))
            .collect();
        let stages = stage_rates(&payloads, 1, &schema, o.batch_records)?;
        print_stages(&stages);
        return Ok(());
    }

    let broker = start_broker(o.broker)?;
    create_catalog_topics(&broker).await?;
    let registry = Registry::start(&broker)?;
    let broker_pid = broker.pid().context("the broker has no process")?;
    let topic = repo_catalog()?
        .topic(TOPIC)
        .with_context(|| format!("{TOPIC} is not in the catalog"))?
        .clone();
    let schema_json = topic.value_schema_json.clone();
    let schema_id = registry
        .client()?
        .register(&topic.value_subject(), &schema_json)
        .await?;

    // The records, encoded once.
    let payloads: Vec<Vec<u8>> = (0..o.records)
        .map(|i| wire::frame(schema_id, &Event::generate(i).avro()))
        .collect();
    let payload_bytes: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "records: {:.0} B framed Avro on average, {:.1} MB in all",
        payload_bytes as f64 / o.records as f64,
        payload_bytes as f64 / 1e6
    );
    let n = o.records as f64;
    let per_million = |ticks: u64| ticks as f64 / tick as f64 / (n / 1e6);
    let mut figures = Figures {
        bytes: payload_bytes,
        ..Figures::default()
    };

    // Produce, one hour of event time after the other: chunks in flight together interleave in
    // a partition, and records of two hours interleaved would make the archive cut a file at
    // every change of hour (hundreds of small files, a different number each run).
    let mut hours: Vec<Vec<Vec<OutboundRecord>>> = Vec::new();
    let mut start = 0;
    while start < o.records {
        let hour = Event::occurred_at(start).div_euclid(3_600_000);
        let end = (start..o.records)
            .find(|&i| Event::occurred_at(i).div_euclid(3_600_000) != hour)
            .unwrap_or(o.records);
        let records: Vec<OutboundRecord> = (start..end)
            .map(|i| {
                let key = Event::generate(i).user_id.into_bytes();
                OutboundRecord::new(TOPIC, Some(key), payloads[i].clone())
            })
            .collect();
        hours.push(records.chunks(PRODUCE_CHUNK).map(<[_]>::to_vec).collect());
        start = end;
    }
    let producer = Producer::new(&broker.kafka(), BusMetrics::register(&mut new_registry()))?;
    let started = Instant::now();
    for chunks in hours {
        produce(&producer, Arc::new(chunks)).await?;
    }
    let produce = Rate {
        records: n,
        bytes: payload_bytes as f64,
        seconds: started.elapsed().as_secs_f64(),
    };
    producer.flush(Duration::from_secs(10))?;
    drop(producer);
    figures.produce = Some(produce);
    let high = high_watermarks(&broker.kafka())?;
    let on_topic: i64 = high.values().sum();
    ensure!(
        usize::try_from(on_topic)? == o.records,
        "{TOPIC} holds {on_topic} records, expected {}",
        o.records
    );
    println!(
        "produce: {:.0} rec/s, {:.1} MB/s ({} per send_all, {} in flight; {} partitions: {:?})",
        produce.per_second(),
        produce.mb_per_second(),
        PRODUCE_CHUNK,
        PRODUCE_IN_FLIGHT,
        high.len(),
        high.values().collect::<Vec<_>>()
    );

    // In-process stages.
    let stage_payloads: Vec<Vec<u8>> = payloads[..o.stage_records.min(o.records)].to_vec();
    let (batch, json) = (o.batch_records, schema_json.clone());
    let stages =
        tokio::task::spawn_blocking(move || stage_rates(&stage_payloads, schema_id, &json, batch))
            .await??;
    print_stages(&stages);
    figures.stages = Some(stages);
    drop(payloads);

    // The bare consume loop, before the archive runs.
    let pass = bare_pass(&broker, broker_pid, o.records).await?;
    println!(
        "bare consume loop (1): {:.0} rec/s, {:.1} MB/s; {:.2} CPU-s per M records in this process",
        n / pass.wall,
        payload_bytes as f64 / 1e6 / pass.wall,
        per_million(pass.cpu_ticks)
    );
    figures.bare.push(pass);

    if o.bus_loop {
        let pass = bus_loop_pass(&broker, broker_pid, &o).await?;
        println!(
            "consumer loop with a no-op handler: {:.0} rec/s, {:.1} MB/s; {:.2} CPU-s per M records in this process",
            n / pass.wall,
            payload_bytes as f64 / 1e6 / pass.wall,
            per_million(pass.cpu_ticks)
        );
        figures.bus_loop = Some(pass);
    }

    // The archive, once per compression.
    for compression in &o.compressions {
        let run = archive_run(
            &broker,
            broker_pid,
            &registry,
            &o,
            compression,
            payload_bytes,
            &high,
        )
        .await?;
        println!(
            "archive ({compression}): {:.0} rec/s, {:.1} MB/s; {:.2} CPU-s per M records; {} files, {:.1} MB",
            n / run.wall,
            payload_bytes as f64 / 1e6 / run.wall,
            per_million(run.cpu_ticks),
            run.files,
            run.lake_bytes as f64 / 1e6
        );
        figures.archives.push(run);
    }

    // The Python job.
    if o.python {
        let run = python_run(&broker, &registry, o.records).await?;
        println!(
            "python: {:.0} rec/s, {:.2} CPU-s per M records (it reports {:.2}); {} files, {:.1} MB",
            n / run.wall,
            per_million(run.cpu_ticks),
            run.self_reported_cpu_s / (n / 1e6),
            run.files,
            run.bytes as f64 / 1e6
        );
        figures.python = Some(run);
    }

    // The bare loop again: the broker's speed may drift during the run.
    let pass = bare_pass(&broker, broker_pid, o.records).await?;
    println!(
        "bare consume loop (2): {:.0} rec/s, {:.1} MB/s; {:.2} CPU-s per M records in this process",
        n / pass.wall,
        payload_bytes as f64 / 1e6 / pass.wall,
        per_million(pass.cpu_ticks)
    );
    figures.bare.push(pass);

    print_tables(&o, &figures, per_million);
    println!();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "whole benchmark: {:.0} s; load average at the end: {}",
        bench_started.elapsed().as_secs_f64(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(registry);
    drop(broker);
    Ok(())
}

fn print_stages(stages: &StageRates) {
    println!(
        "decode: ours {:.0} rec/s, arrow-avro {:.0} rec/s (ratio {:.2}); decode + Parquet zstd: ours {:.0} rec/s, bare {:.0} rec/s (ratio {:.2})",
        stages.ours_decode.per_second(),
        stages.bare_decode.per_second(),
        stages.ours_decode.per_second() / stages.bare_decode.per_second(),
        stages.ours_total.per_second(),
        stages.bare_total.per_second(),
        stages.ours_total.per_second() / stages.bare_total.per_second(),
    );
}

fn print_tables(o: &Options, f: &Figures, per_million: impl Fn(u64) -> f64) {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let n = o.records as f64;
    let mb = f.bytes as f64 / 1e6;
    // Rates over whole passes (subscribing, or starting the process, to the last record or row)
    // judge; rates from the first record are beside them. The faster bare pass is the baseline.
    let bare_wall_best = f.bare.iter().map(|p| p.wall).fold(f64::MAX, f64::min);
    let bare_first_best = f
        .bare
        .iter()
        .map(|p| p.rate.per_second())
        .fold(0.0, f64::max);
    let python_cpu = f.python.as_ref().map(|p| per_million(p.cpu_ticks));

    println!();
    println!("| figure | measured | target |\n|---|---:|---|");
    if let Some(p) = f.produce {
        println!(
            "| produce (`Producer::send_all`, {PRODUCE_CHUNK} per call, {PRODUCE_IN_FLIGHT} in flight) | {:.0} rec/s, {:.1} MB/s | |",
            p.per_second(),
            p.mb_per_second()
        );
    }
    for (i, pass) in f.bare.iter().enumerate() {
        println!(
            "| bare rdkafka consume loop, pass {} of {} | {:.0} rec/s, {:.1} MB/s | |",
            i + 1,
            f.bare.len(),
            n / pass.wall,
            mb / pass.wall
        );
    }
    for run in &f.archives {
        let ratio = bare_wall_best / run.wall;
        // The brief's targets: lower on Tansu, whose storage bounds every rate on these machines.
        let target = match (o.broker, run.compression == "zstd") {
            (BrokerKind::Tansu, true) => 0.4,
            (BrokerKind::Tansu, false) => 0.6,
            (BrokerKind::Kafka, true) => 0.6,
            (BrokerKind::Kafka, false) => 0.8,
        };
        println!(
            "| archive, {} | {:.0} rec/s, {:.1} MB/s | |",
            run.compression,
            n / run.wall,
            mb / run.wall
        );
        println!(
            "| archive rec/s / bare loop rec/s, {} | **{ratio:.2}** (from the first record: {}) | >= {target} ({}) |",
            run.compression,
            if run.rate.records > 0.0 {
                format!("{:.2}", run.rate.per_second() / bare_first_best)
            } else {
                "n/a".to_string()
            },
            verdict(ratio >= target)
        );
    }
    for run in &f.archives {
        let cpu = per_million(run.cpu_ticks);
        let target = match python_cpu {
            Some(py) => format!(
                "<= {:.2} = Python's / 10 ({}); <= {:.2} by the brief's 7.6 ({})",
                py / 10.0,
                verdict(cpu <= py / 10.0),
                PYTHON_REFERENCE_CPU_S_PER_M / 10.0,
                verdict(cpu <= PYTHON_REFERENCE_CPU_S_PER_M / 10.0)
            ),
            None => format!(
                "<= {:.2} by the brief's 7.6 ({})",
                PYTHON_REFERENCE_CPU_S_PER_M / 10.0,
                verdict(cpu <= PYTHON_REFERENCE_CPU_S_PER_M / 10.0)
            ),
        };
        println!(
            "| archive CPU-s per M records, {} | **{cpu:.2}** | {target} |",
            run.compression
        );
    }
    if let (Some(py), Some(run)) = (
        &f.python,
        f.archives.iter().find(|r| r.compression == "zstd"),
    ) {
        let cpu = per_million(py.cpu_ticks);
        println!(
            "| Python (confluent-kafka + fastavro + pyarrow, zstd) | {:.0} rec/s, {cpu:.2} CPU-s per M records | |",
            n / py.wall
        );
        println!(
            "| archive CPU / Python CPU, zstd | **1/{:.1}** | <= 1/10 ({}) |",
            cpu / per_million(run.cpu_ticks),
            verdict(per_million(run.cpu_ticks) * 10.0 <= cpu)
        );
    }
    if let Some(s) = &f.stages {
        let decode = s.ours_decode.per_second() / s.bare_decode.per_second();
        let total = s.ours_total.per_second() / s.bare_total.per_second();
        println!(
            "| decode, `AvroBatchDecoder` vs bare arrow-avro ({} payloads) | {:.0} vs {:.0} rec/s | |",
            s.ours_decode.records,
            s.ours_decode.per_second(),
            s.bare_decode.per_second()
        );
        println!(
            "| Avro -> Arrow decode vs arrow-avro on the same bytes | **{decode:.2}** | >= 0.9 ({}) |",
            verdict(decode >= 0.9)
        );
        println!(
            "| decode + Parquet zstd into memory, ours vs bare | {:.0} vs {:.0} rec/s, ratio {total:.2} | |",
            s.ours_total.per_second(),
            s.bare_total.per_second()
        );
    }

    println!();
    println!("Details of the consuming passes:");
    println!();
    println!(
        "| pass | rec/s from first record | wall from start (s) | CPU-s per M, the process | CPU-s per M, broker ({}) | CPU-s of other processes | files | MB written |",
        broker_label(o.broker)
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let seconds = |ticks: u64| per_million(ticks) * n / 1e6;
    for (i, pass) in f.bare.iter().enumerate() {
        println!(
            "| bare loop {} | {:.0} | {:.1} | {:.2} (this process) | {:.2} | {:.1} | | |",
            i + 1,
            pass.rate.per_second(),
            pass.wall,
            per_million(pass.cpu_ticks),
            per_million(pass.broker_ticks),
            seconds(pass.other_ticks)
        );
    }
    if let Some(pass) = &f.bus_loop {
        println!(
            "| consumer loop, no-op handler | {:.0} | {:.1} | {:.2} (this process) | {:.2} | {:.1} | | |",
            pass.rate.per_second(),
            pass.wall,
            per_million(pass.cpu_ticks),
            per_million(pass.broker_ticks),
            seconds(pass.other_ticks)
        );
    }
    for run in &f.archives {
        println!(
            "| archive, {} | {} | {:.1} | {:.2} | {:.2} | {:.1} | {} (largest {} rows; {} early flushes, {} rebalances) | {:.1} |",
            run.compression,
            if run.rate.records > 0.0 {
                format!("{:.0}", run.rate.per_second())
            } else {
                "n/a".to_string()
            },
            run.wall,
            per_million(run.cpu_ticks),
            per_million(run.broker_ticks),
            seconds(run.other_ticks),
            run.files,
            run.largest_file_rows,
            run.metrics.early_flushes,
            run.metrics.rebalances,
            run.lake_bytes as f64 / 1e6
        );
    }
    if let Some(py) = &f.python {
        println!(
            "| Python | {:.0} | {:.1} | {:.2} | {:.2} | {:.1} | {} | {:.1} |",
            py.rate.per_second(),
            py.wall,
            per_million(py.cpu_ticks),
            per_million(py.broker_ticks),
            seconds(py.other_ticks),
            py.files,
            py.bytes as f64 / 1e6
        );
    }

    // Where the archive's CPU goes, estimated from the single-threaded stage figures.
    if let (Some(s), Some(run), false) = (
        &f.stages,
        f.archives.iter().find(|r| r.compression == "zstd"),
        f.bare.is_empty(),
    ) {
        let total = per_million(run.cpu_ticks);
        // The bare passes' mean: the Kafka client's share, as in the archive.
        let consume =
            f.bare.iter().map(|p| per_million(p.cpu_ticks)).sum::<f64>() / f.bare.len() as f64;
        let decode = 1e6 / s.ours_decode.per_second();
        let write = 1e6 / s.ours_total.per_second() - decode;
        println!();
        match &f.bus_loop {
            Some(bus) => {
                let bus = per_million(bus.cpu_ticks);
                println!(
                    "Archive (zstd) CPU-s per M records, estimated by stage: {total:.2} in all = Kafka client {consume:.2} (the bare loops' mean) + the consumer loop's own work {:.2} (the no-op loop's, less the bare loops' mean) + Avro decode {decode:.2} + Parquet zstd write {write:.2} + the rest of the archive {:.2} (lineage columns, per-file batches, bookkeeping, process start)",
                    bus - consume,
                    total - bus - decode - write
                );
            }
            None => println!(
                "Archive (zstd) CPU-s per M records, estimated by stage: {total:.2} in all = Kafka client {consume:.2} (the bare loops' mean) + Avro decode {decode:.2} + Parquet zstd write {write:.2} + the rest {:.2} (the consumer loop's per-record work, lineage columns, per-file batches, bookkeeping, process start; --bus-loop splits it)",
                total - consume - decode - write
            ),
        }
    }
    println!();
    println!(
        "Rates in the first table are over whole passes: from subscribing (bare loop) or starting the process (archive, Python) to the last record read or the last row in the lake; ratios use the faster bare pass. Rates \"from the first record\" start at the first record (bare loop) or the first batch the archive reported, when librdkafka may already hold more fetched records, so they favour the archive. The archive ran with max_open_seconds {}, batch_records {}, and got SIGTERM once it had consumed everything (its last files are written then, not {} s later). \"CPU-s of other processes\" is what the rest of the machine used during a pass (the registry, the kernel, anything else running): more than a few seconds means the pass shared the 2 cores and its figures are suspect.",
        o.max_open_seconds, o.batch_records, o.max_open_seconds
    );
}

/// Produces every chunk with `send_all`, several chunks in flight.
async fn produce(producer: &Producer, chunks: Arc<Vec<Vec<OutboundRecord>>>) -> Result<()> {
    produce_chunks(producer, chunks, PRODUCE_IN_FLIGHT).await
}

/// High water mark of each partition of the topic.
fn high_watermarks(kafka: &KafkaConfig) -> Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = kafka.client_config().create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(TOPIC), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    ensure!(!partitions.is_empty(), "{TOPIC} has no partitions");
    partitions
        .into_iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(TOPIC, p, timeout)?;
            ensure!(low == 0, "partition {p} starts at offset {low}");
            Ok((p, high))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// In-process stages.

#[derive(Debug, Clone, Copy)]
struct StageRates {
    ours_decode: Rate,
    bare_decode: Rate,
    ours_total: Rate,
    bare_total: Rate,
}

fn parquet_properties() -> Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build())
}

/// Our decoder, fed `batch` payloads at a time as the archive does.
fn decode_ours(
    payloads: &[Vec<u8>],
    id: u32,
    schema: &str,
    batch: usize,
) -> Result<Vec<RecordBatch>> {
    let mut decoder = AvroBatchDecoder::new(None, batch);
    decoder.register(id, schema)?;
    let mut batches = Vec::new();
    for chunk in payloads.chunks(batch) {
        let out = decoder.decode(chunk.iter().map(Vec::as_slice));
        if let Some((index, error)) = out.errors.first() {
            bail!("payload {index} did not decode: {error}");
        }
        batches.extend(out.batches.into_iter().map(|d| d.batch));
    }
    Ok(batches)
}

/// Bare arrow-avro: one streaming decoder for the schema id, fed each framed payload.
fn decode_bare(
    payloads: &[Vec<u8>],
    id: u32,
    schema: &str,
    batch: usize,
) -> Result<Vec<RecordBatch>> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(id), AvroSchema::new(schema.to_owned()))?;
    let mut decoder = ReaderBuilder::new()
        .with_batch_size(batch)
        .with_writer_schema_store(store)
        .build_decoder()?;
    let mut batches = Vec::new();
    for payload in payloads {
        let mut rest = payload.as_slice();
        while !rest.is_empty() {
            let consumed = decoder.decode(rest)?;
            rest = &rest[consumed..];
            if decoder.batch_is_full() {
                batches.extend(decoder.flush()?);
            } else if consumed == 0 {
                bail!("arrow-avro consumed nothing of a payload");
            }
        }
    }
    batches.extend(decoder.flush()?);
    Ok(batches)
}

/// Writes the batches as one Parquet file into memory; returns its size.
fn write_parquet(batches: &[RecordBatch], properties: &WriterProperties) -> Result<usize> {
    let first = batches.first().context("nothing decoded")?;
    let mut writer = ArrowWriter::try_new(Vec::new(), first.schema(), Some(properties.clone()))?;
    for b in batches {
        writer.write(b)?;
    }
    Ok(writer.into_inner()?.len())
}

fn stage_rates(payloads: &[Vec<u8>], id: u32, schema: &str, batch: usize) -> Result<StageRates> {
    let properties = parquet_properties()?;
    let bytes = payloads.iter().map(Vec::len).sum::<usize>() as f64;
    let records = payloads.len() as f64;
    let rate = |seconds: f64| Rate {
        records,
        bytes,
        seconds,
    };
    // Same rows both ways.
    let (ours, bare) = (
        decode_ours(payloads, id, schema, batch)?,
        decode_bare(payloads, id, schema, batch)?,
    );
    ensure!(
        ours == bare,
        "our decoder and bare arrow-avro disagree on the records"
    );
    drop((ours, bare));
    // best[0], best[1]: decode alone, ours and bare; best[2], best[3]: decode + write.
    let mut best = [f64::MAX; 4];
    best[..2].fill(0.0);
    for segment in payloads.chunks(DECODE_SEGMENT) {
        let mut fastest = [f64::MAX; 2];
        for round in 0..DECODE_ROUNDS {
            for bare in [round % 2 == 1, round % 2 == 0] {
                let decode = if bare { decode_bare } else { decode_ours };
                let t = Instant::now();
                let batches = decode(segment, id, schema, batch)?;
                let slot = &mut fastest[usize::from(bare)];
                *slot = slot.min(t.elapsed().as_secs_f64());
                drop(batches);
            }
        }
        best[0] += fastest[0];
        best[1] += fastest[1];
    }
    for round in 0..WRITE_ROUNDS {
        for bare in [round % 2 == 1, round % 2 == 0] {
            let decode = if bare { decode_bare } else { decode_ours };
            let t = Instant::now();
            write_parquet(&decode(payloads, id, schema, batch)?, &properties)?;
            let slot = &mut best[2 + usize::from(bare)];
            *slot = slot.min(t.elapsed().as_secs_f64());
        }
    }
    Ok(StageRates {
        ours_decode: rate(best[0]),
        bare_decode: rate(best[1]),
        ours_total: rate(best[2]),
        bare_total: rate(best[3]),
    })
}

// ---------------------------------------------------------------------------------------------
// The bare consume loop.

#[derive(Debug, Clone, Copy)]
struct ConsumePass {
    rate: Rate,
    /// Seconds from subscribing to the last record.
    wall: f64,
    cpu_ticks: u64,
    broker_ticks: u64,
    /// CPU used meanwhile by processes other than this one and the broker.
    other_ticks: u64,
}

async fn bare_pass(broker: &Broker, broker_pid: u32, records: usize) -> Result<ConsumePass> {
    let kafka = broker.kafka();
    let before = Snapshot::take(broker_pid)?;
    let mut pass = tokio::task::spawn_blocking(move || bare_consume(&kafka, records)).await??;
    let after = Snapshot::take(broker_pid)?;
    pass.broker_ticks = after.broker - before.broker;
    pass.other_ticks = before.others_until(&after, 0);
    Ok(pass)
}

/// Reads `records` records of the topic with a fresh group, touching every payload byte.
fn bare_consume(kafka: &KafkaConfig, records: usize) -> Result<ConsumePass> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique("bench-bare"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let me = std::process::id();
    let cpu_before = cpu_ticks(me)?;
    let subscribed = Instant::now();
    consumer.subscribe(&[TOPIC])?;
    let mut first: Option<Instant> = None;
    let (mut read, mut bytes, mut sum) = (0usize, 0usize, 0u64);
    while read < records {
        ensure!(
            subscribed.elapsed() < PASS_TIMEOUT,
            "bare loop read only {read} of {records} records"
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        first.get_or_insert_with(Instant::now);
        let payload = message.payload().unwrap_or_default();
        bytes += payload.len();
        sum = payload
            .iter()
            .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        read += 1;
    }
    let done = Instant::now();
    let cpu = cpu_ticks(me)?.saturating_sub(cpu_before);
    drop(consumer);
    ensure!(sum > 0, "payloads were all zero");
    let first = first.unwrap_or(subscribed);
    // From the first record on; that record's share of the bytes is negligible.
    Ok(ConsumePass {
        rate: Rate {
            records: (read - 1).max(1) as f64,
            bytes: bytes as f64,
            seconds: (done - first).as_secs_f64(),
        },
        wall: (done - subscribed).as_secs_f64(),
        cpu_ticks: cpu,
        broker_ticks: 0,
        other_ticks: 0,
    })
}

/// A handler that only reads the payloads, and stops the loop after `records`.
struct Discard {
    records: usize,
    seen: usize,
    bytes: usize,
    /// When the first batch was handled, and its size.
    first: Option<(Instant, usize)>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl BatchHandler for Discard {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        _out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        self.first
            .get_or_insert_with(|| (Instant::now(), batch.len()));
        for record in batch {
            let payload = record.payload.as_deref().unwrap_or_default();
            self.bytes += payload.len();
            self.seen += 1;
        }
        if self.seen >= self.records {
            self.shutdown.cancel();
        }
        Ok(())
    }
}

/// The services' consumer loop (`run_consumer`, as the archive configures it) with a handler
/// that does nothing: what the loop itself costs beyond bare rdkafka.
async fn bus_loop_pass(broker: &Broker, broker_pid: u32, o: &Options) -> Result<ConsumePass> {
    let kafka = broker.kafka();
    let metrics = BusMetrics::register(&mut new_registry());
    let producer = Producer::new(&kafka, metrics.clone())?;
    let mut config =
        ConsumerLoopConfig::new(unique("bench-loop"), vec![TOPIC.to_string()], "bench");
    config.max_batch_records = o.batch_records;
    config.max_batch_wait = Duration::from_millis(200);
    config.tick_interval = Some(Duration::from_secs(1));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut handler = Discard {
        records: o.records,
        seen: 0,
        bytes: 0,
        first: None,
        shutdown: shutdown.clone(),
    };
    let before = Snapshot::take(broker_pid)?;
    let started = Instant::now();
    let run = run_consumer(&kafka, &config, &producer, &metrics, &mut handler, shutdown);
    tokio::time::timeout(PASS_TIMEOUT, run)
        .await
        .context("the consumer loop did not read everything in time")??;
    let done = Instant::now();
    let after = Snapshot::take(broker_pid)?;
    ensure!(
        handler.seen == o.records,
        "the consumer loop read {} records, expected {}",
        handler.seen,
        o.records
    );
    let (first, first_batch) = handler.first.unwrap_or((started, 0));
    let records = o.records - first_batch;
    Ok(ConsumePass {
        // From the first batch on, as for the archive; that batch is left out.
        rate: Rate {
            records: records as f64,
            bytes: (handler.bytes * records / o.records) as f64,
            seconds: (done - first).as_secs_f64(),
        },
        wall: (done - started).as_secs_f64(),
        cpu_ticks: after.me - before.me,
        broker_ticks: after.broker - before.broker,
        other_ticks: before.others_until(&after, 0),
    })
}

// ---------------------------------------------------------------------------------------------
// The archive.

#[derive(Debug, Clone)]
struct ArchiveRun {
    compression: String,
    rate: Rate,
    /// Seconds from starting the process to the last row in the lake.
    wall: f64,
    cpu_ticks: u64,
    broker_ticks: u64,
    other_ticks: u64,
    files: usize,
    lake_bytes: u64,
    largest_file_rows: u64,
    metrics: ArchiveMetrics,
}

async fn archive_run(
    broker: &Broker,
    broker_pid: u32,
    registry: &Registry,
    o: &Options,
    compression: &str,
    payload_bytes: usize,
    high: &BTreeMap<i32, i64>,
) -> Result<ArchiveRun> {
    let lake = tempfile::tempdir()?;
    let root = lake.path().join("lake");
    let keys = format!(
        "group_id = \"{}\"\nmax_file_records = 1000000\nmax_open_seconds = {}\ncompression = \"{compression}\"\nbatch_records = {}\n",
        unique("bench-archive"),
        o.max_open_seconds,
        o.batch_records
    );
    let lake_keys = format!("url = \"file://{}\"", root.display());
    let before = Snapshot::take(broker_pid)?;
    let started = Instant::now();
    let mut archive = Archive::start(broker, registry, &keys, &lake_keys, "")?;
    let pid = archive.pid().context("the archive has no process")?;
    let metrics = format!("{}/metrics", archive.admin_url()?);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut lake_files = LakeFiles::default();
    let mut first: Option<(Instant, u64)> = None;
    let mut last_metrics = ArchiveMetrics::default();
    let mut terminated = false;
    let done = loop {
        ensure!(
            started.elapsed() < PASS_TIMEOUT,
            "the archive ({compression}) wrote {} of {} rows in {PASS_TIMEOUT:?}\n{}",
            lake_files.rows(),
            o.records,
            archive.log()
        );
        let stat = process_stat(pid)?;
        ensure!(
            stat.state != 'Z' || terminated,
            "the archive exited before archiving everything:\n{}",
            archive.log()
        );
        if !terminated && let Ok(m) = archive_metrics(&client, &metrics).await {
            let consumed = m.consumed;
            last_metrics = m;
            if first.is_none() && consumed > 0 {
                first = Some((Instant::now(), consumed));
            }
            if consumed >= o.records as u64 {
                // Everything read: a clean stop writes the open files now.
                Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()?;
                terminated = true;
            }
        }
        lake_files.refresh(&root)?;
        if lake_files.rows() >= o.records as u64 {
            break Instant::now();
        }
        tokio::time::sleep(POLL).await;
    };
    let broker_ticks = broker_ticks(broker_pid)?.saturating_sub(before.broker);
    if !terminated {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
    }
    let cpu = ticks_at_exit(pid, Duration::from_secs(60))?;
    let other_ticks = before.others_until(&Snapshot::take(broker_pid)?, cpu);
    let clean = archive.stop()?;
    ensure!(
        clean,
        "the archive did not stop cleanly:\n{}",
        archive.log()
    );
    lake_files.check(high)?;
    let (first, consumed_then) = first.context("the archive's metrics never showed a record")?;
    let rows = o.records as f64 - consumed_then as f64;
    Ok(ArchiveRun {
        compression: compression.to_string(),
        rate: Rate {
            records: rows,
            bytes: payload_bytes as f64 * rows / o.records as f64,
            seconds: (done - first).as_secs_f64(),
        },
        wall: (done - started).as_secs_f64(),
        cpu_ticks: cpu,
        broker_ticks,
        other_ticks,
        files: lake_files.files.len(),
        lake_bytes: lake_files.files.values().map(|f| f.size).sum(),
        largest_file_rows: lake_files.files.values().map(|f| f.rows).max().unwrap_or(0),
        metrics: last_metrics,
    })
}

/// Counters of the archive's `/metrics`, as last read before it was stopped.
#[derive(Debug, Clone, Copy, Default)]
struct ArchiveMetrics {
    consumed: u64,
    early_flushes: u64,
    rebalances: u64,
}

async fn archive_metrics(client: &reqwest::Client, url: &str) -> Result<ArchiveMetrics> {
    let text = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    // Sums every series of a counter (records_consumed has one per topic).
    let counter = |name: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    Ok(ArchiveMetrics {
        consumed: counter("tributary_bus_records_consumed_total"),
        early_flushes: counter("tributary_archive_early_flushes_total"),
        rebalances: counter("tributary_bus_rebalances_total"),
    })
}

/// What a Parquet file of the lake holds, from its footer.
#[derive(Debug, Clone)]
struct LakeFile {
    rows: u64,
    size: u64,
    partition: i32,
    first: i64,
    last: i64,
}

/// The Parquet files found in the lake so far (each footer read once).
#[derive(Debug, Default)]
struct LakeFiles {
    files: HashMap<PathBuf, LakeFile>,
}

impl LakeFiles {
    fn rows(&self) -> u64 {
        self.files.values().map(|f| f.rows).sum()
    }

    /// Reads the footers of files that appeared since the last call. Files being written have
    /// another name until they are complete.
    fn refresh(&mut self, root: &Path) -> Result<()> {
        let mut folders = vec![root.to_path_buf()];
        while let Some(folder) = folders.pop() {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "parquet")
                    && !self.files.contains_key(&path)
                {
                    let file = read_footer(&path)?;
                    self.files.insert(path, file);
                }
            }
        }
        Ok(())
    }

    /// Every offset of every partition in exactly one file.
    fn check(&self, high: &BTreeMap<i32, i64>) -> Result<()> {
        let mut by_partition: BTreeMap<i32, Vec<&LakeFile>> = BTreeMap::new();
        for f in self.files.values() {
            ensure!(
                f.rows == u64::try_from(f.last - f.first + 1)?,
                "a file of partition {} holds {} rows for offsets {}..={}",
                f.partition,
                f.rows,
                f.first,
                f.last
            );
            by_partition.entry(f.partition).or_default().push(f);
        }
        for (&p, &end) in high {
            let mut files = by_partition.remove(&p).unwrap_or_default();
            files.sort_by_key(|f| f.first);
            let mut next = 0;
            for f in files {
                ensure!(
                    f.first == next,
                    "partition {p}: a file starts at offset {}, expected {next}",
                    f.first
                );
                next = f.last + 1;
            }
            ensure!(
                next == end,
                "partition {p}: the lake holds offsets up to {next}, the topic up to {end}"
            );
        }
        ensure!(
            by_partition.is_empty(),
            "files of unknown partitions {:?}",
            by_partition.keys()
        );
        Ok(())
    }
}

fn read_footer(path: &Path) -> Result<LakeFile> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .with_context(|| format!("read the footer of {}", path.display()))?;
    let meta = metadata.file_metadata();
    let value = |key: &str| -> Result<i64> {
        meta.key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == key))
            .and_then(|k| k.value.as_deref())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{} has no {key}", path.display()))
    };
    Ok(LakeFile {
        rows: u64::try_from(meta.num_rows())?,
        size,
        partition: i32::try_from(value("tributary.partition")?)?,
        first: value("tributary.offset.first")?,
        last: value("tributary.offset.last")?,
    })
}

// ---------------------------------------------------------------------------------------------
// The Python baseline.

#[derive(Debug, Clone)]
struct PythonRun {
    rate: Rate,
    wall: f64,
    cpu_ticks: u64,
    broker_ticks: u64,
    other_ticks: u64,
    self_reported_cpu_s: f64,
    files: u64,
    bytes: u64,
}

async fn python_run(broker: &Broker, registry: &Registry, records: usize) -> Result<PythonRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/archive_baseline.py");
    let out = tempfile::tempdir()?;
    let broker_pid = broker.pid().context("the broker has no process")?;
    let before = Snapshot::take(broker_pid)?;
    let started = Instant::now();
    let child = Command::new("python3")
        .arg(&script)
        .args(["--bootstrap", &broker.bootstrap()])
        .args(["--registry", &registry.url()])
        .args(["--registry-auth", &registry.user_info()])
        .args(["--topic", TOPIC])
        .args(["--records", &records.to_string()])
        .arg("--out")
        .arg(out.path().join("lake"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "run python3 archive_baseline.py (pip install -r integration-tests/requirements.txt)",
        )?;
    let pid = child.id();
    let cpu = tokio::task::spawn_blocking(move || ticks_at_exit(pid, PASS_TIMEOUT)).await??;
    let wall = started.elapsed().as_secs_f64();
    let after = Snapshot::take(broker_pid)?;
    let broker_ticks = after.broker - before.broker;
    let other_ticks = before.others_until(&after, cpu);
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "archive_baseline.py failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "archive_baseline.py printed no JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let number = |key: &str| -> Result<f64> {
        report[key]
            .as_f64()
            .with_context(|| format!("archive_baseline.py reported no {key}"))
    };
    ensure!(
        number("rows")? as usize == records && number("failed")? == 0.0,
        "archive_baseline.py wrote {} rows of {records} ({} failed)",
        number("rows")?,
        number("failed")?
    );
    Ok(PythonRun {
        rate: Rate {
            records: records as f64,
            bytes: 0.0,
            seconds: number("wall_seconds_from_first_record")?,
        },
        wall,
        cpu_ticks: cpu,
        broker_ticks,
        other_ticks,
        self_reported_cpu_s: number("cpu_user_seconds")? + number("cpu_system_seconds")?,
        files: number("files")? as u64,
        bytes: number("bytes")? as u64,
    })
}
