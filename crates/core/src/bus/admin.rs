use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

use super::{BusError, KafkaConfig};

/// A topic to create, usually from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Topic-level settings (`retention.ms`, `cleanup.policy`, ...).
    pub config: Vec<(String, String)>,
}

/// What creating a topic did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicOutcome {
    /// The topic was created.
    Created,
    /// The topic was already there; it was left as it is.
    Existed,
}

/// Creates the topics that do not exist yet (replication factor from `kafka`) and reports,
/// per topic, whether it was created or already there.
pub async fn create_topics(
    kafka: &KafkaConfig,
    topics: &[TopicSpec],
) -> Result<Vec<(String, TopicOutcome)>, BusError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config().create().map_err(BusError::Client)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            t.config.iter().fold(
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(kafka.replication_factor),
                ),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(BusError::Client)?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(name) => {
                info!(topic = %name, "topic created");
                outcomes.push((name, TopicOutcome::Created));
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((name, TopicOutcome::Existed))
            }
            Err((topic, code)) => {
                return Err(BusError::Admin {
                    topic,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(outcomes)
}
