//! Transform declarations of the catalog (`[[transform]]` in `catalog.toml`): which input topics
//! a transform reads, the SQL it runs, the validation rules checked before it, the
//! deduplication window, the lookup tables it may join, and the output topic. The transform
//! service compiles and runs them; this module only parses them and checks that every topic they
//! name is in the catalog.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::catalog::Topic;

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
    pub fn window_ms(&self) -> Result<i64, String> {
        match super::catalog::parse_duration(&self.window) {
            Ok(ms) if ms > 0 => Ok(ms),
            _ => Err(format!(
                "dedup window {:?}: expected e.g. 30s, 10m or 1h",
                self.window
            )),
        }
    }
}

/// Checks declarations against the catalog's topics; the message names the transform.
pub(crate) fn validate(
    transforms: &[TransformDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for t in transforms {
        let fail = |m: String| Err(format!("transform {}: {m}", t.name));
        if !is_identifier(&t.name) {
            return fail(
                "the name must be letters, digits and _, not starting with a digit".into(),
            );
        }
        if !names.insert(t.name.as_str()) {
            return fail("declared twice".into());
        }
        if t.inputs.is_empty() {
            return fail("inputs is empty".into());
        }
        for topic in t.inputs.iter().chain([&t.output]) {
            if !topics.contains_key(topic) {
                return fail(format!("topic {topic} is not in the catalog"));
            }
        }
        if t.inputs.contains(&t.output) {
            return fail(format!("{} is both an input and the output", t.output));
        }
        if t.sql.trim().is_empty() {
            return fail("sql is empty".into());
        }
        let mut columns = BTreeSet::new();
        for lookup in &t.lookups {
            if !is_identifier(&lookup.name) || !columns.insert(lookup.name.as_str()) {
                return fail(format!(
                    "lookup name {:?} must be an identifier, used once",
                    lookup.name
                ));
            }
            if !topics.contains_key(&lookup.topic) {
                return fail(format!(
                    "lookup topic {} is not in the catalog",
                    lookup.topic
                ));
            }
        }
        let mut rules = BTreeSet::new();
        for rule in &t.rules {
            if !rules.insert(rule.name.as_str()) {
                return fail(format!("rule {} is declared twice", rule.name));
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
                    return fail(format!(
                        "rule {}: give a field with required/min/max/pattern/allowed, or a check expression",
                        rule.name
                    ));
                }
            }
        }
        if let Some(dedup) = &t.dedup
            && let Err(m) = dedup.window_ms()
        {
            return fail(m);
        }
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
