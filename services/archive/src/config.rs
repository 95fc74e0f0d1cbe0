//! Configuration of the archive service (`[archive]`, `[kafka]`, `[registry]`, `[lake]`, `[telemetry]`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tributary_core::bus::KafkaConfig;
use tributary_core::config::{ConfigError, load};
use tributary_core::lake::LakeConfig;
use tributary_core::schema::registry::RegistryConfig;
use tributary_core::telemetry::TelemetryConfig;

/// Built-in defaults; a TOML file and `TRIBUTARY__*` variables override them.
pub const DEFAULTS: &str = r#"
[archive]
schemas = "schemas"
group_id = "tributary-archive"
max_file_records = 1000000
max_file_bytes = 67108864
max_buffered_bytes = 134217728
max_open_seconds = 300
compression = "zstd"
batch_records = 5000

[kafka]
bootstrap_servers = "127.0.0.1:9092"
client_id = "tributary-archive"

[registry]
url = "http://127.0.0.1:8081"

[lake]
url = "file:///var/lib/tributary/lake"

[telemetry]
admin_addr = "0.0.0.0:9093"
"#;

/// The whole configuration of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What is archived and how files are cut.
    pub archive: ArchiveSettings,
    /// The Kafka cluster read from (and written to, for dead letters).
    pub kafka: KafkaConfig,
    /// The schema registry the writer schemas come from.
    pub registry: RegistryConfig,
    /// Where the Parquet files go.
    pub lake: LakeConfig,
    /// Logs, metrics and the admin server.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Settings of the archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    /// The schemas folder holding the topic catalog; topics with `archive = true` are archived.
    pub schemas: PathBuf,
    /// Consumer group of the archive replicas.
    pub group_id: String,
    /// A file is closed once it holds this many records.
    pub max_file_records: u64,
    /// A file is closed once its buffered Arrow data reaches this many bytes.
    pub max_file_bytes: u64,
    /// Above this many buffered bytes over all open files, the largest file is written early
    /// instead of the process growing.
    pub max_buffered_bytes: u64,
    /// A file open this long (wall clock) is written even if small, so the lake stays fresh and
    /// offsets advance on quiet topics.
    pub max_open_seconds: u64,
    /// Parquet compression: `zstd`, `snappy` or `none`.
    pub compression: String,
    /// Largest batch of records decoded at once.
    pub batch_records: usize,
}

impl Config {
    /// Loads the defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        load(DEFAULTS, file)
    }
}
