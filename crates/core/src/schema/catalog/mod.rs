//! The topic catalog: `schemas/catalog.toml` names every topic with its partitions, key field,
//! compatibility level, retention and archiving, and `schemas/<topic>-value.avsc` (optionally
//! `<topic>-key.avsc`) holds each subject's Avro schema. Adding a topic touches these two files
//! and nothing else.

mod decl;
mod duration;
mod load;
mod pick;
mod topic;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::features::FeatureViewDecl;
use super::sources::SourceDecl;
use super::transforms::TransformDecl;
use super::triggers::TriggerDecl;
use crate::bus::{TopicSpec, dlq_topic};

pub use decl::{DeclError, DeclKind, DeclProblem};
pub(crate) use duration::parse_duration;
pub use duration::{DurationError, DurationKeyError};
pub use load::CatalogError;
pub use pick::{PickError, pick};
pub use topic::{CleanupPolicy, Compatibility, Topic};

use duration::DAY_MS;

/// Name of the catalog file inside the schemas folder.
pub const CATALOG_FILE: &str = "catalog.toml";

/// The stages that own a dead-letter topic `dlq.<stage>`, created with the catalog's topics.
pub const DLQ_STAGES: [&str; 5] = ["ingest", "transform", "feature", "archive", "train-trigger"];

/// The topic catalog loaded from a schemas folder.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The folder it was loaded from.
    pub dir: PathBuf,
    /// Topics by name.
    pub topics: BTreeMap<String, Topic>,
    /// Transforms (`[[transform]]`), in the order declared.
    pub transforms: Vec<TransformDecl>,
    /// Feature views (`[[feature]]`), in the order declared.
    pub features: Vec<FeatureViewDecl>,
    /// Retraining triggers (`[[trigger]]`), in the order declared.
    pub triggers: Vec<TriggerDecl>,
    /// Sources ingest federates (`[[source]]`), in the order declared.
    pub sources: Vec<SourceDecl>,
}

impl Catalog {
    /// Topics to create: the catalog's topics and the dead-letter topic of every stage.
    pub fn topic_specs(&self, dlq_partitions: i32) -> Vec<TopicSpec> {
        let mut specs: Vec<TopicSpec> = self.topics.values().map(Topic::spec).collect();
        for stage in DLQ_STAGES {
            specs.push(TopicSpec {
                name: dlq_topic(stage),
                partitions: dlq_partitions,
                config: vec![("retention.ms".to_string(), (30 * DAY_MS).to_string())],
            });
        }
        specs
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }
}
