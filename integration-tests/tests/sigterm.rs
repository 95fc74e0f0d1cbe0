//! SIGTERM drains: a service stopped with SIGTERM mid-stream exits 0 after committing, every
//! record below its committed offsets was forwarded, and a restart forwards the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tributary_core::bus::{BusMetrics, OutboundRecord, Producer, TopicSpec, create_topics};
use tributary_integration_tests::{Broker, unique};

const RECORDS: usize = 20_000;
const PARTITIONS: i32 = 2;

fn start(broker: &Broker, input: &str, output: &str, group: &str, pause_ms: u32) -> Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_echo-service"))
        .env("BOOTSTRAP", broker.bootstrap())
        .env("INPUT", input)
        .env("OUTPUT", output)
        .env("GROUP", group)
        .env("PAUSE_MS", pause_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("start echo-service")
}

/// Source positions forwarded so far, read from the output topic's headers: reads until no
/// record came for `quiet_for`, or for at most `at_most` in all.
fn forwarded(
    consumer: &BaseConsumer,
    into: &mut BTreeSet<(i32, i64)>,
    quiet_for: Duration,
    at_most: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < quiet_for && started.elapsed() < at_most {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            let header = |name: &str| -> Option<i64> {
                m.headers()?
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
            };
            let (Some(p), Some(o)) = (header("src.partition"), header("src.offset")) else {
                bail!("output without source headers")
            };
            into.insert((i32::try_from(p)?, o));
            last = Instant::now();
        }
    }
    Ok(())
}

fn committed(broker: &Broker, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let probe: BaseConsumer = broker
        .kafka()
        .client_config()
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let c = probe.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..PARTITIONS)
        .map(|p| {
            let o = match c.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            (p, o)
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_and_commits() -> Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let (input, output, group) = (unique("t-in"), unique("t-out"), unique("g-echo"));
    let specs = [&input, &output].map(|n| TopicSpec {
        name: n.clone(),
        partitions: PARTITIONS,
        config: vec![],
    });
    create_topics(&kafka, &specs).await?;
    let producer = Producer::new(&kafka, BusMetrics::default())?;
    let records: Vec<OutboundRecord> = (0..RECORDS)
        .map(|i| {
            OutboundRecord::new(
                &input,
                Some(format!("k{}", i % 11).into_bytes()),
                vec![b'x'; 200],
            )
        })
        .collect();
    for chunk in records.chunks(5000) {
        producer.send_all(chunk).await?;
    }

    let reader: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique("g-read"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    reader.subscribe(&[&output])?;
    let mut seen = BTreeSet::new();

    // Stop the service with SIGTERM while it is forwarding: 100 batches of 200 with a 300 ms
    // pause after each take 30 s or more, room for a reader that is slow on a loaded machine
    // (with 100 ms, a CI run once saw the service finish before the reader had 3,000).
    let mut service = start(&broker, &input, &output, &group, 300)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < 3000 {
        if Instant::now() > deadline {
            bail!("the service forwarded only {} records", seen.len());
        }
        // Bounded, so the service is stopped while records still flow.
        forwarded(
            &reader,
            &mut seen,
            Duration::from_millis(300),
            Duration::from_millis(300),
        )?;
    }
    let status = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status()?;
    assert!(status.success());
    let stopped = Instant::now();
    let exit = loop {
        if let Some(exit) = service.try_wait()? {
            break exit;
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            let _ = service.kill();
            bail!("the service did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit}");

    // Everything below the committed offsets was forwarded (and acknowledged) before the exit.
    let after_term = committed(&broker, &group, &input)?;
    forwarded(
        &reader,
        &mut seen,
        Duration::from_secs(2),
        Duration::from_secs(600),
    )?;
    let total_committed: i64 = after_term.values().sum();
    assert!(
        total_committed > 0 && total_committed < RECORDS as i64,
        "stopped mid-stream: {after_term:?}"
    );
    for (&p, &upto) in &after_term {
        for o in 0..upto {
            assert!(
                seen.contains(&(p, o)),
                "partition {p} offset {o} committed but not forwarded"
            );
        }
    }
    println!(
        "SIGTERM after {} forwarded; committed {after_term:?}; exit {exit}",
        seen.len()
    );

    // A restart forwards the rest; at the end the group is at the high-water marks.
    let mut service = start(&broker, &input, &output, &group, 0)?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while seen.len() < RECORDS && Instant::now() < deadline {
        forwarded(
            &reader,
            &mut seen,
            Duration::from_millis(500),
            Duration::from_secs(600),
        )?;
    }
    Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status()?;
    let exit = service.wait()?;
    assert!(exit.success());
    assert_eq!(seen.len(), RECORDS, "every record forwarded at least once");
    let end = committed(&broker, &group, &input)?;
    for (&p, &o) in &end {
        let (_, high) = reader.fetch_watermarks(&input, p, Duration::from_secs(10))?;
        assert_eq!(o, high, "partition {p}");
    }
    Ok(())
}
