//! Configuration of the registry service (`[registry]`, `[kafka]`, `[telemetry]`).

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use tributary_core::bus::KafkaConfig;
use tributary_core::config::{ConfigError, load};
use tributary_core::schema::catalog::Compatibility;
use tributary_core::telemetry::TelemetryConfig;

use crate::access::{Anonymous, User};

/// Built-in defaults; a TOML file and `TRIBUTARY__*` variables override them.
pub const DEFAULTS: &str = r#"
[schema_registry]
listen = "0.0.0.0:8081"
topic = "_schemas"
default_compatibility = "BACKWARD"

[kafka]
bootstrap_servers = "127.0.0.1:9092"
client_id = "tributary-registry"

[telemetry]
admin_addr = "0.0.0.0:9091"
"#;

/// The whole configuration of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The API server and storage (`[schema_registry]`; `[registry]` is the client section every service uses).
    pub schema_registry: RegistrySettings,
    /// The Kafka cluster holding the schemas topic.
    pub kafka: KafkaConfig,
    /// Logs, metrics and the admin server.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Settings of the registry itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Address the REST API listens on.
    pub listen: SocketAddr,
    /// The compacted topic holding every schema, version and config (one partition).
    pub topic: String,
    /// Level for subjects with no level of their own and no global level set.
    pub default_compatibility: Compatibility,
    /// Who may call the API (HTTP basic): name, password, role (`read`, `write`, `admin`) and,
    /// for `write`, the subjects. No user and `anonymous = "none"`: the registry does not start.
    #[serde(default)]
    pub users: Vec<User>,
    /// What requests without credentials may do: `"none"` (401, the default) or `"read"`.
    #[serde(default)]
    pub anonymous: Anonymous,
}

impl Config {
    /// Loads the defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        load(DEFAULTS, file)
    }
}
