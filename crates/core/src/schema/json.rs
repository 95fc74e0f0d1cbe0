//! JSON -> Avro validation.
//!
//! The HTTP ingest service receives JSON records; [`json_to_avro`] checks each one against the
//! topic's Avro schema and builds the Avro value, and [`json_to_avro_datum`] also encodes it to the
//! Avro binary body. Errors carry a JSONPath-like location (`$.items[2].price`) of the bad value.
//!
//! Unions take either the plain value (the first branch that accepts it wins) or the Avro JSON
//! encoding `{"<type name>": value}`. Bytes and fixed take the Avro JSON convention of a string
//! with one char (code point 0-255) per byte. Logical types take their underlying Avro JSON value
//! or a readable string: decimals as `"12.34"` or a number, uuids as strings, dates as
//! `"YYYY-MM-DD"`, times as `"HH:MM:SS[.f]"`, timestamps as RFC 3339 and local timestamps as
//! `"YYYY-MM-DDTHH:MM:SS[.f]"`.

mod convert;
mod decimal;
mod path;
mod scalar;
mod time;

#[cfg(test)]
mod tests;

pub use convert::{json_to_avro, json_to_avro_datum};
pub use decimal::{DecimalError, decimal128_from_text};
pub use path::JsonToAvroError;
