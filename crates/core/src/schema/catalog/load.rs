//! Loading `catalog.toml` and the `.avsc` files beside it into a validated [`Catalog`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use serde::Deserialize;

use super::decl::DeclError;
use super::duration::parse_retention;
use super::topic::{CleanupPolicy, Compatibility, Topic};
use super::validate::{check_field, validate_topic_name};
use super::{CATALOG_FILE, Catalog};
use crate::schema::features::{self, FeatureViewDecl};
use crate::schema::sources::{self, SourceDecl};
use crate::schema::transforms::{self, TransformDecl};
use crate::schema::triggers::{self, TriggerDecl};

/// A catalog that cannot be loaded; every message names the file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct CatalogError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default, rename = "topic")]
    topics: Vec<TopicEntry>,
    #[serde(default, rename = "transform")]
    transforms: Vec<TransformDecl>,
    #[serde(default, rename = "feature")]
    features: Vec<FeatureViewDecl>,
    #[serde(default, rename = "trigger")]
    triggers: Vec<TriggerDecl>,
    #[serde(default, rename = "source")]
    sources: Vec<SourceDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default = "default_partitions")]
    partitions: i32,
    #[serde(default)]
    compatibility: Compatibility,
    #[serde(default = "default_retention")]
    retention: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            partitions: default_partitions(),
            compatibility: Compatibility::default(),
            retention: default_retention(),
        }
    }
}

fn default_partitions() -> i32 {
    3
}
fn default_retention() -> String {
    "7d".to_string()
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicEntry {
    name: String,
    #[serde(default)]
    description: String,
    partitions: Option<i32>,
    key_field: Option<String>,
    event_time_field: Option<String>,
    compatibility: Option<Compatibility>,
    retention: Option<String>,
    #[serde(default)]
    cleanup_policy: CleanupPolicy,
    #[serde(default = "default_true")]
    archive: bool,
}

impl Catalog {
    /// Loads and validates `dir/catalog.toml` and the `.avsc` files beside it.
    pub fn load(dir: &Path) -> Result<Self, CatalogError> {
        let catalog_path = dir.join(CATALOG_FILE);
        let fail = |file: &Path, message: String| CatalogError {
            file: file.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(&catalog_path)
            .map_err(|e| fail(&catalog_path, format!("cannot read: {e}")))?;
        let parsed: CatalogFile =
            toml::from_str(&text).map_err(|e| fail(&catalog_path, e.to_string()))?;

        let mut topics = BTreeMap::new();
        for entry in parsed.topics {
            let topic = load_topic(dir, &catalog_path, &parsed.defaults, entry)?;
            if topics.contains_key(&topic.name) {
                return Err(fail(
                    &catalog_path,
                    format!("topic {} is declared twice", topic.name),
                ));
            }
            topics.insert(topic.name.clone(), topic);
        }

        // Every schema file must belong to a declared topic: a forgotten catalog entry is an error,
        // not a schema silently ignored.
        let subjects: BTreeSet<String> = topics
            .values()
            .flat_map(|t| [format!("{}-value", t.name), format!("{}-key", t.name)])
            .collect();
        let entries = std::fs::read_dir(dir).map_err(|e| fail(dir, format!("cannot list: {e}")))?;
        for entry in entries {
            let path = entry
                .map_err(|e| fail(dir, format!("cannot list: {e}")))?
                .path();
            if path.extension().is_some_and(|e| e == "avsc") {
                let subject = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !subjects.contains(&subject) {
                    return Err(fail(
                        &path,
                        format!("no topic in {CATALOG_FILE} uses this schema (subject {subject})"),
                    ));
                }
            }
        }
        let invalid = |e: DeclError| fail(&catalog_path, e.to_string());
        transforms::validate(&parsed.transforms, &topics).map_err(invalid)?;
        features::validate(&parsed.features, &topics).map_err(invalid)?;
        triggers::validate(&parsed.triggers, &topics).map_err(invalid)?;
        sources::validate(&parsed.sources, &topics).map_err(invalid)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            topics,
            transforms: parsed.transforms,
            features: parsed.features,
            triggers: parsed.triggers,
            sources: parsed.sources,
        })
    }
}

fn load_topic(
    dir: &Path,
    catalog_path: &Path,
    defaults: &Defaults,
    entry: TopicEntry,
) -> Result<Topic, CatalogError> {
    let fail = |file: &Path, message: String| CatalogError {
        file: file.to_path_buf(),
        message,
    };
    let name = entry.name;
    validate_topic_name(&name).map_err(|e| fail(catalog_path, e.to_string()))?;
    let partitions = entry.partitions.unwrap_or(defaults.partitions);
    if partitions < 1 {
        return Err(fail(
            catalog_path,
            format!("topic {name}: partitions must be at least 1, got {partitions}"),
        ));
    }
    let retention = entry.retention.as_deref().unwrap_or(&defaults.retention);
    let retention_ms =
        parse_retention(retention).map_err(|m| fail(catalog_path, format!("topic {name}: {m}")))?;

    let value_path = dir.join(format!("{name}-value.avsc"));
    let value_schema_json = std::fs::read_to_string(&value_path).map_err(|e| {
        fail(
            &value_path,
            format!("cannot read the value schema of topic {name}: {e}"),
        )
    })?;
    let value_schema = crate::schema::parse_avro_schema(&value_schema_json)
        .map_err(|e| fail(&value_path, format!("invalid avro schema: {e}")))?;
    let Schema::Record(record) = &value_schema else {
        return Err(fail(
            &value_path,
            "the value schema must be a record".to_string(),
        ));
    };
    for (what, field) in [
        ("key_field", &entry.key_field),
        ("event_time_field", &entry.event_time_field),
    ] {
        if let Some(field) = field {
            check_field(record, field, what == "event_time_field")
                .map_err(|m| fail(catalog_path, format!("topic {name}: {what} {m}")))?;
        }
    }

    let key_path = dir.join(format!("{name}-key.avsc"));
    let key_schema_json = match std::fs::read_to_string(&key_path) {
        Ok(json) => {
            crate::schema::parse_avro_schema(&json)
                .map_err(|e| fail(&key_path, format!("invalid avro schema: {e}")))?;
            Some(json)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(&key_path, format!("cannot read: {e}"))),
    };

    Ok(Topic {
        name,
        description: entry.description,
        partitions,
        key_field: entry.key_field,
        event_time_field: entry.event_time_field,
        compatibility: entry.compatibility.unwrap_or(defaults.compatibility),
        retention_ms,
        cleanup_policy: entry.cleanup_policy,
        archive: entry.archive,
        value_schema,
        value_schema_json,
        key_schema_json,
    })
}
