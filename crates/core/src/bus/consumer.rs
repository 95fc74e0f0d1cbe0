//! The at-least-once consumer loop: batches to the handler, offsets stored once the handler's
//! outputs are acknowledged, the handler's errors acted on by class.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::handler::{BatchHandler, ErrorClass, HandlerError, InboundRecord, Output};
use super::metrics::BusMetrics;
use super::{BusError, KafkaConfig, Producer};

/// Settings of one consumer loop.
#[derive(Debug, Clone)]
pub struct ConsumerLoopConfig {
    /// Consumer group.
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Stage name for dead letters (`dlq.<stage>`) and logs.
    pub stage: String,
    /// Largest batch handed to the handler.
    pub max_batch_records: usize,
    /// Longest time to wait for a batch to fill.
    pub max_batch_wait: Duration,
    /// Where a new group starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// How often [`BatchHandler::tick`] runs while no record arrives; `None`: never.
    pub tick_interval: Option<Duration>,
    /// The first wait before a batch is handed again after [`ErrorClass::Retry`]; doubled at
    /// each retry up to [`ConsumerLoopConfig::retry_backoff_max`].
    pub retry_backoff: Duration,
    /// The longest wait between two retries of a batch.
    pub retry_backoff_max: Duration,
    /// How long one batch may be retried before the loop stops with the handler's error;
    /// `None`: until it succeeds or the service stops.
    pub retry_for: Option<Duration>,
}

impl ConsumerLoopConfig {
    /// Defaults: batches of up to 1,000 records or 100 ms, new groups start at the earliest
    /// offset, a batch whose handler meets an outage is retried every 200 ms to 30 s until it
    /// succeeds.
    pub fn new(group_id: impl Into<String>, topics: Vec<String>, stage: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            stage: stage.into(),
            max_batch_records: 1000,
            max_batch_wait: Duration::from_millis(100),
            auto_offset_reset: "earliest".to_string(),
            tick_interval: None,
            retry_backoff: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(30),
            retry_for: None,
        }
    }
}

/// What a consumer loop did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Batches handled.
    pub batches: u64,
    /// Records handled.
    pub records: u64,
}

struct LoopContext {
    revoked: Mutex<Vec<(String, i32)>>,
    metrics: BusMetrics,
}

impl ClientContext for LoopContext {}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.metrics.rebalances.inc();
            // The loop handles a batch to the end before it polls again, so every offset stored
            // so far belongs to finished work: commit it before the partitions move.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => warn!(%error, "commit on revocation failed"),
            }
            let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
            for e in tpl.elements() {
                revoked.push((e.topic().to_string(), e.partition()));
            }
            info!(partitions = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

/// Runs the at-least-once consumer loop until `shutdown` is cancelled or an error stops it.
///
/// Records are handed to `handler` in batches. Offsets of a batch are stored only after the
/// handler returned `Ok` and the broker acknowledged everything it produced; librdkafka commits
/// stored offsets every second, on revocation, and once more when the loop stops. On shutdown
/// the batch in hand is finished, its offsets stored and committed, then the loop returns.
pub async fn run_consumer<H: BatchHandler>(
    kafka: &KafkaConfig,
    config: &ConsumerLoopConfig,
    producer: &Producer,
    metrics: &BusMetrics,
    handler: &mut H,
    shutdown: CancellationToken,
) -> Result<LoopStats, BusError> {
    let context = LoopContext {
        revoked: Mutex::new(Vec::new()),
        metrics: metrics.clone(),
    };
    let consumer: StreamConsumer<LoopContext> = kafka
        .client_config()
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &config.auto_offset_reset)
        .set("enable.partition.eof", "false")
        .create_with_context(context)
        .map_err(BusError::Client)?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(BusError::Client)?;
    info!(group = %config.group_id, topics = ?config.topics, stage = %config.stage, "consumer started");

    let mut stats = LoopStats::default();
    let result = consume_batches(
        &consumer, config, producer, metrics, handler, &shutdown, &mut stats,
    )
    .await;

    // Whatever happened, commit what was stored: it belongs to finished batches only.
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            warn!(%error, "final commit failed");
            if result.is_ok() {
                return Err(BusError::Commit(error));
            }
        }
    }
    consumer.unsubscribe();
    info!(
        batches = stats.batches,
        records = stats.records,
        "consumer stopped"
    );
    result.map(|()| stats)
}

async fn consume_batches<H: BatchHandler>(
    consumer: &StreamConsumer<LoopContext>,
    config: &ConsumerLoopConfig,
    producer: &Producer,
    metrics: &BusMetrics,
    handler: &mut H,
    shutdown: &CancellationToken,
    stats: &mut LoopStats,
) -> Result<(), BusError> {
    let mut batch: Vec<InboundRecord> = Vec::with_capacity(config.max_batch_records);
    while !shutdown.is_cancelled() {
        batch.clear();
        // Wait for the first record, for shutdown, or for the handler's tick.
        let tick = async {
            match config.tick_interval {
                Some(interval) => tokio::time::sleep(interval).await,
                None => std::future::pending().await,
            }
        };
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            received = consumer.recv() => match received {
                Ok(message) => message,
                Err(error) if survivable(&error) => {
                    warn_survived(&error);
                    apply_revocations(consumer, handler, &mut batch);
                    continue;
                }
                Err(error) => return Err(BusError::Consume(error)),
            },
            () = tick => {
                // A rebalance handled inside the last poll: the handler must not write or
                // store positions for partitions it no longer owns.
                apply_revocations(consumer, handler, &mut batch);
                let mut out = Output::new(producer, &config.stage);
                let ticked = handler.tick(&mut out).await;
                out.settle(producer, metrics).await?;
                if let Err(error) = ticked {
                    metrics.handler_errors.inc();
                    // An outage met by time-driven work: the next tick tries again.
                    if error.class() != ErrorClass::Retry {
                        return Err(BusError::Handler(error));
                    }
                    warn!(%error, "tick failed; the next one tries again");
                    continue;
                }
                if let Some(positions) = handler.commit_positions() {
                    store_positions(consumer, &positions)?;
                }
                continue;
            }
        };
        apply_revocations(consumer, handler, &mut batch);
        batch.push(owned(&received));
        // Fill the batch until it is full or the wait is over.
        let deadline = tokio::time::Instant::now() + config.max_batch_wait;
        while batch.len() < config.max_batch_records {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(received)) => {
                    apply_revocations(consumer, handler, &mut batch);
                    batch.push(owned(&received));
                }
                Ok(Err(error)) if survivable(&error) => {
                    // Handle what is left of the batch (records of revoked partitions dropped).
                    warn_survived(&error);
                    break;
                }
                Ok(Err(error)) => return Err(BusError::Consume(error)),
                Err(_elapsed) => break,
            }
        }
        apply_revocations(consumer, handler, &mut batch);
        if batch.is_empty() {
            continue;
        }

        metrics.batches.inc();
        if handle_batch(&batch, config, producer, metrics, handler, shutdown).await?
            == Handled::Interrupted
        {
            // Stopped while waiting to retry: nothing of the batch is stored.
            break;
        }
        match handler.commit_positions() {
            None => store_offsets(consumer, &batch)?,
            Some(positions) => store_positions(consumer, &positions)?,
        }
        count_consumed(metrics, &batch);
        stats.batches += 1;
        stats.records += batch.len() as u64;
    }
    apply_revocations(consumer, handler, &mut batch);
    // A clean stop: let the handler finish what it holds, then store where that leaves us.
    let mut out = Output::new(producer, &config.stage);
    handler.finish(&mut out).await.map_err(BusError::Handler)?;
    out.settle(producer, metrics).await?;
    if let Some(positions) = handler.commit_positions() {
        store_positions(consumer, &positions)?;
    }
    Ok(())
}

/// How [`handle_batch`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Every record was processed or dead-lettered, and everything sent was acknowledged.
    Done,
    /// The service stopped while the batch waited to be retried.
    Interrupted,
}

/// Hands a batch to the handler until it is handled, acting on each error by its class:
/// [`ErrorClass::Retry`] hands the same batch again after a backoff, [`ErrorClass::DeadLetter`]
/// sends the record named to the dead-letter topic and hands the rest again,
/// [`ErrorClass::Stop`] returns the error. Before a batch is handed again, what the failed
/// attempt sent is acknowledged, so that nothing it produced is lost.
async fn handle_batch<H: BatchHandler>(
    batch: &[InboundRecord],
    config: &ConsumerLoopConfig,
    producer: &Producer,
    metrics: &BusMetrics,
    handler: &mut H,
    shutdown: &CancellationToken,
) -> Result<Handled, BusError> {
    let mut records: Cow<'_, [InboundRecord]> = Cow::Borrowed(batch);
    let mut retries = RetrySchedule::new(config, Instant::now());
    loop {
        let mut out = Output::new(producer, &config.stage);
        let error = match handler.handle(&records, &mut out).await {
            Ok(()) => {
                out.settle(producer, metrics).await?;
                return Ok(Handled::Done);
            }
            Err(error) => error,
        };
        metrics.handler_errors.inc();
        match error {
            HandlerError::Poison {
                index,
                class,
                message,
            } if index < records.len() => {
                out.dead_letter(&records[index], &class, &message).await?;
                out.settle(producer, metrics).await?;
                warn!(
                    topic = %records[index].topic,
                    partition = records[index].partition,
                    offset = records[index].offset,
                    %class,
                    %message,
                    "record dead-lettered by the loop; the rest of the batch is handed again"
                );
                let mut rest = records.into_owned();
                rest.remove(index);
                if rest.is_empty() {
                    return Ok(Handled::Done);
                }
                records = Cow::Owned(rest);
            }
            error if error.class() == ErrorClass::Retry => {
                out.settle(producer, metrics).await?;
                let Some(wait) = retries.next_wait(Instant::now()) else {
                    warn!(%error, retry_for = ?config.retry_for, "batch still failing; giving up");
                    return Err(BusError::Handler(error));
                };
                warn!(%error, ?wait, "batch failed for an outage; handing it again");
                metrics.handler_retries.inc();
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(Handled::Interrupted),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            // A poison record outside the batch is a bug of the handler: stop like any other.
            error => {
                // Outputs already handed to the producer may still land: duplicates, never loss.
                return Err(BusError::Handler(error));
            }
        }
    }
}

/// When a batch that failed for an outage is handed again: backoff doubling from
/// [`ConsumerLoopConfig::retry_backoff`] to [`ConsumerLoopConfig::retry_backoff_max`], for at
/// most [`ConsumerLoopConfig::retry_for`] since the first failure.
#[derive(Debug)]
pub(super) struct RetrySchedule {
    next: Duration,
    max: Duration,
    give_up_at: Option<Instant>,
}

impl RetrySchedule {
    pub(super) fn new(config: &ConsumerLoopConfig, now: Instant) -> Self {
        Self {
            next: config.retry_backoff,
            max: config.retry_backoff_max.max(config.retry_backoff),
            give_up_at: config.retry_for.map(|d| now + d),
        }
    }

    /// The wait before the next attempt, or `None` when retrying is over.
    pub(super) fn next_wait(&mut self, now: Instant) -> Option<Duration> {
        if self.give_up_at.is_some_and(|at| now >= at) {
            return None;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(wait)
    }
}

/// Stores explicit positions (next offsets to read) given by the handler.
fn store_positions(
    consumer: &StreamConsumer<LoopContext>,
    positions: &[(String, i32, i64)],
) -> Result<(), BusError> {
    for (topic, partition, last) in last_handled(positions) {
        store_one(consumer, topic, partition, last)?;
    }
    Ok(())
}

/// The last offset handled per partition, from positions (next offsets to read):
/// `rd_kafka_offset_store` stores `offset + 1` itself, and there is nothing to store for a
/// partition before its first record (position 0).
fn last_handled(positions: &[(String, i32, i64)]) -> Vec<(&str, i32, i64)> {
    positions
        .iter()
        .filter(|(_, _, next)| *next > 0)
        .map(|(topic, partition, next)| (topic.as_str(), *partition, next - 1))
        .collect()
}

/// Tells the handler about partitions revoked during the last poll, and drops the records of
/// those partitions received before the revocation: their offsets were not stored, so their
/// next owner (possibly this consumer again) reads them from the committed offset.
/// Whether a receive error is one librdkafka recovers from by itself, so the loop goes on:
///
/// - `PollExceeded`: the process was paused (a GC-like stall, SIGSTOP, a frozen VM) for longer
///   than `max.poll.interval.ms`, so librdkafka left the group and revoked every partition; the
///   next poll joins again;
/// - `BrokerTransportFailure`, `AllBrokersDown`: a broker restarts or the network drops;
///   librdkafka reconnects with backoff, rejoins the group and fetches from the committed
///   positions (partitions revoked meanwhile are dropped by the handler).
///
/// Stopping the service on them would turn a pause or a broker restart into an outage of the
/// stage. Fatal errors (`MessageConsumptionFatal`) and everything else still stop it.
fn survivable(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::PollExceeded
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
        )
    )
}

fn warn_survived(error: &KafkaError) {
    if matches!(
        error,
        KafkaError::MessageConsumption(RDKafkaErrorCode::PollExceeded)
    ) {
        warn!(
            %error,
            "the consumer was not polled within max.poll.interval.ms and left its group; its \
             partitions are revoked and it joins again"
        );
    } else {
        warn!(%error, "the broker connection failed; librdkafka reconnects and the loop goes on");
    }
}

fn apply_revocations<H: BatchHandler>(
    consumer: &StreamConsumer<LoopContext>,
    handler: &mut H,
    batch: &mut Vec<InboundRecord>,
) {
    let revoked = std::mem::take(
        &mut *consumer
            .context()
            .revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    if revoked.is_empty() {
        return;
    }
    drop_revoked(batch, &revoked);
    handler.partitions_revoked(&revoked);
}

/// Drops the records of revoked partitions from a batch being filled.
fn drop_revoked(batch: &mut Vec<InboundRecord>, revoked: &[(String, i32)]) {
    batch.retain(|r| {
        !revoked
            .iter()
            .any(|(t, p)| *t == r.topic && *p == r.partition)
    });
}

fn store_offsets(
    consumer: &StreamConsumer<LoopContext>,
    batch: &[InboundRecord],
) -> Result<(), BusError> {
    for ((topic, partition), offset) in last_offsets(batch) {
        store_one(consumer, topic, partition, offset)?;
    }
    Ok(())
}

/// The last offset of each partition in a batch. `rd_kafka_offset_store` stores `offset + 1`
/// itself (the next offset to read, which is what Kafka commits), so it is given the last one.
fn last_offsets(batch: &[InboundRecord]) -> BTreeMap<(&str, i32), i64> {
    let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for r in batch {
        let e = last.entry((&r.topic, r.partition)).or_insert(r.offset);
        *e = (*e).max(r.offset);
    }
    last
}

/// Stores `offset + 1` as the partition's position to commit.
fn store_one(
    consumer: &StreamConsumer<LoopContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), BusError> {
    match consumer.store_offset(topic, partition, offset) {
        Ok(()) => Ok(()),
        // The partition was revoked while the batch was handled: its new owner reads it
        // again from the last commit (at-least-once).
        Err(KafkaError::StoreOffset(
            RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition,
        )) => {
            debug!(
                topic,
                partition, offset, "offset not stored: partition no longer assigned"
            );
            Ok(())
        }
        Err(e) => Err(BusError::Commit(e)),
    }
}

fn count_consumed(metrics: &BusMetrics, batch: &[InboundRecord]) {
    let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
    for r in batch {
        *per_topic.entry(&r.topic).or_default() += 1;
    }
    for (topic, n) in per_topic {
        BusMetrics::add(&metrics.consumed, topic, n);
    }
}

pub(crate) fn owned<M: Message>(m: &M) -> InboundRecord {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    InboundRecord {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        timestamp_ms: m.timestamp().to_millis(),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, partition: i32, offset: i64) -> InboundRecord {
        InboundRecord {
            topic: topic.to_string(),
            partition,
            offset,
            key: None,
            payload: None,
            timestamp_ms: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_batch_stores_the_last_offset_of_each_partition_whatever_the_order() {
        let batch = [
            record("a", 0, 7),
            record("a", 1, 3),
            record("a", 0, 5),
            record("b", 0, 0),
            record("a", 0, 9),
            record("a", 1, 2),
        ];
        let last: Vec<_> = last_offsets(&batch).into_iter().collect();
        assert_eq!(last, vec![(("a", 0), 9), (("a", 1), 3), (("b", 0), 0)]);
        assert!(last_offsets(&[]).is_empty());
    }

    #[test]
    fn positions_become_last_handled_offsets_and_position_zero_stores_nothing() {
        let positions = vec![
            ("a".to_string(), 0, 10),
            ("a".to_string(), 1, 0),
            ("b".to_string(), 2, 1),
        ];
        assert_eq!(last_handled(&positions), vec![("a", 0, 9), ("b", 2, 0)]);
    }

    #[test]
    fn records_of_revoked_partitions_leave_the_batch_and_only_those() {
        let mut batch = vec![
            record("a", 0, 1),
            record("a", 1, 1),
            record("b", 0, 1),
            record("a", 0, 2),
        ];
        drop_revoked(&mut batch, &[("a".to_string(), 0), ("c".to_string(), 1)]);
        let left: Vec<(&str, i32, i64)> = batch
            .iter()
            .map(|r| (r.topic.as_str(), r.partition, r.offset))
            .collect();
        assert_eq!(left, vec![("a", 1, 1), ("b", 0, 1)]);
    }

    #[test]
    fn pauses_and_broker_outages_are_survived_nothing_else() {
        for code in [
            RDKafkaErrorCode::PollExceeded,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert!(
                survivable(&KafkaError::MessageConsumption(code)),
                "{code:?}"
            );
        }
        assert!(!survivable(&KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::PollExceeded
        )));
        assert!(!survivable(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
    }
}
