//! Configuration of the feature service (`[feature]`, `[kafka]`, `[registry]`, `[telemetry]`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tributary_core::auth::ApiKey;
use tributary_core::bus::KafkaConfig;
use tributary_core::config::{ConfigError, load};
use tributary_core::schema::registry::RegistryConfig;
use tributary_core::telemetry::TelemetryConfig;

/// Built-in defaults; a TOML file and `TRIBUTARY__*` variables override them.
pub const DEFAULTS: &str = r#"
[feature]
schemas = "schemas"
group_id = "tributary-feature"
only = []
batch_records = 5000
batch_wait_ms = 100
checkpoint_ms = 5000
checkpoint_records = 500000
listen = "0.0.0.0:8083"

[kafka]
bootstrap_servers = "127.0.0.1:9092"
client_id = "tributary-feature"

[registry]
url = "http://127.0.0.1:8081"

[telemetry]
admin_addr = "0.0.0.0:9095"
"#;

/// The whole configuration of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which views run, batching, and the lookup endpoint.
    pub feature: FeatureSettings,
    /// The Kafka cluster read from and written to.
    pub kafka: KafkaConfig,
    /// The schema registry.
    pub registry: RegistryConfig,
    /// Logs, metrics and the admin server.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Settings of the feature service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSettings {
    /// The schemas folder holding the catalog whose `[[feature]]` views run.
    pub schemas: PathBuf,
    /// Consumer group of the replicas.
    pub group_id: String,
    /// Names of the views to run; empty: all of the catalog's.
    pub only: Vec<String>,
    /// Largest batch of records handled at once.
    pub batch_records: usize,
    /// Longest wait for a batch to fill, in milliseconds.
    pub batch_wait_ms: u64,
    /// Longest time between checkpoints (window state and progress written to the changelog;
    /// input offsets are committed only up to the last checkpoint), in milliseconds.
    pub checkpoint_ms: u64,
    /// Most input records handled between checkpoints.
    pub checkpoint_records: u64,
    /// Address of the online lookup API (`GET /v1/features/{view}/{entity}`).
    pub listen: SocketAddr,
    /// Who may look features up: each an API key (`X-API-Key` or `Authorization: Bearer`)
    /// allowed a set of views (`views = ["user_activity"]`, prefixes ending in `*`, or `"*"`).
    /// No key: every lookup is 401.
    #[serde(default)]
    pub credentials: Vec<ApiKey>,
}

impl Config {
    /// Loads the defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        load(DEFAULTS, file)
    }
}
