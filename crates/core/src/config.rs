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

/// Every top-level section of a Tributary service's or of the CLI's configuration. One
/// environment (a Kubernetes ConfigMap, a compose anchor) may carry the variables of all of
/// them: each program takes those of its own sections and leaves those of the other programs'
/// sections alone. A variable naming a section no Tributary program has is still an error, as
/// is an unknown key in one of its own sections.
pub const SECTIONS: &[&str] = &[
    "archive",
    "feature",
    "ingest",
    "kafka",
    "lake",
    "registry",
    "schema_registry",
    "telemetry",
    "topics",
    "train_trigger",
    "transform",
];

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
    // The variables of other programs' sections are theirs (see [`SECTIONS`]).
    let own = struct_fields::<T>();
    let env = Env::prefixed(ENV_PREFIX).filter(move |key| {
        let section = key.as_str().split("__").next().unwrap_or_default();
        let theirs = SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section));
        let ours = own.is_none_or(|own| own.iter().any(|f| f.eq_ignore_ascii_case(section)));
        ours || !theirs
    });
    figment = figment.merge(env.split("__"));
    figment.extract().map_err(|e| {
        // figment's Display names the key path and the source (file or env variable).
        let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        ConfigError::Invalid(all.join("; "))
    })
}

/// The top-level field names `T`'s `Deserialize` declares, if `T` is a struct: asked of a
/// deserializer that answers nothing else.
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe {
        fields: &mut fields,
    });
    fields
}

/// The deserializer [`struct_fields`] uses: it records a struct's field names and stops.
struct FieldProbe<'a> {
    fields: &'a mut Option<&'static [&'static str]>,
}

/// What [`FieldProbe`] always answers: it deserializes nothing.
#[derive(Debug)]
struct Probed;

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names probed")
    }
}

impl std::error::Error for Probed {}

impl serde::de::Error for Probed {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Probed
    }
}

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        *self.fields = Some(fields);
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
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

    /// One environment for every program: the variables of other programs' sections are
    /// left to them (whatever their values), those of its own sections are taken, and a typo
    /// in its own section or a section no program has still fails, naming the variable.
    #[test]
    fn a_shared_environment_is_taken_section_by_section() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRIBUTARY__REGISTRY__URL", "http://registry:8081");
            jail.set_env("TRIBUTARY__SCHEMA_REGISTRY__LISTEN", "not an address");
            jail.set_env("TRIBUTARY__INGEST__MAX_BODY_BYTES", "many");
            jail.set_env("TRIBUTARY__LAKE__URL", "s3://lake");
            jail.set_env("TRIBUTARY__INNER__BOOTSTRAP_SERVERS", "env:9092");
            let cfg: Sample = load(DEFAULTS, None).unwrap();
            assert_eq!(cfg.inner.bootstrap_servers, "env:9092");
            assert_eq!(cfg.port, 1);

            jail.set_env("TRIBUTARY__INNER__BOOTSTRAP_SERVER", "typo:9092");
            let err = load::<Sample>(DEFAULTS, None).unwrap_err().to_string();
            assert!(err.contains("bootstrap_server"), "{err}");
            assert!(
                err.contains("INNER.BOOTSTRAP_SERVER") && err.contains("TRIBUTARY__"),
                "{err}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRIBUTARY__REGISTRY__URL", "http://registry:8081");
            jail.set_env("TRIBUTARY__KAFAK__BOOTSTRAP_SERVERS", "typo:9092");
            let err = load::<Sample>(DEFAULTS, None).unwrap_err().to_string();
            assert!(err.contains("kafak"), "{err}");
            Ok(())
        });
        // A program whose configuration is no struct takes every variable.
        assert_eq!(struct_fields::<serde_json::Value>(), None);
        assert_eq!(
            struct_fields::<Sample>(),
            Some(&["name", "port", "inner"][..])
        );
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
