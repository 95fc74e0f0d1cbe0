//! The Kafka bus: client settings, the idempotent producer, the at-least-once consumer loop (the
//! only Kafka consume loop in the code base), topic administration and dead-lettering.

mod admin;
mod consumer;
mod dlq;
mod follow;
mod handler;
mod inspect;
#[cfg(test)]
mod loop_tests;
mod metrics;
mod producer;
mod settings;

pub use admin::{TopicChange, TopicOutcome, TopicSpec, create_topics, ensure_topics};
pub use consumer::{ConsumerLoopConfig, LoopStats, run_consumer};
pub use dlq::{DLQ_HEADERS, DeadLetter, dead_letter_record, dlq_topic};
pub use follow::{TopicFollower, read_partition, read_partition_tail};
pub use handler::{BatchHandler, BoxError, ErrorClass, HandlerError, InboundRecord, Output};
pub use inspect::{
    BrokerInspector, ClusterInfo, GroupLag, PartitionLag, PartitionOffsets, TopicInfo,
    TopicOffsets, Watermarks,
};
pub use metrics::BusMetrics;
pub use producer::{Delivered, OutboundRecord, Producer};
pub use settings::KafkaConfig;

/// An error of the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// librdkafka rejected the configuration or failed to create a client.
    #[error("kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    /// The producer's local queue is full: the caller should slow down and retry.
    #[error("producer queue is full")]
    QueueFull,
    /// A record was not acknowledged by the broker.
    #[error("delivery to {topic} failed: {source}")]
    Delivery {
        /// The topic.
        topic: String,
        /// The cause.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Receiving from the broker failed in a way the consumer cannot continue from.
    #[error("consume: {0}")]
    Consume(#[source] rdkafka::error::KafkaError),
    /// Storing or committing offsets failed.
    #[error("offset commit: {0}")]
    Commit(#[source] rdkafka::error::KafkaError),
    /// The batch handler failed with an error the loop stops on (or retried it for longer
    /// than allowed); no offset of the batch was stored.
    #[error("handler: {0}")]
    Handler(#[source] HandlerError),
    /// A topic operation failed.
    #[error("topic admin for {topic}: {message}")]
    Admin {
        /// The topic.
        topic: String,
        /// What the broker said.
        message: String,
    },
}

impl BusError {
    /// Whether the broker refused a record for its size (`message.max.bytes`, or the topic's
    /// `max.message.bytes`): the record can never be delivered as it is, unlike an outage.
    /// Kafka's error codes are read here, in the bus, not by the services.
    pub fn is_record_too_large(&self) -> bool {
        matches!(
            self,
            BusError::Delivery { source, .. }
                if source.rdkafka_error_code()
                    == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn a_record_too_large_is_told_from_an_outage() {
        let delivery = |code| BusError::Delivery {
            topic: "t".into(),
            source: KafkaError::MessageProduction(code),
        };
        assert!(delivery(RDKafkaErrorCode::MessageSizeTooLarge).is_record_too_large());
        assert!(!delivery(RDKafkaErrorCode::MessageTimedOut).is_record_too_large());
        assert!(!delivery(RDKafkaErrorCode::AllBrokersDown).is_record_too_large());
        assert!(!BusError::QueueFull.is_record_too_large());
    }
}
