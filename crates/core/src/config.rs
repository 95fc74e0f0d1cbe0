//! Layered configuration: built-in defaults, then a TOML file, then `TRIBUTARY__*` environment
//! variables (`TRIBUTARY__KAFKA__BOOTSTRAP_SERVERS` sets `kafka.bootstrap_servers`).
//!
//! Each service declares its own configuration struct from the shared sections
//! ([`crate::bus::KafkaConfig`], [`crate::schema::registry::RegistryConfig`],
//! [`crate::lake::LakeConfig`], [`crate::telemetry::TelemetryConfig`]) and loads it with [`load`].
//! Secrets use [`Secret`], which never prints its value.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TRIBUTARY__";

/// A configuration error; the message names the file and key that are wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file given does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A key has a wrong type or value, or a required key is missing.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads a configuration: `defaults` (TOML text embedded in the binary), then `file` if given,
/// then `TRIBUTARY__*` environment variables.
pub fn load<T: DeserializeOwned>(defaults: &str, file: Option<&Path>) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Toml::string(defaults));
    if let Some(path) = file {
        // figment silently skips a missing file; a file the user named must exist.
        std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    figment.extract().map_err(|e| {
        // figment's Display names the key path and the source (file or env variable).
        let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        ConfigError::Invalid(all.join("; "))
    })
}

/// A secret value (password, key, token): given inline, or read from a file or an environment
/// variable at load time. `Debug` and `Display` print `[redacted]`.
///
/// In TOML: `password = "inline"`, `password = { file = "/run/secrets/pw" }` or
/// `password = { env = "SASL_PASSWORD" }`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for passing to the client that needs it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretSource {
    Inline(String),
    File { file: PathBuf },
    Env { env: String },
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match SecretSource::deserialize(deserializer)? {
            SecretSource::Inline(value) => Ok(Secret(value)),
            SecretSource::File { file } => std::fs::read_to_string(&file)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    D::Error::custom(format!("cannot read secret file {}: {e}", file.display()))
                }),
            SecretSource::Env { env } => std::env::var(&env).map(Secret).map_err(|_| {
                D::Error::custom(format!("secret environment variable {env} is not set"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        port: u16,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        bootstrap_servers: String,
        password: Option<Secret>,
    }

    const DEFAULTS: &str = r#"
name = "default"
port = 1
[inner]
bootstrap_servers = "localhost:9092"
"#;

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "port = 2\n[inner]\nbootstrap_servers = \"file:9092\"\n",
            )?;
            jail.set_env("TRIBUTARY__INNER__BOOTSTRAP_SERVERS", "env:9092");
            let cfg: Sample = load(DEFAULTS, Some(Path::new("svc.toml"))).unwrap();
            assert_eq!(cfg.name, "default");
            assert_eq!(cfg.port, 2);
            assert_eq!(cfg.inner.bootstrap_servers, "env:9092");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_file_and_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "port = \"not a number\"\n")?;
            let err = load::<Sample>(DEFAULTS, Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("port"), "{err}");
            assert!(err.contains("bad.toml"), "{err}");

            jail.create_file("unknown.toml", "[inner]\nbootstrap_server = \"typo\"\n")?;
            let err = load::<Sample>(DEFAULTS, Some(Path::new("unknown.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("bootstrap_server"), "{err}");

            let err = load::<Sample>(DEFAULTS, Some(Path::new("missing.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("missing.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn env_errors_name_the_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRIBUTARY__PORT", "70000");
            let err = load::<Sample>(DEFAULTS, None).unwrap_err().to_string();
            assert!(err.contains("PORT") && err.contains("TRIBUTARY__"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted_and_read_from_files_and_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("pw", "hunter2\n")?;
            let cfg: Sample = load(
                DEFAULTS,
                Some({
                    jail.create_file(
                        "s.toml",
                        "[inner]\nbootstrap_servers = \"x\"\npassword = { file = \"pw\" }\n",
                    )?;
                    Path::new("s.toml")
                }),
            )
            .unwrap();
            let pw = cfg.inner.password.as_ref().unwrap();
            assert_eq!(pw.expose(), "hunter2");
            let printed = format!("{cfg:?} {pw}");
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(printed.contains("[redacted]"));

            jail.set_env("TRIBUTARY__INNER__PASSWORD", "inline-secret");
            let cfg: Sample = load(DEFAULTS, None).unwrap();
            assert_eq!(cfg.inner.password.unwrap().expose(), "inline-secret");
            Ok(())
        });
    }

    #[test]
    fn secrets_can_name_an_environment_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MY_SECRET", "from-env");
            jail.create_file(
                "e.toml",
                "[inner]\nbootstrap_servers = \"x\"\npassword = { env = \"MY_SECRET\" }\n",
            )?;
            let cfg: Sample = load(DEFAULTS, Some(Path::new("e.toml"))).unwrap();
            assert_eq!(cfg.inner.password.unwrap().expose(), "from-env");

            jail.create_file(
                "m.toml",
                "[inner]\nbootstrap_servers = \"x\"\npassword = { env = \"NOT_SET_ANYWHERE\" }\n",
            )?;
            let err = load::<Sample>(DEFAULTS, Some(Path::new("m.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("password"), "{err}");
            Ok(())
        });
    }
}
