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

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow_avro::errors::AvroError;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{
    AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy, SCHEMA_METADATA_KEY,
    SchemaStore,
};
use arrow_avro::writer::format::AvroSoeFormat;
use arrow_avro::writer::{Encoder, WriterBuilder};
use bytes::Bytes;

use super::bounded::{BoundError, DatumBound};

/// The Confluent wire-format magic byte.
const MAGIC: u8 = 0x00;

/// Length of the Confluent prefix: the magic byte and the 4-byte schema id.
const PREFIX_LEN: usize = 5;

/// A byte that can never start a Confluent prefix; fed to a decoder to learn whether it is
/// waiting for a record body (see [`feed`]).
const NOT_A_PREFIX: [u8; 1] = [0xFF];

/// Zero bytes appended to a failing payload to learn whether its body was cut short.
const TRUNCATION_PROBE_PADDING: usize = 4096;

/// Arrow field metadata key carrying an Avro logical type.
const LOGICAL_TYPE_KEY: &str = "logicalType";

/// Arrow field metadata key carrying the name of a named Avro type (record, enum, fixed).
const AVRO_NAME_KEY: &str = "avro.name";

/// Errors of the Avro <-> Arrow codecs; on decoding, each is reported per payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The payload is shorter than the 5-byte Confluent prefix.
    #[error("payload too short: {len} bytes, the confluent prefix alone needs 5")]
    TooShort {
        /// Length of the payload in bytes.
        len: usize,
    },
    /// The payload does not start with the Confluent magic byte `0x00`.
    #[error("wrong magic byte {found:#04x} in a {len}-byte payload, expected 0x00")]
    BadMagic {
        /// The first byte of the payload.
        found: u8,
        /// Length of the payload in bytes.
        len: usize,
    },
    /// The schema id in the prefix has not been registered with the decoder.
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// The Avro body ends before the record is complete.
    #[error("truncated avro body")]
    Truncated,
    /// Bytes are left over after the record.
    #[error("trailing bytes after the avro record")]
    TrailingBytes,
    /// The Avro body is malformed or does not fit the writer schema.
    #[error("avro: {0}")]
    Avro(String),
    /// Building or converting Arrow data failed (for a decoded record: its values are invalid,
    /// e.g. a string that is not UTF-8 or an enum index out of range).
    #[error("arrow: {0}")]
    Arrow(String),
    /// An Avro schema is invalid, unsupported, or cannot be resolved to the reader schema.
    #[error("schema: {0}")]
    Schema(String),
    /// The record claims more than its bytes can hold (billions of items that take no bytes,
    /// more items than bytes, nesting past the limit): refused before decoding
    /// ([`super::bounded`]).
    #[error("refused before decoding: {0}")]
    Bound(String),
}

/// Decodes Confluent-framed Avro payloads into Arrow record batches.
///
/// Writer schemas are registered by id ([`Self::register`]); each id gets its own `arrow-avro`
/// [`Decoder`], so registering a new id never disturbs the others and a schema change in the
/// stream is a switch between decoders. With a reader schema, every writer schema is resolved to
/// it (schema evolution: promotions, defaults, dropped fields), so all batches have its fields
/// (only field metadata can differ, see the module docs); without one, each batch has the Arrow
/// schema of its writer schema.
///
/// A payload whose body fails costs two decoder rebuilds (one to tell a truncated body from a
/// malformed one, one to recover); a batch that keeps failing is cut short once the records
/// decoded again for recovery outnumber the batch size, which bounds that work.
///
/// Error isolation: `arrow-avro`'s [`Decoder`] is a streaming decoder that is left in an
/// undefined state by a failing record (half-appended columns, or waiting for the rest of a
/// body). A payload that fails is therefore reported, the decoder is rebuilt and the good
/// records of the unfinished batch are decoded again, so they stay in that batch. Values that
/// `arrow-avro` only validates when building the batch (UTF-8 of strings, enum indexes) are
/// found by decoding the batch's records one by one when building the batch fails.
#[derive(Debug)]
pub struct AvroBatchDecoder {
    reader_schema: Option<Arc<str>>,
    batch_size: usize,
    writers: HashMap<u32, WriterDecoder>,
}

/// The result of [`AvroBatchDecoder::decode`].
#[derive(Debug, Default)]
pub struct DecodeOutput {
    /// The decoded records, in input order.
    pub batches: Vec<DecodedBatch>,
    /// The payloads that could not be decoded, as (index in the input, error), by index.
    pub errors: Vec<(usize, CodecError)>,
}

/// Consecutive records written with one schema id; `rows[i]` is the index (in the input) of row
/// `i` of `batch`.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// The registry id of the writer schema of every record in the batch.
    pub schema_id: u32,
    /// The records.
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of its payload in the input.
    pub rows: Vec<usize>,
}

impl AvroBatchDecoder {
    /// Creates a decoder with no registered schema.
    ///
    /// `reader_schema`: optional Avro schema JSON all records are resolved to (schema
    /// evolution); `None` = each writer schema as is. `batch_size` is the most rows per batch
    /// (at least 1).
    pub fn new(reader_schema: Option<String>, batch_size: usize) -> Self {
        Self {
            reader_schema: reader_schema.map(Arc::from),
            batch_size: batch_size.max(1),
            writers: HashMap::new(),
        }
    }

    /// Makes a writer schema known under its registry id (callers fetch it from the registry
    /// first). Registering an id again replaces its schema.
    ///
    /// Fails if the schema is not valid Avro, is not a record, uses something `arrow-avro` does
    /// not support, or cannot be resolved to the reader schema.
    pub fn register(&mut self, id: u32, schema_json: &str) -> Result<(), CodecError> {
        let bound =
            DatumBound::from_json(schema_json).map_err(|e| CodecError::Schema(e.to_string()))?;
        let mut writer = WriterDecoder {
            id,
            schema_json: Arc::from(schema_json),
            reader_schema: self.reader_schema.clone(),
            batch_size: self.batch_size,
            decoder: None,
            bound: bound.needed().then_some(bound),
        };
        writer.rebuild()?;
        self.writers.insert(id, writer);
        Ok(())
    }

    /// Whether a writer schema is registered under `id`.
    pub fn is_registered(&self, id: u32) -> bool {
        self.writers.contains_key(&id)
    }

    /// Decodes payloads in order. Every payload is one record.
    ///
    /// A payload that fails (bad framing, unknown id, truncated body, trailing bytes, bad data)
    /// is reported in `errors` with its index and does not corrupt the other records; the rest
    /// are decoded. Each index of the input ends up either in exactly one batch's `rows` or in
    /// `errors`. A new batch starts when the schema id of the records changes (failed payloads
    /// in between do not count) or the batch is full.
    pub fn decode<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> DecodeOutput {
        let mut out = DecodeOutput::default();
        let mut pending: Option<Pending<'a>> = None;
        for (index, payload) in payloads.into_iter().enumerate() {
            let id = match self.framing(payload) {
                Ok(id) => id,
                Err(error) => {
                    out.errors.push((index, error));
                    continue;
                }
            };
            if pending.as_ref().is_some_and(|p| p.id != id) {
                self.finish(pending.take(), &mut out);
            }
            let Some(writer) = self.writers.get_mut(&id) else {
                out.errors.push((index, CodecError::UnknownSchemaId(id)));
                continue;
            };
            // A malformed body is left to the decoder, which classifies it (truncated, ...).
            if let Some(bound) = &writer.bound
                && let Err(error) = bound.check(&payload[PREFIX_LEN..])
                && !matches!(error, BoundError::Malformed(_))
            {
                out.errors
                    .push((index, CodecError::Bound(error.to_string())));
                continue;
            }
            let p = pending.get_or_insert_with(|| Pending::new(id));
            if p.indices.is_empty() && !writer.is_empty() {
                // Never expected; a decoder holding rows of no batch would mix them in.
                if let Err(error) = writer.rebuild() {
                    out.errors.push((index, error));
                    continue;
                }
            }
            let full = match writer.feed(payload) {
                Ok(full) => {
                    p.push(index, payload);
                    full
                }
                Err(failure) => {
                    let error = writer.classify(failure, payload);
                    out.errors.push((index, error));
                    writer.recover(p, &mut out);
                    // Bounds the re-decoding work when a batch keeps hitting bad records.
                    p.replayed >= self.batch_size
                }
            };
            if full {
                self.finish(pending.take(), &mut out);
            }
        }
        self.finish(pending, &mut out);
        out.errors.sort_by_key(|(index, _)| *index);
        out
    }

    /// Checks the Confluent prefix of a payload and returns its (registered) schema id.
    fn framing(&self, payload: &[u8]) -> Result<u32, CodecError> {
        let len = payload.len();
        let Some(&[magic, a, b, c, d]) = payload.get(..PREFIX_LEN) else {
            return Err(CodecError::TooShort { len });
        };
        if magic != MAGIC {
            return Err(CodecError::BadMagic { found: magic, len });
        }
        let id = u32::from_be_bytes([a, b, c, d]);
        if !self.writers.contains_key(&id) {
            return Err(CodecError::UnknownSchemaId(id));
        }
        Ok(id)
    }

    /// Builds the batch of the pending records, if any.
    fn finish(&mut self, pending: Option<Pending<'_>>, out: &mut DecodeOutput) {
        let Some(pending) = pending else {
            return;
        };
        if pending.indices.is_empty() {
            return;
        }
        match self.writers.get_mut(&pending.id) {
            Some(writer) => writer.finish(pending, out),
            None => {
                let error = CodecError::UnknownSchemaId(pending.id);
                out.errors
                    .extend(pending.indices.into_iter().map(|i| (i, error.clone())));
            }
        }
    }
}

/// The records of the batch being built: their indexes in the input and their payloads (kept to
/// decode them again after a failure).
#[derive(Debug)]
struct Pending<'a> {
    id: u32,
    indices: Vec<usize>,
    payloads: Vec<&'a [u8]>,
    /// How many records were decoded again to recover from failures in this batch.
    replayed: usize,
}

impl<'a> Pending<'a> {
    fn new(id: u32) -> Self {
        Self {
            id,
            indices: Vec::new(),
            payloads: Vec::new(),
            replayed: 0,
        }
    }

    fn push(&mut self, index: usize, payload: &'a [u8]) {
        self.indices.push(index);
        self.payloads.push(payload);
    }
}

/// Why a payload could not be fed to a decoder; the decoder must be rebuilt.
#[derive(Debug)]
enum Failure {
    Truncated,
    TrailingBytes,
    Body(AvroError),
}

impl Failure {
    fn into_error(self) -> CodecError {
        match self {
            Self::Truncated => CodecError::Truncated,
            Self::TrailingBytes => CodecError::TrailingBytes,
            Self::Body(error) => CodecError::Avro(error.to_string()),
        }
    }
}

/// The `arrow-avro` decoder of one writer schema id, and what it takes to rebuild it.
#[derive(Debug)]
struct WriterDecoder {
    id: u32,
    schema_json: Arc<str>,
    reader_schema: Option<Arc<str>>,
    batch_size: usize,
    /// `None` only when rebuilding failed (never expected: it succeeded once at registration).
    decoder: Option<Decoder>,
    /// The checks a record of this schema must pass before `arrow-avro` sees it, when its
    /// schema allows records that claim more than their bytes hold.
    bound: Option<DatumBound>,
}

impl WriterDecoder {
    fn build(&self, batch_size: usize) -> Result<Decoder, CodecError> {
        build_decoder(
            self.id,
            &self.schema_json,
            self.reader_schema.as_deref(),
            batch_size,
        )
    }

    fn rebuild(&mut self) -> Result<(), CodecError> {
        self.decoder = None;
        self.decoder = Some(self.build(self.batch_size)?);
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.decoder
            .as_ref()
            .is_some_and(|d| d.capacity() == d.batch_size())
    }

    /// Feeds one framed payload (prefix checked, own id) to the decoder; returns whether the
    /// batch is now full.
    fn feed(&mut self, payload: &[u8]) -> Result<bool, Failure> {
        if self.decoder.is_none() {
            self.rebuild()
                .map_err(|e| Failure::Body(AvroError::General(e.to_string())))?;
        }
        let decoder = self
            .decoder
            .as_mut()
            .ok_or_else(|| Failure::Body(AvroError::General("no decoder".to_owned())))?;
        feed(decoder, payload)?;
        Ok(decoder.capacity() == 0)
    }

    /// Turns a failure into the error reported for the payload. A body error is reported as
    /// [`CodecError::Truncated`] when the body decodes once zero bytes are appended to it (the
    /// body was cut short: `arrow-avro` reports a varint cut at the end of the input as a "bad
    /// varint", not as an end of input).
    fn classify(&self, failure: Failure, payload: &[u8]) -> CodecError {
        let Failure::Body(error) = failure else {
            return failure.into_error();
        };
        let Ok(mut probe) = self.build(1) else {
            return CodecError::Avro(error.to_string());
        };
        let mut padded = Vec::with_capacity(payload.len() + TRUNCATION_PROBE_PADDING);
        padded.extend_from_slice(payload);
        padded.resize(payload.len() + TRUNCATION_PROBE_PADDING, 0);
        let before = probe.capacity();
        let result = probe.decode(&padded);
        if before > probe.capacity() || result.is_ok() {
            CodecError::Truncated
        } else {
            CodecError::Avro(error.to_string())
        }
    }

    /// Rebuilds the decoder after a failure and feeds it the good records of the batch again.
    fn recover(&mut self, pending: &mut Pending<'_>, out: &mut DecodeOutput) {
        loop {
            if let Err(error) = self.rebuild() {
                fail_all(pending, &error, out);
                return;
            }
            pending.replayed += pending.payloads.len();
            let mut failed = None;
            if let Some(decoder) = self.decoder.as_mut() {
                for (k, payload) in pending.payloads.iter().enumerate() {
                    if let Err(failure) = feed(decoder, payload) {
                        failed = Some((k, failure));
                        break;
                    }
                }
            }
            // A record that decoded once fails again: never expected, but drop it and retry.
            let Some((k, failure)) = failed else {
                return;
            };
            let index = pending.indices.remove(k);
            pending.payloads.remove(k);
            out.errors.push((index, failure.into_error()));
        }
    }

    /// Flushes the decoder into a batch of the pending records.
    fn finish(&mut self, pending: Pending<'_>, out: &mut DecodeOutput) {
        let flushed = match self.decoder.as_mut() {
            Some(decoder) => decoder.flush(),
            None => Err(AvroError::General("no decoder".to_owned())),
        };
        match flushed {
            Ok(Some(batch)) if batch.num_rows() == pending.indices.len() => {
                out.batches.push(DecodedBatch {
                    schema_id: self.id,
                    batch,
                    rows: pending.indices,
                });
            }
            Ok(_) => {
                let error = CodecError::Arrow("decoder lost track of its rows".to_owned());
                self.isolate(pending, &error, out);
            }
            Err(error) => {
                let error = CodecError::Arrow(error.to_string());
                self.isolate(pending, &error, out);
            }
        }
    }

    /// Building a batch failed: finds the records responsible by building a one-row batch of
    /// each, then builds the batch of the others.
    fn isolate(&mut self, pending: Pending<'_>, batch_error: &CodecError, out: &mut DecodeOutput) {
        let mut good = Pending::new(pending.id);
        for (index, payload) in pending.indices.into_iter().zip(pending.payloads) {
            if let Err(error) = self.rebuild() {
                out.errors.push((index, error));
                continue;
            }
            let Some(decoder) = self.decoder.as_mut() else {
                continue;
            };
            let result = match feed(decoder, payload) {
                Err(failure) => Err(failure.into_error()),
                Ok(()) => match decoder.flush() {
                    Ok(Some(batch)) if batch.num_rows() == 1 => Ok(()),
                    Ok(_) => Err(batch_error.clone()),
                    Err(error) => Err(CodecError::Arrow(error.to_string())),
                },
            };
            match result {
                Ok(()) => good.push(index, payload),
                Err(error) => out.errors.push((index, error)),
            }
        }
        if good.indices.is_empty() {
            // Leave a clean decoder behind.
            if let Err(error) = self.rebuild() {
                fail_all(&mut good, &error, out);
            }
            return;
        }
        if let Err(error) = self.rebuild() {
            fail_all(&mut good, &error, out);
            return;
        }
        let batch = match self.decoder.as_mut() {
            Some(decoder) => good
                .payloads
                .iter()
                .try_for_each(|payload| feed(decoder, payload))
                .map_err(Failure::into_error)
                .and_then(|()| {
                    decoder
                        .flush()
                        .map_err(|e| CodecError::Arrow(e.to_string()))
                }),
            None => Err(batch_error.clone()),
        };
        match batch {
            Ok(Some(batch)) if batch.num_rows() == good.indices.len() => {
                out.batches.push(DecodedBatch {
                    schema_id: self.id,
                    batch,
                    rows: good.indices,
                });
            }
            Ok(_) => {
                fail_all(&mut good, batch_error, out);
                let _ = self.rebuild();
            }
            Err(error) => {
                fail_all(&mut good, &error, out);
                let _ = self.rebuild();
            }
        }
    }
}

/// Reports every pending record with `error` and forgets them.
fn fail_all(pending: &mut Pending<'_>, error: &CodecError, out: &mut DecodeOutput) {
    pending.payloads.clear();
    out.errors
        .extend(pending.indices.drain(..).map(|i| (i, error.clone())));
}

/// Builds the `arrow-avro` streaming decoder of one writer schema id.
fn build_decoder(
    id: u32,
    schema_json: &str,
    reader_schema: Option<&str>,
    batch_size: usize,
) -> Result<Decoder, CodecError> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(id), AvroSchema::new(schema_json.to_owned()))
        .map_err(|e| CodecError::Schema(e.to_string()))?;
    let mut builder = ReaderBuilder::new()
        .with_batch_size(batch_size)
        .with_writer_schema_store(store);
    if let Some(reader_schema) = reader_schema {
        builder = builder.with_reader_schema(AvroSchema::new(reader_schema.to_owned()));
    }
    builder
        .build_decoder()
        .map_err(|e| CodecError::Schema(e.to_string()))
}

/// Feeds one framed payload of the decoder's own schema id to an `arrow-avro` decoder that has
/// room for at least one more row, and checks that it was exactly one record.
///
/// On `Ok`, exactly one row was added and the decoder is ready for the next payload. On `Err`,
/// the decoder is in an undefined state and must be rebuilt.
///
/// `Decoder::decode` reads prefix, body, prefix, body, ... until the input ends or the batch is
/// full, so: a truncated body leaves it waiting for the rest of the body (`Ok` with fewer bytes
/// consumed, or a "bad varint" error); trailing bytes are read as the next prefix, which is
/// either an error after the row, an extra row, or (trailing bytes that are exactly the prefix)
/// a decoder silently waiting for a body. The last case is told apart from a record whose body
/// happens to end with the prefix bytes by feeding one byte that cannot start a prefix: a
/// decoder that is not waiting for a body rejects it without changing state.
fn feed(decoder: &mut Decoder, payload: &[u8]) -> Result<(), Failure> {
    let before = decoder.capacity();
    let result = decoder.decode(payload);
    let rows = before.saturating_sub(decoder.capacity());
    let consumed = match result {
        Ok(consumed) => consumed,
        Err(_) if rows > 0 => return Err(Failure::TrailingBytes),
        Err(error) => return Err(Failure::Body(error)),
    };
    match rows {
        0 if consumed == payload.len() && payload.len() == PREFIX_LEN => {
            // No body at all: fine only for a record that takes zero bytes.
            let before = decoder.capacity();
            let result = decoder.decode(&NOT_A_PREFIX);
            let rows = before.saturating_sub(decoder.capacity());
            match result {
                Ok(0) | Err(_) if rows == 1 => Ok(()),
                _ => Err(Failure::Truncated),
            }
        }
        0 => Err(Failure::Truncated),
        1 if consumed < payload.len() => Err(Failure::TrailingBytes),
        1 if decoder.capacity() > 0 && ends_with_own_prefix(payload) => {
            match decoder.decode(&NOT_A_PREFIX) {
                Err(AvroError::ParseError(message))
                    if message.starts_with("Missing magic") && decoder.capacity() == before - 1 =>
                {
                    Ok(())
                }
                _ => Err(Failure::TrailingBytes),
            }
        }
        1 => Ok(()),
        _ => Err(Failure::TrailingBytes),
    }
}

/// Whether the payload ends with a copy of its own prefix after a body (see [`feed`]).
fn ends_with_own_prefix(payload: &[u8]) -> bool {
    payload.len() >= 2 * PREFIX_LEN
        && payload.get(payload.len() - PREFIX_LEN..) == payload.get(..PREFIX_LEN)
}

/// Encodes Arrow record batches to Confluent-framed Avro payloads, one per row.
///
/// The registered Avro schema is written verbatim (`arrow-avro` takes it from the
/// `avro.schema` metadata of the Arrow schema), so the bytes match what other Avro writers
/// produce for that schema. Batches must have the Arrow schema given to [`Self::new`] (e.g. from
/// [`arrow_schema_for`], or the schema of batches decoded with the same writer schema); field
/// metadata and nested field names may differ.
///
/// Workaround: `arrow-avro` 59.3 writes any `FixedSizeBinary(16)` field with
/// `logicalType=uuid` metadata as a uuid string. For Avro `fixed(16)` uuids (recognised by the
/// `avro.name` metadata only named types carry) the metadata is dropped from the encoder's
/// schema, so they are written as 16 raw bytes as the schema says.
#[derive(Debug)]
pub struct AvroBatchEncoder {
    schema_id: u32,
    schema: SchemaRef,
    encoder: Encoder,
}

impl AvroBatchEncoder {
    /// `schema_json` is the registered Avro schema for `schema_id`; it is attached to the Arrow
    /// schema (`avro.schema` metadata) so the encoder writes exactly that schema.
    pub fn new(
        schema_id: u32,
        schema_json: &str,
        arrow_schema: SchemaRef,
    ) -> Result<Self, CodecError> {
        let mut metadata = arrow_schema.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_owned(), schema_json.to_owned());
        let fields: Fields = arrow_schema
            .fields()
            .iter()
            .map(|f| Arc::new(without_fixed_uuid_marker(f)))
            .collect();
        let schema = Schema::new_with_metadata(fields, metadata);
        let encoder = WriterBuilder::new(schema)
            .with_fingerprint_strategy(FingerprintStrategy::Id(schema_id))
            .build_encoder::<AvroSoeFormat>()
            .map_err(|e| CodecError::Schema(e.to_string()))?;
        Ok(Self {
            schema_id,
            schema: encoder.schema(),
            encoder,
        })
    }

    /// The registry id written in front of every payload.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// Encodes every row of `batch` to one Confluent-framed payload, in row order.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Bytes>, CodecError> {
        let rebound;
        let batch = if batch.schema().fields() == self.schema.fields() {
            batch
        } else {
            rebound = self.rebind(batch)?;
            &rebound
        };
        if let Err(error) = self.encoder.encode(batch) {
            // Drop whatever part of the batch was written.
            let _ = self.encoder.flush();
            return Err(CodecError::Avro(error.to_string()));
        }
        let rows = self.encoder.flush();
        if rows.len() != batch.num_rows() {
            return Err(CodecError::Avro(format!(
                "encoded {} payloads for {} rows",
                rows.len(),
                batch.num_rows()
            )));
        }
        Ok(rows.iter().collect())
    }

    /// Gives a batch whose fields differ from the encoder's only in metadata or nested field
    /// names the encoder's schema.
    fn rebind(&self, batch: &RecordBatch) -> Result<RecordBatch, CodecError> {
        let expected = self.schema.fields();
        let found = batch.schema();
        let compatible = expected.len() == found.fields().len()
            && expected.iter().zip(found.fields()).all(|(e, f)| {
                e.name() == f.name()
                    && e.is_nullable() == f.is_nullable()
                    && e.data_type().equals_datatype(f.data_type())
            });
        if !compatible {
            return Err(CodecError::Arrow(format!(
                "batch schema {found} does not match the encoder schema {}",
                self.schema
            )));
        }
        let options = RecordBatchOptions::new()
            .with_match_field_names(false)
            .with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(self.schema.clone(), batch.columns().to_vec(), &options)
            .map_err(|e| CodecError::Arrow(e.to_string()))
    }
}

/// Drops `logicalType=uuid` from `FixedSizeBinary(16)` fields that are Avro `fixed` types
/// (which carry `avro.name`), recursively (see [`AvroBatchEncoder`]).
fn without_fixed_uuid_marker(field: &Field) -> Field {
    let data_type = match field.data_type() {
        DataType::FixedSizeBinary(16) => {
            let metadata = field.metadata();
            if metadata.get(LOGICAL_TYPE_KEY).map(String::as_str) == Some("uuid")
                && metadata.contains_key(AVRO_NAME_KEY)
            {
                let mut metadata = metadata.clone();
                metadata.remove(LOGICAL_TYPE_KEY);
                return field.clone().with_metadata(metadata);
            }
            return field.clone();
        }
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Arc::new(without_fixed_uuid_marker(f)))
                .collect(),
        ),
        DataType::List(item) => DataType::List(Arc::new(without_fixed_uuid_marker(item))),
        DataType::LargeList(item) => DataType::LargeList(Arc::new(without_fixed_uuid_marker(item))),
        DataType::Map(entries, sorted) => {
            DataType::Map(Arc::new(without_fixed_uuid_marker(entries)), *sorted)
        }
        DataType::Union(fields, mode) => DataType::Union(
            fields
                .iter()
                .map(|(id, f)| (id, Arc::new(without_fixed_uuid_marker(f))))
                .collect(),
            *mode,
        ),
        _ => return field.clone(),
    };
    field.clone().with_data_type(data_type)
}

/// Arrow schema arrow-avro derives for an Avro schema (for building batches to encode).
pub fn arrow_schema_for(schema_json: &str) -> Result<SchemaRef, CodecError> {
    Ok(build_decoder(0, schema_json, None, 1)?.schema())
}

#[cfg(test)]
mod tests;
