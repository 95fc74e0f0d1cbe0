//! Broker inspection for people and consoles: the cluster's brokers and topics, each partition's
//! watermarks, a consumer group's committed offsets and the lag they leave. Nothing joins a
//! group or consumes: committed offsets are read with an idle client of the group.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::follow::blocking;
use super::{BusError, KafkaConfig};

/// How long one broker request may take unless [`BrokerInspector::with_timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// How many brokers the metadata names (0 while a starting broker has not registered).
    pub brokers: usize,
    /// Every topic of the cluster, internal ones included, in the broker's order.
    pub topics: Vec<TopicInfo>,
}

impl ClusterInfo {
    /// The topic named `name`, when the cluster has it.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// A topic and the ids of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic.
    pub name: String,
    /// Its partitions' ids, in the broker's order.
    pub partitions: Vec<i32>,
}

/// A partition's first offset still held (`low`) and the offset one past its last record
/// (`high`, the high-water mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// The first offset the partition still holds.
    pub low: i64,
    /// One past the last record.
    pub high: i64,
}

impl Watermarks {
    /// Records the partition holds (never negative).
    pub fn records(self) -> i64 {
        (self.high - self.low).max(0)
    }

    /// Records a group has not consumed yet, given its committed offset (the next offset it
    /// reads; `None` when it never committed on the partition). A group reads from the first
    /// offset held when it never committed or when its commit was deleted by retention, and has
    /// nothing left when its commit is past the high-water mark (a truncated partition).
    pub fn lag(self, committed: Option<i64>) -> i64 {
        let position = committed.map_or(self.low, |offset| offset.max(self.low));
        (self.high - position).max(0)
    }
}

/// One partition's watermarks, as far as they could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The partition.
    pub partition: i32,
    /// Its watermarks; `None` when the broker did not answer for it.
    pub watermarks: Option<Watermarks>,
}

/// A topic's partitions and their watermarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOffsets {
    /// The topic.
    pub topic: String,
    /// Its partitions; `None` when the cluster has no such topic.
    pub partitions: Option<Vec<PartitionOffsets>>,
}

impl TopicOffsets {
    /// Records over the topic's partitions; `None` when the topic does not exist or a
    /// partition's watermarks are unknown.
    pub fn records(&self) -> Option<i64> {
        self.partitions
            .as_ref()?
            .iter()
            .map(|p| p.watermarks.map(Watermarks::records))
            .sum()
    }
}

/// A group's position on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The partition's watermarks.
    pub watermarks: Watermarks,
    /// The group's committed offset; `None` when it never committed on the partition.
    pub committed: Option<i64>,
}

impl PartitionLag {
    /// Records of the partition the group has not consumed yet ([`Watermarks::lag`]).
    pub fn lag(&self) -> i64 {
        self.watermarks.lag(self.committed)
    }
}

/// A group's lag over the partitions it was asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    /// The consumer group.
    pub group: String,
    /// Each partition whose watermarks were known.
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    /// Records not consumed yet over all the partitions.
    pub fn total(&self) -> i64 {
        self.partitions.iter().map(PartitionLag::lag).sum()
    }
}

/// Reads what a cluster holds and where consumer groups are in it: one client for metadata and
/// watermarks, and one idle client per group asked about (created on first use, kept), so that
/// sampling every second costs requests, not connections. librdkafka's calls block: each runs
/// on a blocking thread.
pub struct BrokerInspector {
    kafka: KafkaConfig,
    timeout: Duration,
    client: Arc<BaseConsumer>,
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl std::fmt::Debug for BrokerInspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerInspector")
            .field("bootstrap", &self.kafka.bootstrap_servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl BrokerInspector {
    /// An inspector of the cluster `kafka` names. Connects lazily: fails only when librdkafka
    /// refuses the settings.
    pub fn new(kafka: &KafkaConfig) -> Result<Self, BusError> {
        let client: BaseConsumer = kafka.client_config().create().map_err(BusError::Client)?;
        Ok(Self {
            kafka: kafka.clone(),
            timeout: DEFAULT_TIMEOUT,
            client: Arc::new(client),
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// How long each broker request may take (10 s unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The cluster's brokers and topics.
    pub async fn cluster(&self) -> Result<ClusterInfo, BusError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        blocking(move || {
            let metadata = client
                .fetch_metadata(None, timeout)
                .map_err(BusError::Client)?;
            Ok(ClusterInfo {
                brokers: metadata.brokers().len(),
                topics: metadata
                    .topics()
                    .iter()
                    .map(|t| TopicInfo {
                        name: t.name().to_string(),
                        partitions: t.partitions().iter().map(|p| p.id()).collect(),
                    })
                    .collect(),
            })
        })
        .await
    }

    /// One partition's watermarks.
    pub async fn watermarks(&self, topic: &str, partition: i32) -> Result<Watermarks, BusError> {
        let (client, timeout, topic) = (self.client.clone(), self.timeout, topic.to_string());
        blocking(move || {
            let (low, high) = client
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(BusError::Client)?;
            Ok(Watermarks { low, high })
        })
        .await
    }

    /// The partitions and watermarks of `topics`, one entry per topic in that order (a topic
    /// the cluster lacks has no partitions). Fails only when the metadata cannot be read; a
    /// partition the broker does not answer for has unknown watermarks.
    pub async fn topic_offsets(&self, topics: &[String]) -> Result<Vec<TopicOffsets>, BusError> {
        let cluster = self.cluster().await?;
        let (client, timeout, topics) = (self.client.clone(), self.timeout, topics.to_vec());
        blocking(move || {
            Ok(topics
                .into_iter()
                .map(|name| {
                    let partitions = cluster.topic(&name).map(|topic| {
                        topic
                            .partitions
                            .iter()
                            .map(|&partition| PartitionOffsets {
                                partition,
                                watermarks: client
                                    .fetch_watermarks(&name, partition, timeout)
                                    .ok()
                                    .map(|(low, high)| Watermarks { low, high }),
                            })
                            .collect()
                    });
                    TopicOffsets {
                        topic: name,
                        partitions,
                    }
                })
                .collect())
        })
        .await
    }

    /// The offsets `group` committed on `partitions` (topic, partition): each partition asked
    /// about, with `None` where the group never committed.
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<BTreeMap<(String, i32), Option<i64>>, BusError> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let client = self.group_client(group)?;
        let (timeout, partitions) = (self.timeout, partitions.to_vec());
        blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in &partitions {
                tpl.add_partition(topic, *partition);
            }
            let committed = client
                .committed_offsets(tpl, timeout)
                .map_err(BusError::Client)?;
            let mut out: BTreeMap<(String, i32), Option<i64>> =
                partitions.into_iter().map(|p| (p, None)).collect();
            for element in committed.elements() {
                if let Offset::Offset(offset) = element.offset() {
                    out.insert(
                        (element.topic().to_string(), element.partition()),
                        Some(offset),
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    /// `group`'s lag on every partition of `topics` whose watermarks are known. Without such a
    /// partition the lag is empty and the broker is not asked.
    pub async fn group_lag<'a>(
        &self,
        group: &str,
        topics: impl IntoIterator<Item = &'a TopicOffsets>,
    ) -> Result<GroupLag, BusError> {
        let known: Vec<((String, i32), Watermarks)> = topics
            .into_iter()
            .flat_map(|t| {
                t.partitions.iter().flatten().filter_map(|p| {
                    p.watermarks
                        .map(|marks| ((t.topic.clone(), p.partition), marks))
                })
            })
            .collect();
        let keys: Vec<(String, i32)> = known.iter().map(|(key, _)| key.clone()).collect();
        let committed = self.committed_offsets(group, &keys).await?;
        Ok(GroupLag {
            group: group.to_string(),
            partitions: known
                .into_iter()
                .map(|((topic, partition), watermarks)| PartitionLag {
                    committed: committed
                        .get(&(topic.clone(), partition))
                        .copied()
                        .flatten(),
                    topic,
                    partition,
                    watermarks,
                })
                .collect(),
        })
    }

    /// The idle client of `group`: librdkafka reads committed offsets through a client of the
    /// group. It never subscribes, so the group's members are not disturbed.
    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>, BusError> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = groups.get(group) {
            return Ok(client.clone());
        }
        let client: BaseConsumer = self
            .kafka
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(BusError::Client)?;
        let client = Arc::new(client);
        groups.insert(group.to_string(), client.clone());
        Ok(client)
    }
}

impl Drop for BrokerInspector {
    /// Destroying a librdkafka client blocks (a group's client closes its queue first): in a
    /// runtime, the clients are let go on a blocking thread.
    fn drop(&mut self) {
        let groups = std::mem::take(
            self.groups
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || drop((client, groups)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;
    use crate::bus::{BusMetrics, OutboundRecord, Producer};

    fn marks(low: i64, high: i64) -> Watermarks {
        Watermarks { low, high }
    }

    #[test]
    fn a_partition_without_a_commit_lags_by_everything_it_holds() {
        assert_eq!(marks(0, 10).lag(None), 10);
        assert_eq!(marks(4, 10).lag(None), 6, "from the first offset held");
        assert_eq!(marks(7, 7).lag(None), 0, "an emptied partition");
    }

    #[test]
    fn a_commit_lags_by_the_records_after_it() {
        assert_eq!(marks(0, 10).lag(Some(0)), 10);
        assert_eq!(marks(0, 10).lag(Some(3)), 7);
        assert_eq!(marks(0, 10).lag(Some(10)), 0, "caught up");
    }

    #[test]
    fn a_commit_deleted_by_retention_lags_from_the_first_offset_held() {
        assert_eq!(marks(50, 80).lag(Some(20)), 30);
    }

    #[test]
    fn a_commit_past_the_high_water_mark_after_truncation_lags_by_nothing() {
        assert_eq!(marks(0, 5).lag(Some(12)), 0);
        assert_eq!(marks(0, 0).lag(Some(3)), 0);
    }

    #[test]
    fn records_are_never_negative() {
        assert_eq!(marks(0, 10).records(), 10);
        assert_eq!(marks(10, 10).records(), 0);
        assert_eq!(marks(12, 10).records(), 0);
    }

    #[test]
    fn a_topic_counts_only_when_every_partition_is_known() {
        let topic = |partitions: Option<Vec<Option<Watermarks>>>| TopicOffsets {
            topic: "t".into(),
            partitions: partitions.map(|ps| {
                ps.into_iter()
                    .zip(0..)
                    .map(|(watermarks, partition)| PartitionOffsets {
                        partition,
                        watermarks,
                    })
                    .collect()
            }),
        };
        assert_eq!(
            topic(Some(vec![Some(marks(0, 3)), Some(marks(2, 5))])).records(),
            Some(6)
        );
        assert_eq!(topic(Some(vec![])).records(), Some(0));
        assert_eq!(
            topic(Some(vec![Some(marks(0, 3)), None])).records(),
            None,
            "a partition did not answer"
        );
        assert_eq!(topic(None).records(), None, "no such topic");
    }

    #[test]
    fn a_group_lag_sums_its_partitions() {
        let lag = GroupLag {
            group: "g".into(),
            partitions: vec![
                PartitionLag {
                    topic: "a".into(),
                    partition: 0,
                    watermarks: marks(0, 10),
                    committed: Some(4),
                },
                PartitionLag {
                    topic: "a".into(),
                    partition: 1,
                    watermarks: marks(2, 5),
                    committed: None,
                },
                PartitionLag {
                    topic: "b".into(),
                    partition: 0,
                    watermarks: marks(0, 5),
                    committed: Some(9),
                },
            ],
        };
        assert_eq!(lag.total(), 6 + 3);
        assert_eq!(
            GroupLag {
                group: "g".into(),
                partitions: vec![]
            }
            .total(),
            0
        );
    }

    /// Against librdkafka's mock cluster: topics, watermarks, a group's commits and its lag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mock_cluster_is_inspected() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("orders", 2, 1).unwrap();
        cluster.create_topic("empty", 1, 1).unwrap();
        let kafka = KafkaConfig::new(cluster.bootstrap_servers());
        let producer = Producer::new(&kafka, BusMetrics::default()).unwrap();
        let records: Vec<OutboundRecord> = (0..5)
            .map(|i| {
                let mut r = OutboundRecord::new("orders", None, format!("r{i}").into_bytes());
                r.partition = Some(if i < 3 { 0 } else { 1 });
                r
            })
            .collect();
        producer.send_all(&records).await.unwrap();

        let inspector = BrokerInspector::new(&kafka)
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        let info = inspector.cluster().await.unwrap();
        assert_eq!(info.brokers, 1);
        let mut partitions = info.topic("orders").unwrap().partitions.clone();
        partitions.sort_unstable();
        assert_eq!(partitions, vec![0, 1]);
        assert!(info.topic("missing").is_none());
        assert_eq!(
            inspector.watermarks("orders", 0).await.unwrap(),
            marks(0, 3)
        );

        let names = ["orders", "missing", "empty"].map(String::from);
        let offsets = inspector.topic_offsets(&names).await.unwrap();
        let topics: Vec<&str> = offsets.iter().map(|t| t.topic.as_str()).collect();
        assert_eq!(topics, ["orders", "missing", "empty"], "in the order asked");
        assert_eq!(offsets[0].records(), Some(5));
        assert_eq!(offsets[1].partitions, None);
        assert_eq!(offsets[2].records(), Some(0));

        // Nothing committed yet: the group lags by everything.
        let lag = inspector.group_lag("readers", &offsets[..1]).await.unwrap();
        assert_eq!(lag.total(), 5);
        assert!(lag.partitions.iter().all(|p| p.committed.is_none()));

        // The group commits 2 on partition 0 (one record left) and nothing on partition 1.
        let member: BaseConsumer = kafka
            .client_config()
            .set("group.id", "readers")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("orders", 0, Offset::Offset(2))
            .unwrap();
        tokio::task::spawn_blocking(move || member.commit(&tpl, CommitMode::Sync))
            .await
            .unwrap()
            .unwrap();

        let asked = [("orders".to_string(), 0), ("orders".to_string(), 1)];
        let committed = inspector
            .committed_offsets("readers", &asked)
            .await
            .unwrap();
        assert_eq!(committed.get(&asked[0]), Some(&Some(2)));
        assert_eq!(committed.get(&asked[1]), Some(&None));
        let lag = inspector.group_lag("readers", &offsets).await.unwrap();
        assert_eq!(lag.total(), 1 + 2);
        let other = inspector.group_lag("others", &offsets).await.unwrap();
        assert_eq!(other.total(), 5, "another group's commits are its own");

        // No known partition: no request, no lag.
        let none = inspector
            .group_lag("readers", &offsets[1..2])
            .await
            .unwrap();
        assert!(none.partitions.is_empty());
        assert_eq!(none.total(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_broker_is_an_error() {
        // Port 9 (discard): nothing answers there.
        let inspector = BrokerInspector::new(&KafkaConfig::new("127.0.0.1:9"))
            .unwrap()
            .with_timeout(Duration::from_millis(500));
        assert!(matches!(
            inspector.cluster().await,
            Err(BusError::Client(_))
        ));
        assert!(
            inspector
                .topic_offsets(&["orders".to_string()])
                .await
                .is_err()
        );
    }
}
