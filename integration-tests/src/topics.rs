//! Topics on a test broker: the repository's catalog and its topics, records read back (from
//! the start, or to the end as of the call), a group's committed positions and end offsets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::broker::Broker;
use crate::util::unique;

/// The repository's topic catalog.
pub fn repo_catalog() -> Result<tributary_core::schema::catalog::Catalog> {
    Ok(tributary_core::schema::catalog::Catalog::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"),
    )?)
}

/// Creates every topic of the repository's catalog (and the dead-letter topics) on `broker`,
/// as `tributary topics apply` does.
pub async fn create_catalog_topics(broker: &Broker) -> Result<()> {
    let specs = repo_catalog()?.topic_specs(1);
    tributary_core::bus::create_topics(&broker.kafka(), &specs).await?;
    Ok(())
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Value (empty for a tombstone).
    pub payload: Vec<u8>,
    /// Headers as text.
    pub headers: BTreeMap<String, String>,
    /// Kafka timestamp in milliseconds since the epoch (when the record was produced, unless
    /// the topic uses LogAppendTime).
    pub timestamp_ms: Option<i64>,
}

/// Reads every partition of `topic` from the start until `count` records arrived or `wait`
/// passed, whichever is first; returns what arrived.
pub fn read_all(
    broker: &Broker,
    topic: &str,
    count: usize,
    wait: Duration,
) -> Result<Vec<ReadRecord>> {
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = broker
        .kafka()
        .client_config()
        .set("group.id", unique("g-read"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)?;
        }
    }
    if tpl.count() == 0 {
        bail!("topic {topic} has no partitions");
    }
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
        out.push(ReadRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        });
    }
    Ok(out)
}

/// Reads every record of `topic` written before the call (up to each partition's high-water
/// mark then), waiting up to `wait` for them.
pub fn read_to_end(broker: &Broker, topic: &str, wait: Duration) -> Result<Vec<ReadRecord>> {
    let consumer: BaseConsumer = broker.kafka().client_config().create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0usize;
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            total += usize::try_from(high - low).unwrap_or(0);
        }
    }
    let records = read_all(broker, topic, total, wait)?;
    if records.len() < total {
        bail!(
            "{topic}: read {} of {total} records within {wait:?}",
            records.len()
        );
    }
    Ok(records)
}

/// The group's committed position per partition of `topic` (-1 for none), and the
/// partition's end offset.
pub fn committed_and_end(
    broker: &Broker,
    group: &str,
    topic: &str,
) -> Result<Vec<(i32, i64, i64)>> {
    let consumer: BaseConsumer = broker
        .kafka()
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    partitions
        .iter()
        .map(|p| {
            let position = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => -1,
            };
            let (_, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
            Ok((*p, position, high))
        })
        .collect()
}
