//! The consumer loop's action per handler error class, against librdkafka's mock cluster (a
//! failure-path unit test: the loop itself is exercised on real brokers by the integration
//! tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{
    BatchHandler, BusError, BusMetrics, ConsumerLoopConfig, ErrorClass, HandlerError,
    InboundRecord, KafkaConfig, LoopStats, OutboundRecord, Output, Producer, read_partition,
    run_consumer,
};

const INPUT: &str = "in";
const STAGE: &str = "test";
const DLQ: &str = "dlq.test";
const GROUP: &str = "loop-test";

/// A mock cluster with the input and dead-letter topics, and three records in the input.
async fn cluster_with_three_records() -> (MockCluster<'static, DefaultProducerContext>, KafkaConfig)
{
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(INPUT, 1, 1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    let kafka = KafkaConfig::new(cluster.bootstrap_servers());
    let producer = Producer::new(&kafka, BusMetrics::default()).unwrap();
    let records: Vec<OutboundRecord> = (0..3)
        .map(|i| OutboundRecord::new(INPUT, None, format!("r{i}").into_bytes()))
        .collect();
    producer.send_all(&records).await.unwrap();
    (cluster, kafka)
}

/// A handler that answers each call with the next scripted result, records the offsets of
/// every batch it is handed, and stops the service once `stop_after` calls were made.
struct Scripted {
    script: VecDeque<Result<(), HandlerError>>,
    calls: Vec<Vec<i64>>,
    stop_after: usize,
    shutdown: CancellationToken,
    finished: bool,
}

impl Scripted {
    fn new(script: impl IntoIterator<Item = Result<(), HandlerError>>, stop_after: usize) -> Self {
        Self {
            script: script.into_iter().collect(),
            calls: Vec::new(),
            stop_after,
            shutdown: CancellationToken::new(),
            finished: false,
        }
    }
}

impl BatchHandler for Scripted {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        _out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        self.calls.push(batch.iter().map(|r| r.offset).collect());
        if self.calls.len() >= self.stop_after {
            self.shutdown.cancel();
        }
        self.script.pop_front().unwrap_or(Ok(()))
    }

    async fn finish(&mut self, _out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.finished = true;
        Ok(())
    }
}

/// Runs the loop over the three records with `handler`; a batch holds all three.
async fn run(kafka: &KafkaConfig, handler: &mut Scripted) -> Result<LoopStats, BusError> {
    let mut config = ConsumerLoopConfig::new(GROUP, vec![INPUT.to_string()], STAGE);
    config.max_batch_records = 3;
    config.max_batch_wait = Duration::from_secs(10);
    config.retry_backoff = Duration::from_millis(10);
    run_with(kafka, handler, config).await
}

async fn run_with(
    kafka: &KafkaConfig,
    handler: &mut Scripted,
    config: ConsumerLoopConfig,
) -> Result<LoopStats, BusError> {
    let producer = Producer::new(kafka, BusMetrics::default()).unwrap();
    let shutdown = handler.shutdown.clone();
    let guard = shutdown.clone();
    // Nothing here may hang a test run.
    let watchdog = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        guard.cancel();
    });
    let result = run_consumer(
        kafka,
        &config,
        &producer,
        &BusMetrics::default(),
        handler,
        shutdown,
    )
    .await;
    watchdog.abort();
    result
}

/// The group's committed position in the input, if any.
fn committed(kafka: &KafkaConfig) -> Option<i64> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", GROUP)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(INPUT, 0);
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    match offsets.find_partition(INPUT, 0).map(|e| e.offset()) {
        Some(Offset::Offset(n)) => Some(n),
        _ => None,
    }
}

fn unavailable() -> HandlerError {
    HandlerError::unavailable("the registry", "connection refused")
}

#[test]
fn every_error_has_the_class_its_doc_says() {
    assert_eq!(unavailable().class(), ErrorClass::Retry);
    let poison = HandlerError::Poison {
        index: 0,
        class: "decode".into(),
        message: "bad".into(),
    };
    assert_eq!(poison.class(), ErrorClass::DeadLetter);
    assert_eq!(HandlerError::fatal("bug").class(), ErrorClass::Stop);
    assert_eq!(
        HandlerError::from(BusError::QueueFull).class(),
        ErrorClass::Stop
    );
    assert_eq!(
        HandlerError::from(crate::schema::registry::ShuttingDown).class(),
        ErrorClass::Stop
    );
}

#[tokio::test]
async fn retry_hands_the_same_batch_again_and_commits_once_it_succeeds() {
    let (_cluster, kafka) = cluster_with_three_records().await;
    let mut handler = Scripted::new([Err(unavailable()), Err(unavailable()), Ok(())], 3);
    let stats = run(&kafka, &mut handler).await.unwrap();
    assert_eq!(handler.calls, vec![vec![0, 1, 2]; 3]);
    assert_eq!(stats.records, 3);
    assert!(handler.finished);
    assert_eq!(committed(&kafka), Some(3));
}

#[tokio::test]
async fn retry_gives_up_after_retry_for_and_commits_nothing() {
    let (_cluster, kafka) = cluster_with_three_records().await;
    let mut handler = Scripted::new(std::iter::repeat_with(|| Err(unavailable())).take(100), 100);
    let mut config = ConsumerLoopConfig::new(GROUP, vec![INPUT.to_string()], STAGE);
    config.max_batch_records = 3;
    config.max_batch_wait = Duration::from_secs(10);
    config.retry_backoff = Duration::from_millis(20);
    config.retry_for = Some(Duration::from_millis(300));
    let error = run_with(&kafka, &mut handler, config).await.unwrap_err();
    assert!(
        matches!(error, BusError::Handler(HandlerError::Unavailable { .. })),
        "{error:?}"
    );
    // 20 + 40 + 80 + 160 ms of waits fit in 300 ms, the next one does not start.
    assert!(
        (3..=6).contains(&handler.calls.len()),
        "{:?}",
        handler.calls
    );
    assert!(!handler.finished);
    assert_eq!(committed(&kafka), None);
}

#[tokio::test]
async fn a_shutdown_while_retrying_stops_cleanly_without_storing_the_batch() {
    let (_cluster, kafka) = cluster_with_three_records().await;
    let mut handler = Scripted::new(std::iter::repeat_with(|| Err(unavailable())).take(100), 2);
    let stats = run(&kafka, &mut handler).await.unwrap();
    assert_eq!(handler.calls, vec![vec![0, 1, 2]; 2]);
    assert_eq!(stats, LoopStats::default());
    assert!(handler.finished, "a clean stop lets the handler finish");
    assert_eq!(committed(&kafka), None);
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_and_the_rest_handed_again() {
    let (_cluster, kafka) = cluster_with_three_records().await;
    let poison = HandlerError::Poison {
        index: 1,
        class: "decode".into(),
        message: "not avro".into(),
    };
    let mut handler = Scripted::new([Err(poison), Ok(())], 2);
    let stats = run(&kafka, &mut handler).await.unwrap();
    assert_eq!(handler.calls, vec![vec![0, 1, 2], vec![0, 2]]);
    assert_eq!(stats.records, 3);
    assert_eq!(committed(&kafka), Some(3), "the dead letter's offset too");
    let letters = read_partition(&kafka, DLQ, 0).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload.as_deref(), Some(&b"r1"[..]));
    let header = |name: &str| {
        letters[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("tributary.source.offset").as_deref(), Some("1"));
    assert_eq!(header("tributary.error.class").as_deref(), Some("decode"));
}

#[tokio::test]
async fn a_batch_whose_every_record_is_poison_is_all_dead_lettered() {
    let (_cluster, kafka) = cluster_with_three_records().await;
    let poison = || HandlerError::Poison {
        index: 0,
        class: "decode".into(),
        message: "not avro".into(),
    };
    let mut handler = Scripted::new([Err(poison()), Err(poison()), Err(poison())], 3);
    run(&kafka, &mut handler).await.unwrap();
    assert_eq!(handler.calls, vec![vec![0, 1, 2], vec![1, 2], vec![2]]);
    assert_eq!(committed(&kafka), Some(3));
    assert_eq!(read_partition(&kafka, DLQ, 0).await.unwrap().len(), 3);
}

#[tokio::test]
async fn stop_ends_the_loop_with_the_error_and_stores_nothing() {
    let (_cluster, kafka) = cluster_with_three_records().await;
    let mut handler = Scripted::new([Err(HandlerError::fatal("a broken plan"))], 100);
    let error = run(&kafka, &mut handler).await.unwrap_err();
    assert!(
        matches!(error, BusError::Handler(HandlerError::Fatal(_))),
        "{error:?}"
    );
    assert_eq!(handler.calls, vec![vec![0, 1, 2]]);
    assert!(!handler.finished);
    assert_eq!(committed(&kafka), None);
    // A poison index outside the batch is a handler bug: it stops too.
    let mut handler = Scripted::new(
        [Err(HandlerError::Poison {
            index: 3,
            class: "decode".into(),
            message: "no such record".into(),
        })],
        100,
    );
    let error = run(&kafka, &mut handler).await.unwrap_err();
    assert!(
        matches!(error, BusError::Handler(HandlerError::Poison { .. })),
        "{error:?}"
    );
    assert_eq!(committed(&kafka), None);
    assert!(read_partition(&kafka, DLQ, 0).await.unwrap().is_empty());
}

#[test]
fn the_retry_backoff_doubles_to_its_cap_and_ends_after_retry_for() {
    let mut config = ConsumerLoopConfig::new(GROUP, vec![], STAGE);
    config.retry_backoff = Duration::from_millis(100);
    config.retry_backoff_max = Duration::from_millis(350);
    let start = tokio::time::Instant::now();
    let mut forever = super::consumer::RetrySchedule::new(&config, start);
    let waits: Vec<_> = (0..5)
        .map(|_| forever.next_wait(start + Duration::from_secs(3600)))
        .collect();
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(waits, vec![ms(100), ms(200), ms(350), ms(350), ms(350)]);
    config.retry_for = Some(Duration::from_secs(1));
    let mut bounded = super::consumer::RetrySchedule::new(&config, start);
    assert_eq!(
        bounded.next_wait(start + Duration::from_millis(999)),
        ms(100)
    );
    assert_eq!(bounded.next_wait(start + Duration::from_secs(1)), None);
}
