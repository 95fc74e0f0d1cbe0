//! Feature views of the catalog (`[[feature]]` in `catalog.toml`): an input topic, the entity
//! each record belongs to, its event time, a window (tumbling, hopping or session), the
//! aggregations computed per entity and window, the allowed lateness, and the output topic. The
//! feature service runs them; this module parses them and checks what can be checked without
//! running anything.

use std::collections::{BTreeMap, BTreeSet};

use apache_avro::Schema;
use serde::Deserialize;

use super::catalog::{Topic, parse_duration};

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

impl WindowDecl {
    /// Parses the durations and checks them.
    pub fn resolve(&self) -> Result<Window, String> {
        let d = |s: &str| parse_duration(s).map_err(|e| format!("window: {e}"));
        match self {
            Self::Tumbling { size } => Ok(Window::Tumbling(d(size)?)),
            Self::Hopping { size, slide } => {
                let (size, slide) = (d(size)?, d(slide)?);
                if slide > size || size % slide != 0 {
                    return Err(format!(
                        "window: a hopping size ({size} ms) must be a multiple of its slide ({slide} ms)"
                    ));
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
    pub fn lateness_ms(&self) -> Result<i64, String> {
        let text = self.allowed_lateness.trim();
        let digits = text.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && text[..digits].chars().all(|c| c == '0') {
            // Zero: check the unit by parsing one of it.
            return parse_duration(&format!("1{}", &text[digits..]))
                .map(|_| 0)
                .map_err(|e| format!("allowed_lateness: {e}"));
        }
        parse_duration(text).map_err(|e| format!("allowed_lateness: {e}"))
    }

    /// The compacted topic holding the view's window state.
    pub fn changelog_topic(&self) -> String {
        format!("_tributary.feature.{}.changelog", self.name)
    }
}

/// Checks declarations against the catalog's topics; the message names the view.
pub(crate) fn validate(
    views: &[FeatureViewDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for v in views {
        let fail = |m: String| Err(format!("feature {}: {m}", v.name));
        if !super::transforms::is_identifier(&v.name) {
            return fail(
                "the name must be letters, digits and _, not starting with a digit".into(),
            );
        }
        if !names.insert(v.name.as_str()) {
            return fail("declared twice".into());
        }
        let Some(input) = topics.get(&v.input) else {
            return fail(format!("input topic {} is not in the catalog", v.input));
        };
        let Some(output) = topics.get(&v.output) else {
            return fail(format!("output topic {} is not in the catalog", v.output));
        };
        if let Some(late) = &v.late_topic
            && !topics.contains_key(late)
        {
            return fail(format!("late topic {late} is not in the catalog"));
        }
        if v.time.is_none() && input.event_time_field.is_none() {
            return fail(format!(
                "give time = \"<expression>\": {} has no event_time_field",
                v.input
            ));
        }
        if let Err(e) = v.window.resolve() {
            return fail(e);
        }
        if let Err(e) = v.lateness_ms() {
            return fail(e);
        }
        if v.aggregations.is_empty() {
            return fail("no aggregation".into());
        }
        let Some(key) = &output.key_field else {
            return fail(format!(
                "output topic {} needs a key_field: the field holding the entity",
                v.output
            ));
        };
        let Schema::Record(record) = &output.value_schema else {
            return fail("the output schema is not a record".into());
        };
        let fields: BTreeSet<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        let mut expected: BTreeSet<&str> =
            BTreeSet::from([key.as_str(), "window_start", "window_end"]);
        for a in &v.aggregations {
            if !expected.insert(a.name.as_str()) {
                return fail(format!("aggregation {} is declared twice", a.name));
            }
            if a.function != AggregateFn::Count && a.expr.is_none() {
                return fail(format!(
                    "aggregation {}: {:?} needs expr",
                    a.name, a.function
                ));
            }
            match (a.function, a.quantile) {
                (AggregateFn::Quantile, Some(q)) if q > 0.0 && q < 1.0 => {}
                (AggregateFn::Quantile, _) => {
                    return fail(format!(
                        "aggregation {}: quantile needs quantile = q with 0 < q < 1",
                        a.name
                    ));
                }
                (_, Some(_)) => {
                    return fail(format!(
                        "aggregation {}: quantile is only for fn = \"quantile\"",
                        a.name
                    ));
                }
                _ => {}
            }
        }
        if fields != expected {
            let missing: Vec<&&str> = expected.difference(&fields).collect();
            let extra: Vec<&&str> = fields.difference(&expected).collect();
            return fail(format!(
                "the fields of {} must be the entity ({key}), window_start, window_end and one per aggregation: missing {missing:?}, not computed {extra:?}",
                v.output
            ));
        }
    }
    Ok(())
}
