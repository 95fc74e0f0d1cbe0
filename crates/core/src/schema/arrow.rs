//! Avro <-> Arrow conversion in batches, for Confluent-framed Kafka record values.
//!
//! Kafka record values carry Avro records in the Confluent Schema Registry wire format: byte
//! `0x00`, the 4-byte big-endian schema id, then the Avro binary body. This module turns many
//! such payloads into Arrow [`RecordBatch`]es ([`AvroBatchDecoder`]) and a [`RecordBatch`] back
//! into one framed payload per row ([`AvroBatchEncoder`]). Both are thin layers over
//! `arrow-avro`; this module adds what a consumer of a topic needs on top of it: per-payload
//! framing checks, error isolation (one bad record never spoils the others), one batch per run of
//! records written with the same schema id, and schemas registered while running.
//!
//! # Type mapping
//!
//! The Arrow types are the ones `arrow-avro` 59.3 derives (default features, i.e. no
//! `small_decimals`, no `avro_custom_types`, no `canonical_extension_types`):
//!
//! | Avro                                   | Arrow                                                    |
//! |----------------------------------------|----------------------------------------------------------|
//! | `null`                                 | `Null`                                                   |
//! | `boolean`                              | `Boolean`                                                |
//! | `int` / `long`                         | `Int32` / `Int64`                                        |
//! | `float` / `double`                     | `Float32` / `Float64`                                    |
//! | `bytes` / `string`                     | `Binary` / `Utf8`                                        |
//! | `record`                               | `Struct` (field metadata `avro.name`, `avro.namespace`)  |
//! | `array`                                | `List` (item field `item`)                               |
//! | `map`                                  | `Map` (`entries: Struct<key: Utf8, value>`, unsorted)    |
//! | `["null", T]` / `[T, "null"]`          | `T`, nullable (the branch order is kept for writing)     |
//! | other unions, e.g. `["null","string","long"]` | dense `Union`, one child per branch, type ids `0..n` in branch order; a child is named after its branch: the type name of a named type (record, enum, fixed), else the kind (`null`, `string`, `long`, `array`, `map`, ...) |
//! | `enum`                                 | `Dictionary(Int32, Utf8)` (symbols in field metadata)    |
//! | `fixed(n)`                             | `FixedSizeBinary(n)`                                     |
//! | `decimal(p, s)` on `bytes` or `fixed`  | `Decimal128(p, s)` for `p <= 38`, else `Decimal256(p, s)`|
//! | `uuid` on `string`                     | `FixedSizeBinary(16)`, field metadata `logicalType=uuid` |
//! | `uuid` on `fixed(16)`                  | `FixedSizeBinary(16)`, field metadata `logicalType=uuid` |
//! | `date`                                 | `Date32`                                                 |
//! | `time-millis` / `time-micros`          | `Time32(Millisecond)` / `Time64(Microsecond)`            |
//! | `timestamp-millis` / `-micros` / `-nanos` | `Timestamp(Millisecond / Microsecond / Nanosecond, Some("+00:00"))` |
//! | `local-timestamp-millis` / `-micros` / `-nanos` | `Timestamp(Millisecond / Microsecond / Nanosecond, None)` |
//! | `duration` (`fixed(12)`)               | `Interval(MonthDayNano)`                                 |
//!
//! # Limitations of `arrow-avro` 59.3 (not hidden here)
//!
//! * The top-level schema of a record value must be an Avro `record`; a bare primitive value
//!   schema (e.g. `"string"`) is rejected by [`AvroBatchDecoder::register`].
//! * `uuid` on `fixed(16)`: `arrow-avro`'s writer encodes every `FixedSizeBinary(16)` field
//!   carrying `logicalType=uuid` as a uuid *string*, even when the registered Avro type is
//!   `fixed`, which would produce bytes that do not match the schema. [`AvroBatchEncoder`] works
//!   around it (see there).
//! * `uuid` strings are re-encoded in the canonical lowercase hyphenated form, so a writer that
//!   sent upper-case uuid text gets different (but equivalent) bytes back.
//! * `duration` is decoded to `Interval(MonthDayNano)` with nanoseconds = milliseconds *
//!   10^6; the months and days are `u32` in Avro and `i32` in Arrow, so values above
//!   `i32::MAX` wrap to negative numbers and cannot be written back.
//! * With a reader schema, batches of different writer schemas have the same field names, types
//!   and nullability, but `arrow-avro` sets the field metadata `avro.field.default` only on the
//!   fields a writer lacked, so the `Schema`s are not `==`. For a nested record that gained a
//!   field the metadata sits inside the `Struct` type, and such batches cannot be concatenated
//!   without a cast.
//! * Avro arrays and maps of items that take zero bytes (`null`, empty records) let a corrupt
//!   block count keep `arrow-avro` looping for a very long time; avoid such schemas on untrusted
//!   topics.
//!
//! [`RecordBatch`]: arrow::record_batch::RecordBatch

mod decoder;
mod encoder;
mod error;
mod stream;
mod writer_decoder;

#[cfg(test)]
mod tests;

pub use decoder::{AvroBatchDecoder, DecodeOutput, DecodedBatch};
pub use encoder::AvroBatchEncoder;
pub use error::CodecError;
pub use stream::arrow_schema_for;

/// The Confluent wire-format magic byte.
const MAGIC: u8 = 0x00;

/// Length of the Confluent prefix: the magic byte and the 4-byte schema id.
const PREFIX_LEN: usize = 5;
