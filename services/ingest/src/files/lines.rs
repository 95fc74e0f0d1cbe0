//! CSV and NDJSON text: lines read within a length limit, and parsed into Arrow batches.

use std::io::{BufRead, Cursor};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use tributary_core::schema::sources::FileFormat;

use super::CHUNK_ROWS;

/// What [`read_line_bounded`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadLine {
    /// The end of the input: no more lines.
    End,
    /// A line, now in the buffer without its line end (`\n`, and any `\r` before it).
    Line,
    /// A line of this many bytes (without its line end) over the limit: consumed up to its
    /// `\n` (or the end of the input) without being held; the buffer is empty.
    TooLong(u64),
}

/// Reads the next line of `reader` into `buf` (cleared first), never holding more than `max`
/// bytes of it plus its line end (`buf` never grows beyond `max + 1` bytes): a longer line is
/// read on to its end and dropped piece by piece. The last line needs no `\n`.
pub(super) fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<ReadLine> {
    buf.clear();
    // Room for the line and a `\r` before its `\n`.
    let room = max.saturating_add(1);
    let mut any = false;
    // The bytes of a line found too long, so far, and whether the last of them was a `\r`.
    let mut skipped: Option<u64> = None;
    let mut last_cr = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if !any {
                return Ok(ReadLine::End);
            }
            break;
        }
        any = true;
        let newline = available.iter().position(|b| *b == b'\n');
        let piece = &available[..newline.unwrap_or(available.len())];
        if let Some(&last) = piece.last() {
            last_cr = last == b'\r';
        }
        match &mut skipped {
            Some(n) => *n += piece.len() as u64,
            None if buf.len() + piece.len() > room => {
                skipped = Some((buf.len() + piece.len()) as u64);
                buf.clear();
            }
            None => extend_within(buf, piece, room),
        }
        let used = piece.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if let Some(n) = skipped {
        return Ok(ReadLine::TooLong(n - u64::from(last_cr)));
    }
    let length = buf.len() - usize::from(buf.last() == Some(&b'\r'));
    if length > max {
        buf.clear();
        return Ok(ReadLine::TooLong(length as u64));
    }
    while buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(ReadLine::Line)
}

/// Appends `piece` to `buf`, growing it by doubling but never beyond `cap` bytes of capacity
/// (the caller keeps `buf.len() + piece.len() <= cap`).
fn extend_within(buf: &mut Vec<u8>, piece: &[u8], cap: usize) {
    let needed = buf.len() + piece.len();
    if needed > buf.capacity() {
        let target = needed.max(buf.capacity().saturating_mul(2)).min(cap);
        buf.reserve_exact(target.max(needed) - buf.len());
    }
    buf.extend_from_slice(piece);
}

pub(super) fn parse(
    format: FileFormat,
    schema: &SchemaRef,
    delimiter: u8,
    text: &[u8],
) -> anyhow::Result<RecordBatch> {
    let batches: Vec<RecordBatch> = match format {
        FileFormat::Csv => arrow_csv::ReaderBuilder::new(schema.clone())
            .with_header(false)
            .with_delimiter(delimiter)
            .with_batch_size(CHUNK_ROWS)
            .build(Cursor::new(text))?
            .collect::<Result<_, _>>()?,
        // Numbers are read as their text where the column is text: decimals are read as text
        // (see `text_type`), and JSON gives them as numbers or strings.
        _ => arrow_json::ReaderBuilder::new(schema.clone())
            .with_coerce_primitive(true)
            .with_batch_size(CHUNK_ROWS)
            .build(Cursor::new(text))?
            .collect::<Result<_, _>>()?,
    };
    Ok(arrow::compute::concat_batches(schema, &batches)?)
}

/// The type a text column is read as: the topic field's, text for enums, uuids and what text
/// readers cannot produce; text for columns the topic does not have (the conformer names them).
pub(super) fn text_type(target: &SchemaRef, name: &str) -> DataType {
    let Ok(field) = target.field_with_name(name) else {
        return DataType::Utf8;
    };
    match field.data_type() {
        DataType::Boolean
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::Date32
        | DataType::Timestamp(_, _) => field.data_type().clone(),
        // Decimals as text, parsed by the conformer exactly as JSON events' decimals are: the
        // CSV and JSON readers' own parser rounds, truncates, and overflows on large exponents.
        _ => DataType::Utf8,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::{BufReader, Read};

    /// Every line of `input` read with a limit of `max`, through a reader buffer of `capacity`
    /// bytes (small ones split lines and line ends across reads).
    fn lines(input: &[u8], max: usize, capacity: usize) -> Vec<(ReadLine, String)> {
        let mut reader = BufReader::with_capacity(capacity, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let read = read_line_bounded(&mut reader, &mut buf, max).unwrap();
            if read == ReadLine::End {
                return out;
            }
            assert!(
                buf.capacity() <= max + 1,
                "{} > {}",
                buf.capacity(),
                max + 1
            );
            out.push((read, String::from_utf8(buf.clone()).unwrap()));
        }
    }

    fn line(text: &str) -> (ReadLine, String) {
        (ReadLine::Line, text.to_string())
    }

    fn too_long(n: u64) -> (ReadLine, String) {
        (ReadLine::TooLong(n), String::new())
    }

    #[test]
    fn a_line_at_the_limit_passes_and_one_byte_more_is_refused() {
        for capacity in [1, 2, 3, 5, 8192] {
            assert_eq!(
                lines(b"12345\n123456\nok\n", 5, capacity),
                vec![line("12345"), too_long(6), line("ok")],
                "capacity {capacity}"
            );
            // The last line needs no line end, and is bounded the same way.
            assert_eq!(
                lines(b"ok\n12345", 5, capacity),
                vec![line("ok"), line("12345")]
            );
            assert_eq!(
                lines(b"ok\n123456", 5, capacity),
                vec![line("ok"), too_long(6)]
            );
        }
    }

    #[test]
    fn crlf_line_ends_are_not_counted_and_are_stripped() {
        for capacity in [1, 2, 4, 8192] {
            assert_eq!(
                lines(b"12345\r\n123456\r\n\r\nab\r", 5, capacity),
                vec![line("12345"), too_long(6), line(""), line("ab")],
                "capacity {capacity}"
            );
            // A long line ending in CRLF reports its length without the line end.
            assert_eq!(
                lines(b"1234567890\r\nx\n", 5, capacity),
                vec![too_long(10), line("x")]
            );
        }
        assert_eq!(lines(b"", 5, 8192), vec![]);
        assert_eq!(lines(b"\n\n", 5, 8192), vec![line(""), line("")]);
    }

    #[test]
    fn a_huge_line_is_skipped_holding_no_more_than_the_limit() {
        const HUGE: u64 = 64 << 20;
        // 64 MiB without a line end, then a line; then the same at the end of the input.
        let input = std::io::repeat(b'x')
            .take(HUGE)
            .chain(&b"\r\nnext\n"[..])
            .chain(std::io::repeat(b'y').take(HUGE));
        let mut reader = BufReader::new(input);
        let mut buf = Vec::new();
        let max = 1024;
        let read = read_line_bounded(&mut reader, &mut buf, max).unwrap();
        assert_eq!(read, ReadLine::TooLong(HUGE));
        assert!(
            buf.is_empty() && buf.capacity() <= max + 1,
            "{}",
            buf.capacity()
        );
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, max).unwrap(),
            ReadLine::Line
        );
        assert_eq!(buf, b"next");
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, max).unwrap(),
            ReadLine::TooLong(HUGE)
        );
        assert!(buf.capacity() <= max + 1, "{}", buf.capacity());
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, max).unwrap(),
            ReadLine::End
        );
    }
}
