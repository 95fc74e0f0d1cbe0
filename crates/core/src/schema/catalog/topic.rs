//! A topic of the catalog, validated, with its compatibility level and cleanup policy.

use apache_avro::Schema;
use serde::Deserialize;

use crate::bus::TopicSpec;

/// Schema compatibility level of a subject (Confluent's names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// New schema reads data written with the latest.
    #[default]
    Backward,
    /// New schema reads data written with every earlier one.
    BackwardTransitive,
    /// The latest schema reads data written with the new one.
    Forward,
    /// Every earlier schema reads data written with the new one.
    ForwardTransitive,
    /// Backward and forward with the latest.
    Full,
    /// Backward and forward with every earlier schema.
    FullTransitive,
}

impl Compatibility {
    /// The level as Confluent's registry spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }
}

/// Kafka cleanup policy of a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Old segments are deleted after the retention time.
    #[default]
    Delete,
    /// The latest record per key is kept (tables, changelogs).
    Compact,
}

/// One topic of the catalog, validated.
#[derive(Debug, Clone)]
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// What the topic carries.
    pub description: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Top-level field of the value whose value becomes the message key.
    pub key_field: Option<String>,
    /// Top-level field holding the event time (else the Kafka timestamp is used).
    pub event_time_field: Option<String>,
    /// Compatibility level of the topic's subjects.
    pub compatibility: Compatibility,
    /// Retention in milliseconds, `-1` to keep forever.
    pub retention_ms: i64,
    /// Cleanup policy.
    pub cleanup_policy: CleanupPolicy,
    /// Whether the archive writes this topic to the lake.
    pub archive: bool,
    /// The value schema (subject `<name>-value`).
    pub value_schema: Schema,
    /// The value schema's JSON text as written in its file.
    pub value_schema_json: String,
    /// The key schema (subject `<name>-key`), when the topic has one.
    pub key_schema_json: Option<String>,
}

impl Topic {
    /// Subject of the value schema.
    pub fn value_subject(&self) -> String {
        format!("{}-value", self.name)
    }

    /// The topic as the admin client creates it.
    pub fn spec(&self) -> TopicSpec {
        let policy = match self.cleanup_policy {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        };
        TopicSpec {
            name: self.name.clone(),
            partitions: self.partitions,
            config: vec![
                ("retention.ms".to_string(), self.retention_ms.to_string()),
                ("cleanup.policy".to_string(), policy.to_string()),
            ],
        }
    }
}
