//! Configuration of the train-trigger service (`[train_trigger]`, `[kafka]`, `[registry]`,
//! `[telemetry]`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tributary_core::bus::KafkaConfig;
use tributary_core::config::{ConfigError, load};
use tributary_core::schema::registry::RegistryConfig;
use tributary_core::telemetry::TelemetryConfig;

/// Built-in defaults; a TOML file and `TRIBUTARY__*` variables override them.
pub const DEFAULTS: &str = r#"
[train_trigger]
schemas = "schemas"
group_id = "tributary-train-trigger"
only = []
batch_records = 5000
batch_wait_ms = 100
state_topic = "_tributary.train-trigger.state"
archive_root = "file:///var/lib/tributary/lake"
tick_seconds = 10
webhook_env = []

[train_trigger.kubernetes]
api_url = "https://kubernetes.default.svc"
token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
dry_run = true

[kafka]
bootstrap_servers = "127.0.0.1:9092"
client_id = "tributary-train-trigger"

[registry]
url = "http://127.0.0.1:8081"

[telemetry]
admin_addr = "0.0.0.0:9096"
"#;

/// The whole configuration of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which triggers run and where their state lives.
    pub train_trigger: Settings,
    /// The Kafka cluster read from and written to.
    pub kafka: KafkaConfig,
    /// The schema registry.
    pub registry: RegistryConfig,
    /// Logs, metrics and the admin server.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Settings of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The schemas folder holding the catalog whose `[[trigger]]`s run.
    pub schemas: PathBuf,
    /// Consumer group. Run one replica: a trigger must see every partition of its inputs.
    pub group_id: String,
    /// Names of the triggers to run; empty: all.
    pub only: Vec<String>,
    /// Largest batch.
    pub batch_records: usize,
    /// Longest wait for a batch, in milliseconds.
    pub batch_wait_ms: u64,
    /// Compacted topic holding each trigger's state (one partition).
    pub state_topic: String,
    /// Root of the archive's lake, for the requests' `archive_prefix` (`<root>/<topic>/`).
    pub archive_root: String,
    /// How often schedules are checked and pending actions retried while no record arrives.
    pub tick_seconds: u64,
    /// Environment variables a webhook header may expand with `{env:NAME}` (the catalog is
    /// written by others than the operator: no other variable leaves the process).
    pub webhook_env: Vec<String>,
    /// The Kubernetes API, for `kubernetes_job` actions.
    pub kubernetes: KubernetesSettings,
}

/// Where and how Jobs are created.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// The API server.
    pub api_url: String,
    /// A bearer token file (the pod's service account token).
    pub token_file: Option<PathBuf>,
    /// The cluster's CA certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// Print the Job manifest instead of creating it.
    pub dry_run: bool,
}

impl Config {
    /// Loads the defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        load(DEFAULTS, file)
    }
}
