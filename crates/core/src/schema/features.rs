//! Feature views of the catalog (`[[feature]]` in `catalog.toml`): an input topic, the entity
//! each record belongs to, its event time, a window (tumbling, hopping or session), the
//! aggregations computed per entity and window, the allowed lateness, and the output topic. The
//! feature service runs them; this module parses them and checks what can be checked without
//! running anything.

use std::collections::{BTreeMap, BTreeSet};

use apache_avro::Schema;
use serde::Deserialize;

use super::catalog::{DeclError, DeclKind, DurationError, DurationKeyError, Topic, parse_duration};

/// A feature view as declared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureViewDecl {
    /// Name (letters, digits, `_`): in the lookup URL, logs, metrics and the changelog topic.
    pub name: String,
    /// Input topic.
    pub input: String,
    /// Output topic: fields `<its key_field>` (the entity, string), `window_start`,
    /// `window_end` (timestamp-millis) and one per aggregation.
    pub output: String,
    /// SQL expression over the input's columns giving the entity (e.g. `user_id`).
    pub entity: String,
    /// SQL expression giving the event time (a timestamp or milliseconds); default: the input
    /// topic's `event_time_field`.
    pub time: Option<String>,
    /// The window.
    pub window: WindowDecl,
    /// How long after a window's end records may still update it (re-emitting it); later ones
    /// go to the late topic. Default `0s`.
    #[serde(default = "zero")]
    pub allowed_lateness: String,
    /// Where records too late go; default `dlq.feature`.
    pub late_topic: Option<String>,
    /// The aggregations, one output field each.
    #[serde(rename = "aggregation")]
    pub aggregations: Vec<AggregationDecl>,
}

fn zero() -> String {
    "0s".to_string()
}

/// A window: `{ type = "tumbling", size = "1h" }`, `{ type = "hopping", size = "1h", slide =
/// "15m" }` or `{ type = "session", gap = "30m" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum WindowDecl {
    /// Fixed, non-overlapping windows `[k*size, (k+1)*size)`.
    Tumbling {
        /// Window length.
        size: String,
    },
    /// Fixed windows of `size` starting every `slide` (`size` a multiple of `slide`).
    Hopping {
        /// Window length.
        size: String,
        /// Distance between window starts.
        slide: String,
    },
    /// Per entity, runs of records less than `gap` apart: `[first, last + gap)`.
    Session {
        /// Inactivity that ends a session.
        gap: String,
    },
}

/// The window in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `size`.
    Tumbling(i64),
    /// `size`, `slide`.
    Hopping(i64, i64),
    /// `gap`.
    Session(i64),
}

/// A `window` that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A size, slide or gap that does not parse.
    #[error("window: {0}")]
    Duration(DurationError),
    /// A hopping window whose size is not a multiple of its slide.
    #[error("window: a hopping size ({size} ms) must be a multiple of its slide ({slide} ms)")]
    NotMultiple {
        /// The size, in milliseconds.
        size: i64,
        /// The slide, in milliseconds.
        slide: i64,
    },
}

impl WindowDecl {
    /// Parses the durations and checks them.
    pub fn resolve(&self) -> Result<Window, WindowError> {
        let d = |s: &str| parse_duration(s).map_err(WindowError::Duration);
        match self {
            Self::Tumbling { size } => Ok(Window::Tumbling(d(size)?)),
            Self::Hopping { size, slide } => {
                let (size, slide) = (d(size)?, d(slide)?);
                if slide > size || size % slide != 0 {
                    return Err(WindowError::NotMultiple { size, slide });
                }
                Ok(Window::Hopping(size, slide))
            }
            Self::Session { gap } => Ok(Window::Session(d(gap)?)),
        }
    }
}

/// An aggregation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateFn {
    /// Records (with `expr`: records where it is not null).
    Count,
    /// Sum of `expr`.
    Sum,
    /// Mean of `expr`.
    Mean,
    /// Smallest `expr`.
    Min,
    /// Largest `expr`.
    Max,
    /// Sample standard deviation of `expr` (null below two values).
    Stddev,
    /// Number of distinct values of `expr` (exact).
    DistinctCount,
    /// `expr` of the record with the latest event time.
    Last,
    /// The `quantile` of `expr`, from a mergeable sketch with 1% relative error.
    Quantile,
}

/// One aggregation: an output field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationDecl {
    /// The output field.
    pub name: String,
    /// The function.
    #[serde(rename = "fn")]
    pub function: AggregateFn,
    /// SQL expression over the input's columns (not needed for `count`).
    pub expr: Option<String>,
    /// SQL boolean expression: only records where it is true count.
    #[serde(rename = "where")]
    pub filter: Option<String>,
    /// For `quantile`: which, in (0, 1).
    pub quantile: Option<f64>,
}

impl FeatureViewDecl {
    /// The allowed lateness in milliseconds (`0s` is allowed).
    pub fn lateness_ms(&self) -> Result<i64, DurationKeyError> {
        let text = self.allowed_lateness.trim();
        let digits = text.chars().take_while(char::is_ascii_digit).count();
        let key_error = |error| DurationKeyError {
            key: "allowed_lateness",
            error,
        };
        if digits > 0 && text[..digits].chars().all(|c| c == '0') {
            // Zero: check the unit by parsing one of it.
            return parse_duration(&format!("1{}", &text[digits..]))
                .map(|_| 0)
                .map_err(key_error);
        }
        parse_duration(text).map_err(key_error)
    }

    /// The compacted topic holding the view's window state.
    pub fn changelog_topic(&self) -> String {
        format!("_tributary.feature.{}.changelog", self.name)
    }
}

/// What is wrong with a `[[feature]]` (besides its name:
/// [`DeclProblem`](super::catalog::DeclProblem)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureProblem {
    /// The input topic is not in the catalog.
    #[error("input topic {topic} is not in the catalog")]
    UnknownInput {
        /// The topic named.
        topic: String,
    },
    /// The output topic is not in the catalog.
    #[error("output topic {topic} is not in the catalog")]
    UnknownOutput {
        /// The topic named.
        topic: String,
    },
    /// The late topic is not in the catalog.
    #[error("late topic {topic} is not in the catalog")]
    UnknownLateTopic {
        /// The topic named.
        topic: String,
    },
    /// No `time`, and the input topic has no `event_time_field` to default to.
    #[error("give time = \"<expression>\": {input} has no event_time_field")]
    NoEventTime {
        /// The input topic.
        input: String,
    },
    /// The window is refused.
    #[error(transparent)]
    Window(#[from] WindowError),
    /// `allowed_lateness` does not parse.
    #[error(transparent)]
    Lateness(#[from] DurationKeyError),
    /// No `[[feature.aggregation]]`.
    #[error("no aggregation")]
    NoAggregation,
    /// The output topic has no `key_field` to hold the entity.
    #[error("output topic {output} needs a key_field: the field holding the entity")]
    OutputWithoutKey {
        /// The output topic.
        output: String,
    },
    /// The output topic's value schema is not a record.
    #[error("the output schema is not a record")]
    OutputNotRecord,
    /// Two aggregations (or one and the entity or window fields) have the same name.
    #[error("aggregation {aggregation} is declared twice")]
    AggregationDeclaredTwice {
        /// The aggregation's name.
        aggregation: String,
    },
    /// A function other than `count` without `expr`.
    #[error("aggregation {aggregation}: {function:?} needs expr")]
    NeedsExpr {
        /// The aggregation's name.
        aggregation: String,
        /// Its function.
        function: AggregateFn,
    },
    /// `fn = "quantile"` without a `quantile` strictly between 0 and 1.
    #[error("aggregation {aggregation}: quantile needs quantile = q with 0 < q < 1")]
    QuantileOutOfRange {
        /// The aggregation's name.
        aggregation: String,
    },
    /// `quantile` given to a function other than `quantile`.
    #[error("aggregation {aggregation}: quantile is only for fn = \"quantile\"")]
    QuantileNotAllowed {
        /// The aggregation's name.
        aggregation: String,
    },
    /// The output schema's fields are not those the view computes.
    #[error(
        "the fields of {output} must be the entity ({key}), window_start, window_end and one per aggregation: missing {missing:?}, not computed {extra:?}"
    )]
    OutputFields {
        /// The output topic.
        output: String,
        /// Its `key_field`.
        key: String,
        /// Fields computed that the schema does not have.
        missing: Box<[String]>,
        /// Fields of the schema that nothing computes.
        extra: Box<[String]>,
    },
}

impl FeatureProblem {
    /// The key at fault, as written in `catalog.toml`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::UnknownInput { .. } => "input",
            Self::UnknownOutput { .. }
            | Self::OutputWithoutKey { .. }
            | Self::OutputNotRecord
            | Self::OutputFields { .. } => "output",
            Self::UnknownLateTopic { .. } => "late_topic",
            Self::NoEventTime { .. } => "time",
            Self::Window(_) => "window",
            Self::Lateness(_) => "allowed_lateness",
            Self::NoAggregation
            | Self::AggregationDeclaredTwice { .. }
            | Self::NeedsExpr { .. }
            | Self::QuantileOutOfRange { .. }
            | Self::QuantileNotAllowed { .. } => "aggregation",
        }
    }
}

/// Checks declarations against the catalog's topics; the error names the view.
pub(crate) fn validate(
    views: &[FeatureViewDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), DeclError> {
    DeclKind::Feature.validate_each(views, |d| &d.name, |d| check(d, topics))
}

fn check(v: &FeatureViewDecl, topics: &BTreeMap<String, Topic>) -> Result<(), FeatureProblem> {
    let Some(input) = topics.get(&v.input) else {
        return Err(FeatureProblem::UnknownInput {
            topic: v.input.clone(),
        });
    };
    let Some(output) = topics.get(&v.output) else {
        return Err(FeatureProblem::UnknownOutput {
            topic: v.output.clone(),
        });
    };
    if let Some(late) = &v.late_topic
        && !topics.contains_key(late)
    {
        return Err(FeatureProblem::UnknownLateTopic {
            topic: late.clone(),
        });
    }
    if v.time.is_none() && input.event_time_field.is_none() {
        return Err(FeatureProblem::NoEventTime {
            input: v.input.clone(),
        });
    }
    v.window.resolve()?;
    v.lateness_ms()?;
    if v.aggregations.is_empty() {
        return Err(FeatureProblem::NoAggregation);
    }
    let Some(key) = &output.key_field else {
        return Err(FeatureProblem::OutputWithoutKey {
            output: v.output.clone(),
        });
    };
    let Schema::Record(record) = &output.value_schema else {
        return Err(FeatureProblem::OutputNotRecord);
    };
    let fields: BTreeSet<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
    let mut expected: BTreeSet<&str> = BTreeSet::from([key.as_str(), "window_start", "window_end"]);
    for a in &v.aggregations {
        let aggregation = || a.name.clone();
        if !expected.insert(a.name.as_str()) {
            return Err(FeatureProblem::AggregationDeclaredTwice {
                aggregation: aggregation(),
            });
        }
        if a.function != AggregateFn::Count && a.expr.is_none() {
            return Err(FeatureProblem::NeedsExpr {
                aggregation: aggregation(),
                function: a.function,
            });
        }
        match (a.function, a.quantile) {
            (AggregateFn::Quantile, Some(q)) if q > 0.0 && q < 1.0 => {}
            (AggregateFn::Quantile, _) => {
                return Err(FeatureProblem::QuantileOutOfRange {
                    aggregation: aggregation(),
                });
            }
            (_, Some(_)) => {
                return Err(FeatureProblem::QuantileNotAllowed {
                    aggregation: aggregation(),
                });
            }
            _ => {}
        }
    }
    if fields != expected {
        let names = |set: std::collections::btree_set::Difference<'_, &str>| {
            set.map(|f| (*f).to_string()).collect()
        };
        return Err(FeatureProblem::OutputFields {
            output: v.output.clone(),
            key: key.clone(),
            missing: names(expected.difference(&fields)),
            extra: names(fields.difference(&expected)),
        });
    }
    Ok(())
}
