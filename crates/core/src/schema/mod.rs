//! Schemas: the topic catalog, the Confluent wire format, the registry client, and the Avro
//! codecs (JSON -> Avro validation, Avro <-> Arrow in batches).

pub mod arrow;
pub mod bounded;
pub mod catalog;
pub mod columns;
pub mod compat;
pub mod conform;
pub mod features;
/// Fuzz targets (tests, and AFL++ through `crates/fuzz-afl`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod json;
pub mod registry;
pub mod sources;
pub mod transforms;
pub mod triggers;
pub mod wire;

/// Why an Avro schema's text was refused.
#[derive(Debug, thiserror::Error)]
pub enum SchemaParseError {
    /// The Avro library's answer.
    #[error("{0}")]
    Avro(#[from] apache_avro::Error),
    /// The Avro library panicked on the text.
    #[error("invalid schema (the Avro parser failed on it: {0})")]
    Panicked(String),
}

/// Parses an Avro schema's JSON text. `apache_avro::Schema::parse_str` (0.20) panics on some
/// malformed schemas (a nested record with an invalid name, found by fuzzing: docs/security.md);
/// here that is an error like any other, so no schema text from a registry, a request or a file
/// can stop a service.
pub fn parse_avro_schema(text: &str) -> Result<apache_avro::Schema, SchemaParseError> {
    match std::panic::catch_unwind(|| apache_avro::Schema::parse_str(text)) {
        Ok(parsed) => Ok(parsed?),
        Err(panic) => Err(SchemaParseError::Panicked(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "panic".to_string()),
        )),
    }
}
