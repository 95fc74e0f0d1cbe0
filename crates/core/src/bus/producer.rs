use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use super::metrics::BusMetrics;
use super::{BusError, KafkaConfig};

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRecord {
    /// Destination topic.
    pub topic: String,
    /// Message key (decides the partition unless `partition` is set).
    pub key: Option<Vec<u8>>,
    /// Message value; `None` is a tombstone (deletes the key from a compacted topic).
    pub payload: Option<Vec<u8>>,
    /// Message headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Explicit partition, or `None` to partition by key.
    pub partition: Option<i32>,
}

impl OutboundRecord {
    /// A record with a key and value and nothing else.
    pub fn new(topic: impl Into<String>, key: Option<Vec<u8>>, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.into(),
            key,
            payload: Some(payload),
            headers: Vec::new(),
            partition: None,
        }
    }

    /// A tombstone: deletes `key` from a compacted topic.
    pub fn tombstone(topic: impl Into<String>, key: Vec<u8>) -> Self {
        Self {
            topic: topic.into(),
            key: Some(key),
            payload: None,
            headers: Vec::new(),
            partition: None,
        }
    }
}

/// Where the broker stored an acknowledged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// The idempotent producer (acks=all, `enable.idempotence=true`): a record counts as written
/// only once every in-sync replica has it, and retries never duplicate it.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    metrics: BusMetrics,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// A record handed to librdkafka whose acknowledgement is still to come.
pub(crate) struct Pending {
    topic: String,
    future: DeliveryFuture,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Creates the producer.
    pub fn new(config: &KafkaConfig, metrics: BusMetrics) -> Result<Self, BusError> {
        let inner: FutureProducer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger_ms.to_string())
            .set("compression.type", &config.compression)
            .set(
                "delivery.timeout.ms",
                config.delivery_timeout_ms.to_string(),
            )
            .create()
            .map_err(BusError::Client)?;
        Ok(Self {
            inner,
            metrics,
            delivery_timeout: Duration::from_millis(config.delivery_timeout_ms.into()),
        })
    }

    /// Hands a record to the producer without waiting for the acknowledgement.
    /// Fails with [`BusError::QueueFull`] at once when the local queue is full (back-pressure).
    pub(crate) fn enqueue(&self, record: &OutboundRecord) -> Result<Pending, BusError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic).headers(headers);
        if let Some(payload) = &record.payload {
            fr = fr.payload(payload.as_slice());
        }
        if let Some(key) = &record.key {
            fr = fr.key(key.as_slice());
        }
        if let Some(partition) = record.partition {
            fr = fr.partition(partition);
        }
        match self.inner.send_result(fr) {
            Ok(future) => Ok(Pending {
                topic: record.topic.clone(),
                future,
            }),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(BusError::QueueFull)
            }
            Err((source, _)) => Err(BusError::Delivery {
                topic: record.topic.clone(),
                source,
            }),
        }
    }

    /// Like [`Producer::enqueue`], but waits (up to the delivery timeout) while the queue is full.
    pub(crate) async fn enqueue_waiting(
        &self,
        record: &OutboundRecord,
    ) -> Result<Pending, BusError> {
        let deadline = tokio::time::Instant::now() + self.delivery_timeout;
        loop {
            match self.enqueue(record) {
                Err(BusError::QueueFull) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// Waits for the acknowledgement of every pending record; the first failure is returned
    /// after all have settled.
    pub(crate) async fn settle(&self, pending: Vec<Pending>) -> Result<Vec<Delivered>, BusError> {
        let topics: Vec<String> = pending.iter().map(|p| p.topic.clone()).collect();
        let results = join_all(pending.into_iter().map(|p| p.future)).await;
        let mut delivered = Vec::with_capacity(results.len());
        let mut first_error = None;
        let mut counts: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for (topic, result) in topics.iter().zip(results) {
            let entry = counts.entry(topic).or_default();
            match result {
                Ok(Ok(d)) => {
                    entry.0 += 1;
                    delivered.push(Delivered {
                        partition: d.partition,
                        offset: d.offset,
                    });
                }
                Ok(Err((source, _))) => {
                    entry.1 += 1;
                    first_error.get_or_insert(BusError::Delivery {
                        topic: topic.clone(),
                        source,
                    });
                }
                Err(_canceled) => {
                    entry.1 += 1;
                    first_error.get_or_insert(BusError::Delivery {
                        topic: topic.clone(),
                        source: KafkaError::Canceled,
                    });
                }
            }
        }
        for (topic, (ok, failed)) in counts {
            BusMetrics::add(&self.metrics.produced, topic, ok);
            if failed > 0 {
                BusMetrics::add(&self.metrics.delivery_failures, topic, failed);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }

    /// Produces records and returns once the broker acknowledged all of them, in input order.
    /// Fails with [`BusError::QueueFull`] without waiting when the local queue is full; records
    /// enqueued before that are still awaited, so nothing is left in flight unreported.
    pub async fn send_all(&self, records: &[OutboundRecord]) -> Result<Vec<Delivered>, BusError> {
        let mut pending = Vec::with_capacity(records.len());
        let mut enqueue_error = None;
        for record in records {
            match self.enqueue(record) {
                Ok(p) => pending.push(p),
                Err(e) => {
                    enqueue_error = Some(e);
                    break;
                }
            }
        }
        let settled = self.settle(pending).await;
        match enqueue_error {
            Some(e) => Err(e),
            None => settled,
        }
    }

    /// Produces one record and waits for its acknowledgement.
    pub async fn send(&self, record: &OutboundRecord) -> Result<Delivered, BusError> {
        let pending = self.enqueue_waiting(record).await?;
        let mut delivered = self.settle(vec![pending]).await?;
        delivered.pop().ok_or(BusError::Delivery {
            topic: record.topic.clone(),
            source: KafkaError::Canceled,
        })
    }

    /// Waits until every record handed to the producer was acknowledged or failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.inner.flush(timeout).map_err(BusError::Client)
    }
}
