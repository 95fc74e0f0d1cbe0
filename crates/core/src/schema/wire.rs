//! The Confluent Schema Registry wire format: byte `0x00`, the schema id as 4 bytes big-endian,
//! then the Avro binary body.

/// The magic byte that starts every framed record.
pub const MAGIC: u8 = 0;
/// Length of the frame header (magic byte and schema id).
pub const HEADER_LEN: usize = 5;

/// Why bytes are not a framed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the 5-byte header.
    #[error("record is {len} bytes, shorter than the 5-byte wire-format header")]
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The first byte is not `0x00`.
    #[error("wrong magic byte {found:#04x}, expected 0x00 (not in schema registry wire format)")]
    WrongMagic {
        /// The byte found.
        found: u8,
    },
}

/// Frames an Avro body with its schema id.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a framed record into its schema id and Avro body. The body may be empty (a record of
/// a schema whose encoding is zero bytes); whether it decodes is the codec's concern.
pub fn parse(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireError::TooShort { len: bytes.len() });
    };
    let [magic, id @ ..] = *header;
    if magic != MAGIC {
        return Err(WireError::WrongMagic { found: magic });
    }
    Ok((u32::from_be_bytes(id), body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn frames_and_parses() {
        let framed = frame(0x0102_0304, b"body");
        assert_eq!(framed, [0, 1, 2, 3, 4, b'b', b'o', b'd', b'y']);
        assert_eq!(parse(&framed).unwrap(), (0x0102_0304, &b"body"[..]));
        assert_eq!(parse(&frame(7, b"")).unwrap(), (7, &b""[..]));
    }

    #[test]
    fn short_and_foreign_bytes_are_errors() {
        for len in 0..HEADER_LEN {
            assert_eq!(parse(&vec![0; len]), Err(WireError::TooShort { len }));
        }
        assert_eq!(
            parse(b"{\"json\":1}"),
            Err(WireError::WrongMagic { found: b'{' })
        );
        assert_eq!(
            parse(&[0xC3, 0x01, 0, 0, 0, 0]),
            Err(WireError::WrongMagic { found: 0xC3 })
        );
    }

    #[test]
    fn never_panics_on_any_short_input() {
        // Every 0..=6-byte prefix of a few patterns: parse returns, never panics.
        for pattern in [[0u8; 7], [0xFF; 7], [0, 0, 0, 0, 1, 2, 3]] {
            for len in 0..=pattern.len() {
                let _ = parse(&pattern[..len]);
            }
        }
    }
}
