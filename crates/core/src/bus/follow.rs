use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::owned;
use super::{BusError, InboundRecord, KafkaConfig};

/// Reads every partition of a topic from the beginning, without a consumer group, and keeps
/// following it: the way to rebuild state kept in a compacted topic (registry contents, tables,
/// changelogs) and stay up to date with what other replicas write.
#[derive(Clone)]
pub struct TopicFollower {
    consumer: Arc<StreamConsumer>,
    topic: String,
    partitions: Vec<i32>,
}

impl std::fmt::Debug for TopicFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicFollower")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl TopicFollower {
    /// Starts following `topic` from its first offset. The topic must exist.
    pub async fn start(kafka: &KafkaConfig, topic: &str) -> Result<Self, BusError> {
        let consumer: StreamConsumer = kafka
            .client_config()
            // librdkafka wants a group id even for manual assignment; nothing is committed.
            .set("group.id", format!("{}-follower", kafka.client_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // Followers serve reads that wait for them: answer fetches as soon as data is there.
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(BusError::Client)?;
        let consumer = Arc::new(consumer);
        let topic_owned = topic.to_string();
        let c = consumer.clone();
        let partitions = blocking(move || {
            let metadata = c
                .fetch_metadata(Some(&topic_owned), Duration::from_secs(10))
                .map_err(BusError::Client)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic_owned && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(BusError::Admin {
                    topic: topic_owned,
                    message: "topic does not exist".into(),
                });
            }
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition_offset(&topic_owned, *p, Offset::Beginning)
                    .map_err(BusError::Client)?;
            }
            c.assign(&tpl).map_err(BusError::Client)?;
            Ok(partitions)
        })
        .await?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            partitions,
        })
    }

    /// The next record, waiting for one to arrive.
    pub async fn next(&self) -> Result<InboundRecord, BusError> {
        let message = self.consumer.recv().await.map_err(BusError::Consume)?;
        Ok(owned(&message))
    }

    /// The offset one past the last record of each partition now (the high-water marks): once
    /// every record below these was read, the follower has caught up with everything written
    /// before this call.
    pub async fn end_offsets(&self) -> Result<BTreeMap<i32, i64>, BusError> {
        let (c, topic, partitions) = (
            self.consumer.clone(),
            self.topic.clone(),
            self.partitions.clone(),
        );
        blocking(move || {
            partitions
                .iter()
                .map(|&p| {
                    let (_low, high) = c
                        .fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .map_err(BusError::Client)?;
                    Ok((p, high))
                })
                .collect()
        })
        .await
    }

    /// The topic followed.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Runs a blocking librdkafka call on tokio's blocking threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BusError> + Send + 'static,
) -> Result<T, BusError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BusError::Admin {
            topic: String::new(),
            message: format!("blocking task failed: {e}"),
        })?
}

/// Reads one partition of `topic` from its first offset up to its high-water mark at the time
/// of the call (everything written before it), without a consumer group: how a replica restores
/// the state it keeps in a changelog partition.
pub async fn read_partition(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
) -> Result<Vec<InboundRecord>, BusError> {
    read_partition_tail(kafka, topic, partition, None).await
}

/// [`read_partition`], or with `last` only the partition's last `last` records (fewer when it
/// holds fewer).
pub async fn read_partition_tail(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    last: Option<i64>,
) -> Result<Vec<InboundRecord>, BusError> {
    let consumer: rdkafka::consumer::BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("{}-restore", kafka.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(BusError::Client)?;
    let topic = topic.to_string();
    blocking(move || {
        let (low, high) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .map_err(BusError::Client)?;
        let mut out = Vec::new();
        if high <= low {
            return Ok(out);
        }
        let start = match last {
            Some(n) => Offset::Offset(low.max(high - n.max(1))),
            None => Offset::Beginning,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, start)
            .map_err(BusError::Client)?;
        consumer.assign(&tpl).map_err(BusError::Client)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            if std::time::Instant::now() > deadline {
                return Err(BusError::Admin {
                    topic: topic.clone(),
                    message: format!("partition {partition}: not read to {high} within 300 s"),
                });
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    let record = owned(&message);
                    let done = record.offset + 1 >= high;
                    out.push(record);
                    if done {
                        return Ok(out);
                    }
                }
                Some(Err(e)) => return Err(BusError::Consume(e)),
                None => {}
            }
        }
    })
    .await
}
