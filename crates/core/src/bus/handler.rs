//! The handler's side of the consumer loop: the records it receives, the output it sends
//! through, the trait it implements and the errors it returns, classified for the loop.

use std::collections::BTreeMap;
use std::future::Future;

use super::dlq::{DeadLetter, dead_letter_record};
use super::metrics::BusMetrics;
use super::producer::Pending;
use super::{BusError, OutboundRecord, Producer};
use crate::schema::registry::ShuttingDown;

/// An error as dependencies return it, kept as the source of a [`HandlerError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the consumer loop does when a handler fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Something the handler needs is unavailable for now: the same batch is handed again
    /// after a backoff, until it succeeds, the service stops, or
    /// [`ConsumerLoopConfig::retry_for`](super::ConsumerLoopConfig::retry_for) is over.
    Retry,
    /// One record can never be processed: it goes to the dead-letter topic and the rest of
    /// the batch is handed again.
    DeadLetter,
    /// A bug, a broken plan or state, the bus failing, or a shutdown that interrupted the
    /// work: the loop stops with no offset of the batch stored.
    Stop,
}

/// An error a [`BatchHandler`] returns. Records that are bad on their own should rather go to
/// the dead-letter topic through [`Output::dead_letter`], which keeps the batch going;
/// [`HandlerError::Poison`] is for a record found bad only in the middle of work that cannot
/// go on past it.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency (the registry, the object store, a database) cannot be reached now.
    #[error("{what} is unavailable: {source}")]
    Unavailable {
        /// What is unavailable, e.g. `the schema registry`.
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The record at `index` in the batch can never be processed.
    #[error("record {index} of the batch: {message}")]
    Poison {
        /// Its index in the batch handed to [`BatchHandler::handle`].
        index: usize,
        /// The error class written in the dead letter's headers, e.g. `decode`.
        class: String,
        /// Why, for the dead letter's headers.
        message: String,
    },
    /// Sending through [`Output`] failed (librdkafka has already retried for
    /// `delivery.timeout.ms`).
    #[error(transparent)]
    Bus(Box<BusError>),
    /// The service is stopping and the work was interrupted while it waited.
    #[error("interrupted by the shutdown: {0}")]
    Interrupted(String),
    /// Anything else: a bug or a state the handler cannot go on from.
    #[error(transparent)]
    Fatal(BoxError),
}

impl HandlerError {
    /// What the loop does about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable { .. } => ErrorClass::Retry,
            Self::Poison { .. } => ErrorClass::DeadLetter,
            Self::Bus(_) | Self::Interrupted(_) | Self::Fatal(_) => ErrorClass::Stop,
        }
    }

    /// A [`HandlerError::Fatal`] from any error or message.
    pub fn fatal(error: impl Into<BoxError>) -> Self {
        Self::Fatal(error.into())
    }

    /// A [`HandlerError::Unavailable`]: `what` cannot be reached because of `error`.
    pub fn unavailable(what: impl Into<String>, error: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            what: what.into(),
            source: error.into(),
        }
    }
}

impl From<BusError> for HandlerError {
    fn from(error: BusError) -> Self {
        Self::Bus(Box::new(error))
    }
}

impl From<ShuttingDown> for HandlerError {
    fn from(error: ShuttingDown) -> Self {
        Self::Interrupted(error.to_string())
    }
}

/// A record received from Kafka, owned so that handlers can keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Kafka timestamp in milliseconds since the epoch, when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Message headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What a handler produces for a batch. Everything sent here is acknowledged by the broker
/// before the batch's offsets are stored.
#[derive(Debug)]
pub struct Output<'a> {
    producer: &'a Producer,
    stage: &'a str,
    pending: Vec<Pending>,
    dead_letters: BTreeMap<String, u64>,
}

impl<'a> Output<'a> {
    pub(super) fn new(producer: &'a Producer, stage: &'a str) -> Self {
        Self {
            producer,
            stage,
            pending: Vec::new(),
            dead_letters: BTreeMap::new(),
        }
    }

    /// Waits for every acknowledgement and counts the dead letters.
    pub(super) async fn settle(
        self,
        producer: &Producer,
        metrics: &BusMetrics,
    ) -> Result<(), BusError> {
        producer.settle(self.pending).await?;
        for (topic, n) in self.dead_letters {
            BusMetrics::add(&metrics.dead_letters, &topic, n);
        }
        Ok(())
    }

    /// Produces a record; waits only while the producer's queue is full.
    pub async fn send(&mut self, record: OutboundRecord) -> Result<(), BusError> {
        let pending = self.producer.enqueue_waiting(&record).await?;
        self.pending.push(pending);
        Ok(())
    }

    /// Sends a record that cannot be processed to `dlq.<stage>`, with headers naming its source
    /// and the error.
    pub async fn dead_letter(
        &mut self,
        source: &InboundRecord,
        error_class: &str,
        message: &str,
    ) -> Result<(), BusError> {
        let letter = DeadLetter {
            stage: self.stage,
            source_topic: &source.topic,
            partition: source.partition,
            offset: source.offset,
            error_class,
            message,
        };
        let record = dead_letter_record(
            &letter,
            source.key.clone(),
            source.payload.clone().unwrap_or_default(),
        );
        *self.dead_letters.entry(record.topic.clone()).or_default() += 1;
        self.send(record).await
    }
}

/// Processes batches of records. Implemented by each consume-process-produce service.
pub trait BatchHandler: Send {
    /// Handles one batch. Returning `Ok` means every record was processed: its outputs were
    /// sent through `out` (or it was dead-lettered). On `Err`, no offset of this batch is
    /// stored and the loop acts on the error's [`ErrorClass`]: it hands the batch again after
    /// a backoff ([`HandlerError::Unavailable`]), dead-letters one record and hands the rest
    /// again ([`HandlerError::Poison`]), or stops (everything else), so the records are read
    /// again after a restart. A handler returning one of the first two must leave no trace of
    /// the failed attempt in its own state (what it already sent through `out` is delivered
    /// before the batch is handed again).
    fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called when partitions were taken from this consumer: drop any state kept for them.
    /// Their offsets were committed up to the last position stored.
    fn partitions_revoked(&mut self, _partitions: &[(String, i32)]) {}

    /// For handlers that keep records they have not finished (a file being written): the
    /// position (next offset to read) each partition may be committed at, as
    /// `(topic, partition, offset)`. `None`, the default, means everything handled is finished,
    /// so positions follow the batches.
    fn commit_positions(&self) -> Option<Vec<(String, i32, i64)>> {
        None
    }

    /// Called every
    /// [`ConsumerLoopConfig::tick_interval`](super::ConsumerLoopConfig::tick_interval) while no
    /// record arrives, for work driven by time (flushing buffers of idle partitions).
    fn tick(
        &mut self,
        _out: &mut Output<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }

    /// Called once on a clean shutdown, before the final commit: finish buffered work.
    fn finish(
        &mut self,
        _out: &mut Output<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }
}
