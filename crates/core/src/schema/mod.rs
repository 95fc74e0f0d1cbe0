//! Schemas: the topic catalog, the Confluent wire format, the registry client, and the Avro
//! codecs (JSON -> Avro validation, Avro <-> Arrow in batches).

pub mod arrow;
pub mod bounded;
pub mod catalog;
pub mod compat;
pub mod conform;
pub mod features;
pub mod json;
pub mod registry;
pub mod sources;
pub mod transforms;
pub mod triggers;
pub mod wire;
