//! Retraining triggers of the catalog (`[[trigger]]` in `catalog.toml`): the model, the topics
//! watched (feature topics, optionally a topic of the model's predictions), the features
//! profiled, the policies that decide (volume, schedule, drift), the cooldown, and the actions
//! beside the `train.requests` record (a webhook, a Kubernetes Job). The train-trigger service
//! runs them; this module parses them and checks what can be checked statically.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::catalog::{DeclError, DeclKind, DurationKeyError, Topic, parse_duration};

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
    pub fn cooldown_ms(&self) -> Result<i64, DurationKeyError> {
        let text = self.cooldown.trim();
        let digits = text.chars().take_while(char::is_ascii_digit).count();
        let key_error = |error| DurationKeyError {
            key: "cooldown",
            error,
        };
        if digits > 0 && text[..digits].chars().all(|c| c == '0') {
            return parse_duration(&format!("1{}", &text[digits..]))
                .map(|_| 0)
                .map_err(key_error);
        }
        parse_duration(text).map_err(key_error)
    }
}

/// What is wrong with a `[[trigger]]` (besides its name:
/// [`DeclProblem`](super::catalog::DeclProblem)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerProblem {
    /// `inputs = []`.
    #[error("inputs is empty")]
    NoInputs,
    /// An input topic the catalog does not declare.
    #[error("input topic {topic} is not in the catalog")]
    UnknownInput {
        /// The topic named.
        topic: String,
    },
    /// `window_rows = 0`.
    #[error("window_rows must be at least 1")]
    NoWindowRows,
    /// `cooldown` does not parse.
    #[error(transparent)]
    Cooldown(#[from] DurationKeyError),
    /// No `[[trigger.policy]]`.
    #[error("no policy")]
    NoPolicy,
    /// Two features have the same name.
    #[error("feature {feature} is declared twice")]
    FeatureDeclaredTwice {
        /// The feature's name.
        feature: String,
    },
    /// A feature's topic that is not one of the trigger's inputs.
    #[error("feature {feature}: {topic} is not one of the inputs")]
    FeatureTopic {
        /// The feature's name.
        feature: String,
        /// The topic it names.
        topic: String,
    },
    /// Two policies have the same name.
    #[error("policy {policy} is declared twice")]
    PolicyDeclaredTwice {
        /// The policy's name.
        policy: String,
    },
    /// A volume policy with `rows = 0`.
    #[error("policy {policy}: rows must be at least 1")]
    NoRows {
        /// The policy's name.
        policy: String,
    },
    /// A drift policy, but no feature to profile.
    #[error("policy {policy}: a drift policy needs features")]
    DriftWithoutFeatures {
        /// The policy's name.
        policy: String,
    },
    /// A drift policy without thresholds.
    #[error("policy {policy}: no threshold")]
    NoThreshold {
        /// The policy's name.
        policy: String,
    },
    /// A drift threshold for a metric not in [`DRIFT_METRICS`].
    #[error("policy {policy}: unknown metric {metric} (use {})", DRIFT_METRICS.join(", "))]
    UnknownMetric {
        /// The policy's name.
        policy: String,
        /// The metric named.
        metric: String,
    },
    /// A drift policy's `rearm_below` outside (0, 1].
    #[error("policy {policy}: rearm_below must be in (0, 1]")]
    RearmBelow {
        /// The policy's name.
        policy: String,
    },
}

impl TriggerProblem {
    /// The key at fault, as written in `catalog.toml`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::NoInputs | Self::UnknownInput { .. } => "inputs",
            Self::NoWindowRows => "window_rows",
            Self::Cooldown(_) => "cooldown",
            Self::FeatureDeclaredTwice { .. } | Self::FeatureTopic { .. } => "feature",
            Self::NoPolicy
            | Self::PolicyDeclaredTwice { .. }
            | Self::NoRows { .. }
            | Self::DriftWithoutFeatures { .. }
            | Self::NoThreshold { .. }
            | Self::UnknownMetric { .. }
            | Self::RearmBelow { .. } => "policy",
        }
    }
}

/// Checks declarations against the catalog's topics; the error names the trigger.
pub(crate) fn validate(
    triggers: &[TriggerDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), DeclError> {
    DeclKind::Trigger.validate_each(triggers, |d| &d.name, |d| check(d, topics))
}

fn check(t: &TriggerDecl, topics: &BTreeMap<String, Topic>) -> Result<(), TriggerProblem> {
    if t.inputs.is_empty() {
        return Err(TriggerProblem::NoInputs);
    }
    if let Some(input) = t.inputs.iter().find(|i| !topics.contains_key(*i)) {
        return Err(TriggerProblem::UnknownInput {
            topic: input.clone(),
        });
    }
    if t.window_rows == 0 {
        return Err(TriggerProblem::NoWindowRows);
    }
    t.cooldown_ms()?;
    if t.policies.is_empty() {
        return Err(TriggerProblem::NoPolicy);
    }
    let mut features = BTreeSet::new();
    for f in &t.features {
        if !features.insert(f.name.as_str()) {
            return Err(TriggerProblem::FeatureDeclaredTwice {
                feature: f.name.clone(),
            });
        }
        if let Some(topic) = &f.topic
            && !t.inputs.contains(topic)
        {
            return Err(TriggerProblem::FeatureTopic {
                feature: f.name.clone(),
                topic: topic.clone(),
            });
        }
    }
    let mut policies = BTreeSet::new();
    for p in &t.policies {
        let policy = || p.name().to_string();
        if !policies.insert(p.name()) {
            return Err(TriggerProblem::PolicyDeclaredTwice { policy: policy() });
        }
        match p {
            PolicyDecl::Volume { rows, .. } if *rows == 0 => {
                return Err(TriggerProblem::NoRows { policy: policy() });
            }
            PolicyDecl::Drift {
                thresholds,
                rearm_below,
                ..
            } => {
                if t.features.is_empty() {
                    return Err(TriggerProblem::DriftWithoutFeatures { policy: policy() });
                }
                if thresholds.is_empty() {
                    return Err(TriggerProblem::NoThreshold { policy: policy() });
                }
                if let Some(m) = thresholds
                    .keys()
                    .find(|m| !DRIFT_METRICS.contains(&m.as_str()))
                {
                    return Err(TriggerProblem::UnknownMetric {
                        policy: policy(),
                        metric: m.clone(),
                    });
                }
                if !(*rearm_below > 0.0 && *rearm_below <= 1.0) {
                    return Err(TriggerProblem::RearmBelow { policy: policy() });
                }
            }
            _ => {}
        }
    }
    Ok(())
}
