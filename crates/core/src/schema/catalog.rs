//! The topic catalog: `schemas/catalog.toml` names every topic with its partitions, key field,
//! compatibility level, retention and archiving, and `schemas/<topic>-value.avsc` (optionally
//! `<topic>-key.avsc`) holds each subject's Avro schema. Adding a topic touches these two files
//! and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use serde::Deserialize;

use super::features::{self, FeatureProblem, FeatureViewDecl};
use super::sources::{self, SourceDecl, SourceProblem};
use super::transforms::{self, TransformDecl, TransformProblem};
use super::triggers::{self, TriggerDecl, TriggerProblem};
use crate::bus::{TopicSpec, dlq_topic};

/// Name of the catalog file inside the schemas folder.
pub const CATALOG_FILE: &str = "catalog.toml";

/// The stages that own a dead-letter topic `dlq.<stage>`, created with the catalog's topics.
pub const DLQ_STAGES: [&str; 5] = ["ingest", "transform", "feature", "archive", "train-trigger"];

/// A catalog that cannot be loaded; every message names the file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct CatalogError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

/// A duration (`7d`, `12h`, `30m`, `90s`, `500ms`) that does not parse; each variant holds the
/// text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No leading number (or one too large for an `i64`).
    #[error("invalid retention {0:?}: expected e.g. 7d, 12h, 30m or forever")]
    Invalid(String),
    /// A unit other than `ms`, `s`, `m`, `h` or `d`.
    #[error("invalid retention unit in {0:?}: use ms, s, m, h or d")]
    Unit(String),
    /// Zero, or more milliseconds than an `i64` holds.
    #[error("invalid retention {0:?}: out of range")]
    OutOfRange(String),
}

/// A duration-valued key of a declaration (`allowed_lateness`, `cooldown`) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {error}")]
pub struct DurationKeyError {
    /// The key, as written in `catalog.toml`.
    pub key: &'static str,
    /// Why its value is refused.
    pub error: DurationError,
}

/// The kind of a declaration of the catalog: the name of its TOML array of tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclKind {
    /// `[[source]]`.
    Source,
    /// `[[transform]]`.
    Transform,
    /// `[[feature]]`.
    Feature,
    /// `[[trigger]]`.
    Trigger,
}

impl DeclKind {
    /// The kind as written in `catalog.toml` and in messages: `source`, `transform`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Transform => "transform",
            Self::Feature => "feature",
            Self::Trigger => "trigger",
        }
    }

    /// Checks a declaration's name: an identifier (letters, digits and `_`, not starting with a
    /// digit), not already in `seen` (where it is then added).
    pub(crate) fn check_name<'a>(
        self,
        name: &'a str,
        seen: &mut BTreeSet<&'a str>,
    ) -> Result<(), DeclError> {
        if !transforms::is_identifier(name) {
            return Err(DeclError::new(self, name, DeclProblem::InvalidName));
        }
        if !seen.insert(name) {
            return Err(DeclError::new(self, name, DeclProblem::DeclaredTwice));
        }
        Ok(())
    }
}

impl std::fmt::Display for DeclKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A declaration of the catalog (`[[source]]`, `[[transform]]`, `[[feature]]`, `[[trigger]]`)
/// that is refused: its kind, its name, and what is wrong ([`DeclError::key`] names the key at
/// fault). Displayed as `<kind> <name>: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {problem}")]
pub struct DeclError {
    /// The kind of declaration.
    pub kind: DeclKind,
    /// Its `name`, as written (possibly not a valid name: [`DeclProblem::InvalidName`]).
    pub name: String,
    /// What is wrong with it.
    pub problem: DeclProblem,
}

impl DeclError {
    /// The error of the declaration `kind` named `name`.
    pub fn new(kind: DeclKind, name: &str, problem: impl Into<DeclProblem>) -> Self {
        Self {
            kind,
            name: name.to_string(),
            problem: problem.into(),
        }
    }

    /// The key of the declaration at fault, as written in `catalog.toml` (`name`, `inputs`,
    /// `window`, `policy`, ...; for a problem in a nested table, that table's key, e.g. `rule`).
    pub fn key(&self) -> &'static str {
        self.problem.key()
    }
}

/// What is wrong with a declaration: the problems every kind shares, then each kind's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclProblem {
    /// The name is not letters, digits and `_`, or starts with a digit.
    #[error("the name must be letters, digits and _, not starting with a digit")]
    InvalidName,
    /// Another declaration of the same kind has the same name.
    #[error("declared twice")]
    DeclaredTwice,
    /// A problem of a `[[source]]`.
    #[error(transparent)]
    Source(#[from] SourceProblem),
    /// A problem of a `[[transform]]`.
    #[error(transparent)]
    Transform(#[from] TransformProblem),
    /// A problem of a `[[feature]]`.
    #[error(transparent)]
    Feature(#[from] FeatureProblem),
    /// A problem of a `[[trigger]]`.
    #[error(transparent)]
    Trigger(#[from] TriggerProblem),
}

impl DeclProblem {
    /// The key at fault, as written in `catalog.toml`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::InvalidName | Self::DeclaredTwice => "name",
            Self::Source(p) => p.key(),
            Self::Transform(p) => p.key(),
            Self::Feature(p) => p.key(),
            Self::Trigger(p) => p.key(),
        }
    }
}

/// Why [`pick`] found nothing to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// A name asked for is not declared.
    #[error("{what} {name} is not declared in {}", catalog.display())]
    NotDeclared {
        /// What was picked, e.g. `transform`.
        what: String,
        /// The name asked for.
        name: String,
        /// The catalog file.
        catalog: PathBuf,
    },
    /// The catalog declares none.
    #[error("no {what} to run: {} declares none", catalog.display())]
    NothingToRun {
        /// What was picked, e.g. `transform`.
        what: String,
        /// The catalog file.
        catalog: PathBuf,
    },
}

/// Why a topic's `key_field` or `event_time_field` is refused.
#[derive(Debug, thiserror::Error)]
enum FieldError {
    /// The value schema has no such field.
    #[error("{field:?} is not a field of the value schema (fields: {})", fields.join(", "))]
    Missing {
        /// The field named.
        field: String,
        /// The value schema's fields.
        fields: Vec<String>,
    },
    /// An `event_time_field` that is neither a timestamp nor a long.
    #[error("{field:?} must be a timestamp or long, not {schema:?}")]
    NotTime {
        /// The field named.
        field: String,
        /// Its (non-null) schema.
        schema: Box<Schema>,
    },
    /// A `key_field` of a type keys cannot have.
    #[error("{field:?} must be a string, int, long, uuid or bytes, not {schema:?}")]
    NotKey {
        /// The field named.
        field: String,
        /// Its (non-null) schema.
        schema: Box<Schema>,
    },
}

/// A topic name Kafka refuses.
#[derive(Debug, thiserror::Error)]
#[error("invalid topic name {0:?}: use 1 to 249 characters of a-z A-Z 0-9 . _ -")]
struct TopicNameError(String);

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

/// The declarations a service runs: those named in `only`, or all when `only` is empty. A name
/// in `only` that nothing declares, or nothing to run, is an error naming `what` (e.g.
/// "transform") and the catalog folder.
pub fn pick<'a, T>(
    declared: &'a [T],
    name_of: impl Fn(&T) -> &str,
    only: &[String],
    what: &str,
    dir: &Path,
) -> Result<Vec<&'a T>, PickError> {
    if let Some(unknown) = only
        .iter()
        .find(|n| !declared.iter().any(|d| name_of(d) == n.as_str()))
    {
        return Err(PickError::NotDeclared {
            what: what.to_string(),
            name: unknown.clone(),
            catalog: dir.join(CATALOG_FILE),
        });
    }
    let picked: Vec<&T> = declared
        .iter()
        .filter(|d| only.is_empty() || only.iter().any(|n| n == name_of(d)))
        .collect();
    if picked.is_empty() {
        return Err(PickError::NothingToRun {
            what: what.to_string(),
            catalog: dir.join(CATALOG_FILE),
        });
    }
    Ok(picked)
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

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
    let value_schema = super::parse_avro_schema(&value_schema_json)
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
            super::parse_avro_schema(&json)
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

fn check_field(record: &RecordSchema, field: &str, is_time: bool) -> Result<(), FieldError> {
    let Some(f) = record.fields.iter().find(|f| f.name == field) else {
        return Err(FieldError::Missing {
            field: field.to_string(),
            fields: record.fields.iter().map(|f| f.name.clone()).collect(),
        });
    };
    // A nullable field counts as its non-null type, whichever order the union lists them in.
    let schema = match &f.schema {
        Schema::Union(u) if u.is_nullable() && u.variants().len() == 2 => u
            .variants()
            .iter()
            .find(|v| !matches!(v, Schema::Null))
            .unwrap_or(&f.schema),
        other => other,
    };
    let ok = if is_time {
        matches!(
            schema,
            Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::Long
        )
    } else {
        matches!(
            schema,
            Schema::String | Schema::Int | Schema::Long | Schema::Uuid | Schema::Bytes
        )
    };
    let (field, schema) = (field.to_string(), Box::new(schema.clone()));
    if ok {
        Ok(())
    } else if is_time {
        Err(FieldError::NotTime { field, schema })
    } else {
        Err(FieldError::NotKey { field, schema })
    }
}

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    let legal = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 249 || !legal || name == "." || name == ".." {
        return Err(TopicNameError(name.to_string()));
    }
    Ok(())
}

/// Parses `7d`, `12h`, `30m`, `90s`, `500ms` or `forever` into milliseconds (`-1` for forever).
fn parse_retention(s: &str) -> Result<i64, DurationError> {
    if s == "forever" {
        return Ok(-1);
    }
    parse_duration(s)
}

/// Parses `7d`, `12h`, `30m`, `90s` or `500ms` into milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, DurationError> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| DurationError::Invalid(s.to_string()))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 60 * 60 * 1000,
        "d" => DAY_MS,
        _ => return Err(DurationError::Unit(s.to_string())),
    };
    n.checked_mul(factor)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| DurationError::OutOfRange(s.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const EVENT: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"id","type":"string"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"n","type":"double"}]}"#;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    fn load_err(files: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), files);
        Catalog::load(dir.path()).unwrap_err().to_string()
    }

    #[test]
    fn the_repository_catalog_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let catalog = Catalog::load(&dir).unwrap();
        assert!(!catalog.topics.is_empty());
        for topic in catalog.topics.values() {
            assert!(topic.partitions >= 1);
        }
    }

    #[test]
    fn loads_topics_with_defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "catalog.toml",
                    "[defaults]\npartitions = 4\nretention = \"2d\"\n\n[[topic]]\nname = \"raw.a\"\nkey_field = \"id\"\nevent_time_field = \"at\"\n\n[[topic]]\nname = \"table.b\"\npartitions = 1\ncleanup_policy = \"compact\"\nretention = \"forever\"\ncompatibility = \"FULL\"\narchive = false\n",
                ),
                ("raw.a-value.avsc", EVENT),
                ("table.b-value.avsc", EVENT),
                ("table.b-key.avsc", "\"string\""),
            ],
        );
        let c = Catalog::load(dir.path()).unwrap();
        let a = c.topic("raw.a").unwrap();
        assert_eq!(
            (a.partitions, a.retention_ms, a.compatibility),
            (4, 2 * DAY_MS, Compatibility::Backward)
        );
        assert_eq!(a.key_field.as_deref(), Some("id"));
        assert!(a.archive && a.key_schema_json.is_none());
        let b = c.topic("table.b").unwrap();
        assert_eq!(
            (b.partitions, b.retention_ms, b.compatibility),
            (1, -1, Compatibility::Full)
        );
        assert_eq!(b.cleanup_policy, CleanupPolicy::Compact);
        assert!(!b.archive && b.key_schema_json.is_some());
        let specs = c.topic_specs(1);
        assert!(specs.iter().any(|s| s.name == "dlq.archive"));
        let b_spec = specs.iter().find(|s| s.name == "table.b").unwrap();
        assert!(
            b_spec
                .config
                .contains(&("cleanup.policy".into(), "compact".into()))
        );
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let e = load_err(&[("catalog.toml", "[[topic]]\nname = \"t\"\n")]);
        assert!(
            e.contains("t-value.avsc") && e.contains("cannot read"),
            "{e}"
        );

        let e = load_err(&[
            ("catalog.toml", "[[topic]]\nname = \"t\"\n"),
            ("t-value.avsc", "{\"type\":\"record\""),
        ]);
        assert!(
            e.contains("t-value.avsc") && e.contains("invalid avro schema"),
            "{e}"
        );

        let e = load_err(&[
            (
                "catalog.toml",
                "[[topic]]\nname = \"t\"\nkey_field = \"nope\"\n",
            ),
            ("t-value.avsc", EVENT),
        ]);
        assert!(
            e.contains("catalog.toml") && e.contains("\"nope\" is not a field"),
            "{e}"
        );

        let e = load_err(&[
            (
                "catalog.toml",
                "[[topic]]\nname = \"t\"\nevent_time_field = \"n\"\n",
            ),
            ("t-value.avsc", EVENT),
        ]);
        assert!(e.contains("must be a timestamp"), "{e}");

        let e = load_err(&[("catalog.toml", "[[topic]]\nname = \"bad/name\"\n")]);
        assert!(e.contains("invalid topic name"), "{e}");

        let e = load_err(&[
            (
                "catalog.toml",
                "[[topic]]\nname = \"t\"\nretention = \"7 weeks\"\n",
            ),
            ("t-value.avsc", EVENT),
        ]);
        assert!(e.contains("retention"), "{e}");

        let e = load_err(&[("catalog.toml", "[[topic]]\nname = \"t\"\npartitionz = 3\n")]);
        assert!(
            e.contains("catalog.toml") && e.contains("partitionz"),
            "{e}"
        );

        let e = load_err(&[
            ("catalog.toml", "[[topic]]\nname = \"t\"\n"),
            ("t-value.avsc", EVENT),
            ("orphan-value.avsc", EVENT),
        ]);
        assert!(
            e.contains("orphan-value.avsc") && e.contains("no topic"),
            "{e}"
        );

        let e = load_err(&[
            (
                "catalog.toml",
                "[[topic]]\nname = \"t\"\n\n[[topic]]\nname = \"t\"\n",
            ),
            ("t-value.avsc", EVENT),
        ]);
        assert!(e.contains("declared twice"), "{e}");

        let e = load_err(&[
            ("catalog.toml", "[[topic]]\nname = \"t\"\n"),
            ("t-value.avsc", "\"string\""),
        ]);
        assert!(e.contains("must be a record"), "{e}");
    }

    #[test]
    fn a_nullable_key_field_may_list_null_last() {
        let schema =
            r#"{"type":"record","name":"E","fields":[{"name":"k","type":["string","null"]}]}"#;
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "catalog.toml",
                    "[[topic]]\nname = \"t\"\nkey_field = \"k\"\n",
                ),
                ("t-value.avsc", schema),
            ],
        );
        assert!(Catalog::load(dir.path()).is_ok());
    }

    #[test]
    fn declaration_errors_name_the_declaration_and_the_key() {
        let topics = BTreeMap::new();
        let transform = |name: &str| -> TransformDecl {
            toml::from_str(&format!(
                "name = \"{name}\"\ninputs = [\"a\"]\noutput = \"b\"\nsql = \"SELECT 1\""
            ))
            .unwrap()
        };
        let e = transforms::validate(&[transform("t")], &topics).unwrap_err();
        assert_eq!(
            (e.kind, e.name.as_str(), e.key()),
            (DeclKind::Transform, "t", "inputs")
        );
        assert_eq!(
            e.problem,
            DeclProblem::Transform(TransformProblem::UnknownInput { topic: "a".into() })
        );
        assert_eq!(e.to_string(), "transform t: topic a is not in the catalog");

        let e = transforms::validate(&[transform("1t")], &topics).unwrap_err();
        assert_eq!((&e.problem, e.key()), (&DeclProblem::InvalidName, "name"));
        assert_eq!(
            e.to_string(),
            "transform 1t: the name must be letters, digits and _, not starting with a digit"
        );

        let trigger: TriggerDecl = toml::from_str(
            "name = \"r\"\nmodel = \"m\"\ninputs = []\ncooldown = \"1w\"\n\
             [[policy]]\ntype = \"volume\"\nname = \"v\"\nrows = 1\n",
        )
        .unwrap();
        assert_eq!(
            trigger.cooldown_ms().unwrap_err(),
            DurationKeyError {
                key: "cooldown",
                error: DurationError::Unit("1w".into()),
            }
        );
        let e = triggers::validate(&[trigger], &topics).unwrap_err();
        assert_eq!(e.to_string(), "trigger r: inputs is empty");
        assert_eq!(e.key(), "inputs");
    }

    #[test]
    fn pick_names_what_is_missing() {
        let dir = Path::new("/schemas");
        let declared = ["a".to_string(), "b".to_string()];
        let name = |d: &String| d.clone();
        let picked = pick(
            &declared,
            |d| d.as_str(),
            &["b".to_string()],
            "transform",
            dir,
        );
        assert_eq!(
            picked.unwrap().into_iter().map(name).collect::<Vec<_>>(),
            ["b"]
        );
        let e = pick(
            &declared,
            |d| d.as_str(),
            &["c".to_string()],
            "transform",
            dir,
        )
        .unwrap_err();
        assert!(matches!(&e, PickError::NotDeclared { name, .. } if name == "c"));
        assert_eq!(
            e.to_string(),
            "transform c is not declared in /schemas/catalog.toml"
        );
        let e = pick(&[] as &[String], |d| d.as_str(), &[], "trigger", dir).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no trigger to run: /schemas/catalog.toml declares none"
        );
    }

    #[test]
    fn retention_parses() {
        assert_eq!(parse_retention("500ms"), Ok(500));
        assert_eq!(parse_retention("90s"), Ok(90_000));
        assert_eq!(parse_retention("7d"), Ok(7 * DAY_MS));
        assert_eq!(parse_retention("forever"), Ok(-1));
        assert!(parse_retention("").is_err());
        assert!(parse_retention("0d").is_err());
        assert!(parse_retention("99999999999999999999d").is_err());
        assert_eq!(parse_retention("7w"), Err(DurationError::Unit("7w".into())));
        assert_eq!(
            parse_retention("0d").unwrap_err().to_string(),
            "invalid retention \"0d\": out of range"
        );
    }
}
