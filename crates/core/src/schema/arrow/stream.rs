//! The `arrow-avro` streaming decoder: building one for a schema, feeding it one framed record.

use arrow::datatypes::SchemaRef;
use arrow_avro::errors::AvroError;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use super::PREFIX_LEN;
use super::error::CodecError;

/// A byte that can never start a Confluent prefix; fed to a decoder to learn whether it is
/// waiting for a record body (see [`feed`]).
const NOT_A_PREFIX: [u8; 1] = [0xFF];

/// Why a payload could not be fed to a decoder; the decoder must be rebuilt.
#[derive(Debug)]
pub(super) enum Failure {
    Truncated,
    TrailingBytes,
    Body(AvroError),
}

impl Failure {
    pub(super) fn into_error(self) -> CodecError {
        match self {
            Self::Truncated => CodecError::Truncated,
            Self::TrailingBytes => CodecError::TrailingBytes,
            Self::Body(error) => CodecError::Avro(error.to_string()),
        }
    }
}

/// Builds the `arrow-avro` streaming decoder of one writer schema id.
pub(super) fn build_decoder(
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
pub(super) fn feed(decoder: &mut Decoder, payload: &[u8]) -> Result<(), Failure> {
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

/// Arrow schema arrow-avro derives for an Avro schema (for building batches to encode).
pub fn arrow_schema_for(schema_json: &str) -> Result<SchemaRef, CodecError> {
    Ok(build_decoder(0, schema_json, None, 1)?.schema())
}
