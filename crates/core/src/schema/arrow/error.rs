//! The errors of the Avro <-> Arrow codecs.

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
    /// ([`crate::schema::bounded`]).
    #[error("refused before decoding: {0}")]
    Bound(String),
}
