//! The command's configuration: `[kafka]` and `[registry]` of a TOML file (the services' own
//! file works: other sections are ignored), over built-in defaults for a local stack, under
//! `TRIBUTARY__*` environment variables.

use std::path::Path;

use serde::Deserialize;
use tributary_core::bus::KafkaConfig;
use tributary_core::config::ConfigError;
use tributary_core::lake::LakeConfig;
use tributary_core::schema::registry::RegistryConfig;

/// Defaults: the local stack's broker and registry.
const DEFAULTS: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[registry]
url = "http://127.0.0.1:8081"

[topics]
dlq_partitions = 1
"#;

/// What `tributary` reads from its configuration.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CliConfig {
    /// The brokers topics are applied to.
    pub(crate) kafka: KafkaConfig,
    /// The schema registry subjects are checked against and registered in.
    pub(crate) registry: RegistryConfig,
    /// How topics outside the catalog are created.
    pub(crate) topics: TopicsConfig,
    /// The archive's lake, whose Parquet files `tributary status` counts (optional).
    #[serde(default)]
    pub(crate) lake: Option<LakeConfig>,
}

/// `[topics]`: settings of the topics the catalog implies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicsConfig {
    /// Partitions of each dead-letter topic `dlq.<stage>`.
    pub(crate) dlq_partitions: i32,
}

impl CliConfig {
    /// Defaults, then `file` if given, then `TRIBUTARY__*` variables.
    pub(crate) fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        tributary_core::config::load(DEFAULTS, file)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn file_overrides_defaults_and_other_sections_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "[kafka]\nbootstrap_servers = \"k:9092\"\n[lake]\nurl = \"memory://\"\n",
        )
        .unwrap();
        let config = CliConfig::load(Some(&file)).unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "k:9092");
        assert_eq!(config.registry.url, "http://127.0.0.1:8081");
        assert_eq!(config.topics.dlq_partitions, 1);
    }

    #[test]
    fn unknown_key_in_a_section_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[registry]\nurl = \"http://r\"\nurll = \"x\"\n").unwrap();
        let e = CliConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(e.contains("urll"), "{e}");
    }
}
