use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::config::Secret;

/// Kafka client settings (`[kafka]` in a service's configuration), shared by every client a
/// service creates. Security settings are passed through to librdkafka unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub security_protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL password.
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// File of CA certificates to verify the brokers with.
    #[serde(default)]
    pub ssl_ca_location: Option<String>,
    /// Client certificate for mutual TLS.
    #[serde(default)]
    pub ssl_certificate_location: Option<String>,
    /// Client private key for mutual TLS.
    #[serde(default)]
    pub ssl_key_location: Option<String>,
    /// Password of the client private key.
    #[serde(default)]
    pub ssl_key_password: Option<Secret>,
    /// Client id reported to the brokers.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// How long the producer waits to fill a batch, in milliseconds.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// Producer compression: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// How long a produced record may wait for acknowledgement before it fails, in milliseconds.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u32,
    /// Replication factor of topics created from the catalog (1 for a single local broker).
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// Further librdkafka properties, passed through as they are (`"socket.keepalive.enable" = "true"`).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

fn default_client_id() -> String {
    "tributary".to_string()
}
fn default_linger_ms() -> u32 {
    5
}
fn default_compression() -> String {
    "zstd".to_string()
}
fn default_delivery_timeout_ms() -> u32 {
    30_000
}
fn default_replication_factor() -> i32 {
    1
}

impl KafkaConfig {
    /// Settings for a local broker, everything else at its default.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            client_id: default_client_id(),
            linger_ms: default_linger_ms(),
            compression: default_compression(),
            delivery_timeout_ms: default_delivery_timeout_ms(),
            replication_factor: default_replication_factor(),
            extra: BTreeMap::new(),
        }
    }

    /// The librdkafka settings shared by producers, consumers and admin clients.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", &self.client_id);
        let optional = [
            ("security.protocol", self.security_protocol.as_deref()),
            ("sasl.mechanism", self.sasl_mechanism.as_deref()),
            ("sasl.username", self.sasl_username.as_deref()),
            (
                "sasl.password",
                self.sasl_password.as_ref().map(Secret::expose),
            ),
            ("ssl.ca.location", self.ssl_ca_location.as_deref()),
            (
                "ssl.certificate.location",
                self.ssl_certificate_location.as_deref(),
            ),
            ("ssl.key.location", self.ssl_key_location.as_deref()),
            (
                "ssl.key.password",
                self.ssl_key_password.as_ref().map(Secret::expose),
            ),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                c.set(key, value);
            }
        }
        for (key, value) in &self.extra {
            c.set(key, value);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn security_settings_pass_through_and_password_stays_hidden() {
        let mut k = KafkaConfig::new("b1:9092,b2:9092");
        k.security_protocol = Some("sasl_ssl".into());
        k.sasl_mechanism = Some("SCRAM-SHA-512".into());
        k.sasl_username = Some("svc".into());
        k.sasl_password = Some(Secret::new("s3cret"));
        k.extra
            .insert("socket.keepalive.enable".into(), "true".into());
        let c = k.client_config();
        assert_eq!(c.get("bootstrap.servers"), Some("b1:9092,b2:9092"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(c.get("ssl.ca.location"), None);
        assert!(!format!("{k:?}").contains("s3cret"));
    }
}
