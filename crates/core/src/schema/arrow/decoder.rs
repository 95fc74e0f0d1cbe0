//! The batch decoder: framing checks, runs of one schema id, and the batches and errors it reports.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use super::error::CodecError;
use super::writer_decoder::WriterDecoder;
use super::{MAGIC, PREFIX_LEN};
use crate::schema::bounded::{BoundError, DatumBound};

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
///
/// [`Decoder`]: arrow_avro::reader::Decoder
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
pub(super) struct Pending<'a> {
    pub(super) id: u32,
    pub(super) indices: Vec<usize>,
    pub(super) payloads: Vec<&'a [u8]>,
    /// How many records were decoded again to recover from failures in this batch.
    pub(super) replayed: usize,
}

impl<'a> Pending<'a> {
    pub(super) fn new(id: u32) -> Self {
        Self {
            id,
            indices: Vec::new(),
            payloads: Vec::new(),
            replayed: 0,
        }
    }

    pub(super) fn push(&mut self, index: usize, payload: &'a [u8]) {
        self.indices.push(index);
        self.payloads.push(payload);
    }
}
