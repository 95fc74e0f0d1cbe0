//! Retraining triggers of the catalog (`[[trigger]]` in `catalog.toml`): the model, the topics
//! watched (feature topics, optionally a topic of the model's predictions), the features
//! profiled, the policies that decide (volume, schedule, drift), the cooldown, and the actions
//! beside the `train.requests` record (a webhook, a Kubernetes Job). The train-trigger service
//! runs them; this module parses them and checks what can be checked statically.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::catalog::{Topic, parse_duration};

/// A trigger as declared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDecl {
    /// Name (letters, digits, `_`): the state key, in metrics and logs.
    pub name: String,
    /// The model retrained; the key of its `train.requests` records.
    pub model: String,
    /// Topics watched: features, and optionally the model's predictions. The first is the data
    /// to train on (its offset ranges and archive prefix go into the request).
    pub inputs: Vec<String>,
    /// The features whose distributions are profiled for drift.
    #[serde(default, rename = "feature")]
    pub features: Vec<FeatureDecl>,
    /// Rows (over all inputs) in each drift evaluation window; the reference profile is the
    /// first window after start and the window of each training. Default 10,000.
    #[serde(default = "default_window_rows")]
    pub window_rows: u64,
    /// Fewest values a feature needs in the reference and the window for its drift to count.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// After a trigger, none fires for this long (wall clock), e.g. `6h`. Default `0s`.
    #[serde(default = "zero")]
    pub cooldown: String,
    /// `any` (default): one policy firing is enough; `all`: every policy must fire at once.
    #[serde(default)]
    pub combine: Combine,
    /// The policies.
    #[serde(rename = "policy")]
    pub policies: Vec<PolicyDecl>,
    /// Optional: an HTTP endpoint told of every request.
    pub webhook: Option<WebhookDecl>,
    /// Optional: a Kubernetes Job created for every request.
    pub kubernetes_job: Option<KubernetesJobDecl>,
}

fn default_window_rows() -> u64 {
    10_000
}
fn default_min_samples() -> u64 {
    500
}
fn zero() -> String {
    "0s".to_string()
}

/// How policies combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// One is enough.
    #[default]
    Any,
    /// All at once.
    All,
}

/// A profiled feature.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDecl {
    /// Name in the drift report and metrics.
    pub name: String,
    /// SQL expression over the topic's columns.
    pub expr: String,
    /// The input it is computed from; default the first.
    pub topic: Option<String>,
    /// Categories (Jensen-Shannon distance) instead of numbers (PSI, KS, Wasserstein).
    #[serde(default)]
    pub categorical: bool,
}

/// A policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum PolicyDecl {
    /// At least `rows` new rows of the inputs since the last trigger.
    Volume {
        /// Name.
        name: String,
        /// Rows.
        rows: u64,
    },
    /// A cron expression (minute hour day-of-month month day-of-week, UTC).
    Schedule {
        /// Name.
        name: String,
        /// The expression, e.g. `0 3 * * *`.
        cron: String,
    },
    /// Drift of the features' window against the reference profile.
    Drift {
        /// Name.
        name: String,
        /// Thresholds per metric: `psi`, `ks`, `wasserstein` (numeric features), `js`
        /// (categorical). A metric without a threshold is reported but does not decide.
        thresholds: BTreeMap<String, f64>,
        /// `any` (default): one measure above its threshold fires; `all`: every one.
        #[serde(default)]
        combine: Combine,
        /// Hysteresis: after firing, the policy re-arms only once every measure is below
        /// `threshold * rearm_below` (default 0.8).
        #[serde(default = "default_rearm")]
        rearm_below: f64,
    },
}

fn default_rearm() -> f64 {
    0.8
}

impl PolicyDecl {
    /// The policy's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Volume { name, .. } | Self::Schedule { name, .. } | Self::Drift { name, .. } => {
                name
            }
        }
    }
}

/// The webhook action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDecl {
    /// URL POSTed the request as JSON, with an `Idempotency-Key` header (the request id).
    pub url: String,
    /// Extra headers (e.g. an authorization token from the environment: `{env:VAR}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Attempts before giving up (backoff doubling from 1 s). Default 8.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_attempts() -> u32 {
    8
}

/// The Kubernetes Job action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesJobDecl {
    /// A Job manifest in JSON, at this path relative to the catalog's folder; `{{request_id}}`,
    /// `{{model}}`, `{{policy}}`, `{{from_time}}`, `{{to_time}}` and `{{archive_prefix}}` are
    /// filled in inside its string values only (train-trigger parses it at start-up).
    pub template: String,
    /// Namespace of the Job.
    pub namespace: String,
}

/// The metrics drift thresholds may name.
pub const DRIFT_METRICS: [&str; 4] = ["psi", "ks", "wasserstein", "js"];

impl TriggerDecl {
    /// The cooldown in milliseconds.
    pub fn cooldown_ms(&self) -> Result<i64, String> {
        let text = self.cooldown.trim();
        let digits = text.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && text[..digits].chars().all(|c| c == '0') {
            return parse_duration(&format!("1{}", &text[digits..]))
                .map(|_| 0)
                .map_err(|e| format!("cooldown: {e}"));
        }
        parse_duration(text).map_err(|e| format!("cooldown: {e}"))
    }
}

/// Checks declarations against the catalog's topics; the message names the trigger.
pub(crate) fn validate(
    triggers: &[TriggerDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for t in triggers {
        let fail = |m: String| Err(format!("trigger {}: {m}", t.name));
        if !super::transforms::is_identifier(&t.name) {
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
        for input in &t.inputs {
            if !topics.contains_key(input) {
                return fail(format!("input topic {input} is not in the catalog"));
            }
        }
        if t.window_rows == 0 {
            return fail("window_rows must be at least 1".into());
        }
        if let Err(e) = t.cooldown_ms() {
            return fail(e);
        }
        if t.policies.is_empty() {
            return fail("no policy".into());
        }
        let mut features = BTreeSet::new();
        for f in &t.features {
            if !features.insert(f.name.as_str()) {
                return fail(format!("feature {} is declared twice", f.name));
            }
            if let Some(topic) = &f.topic
                && !t.inputs.contains(topic)
            {
                return fail(format!(
                    "feature {}: {topic} is not one of the inputs",
                    f.name
                ));
            }
        }
        let mut policies = BTreeSet::new();
        for p in &t.policies {
            if !policies.insert(p.name()) {
                return fail(format!("policy {} is declared twice", p.name()));
            }
            match p {
                PolicyDecl::Volume { rows, .. } if *rows == 0 => {
                    return fail(format!("policy {}: rows must be at least 1", p.name()));
                }
                PolicyDecl::Drift {
                    thresholds,
                    rearm_below,
                    ..
                } => {
                    if t.features.is_empty() {
                        return fail(format!(
                            "policy {}: a drift policy needs features",
                            p.name()
                        ));
                    }
                    if thresholds.is_empty() {
                        return fail(format!("policy {}: no threshold", p.name()));
                    }
                    if let Some(m) = thresholds
                        .keys()
                        .find(|m| !DRIFT_METRICS.contains(&m.as_str()))
                    {
                        return fail(format!(
                            "policy {}: unknown metric {m} (use {})",
                            p.name(),
                            DRIFT_METRICS.join(", ")
                        ));
                    }
                    if !(*rearm_below > 0.0 && *rearm_below <= 1.0) {
                        return fail(format!(
                            "policy {}: rearm_below must be in (0, 1]",
                            p.name()
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
