//! Transform declarations of the catalog (`[[transform]]` in `catalog.toml`): which input topics
//! a transform reads, the SQL it runs, the validation rules checked before it, the
//! deduplication window, the lookup tables it may join, and the output topic. The transform
//! service compiles and runs them; this module only parses them and checks that every topic they
//! name is in the catalog.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::catalog::{DeclError, DeclKind, Topic};

/// A transform as declared in the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformDecl {
    /// Name (letters, digits and `_`), used in logs, metrics and dead letters.
    pub name: String,
    /// Input topics; the SQL runs over each one's records as the table `input`.
    pub inputs: Vec<String>,
    /// Output topic; its value schema is what the SQL must produce.
    pub output: String,
    /// A `SELECT` over the table `input` (and the lookup tables), run on every batch.
    pub sql: String,
    /// Validation rules checked on each input record before the SQL; a record breaking one goes
    /// to `dlq.transform` naming the rule.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleDecl>,
    /// Drop records whose key was already seen within a time window.
    #[serde(default)]
    pub dedup: Option<DedupDecl>,
    /// Tables the SQL may join: the latest value per key of a (compacted) topic.
    #[serde(default, rename = "lookup")]
    pub lookups: Vec<LookupDecl>,
}

/// A validation rule. With `field`, any of `required`, `min`, `max`, `pattern` and `allowed`
/// (all must hold); without, `check`: an SQL boolean expression over the input's columns. A
/// null value passes every rule but `required` (SQL `CHECK` semantics).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDecl {
    /// Name, written into the dead letter of a record that breaks the rule.
    pub name: String,
    /// The input column checked (`a.b` for a field of a nested record).
    pub field: Option<String>,
    /// Not null, and for strings not empty after trimming.
    #[serde(default)]
    pub required: bool,
    /// Smallest allowed value (numbers, decimals).
    pub min: Option<f64>,
    /// Largest allowed value.
    pub max: Option<f64>,
    /// A regular expression the whole value must match (strings).
    pub pattern: Option<String>,
    /// The values allowed (compared as text).
    pub allowed: Option<Vec<String>>,
    /// An SQL boolean expression over the input's columns, for rules the others cannot say.
    pub check: Option<String>,
}

/// Deduplication: a record whose key equals that of a record kept less than `window` earlier
/// (by event time) is dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupDecl {
    /// The input column identifying a record (`a.b` for a nested field).
    pub key: String,
    /// How long a key is remembered, e.g. `10m` or `1h`.
    pub window: String,
    /// The input column holding the event time; default: the input topic's `event_time_field`,
    /// else the Kafka timestamp.
    pub time_field: Option<String>,
}

/// Enrichment by lookup: `topic` is followed from its beginning and its latest value per
/// message key kept (a tombstone deletes the key). Each input record gets a column `name`
/// holding the value whose message key equals the record's `key` column as text (null when
/// there is none), so the SQL can read e.g. `customer.after.country`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupDecl {
    /// Name of the column added to the input.
    pub name: String,
    /// The topic followed (usually compacted: a table).
    pub topic: String,
    /// The input column (`a.b` for a nested field) matched against the topic's message keys.
    pub key: String,
}

impl DedupDecl {
    /// The window in milliseconds.
    pub fn window_ms(&self) -> Result<i64, DedupWindowError> {
        match super::catalog::parse_duration(&self.window) {
            Ok(ms) if ms > 0 => Ok(ms),
            _ => Err(DedupWindowError {
                window: self.window.clone(),
            }),
        }
    }
}

/// A dedup `window` that is no positive duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dedup window {window:?}: expected e.g. 30s, 10m or 1h")]
pub struct DedupWindowError {
    /// The window as written.
    pub window: String,
}

/// What is wrong with a `[[transform]]` (besides its name: [`DeclProblem`](super::catalog::DeclProblem)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformProblem {
    /// `inputs = []`.
    #[error("inputs is empty")]
    NoInputs,
    /// An input topic the catalog does not declare.
    #[error("topic {topic} is not in the catalog")]
    UnknownInput {
        /// The topic named.
        topic: String,
    },
    /// An output topic the catalog does not declare.
    #[error("topic {topic} is not in the catalog")]
    UnknownOutput {
        /// The topic named.
        topic: String,
    },
    /// The output is also one of the inputs.
    #[error("{output} is both an input and the output")]
    OutputIsInput {
        /// The topic named twice.
        output: String,
    },
    /// `sql` is empty or blank.
    #[error("sql is empty")]
    NoSql,
    /// A lookup's name is not an identifier, or is used by two lookups.
    #[error("lookup name {name:?} must be an identifier, used once")]
    LookupName {
        /// The lookup's name.
        name: String,
    },
    /// A lookup's topic the catalog does not declare.
    #[error("lookup topic {topic} is not in the catalog")]
    UnknownLookupTopic {
        /// The topic named.
        topic: String,
    },
    /// Two rules have the same name.
    #[error("rule {rule} is declared twice")]
    RuleDeclaredTwice {
        /// The rule's name.
        rule: String,
    },
    /// A rule that is neither a field with constraints nor a check expression.
    #[error(
        "rule {rule}: give a field with required/min/max/pattern/allowed, or a check expression"
    )]
    RuleShape {
        /// The rule's name.
        rule: String,
    },
    /// The dedup window is no positive duration.
    #[error(transparent)]
    DedupWindow(#[from] DedupWindowError),
}

impl TransformProblem {
    /// The key at fault, as written in `catalog.toml`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::NoInputs | Self::UnknownInput { .. } => "inputs",
            Self::UnknownOutput { .. } | Self::OutputIsInput { .. } => "output",
            Self::NoSql => "sql",
            Self::LookupName { .. } | Self::UnknownLookupTopic { .. } => "lookup",
            Self::RuleDeclaredTwice { .. } | Self::RuleShape { .. } => "rule",
            Self::DedupWindow(_) => "dedup",
        }
    }
}

/// Checks declarations against the catalog's topics; the error names the transform.
pub(crate) fn validate(
    transforms: &[TransformDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), DeclError> {
    DeclKind::Transform.validate_each(transforms, |d| &d.name, |d| check(d, topics))
}

fn check(t: &TransformDecl, topics: &BTreeMap<String, Topic>) -> Result<(), TransformProblem> {
    if t.inputs.is_empty() {
        return Err(TransformProblem::NoInputs);
    }
    if let Some(topic) = t.inputs.iter().find(|i| !topics.contains_key(*i)) {
        return Err(TransformProblem::UnknownInput {
            topic: topic.clone(),
        });
    }
    if !topics.contains_key(&t.output) {
        return Err(TransformProblem::UnknownOutput {
            topic: t.output.clone(),
        });
    }
    if t.inputs.contains(&t.output) {
        return Err(TransformProblem::OutputIsInput {
            output: t.output.clone(),
        });
    }
    if t.sql.trim().is_empty() {
        return Err(TransformProblem::NoSql);
    }
    let mut columns = BTreeSet::new();
    for lookup in &t.lookups {
        if !is_identifier(&lookup.name) || !columns.insert(lookup.name.as_str()) {
            return Err(TransformProblem::LookupName {
                name: lookup.name.clone(),
            });
        }
        if !topics.contains_key(&lookup.topic) {
            return Err(TransformProblem::UnknownLookupTopic {
                topic: lookup.topic.clone(),
            });
        }
    }
    let mut rules = BTreeSet::new();
    for rule in &t.rules {
        if !rules.insert(rule.name.as_str()) {
            return Err(TransformProblem::RuleDeclaredTwice {
                rule: rule.name.clone(),
            });
        }
        let constraints = usize::from(rule.required)
            + usize::from(rule.min.is_some())
            + usize::from(rule.max.is_some())
            + usize::from(rule.pattern.is_some())
            + usize::from(rule.allowed.is_some());
        match (&rule.field, &rule.check) {
            (Some(_), None) if constraints > 0 => {}
            (None, Some(check)) if constraints == 0 && !check.trim().is_empty() => {}
            _ => {
                return Err(TransformProblem::RuleShape {
                    rule: rule.name.clone(),
                });
            }
        }
    }
    if let Some(dedup) = &t.dedup {
        dedup.window_ms()?;
    }
    Ok(())
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
