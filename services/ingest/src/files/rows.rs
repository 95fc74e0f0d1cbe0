//! Reading a file's rows in chunks within its limits: CSV and NDJSON by line, the rest by batch.

use std::io::BufReader;
use std::path::Path as FsPath;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use tributary_core::schema::sources::FileFormat;

use super::lines::{ReadLine, parse, read_line_bounded, text_type};
use super::{CHUNK_BYTES, CHUNK_ROWS};

/// The limits a file's rows are read within.
#[derive(Debug, Clone, Copy)]
pub(super) struct RowLimits {
    /// Longest CSV or NDJSON line, without its line end.
    pub(super) max_line_bytes: usize,
    /// Most rows read.
    pub(super) max_rows: u64,
}

/// A chunk of rows: batches with the line (or row) number of each row, rows that could not be
/// read, lines over the length limit, and where the file stops before its end (past the row
/// limit, or a CSV header over the line limit), each with its line (or row) and reason.
#[derive(Default)]
pub(super) struct Chunk {
    pub(super) batches: Vec<(RecordBatch, Vec<u64>)>,
    pub(super) errors: Vec<(u64, String)>,
    pub(super) too_long: Vec<(u64, String)>,
    pub(super) stop: Option<(u64, String)>,
}

/// Reads a file in chunks, within its limits.
pub(super) struct Rows {
    source: RowSource,
    limits: RowLimits,
    /// Rows read so far (blank lines aside).
    rows: u64,
    /// Where and why the file stops before its end, told by the next chunk.
    stop: Option<(u64, String)>,
    /// Nothing more to read.
    ended: bool,
}

enum RowSource {
    Lines {
        format: FileFormat,
        reader: BufReader<std::fs::File>,
        schema: SchemaRef,
        delimiter: u8,
        line: u64,
        /// The line being read (at most `max_line_bytes` and its line end).
        buf: Vec<u8>,
    },
    Batches {
        batches: Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send>,
    },
}

impl Rows {
    pub(super) fn open(
        file: &FsPath,
        format: FileFormat,
        delimiter: char,
        target: &SchemaRef,
        limits: RowLimits,
    ) -> anyhow::Result<Self> {
        let f = std::fs::File::open(file)?;
        let mut stop = None;
        let source = match format {
            FileFormat::Csv | FileFormat::Ndjson => {
                let mut reader = BufReader::new(f);
                let mut buf = Vec::new();
                let mut line = 0;
                let schema = if format == FileFormat::Csv {
                    // The header names the columns; each takes the type of the topic's field of
                    // that name (text for enums, which the conformer maps onto symbols).
                    line = 1;
                    let names: Vec<String> = match read_line_bounded(
                        &mut reader,
                        &mut buf,
                        limits.max_line_bytes,
                    )? {
                        ReadLine::TooLong(n) => {
                            stop = Some((
                                1,
                                format!(
                                    "header line of {n} bytes is over max_line_bytes ({}); the file is not read",
                                    limits.max_line_bytes
                                ),
                            ));
                            Vec::new()
                        }
                        ReadLine::End | ReadLine::Line => String::from_utf8_lossy(&buf)
                            .split(delimiter)
                            .map(|s| s.trim().trim_matches('"').to_string())
                            .collect(),
                    };
                    Arc::new(Schema::new(
                        names
                            .iter()
                            .map(|n| Field::new(n, text_type(target, n), true))
                            .collect::<Vec<_>>(),
                    ))
                } else {
                    Arc::new(Schema::new(
                        target
                            .fields()
                            .iter()
                            .map(|f| Field::new(f.name(), text_type(target, f.name()), true))
                            .collect::<Vec<_>>(),
                    ))
                };
                RowSource::Lines {
                    format,
                    reader,
                    schema,
                    delimiter: delimiter as u8,
                    line,
                    buf,
                }
            }
            FileFormat::Parquet => {
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?
                        .with_batch_size(CHUNK_ROWS)
                        .build()?;
                RowSource::Batches {
                    batches: Box::new(reader),
                }
            }
            FileFormat::Avro => {
                let reader = arrow_avro::reader::ReaderBuilder::new()
                    .with_batch_size(CHUNK_ROWS)
                    .build(BufReader::new(f))?;
                RowSource::Batches {
                    batches: Box::new(reader),
                }
            }
        };
        Ok(Self {
            source,
            limits,
            rows: 0,
            stop,
            ended: false,
        })
    }

    pub(super) fn next_chunk(&mut self) -> anyhow::Result<Option<Chunk>> {
        let Self {
            source,
            limits,
            rows,
            stop,
            ended,
        } = self;
        if let Some(stop) = stop.take() {
            *ended = true;
            return Ok(Some(Chunk {
                stop: Some(stop),
                ..Chunk::default()
            }));
        }
        if *ended {
            return Ok(None);
        }
        let rest_refused = |what: &str| {
            format!(
                "over max_rows_per_file ({}): this {what} and the rest of the file are not read",
                limits.max_rows
            )
        };
        let mut chunk = Chunk::default();
        match source {
            RowSource::Batches { batches } => {
                let Some(batch) = batches.next() else {
                    *ended = true;
                    return Ok(None);
                };
                let batch = batch?;
                let n = batch.num_rows() as u64;
                let allowed = limits.max_rows.saturating_sub(*rows);
                if n > allowed {
                    *ended = true;
                    chunk.stop = Some((*rows + allowed + 1, rest_refused("row")));
                }
                let take = n.min(allowed);
                if take > 0 || n == 0 {
                    let first = *rows + 1;
                    *rows += take;
                    let kept = usize::try_from(take).unwrap_or(usize::MAX);
                    chunk
                        .batches
                        .push((batch.slice(0, kept), (first..=*rows).collect()));
                }
                Ok(Some(chunk))
            }
            RowSource::Lines {
                format,
                reader,
                schema,
                delimiter,
                line,
                buf,
            } => {
                // The chunk's lines, each ended by `\n`, and each line's number and span.
                let mut text = Vec::new();
                let mut spans: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
                while spans.len() + chunk.too_long.len() < CHUNK_ROWS && text.len() < CHUNK_BYTES {
                    let read = read_line_bounded(reader, buf, limits.max_line_bytes)?;
                    if read == ReadLine::End {
                        *ended = true;
                        break;
                    }
                    *line += 1;
                    if read == ReadLine::Line && buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    if *rows >= limits.max_rows {
                        *ended = true;
                        chunk.stop = Some((*line, rest_refused("line")));
                        break;
                    }
                    *rows += 1;
                    if let ReadLine::TooLong(n) = read {
                        chunk.too_long.push((
                            *line,
                            format!(
                                "line of {n} bytes is over max_line_bytes ({}); skipped",
                                limits.max_line_bytes
                            ),
                        ));
                        continue;
                    }
                    let start = text.len();
                    text.extend_from_slice(buf);
                    spans.push((*line, start..text.len()));
                    text.push(b'\n');
                }
                if spans.is_empty() && chunk.too_long.is_empty() && chunk.stop.is_none() {
                    return Ok(None);
                }
                if spans.is_empty() {
                    return Ok(Some(chunk));
                }
                match parse(*format, schema, *delimiter, &text) {
                    Ok(batch) if batch.num_rows() == spans.len() => {
                        chunk
                            .batches
                            .push((batch, spans.iter().map(|(n, _)| *n).collect()));
                    }
                    _ => {
                        // Find the lines at fault: parse them one by one.
                        for (n, span) in &spans {
                            // The line and its `\n`.
                            let one = &text[span.start..=span.end];
                            match parse(*format, schema, *delimiter, one) {
                                Ok(batch) if batch.num_rows() == 1 => {
                                    chunk.batches.push((batch, vec![*n]))
                                }
                                Ok(batch) => chunk
                                    .errors
                                    .push((*n, format!("{} rows in one line", batch.num_rows()))),
                                Err(e) => chunk.errors.push((*n, e.to_string())),
                            }
                        }
                    }
                }
                Ok(Some(chunk))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use arrow::datatypes::DataType;

    fn target() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
        ]))
    }

    /// What a file's rows came to.
    #[derive(Debug, Default)]
    struct ReadAll {
        /// The line (or row) of each row read.
        rows: Vec<u64>,
        /// Lines refused as too long.
        too_long: Vec<u64>,
        /// Where and why the file stopped.
        stop: Option<(u64, String)>,
        /// Lines that could not be read.
        errors: Vec<u64>,
    }

    fn read_all(file: &FsPath, format: FileFormat, limits: RowLimits) -> ReadAll {
        let mut rows = Rows::open(file, format, ',', &target(), limits).unwrap();
        let mut all = ReadAll::default();
        while let Some(chunk) = rows.next_chunk().unwrap() {
            for (batch, lines) in chunk.batches {
                assert_eq!(batch.num_rows(), lines.len());
                all.rows.extend(lines);
            }
            all.too_long.extend(chunk.too_long.iter().map(|(n, _)| *n));
            all.errors.extend(chunk.errors.iter().map(|(n, _)| *n));
            if chunk.stop.is_some() {
                assert!(all.stop.is_none(), "one stop");
                all.stop = chunk.stop;
            }
        }
        all
    }

    #[test]
    fn csv_lines_over_the_limit_are_refused_and_rows_past_the_limit_stop_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.csv");
        let long = "z".repeat(100);
        std::fs::write(
            &file,
            format!("a,b\r\nx,1\r\n\r\n{long},2\r\ny,3\nbad,no\nw,5\nv,6\nu,7\n"),
        )
        .unwrap();
        let limits = |max_rows| RowLimits {
            max_line_bytes: 20,
            max_rows,
        };
        // Lines 2 to 9: line 3 is blank (not a row), line 4 too long, line 6 unreadable.
        let all = read_all(&file, FileFormat::Csv, limits(100));
        assert_eq!(all.rows, vec![2, 5, 7, 8, 9]);
        assert_eq!(
            (all.too_long, all.errors, all.stop),
            (vec![4], vec![6], None)
        );
        // Four rows allowed (the long and the unreadable line count): line 7 is the first
        // refused.
        let all = read_all(&file, FileFormat::Csv, limits(4));
        assert_eq!((all.rows, all.too_long), (vec![2, 5], vec![4]));
        let (line, reason) = all.stop.unwrap();
        assert_eq!(line, 7);
        assert!(reason.contains("max_rows_per_file (4)"), "{reason}");
        // Exactly as many rows as allowed: no refusal.
        let all = read_all(&file, FileFormat::Csv, limits(7));
        assert_eq!((all.rows.len(), all.stop), (5, None));
    }

    #[test]
    fn a_csv_header_over_the_limit_refuses_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.csv");
        std::fs::write(&file, format!("a,b,{}\nx,1\n", "c".repeat(50))).unwrap();
        let limits = RowLimits {
            max_line_bytes: 20,
            max_rows: 100,
        };
        let all = read_all(&file, FileFormat::Csv, limits);
        assert!(all.rows.is_empty());
        let (line, reason) = all.stop.unwrap();
        assert_eq!(line, 1);
        assert!(reason.contains("header line of 54 bytes"), "{reason}");
    }

    #[test]
    fn parquet_rows_past_the_limit_stop_the_file_at_the_first_row_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.parquet");
        let batch = RecordBatch::try_new(
            target(),
            vec![
                Arc::new(arrow::array::StringArray::from(vec!["x"; 12])),
                Arc::new(arrow::array::Int64Array::from(
                    (0..12).collect::<Vec<i64>>(),
                )),
            ],
        )
        .unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&file).unwrap(),
            target(),
            None,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let limits = |max_rows| RowLimits {
            max_line_bytes: 1,
            max_rows,
        };
        let all = read_all(&file, FileFormat::Parquet, limits(5));
        assert_eq!(all.rows, vec![1, 2, 3, 4, 5]);
        let (row, reason) = all.stop.unwrap();
        assert_eq!(row, 6);
        assert!(reason.contains("this row and the rest"), "{reason}");
        let all = read_all(&file, FileFormat::Parquet, limits(12));
        assert_eq!((all.rows.len(), all.stop), (12, None));
    }
}
