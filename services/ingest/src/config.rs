//! Configuration of the ingest service (`[ingest]`, `[kafka]`, `[registry]`, `[telemetry]`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tributary_core::auth::ApiKey;
use tributary_core::bus::KafkaConfig;
use tributary_core::config::{ConfigError, Secret, load};
use tributary_core::schema::registry::RegistryConfig;
use tributary_core::telemetry::TelemetryConfig;

/// Built-in defaults; a TOML file and `TRIBUTARY__*` variables override them.
pub const DEFAULTS: &str = r#"
[ingest]
listen = "0.0.0.0:8080"
schemas = "schemas"
max_body_bytes = 1048576
max_decompressed_bytes = 8388608
max_records_per_request = 1000
request_timeout_ms = 10000
max_in_flight_records = 50000
rate_limit_records_per_second = 5000
rate_limit_burst = 10000
cors_allowed_origins = []
files_progress_topic = "_tributary.ingest.files"
postgres_progress_topic = "_tributary.ingest.postgres"

[kafka]
bootstrap_servers = "127.0.0.1:9092"
client_id = "tributary-ingest"

[registry]
url = "http://127.0.0.1:8081"

[telemetry]
admin_addr = "0.0.0.0:9090"
"#;

/// The whole configuration of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP API.
    pub ingest: IngestSettings,
    /// The Kafka cluster records are produced to.
    pub kafka: KafkaConfig,
    /// The schema registry (ours or any Confluent-compatible one).
    pub registry: RegistryConfig,
    /// Logs, metrics and the admin server.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Settings of the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// The schemas folder holding the topic catalog.
    pub schemas: PathBuf,
    /// Largest request body, compressed as sent (413 above it, with or without Content-Length).
    pub max_body_bytes: usize,
    /// Largest body after gzip/zstd decompression (413 above it: a guard against zip bombs).
    pub max_decompressed_bytes: usize,
    /// Most records in one request (413 above it).
    pub max_records_per_request: usize,
    /// Longest time a request waits for the broker's acknowledgement before answering 503.
    pub request_timeout_ms: u64,
    /// Most records handed to the producer and not yet acknowledged, over all requests. A
    /// request that would pass it is answered 503 at once with nothing produced; keep it below
    /// librdkafka's `queue.buffering.max.messages` (100,000 by default).
    pub max_in_flight_records: usize,
    /// Records per second each credential may send on average (429 beyond it).
    pub rate_limit_records_per_second: f64,
    /// Records a credential may send at once above the average rate.
    pub rate_limit_burst: f64,
    /// Origins browsers may send events from (CORS); `["*"]` for any.
    pub cors_allowed_origins: Vec<String>,
    /// Who may send: each credential is an API key (`X-API-Key`) or bearer token
    /// (`Authorization: Bearer`) allowed a set of topics (`topics = ["raw.*"]`: names, prefixes
    /// ending in `*`, or `"*"` for every topic). No credential: every request is 401.
    #[serde(default)]
    pub credentials: Vec<ApiKey>,
    /// The catalog's sources to run (`[[source]]` names); absent: all of them.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Compacted topic recording which files were ingested (key: source and path).
    pub files_progress_topic: String,
    /// Compacted topic recording PostgreSQL sources' snapshots and polling positions (key:
    /// source and table).
    pub postgres_progress_topic: String,
    /// Object-store settings for file sources (endpoint, region, credentials; the URL comes
    /// from each source).
    #[serde(default)]
    pub object_store: ObjectStoreSettings,
}

/// How file sources reach their object store (`[ingest.object_store]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSettings {
    /// S3-compatible endpoint (MinIO, moto, ...); default AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// Access key id.
    pub s3_access_key_id: Option<Secret>,
    /// Secret access key.
    pub s3_secret_access_key: Option<Secret>,
    /// Allow plain HTTP endpoints.
    #[serde(default)]
    pub allow_http: bool,
}

impl Config {
    /// Loads the defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        load(DEFAULTS, file)
    }
}
