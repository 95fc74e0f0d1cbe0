//! File sources: every file under a declared prefix of object storage (`file://`, `s3://`, ...)
//! is ingested once into its topic. A file is streamed to a temporary file (never held in
//! memory whole), read in Arrow batches (CSV and NDJSON a chunk of lines at a time, Parquet and
//! Avro container files batch by batch), fitted to the topic's schema by column name, encoded
//! in the Confluent wire format and produced with acks=all. Rows that cannot be read or do not
//! fit go to `dlq.ingest` naming the file and line (row for Parquet and Avro); the others go on.
//!
//! Progress is a compacted topic keyed by source and path, holding the size, e-tag and SHA-256
//! of each file ingested. A listed file whose size and e-tag match is skipped without reading;
//! one whose content hash matches (an identical re-upload) is skipped after reading; any other
//! is ingested (again). A file's progress record is written only after all its records and dead
//! letters were acknowledged: a crash re-ingests the file from its start (at-least-once).
//!
//! Limits, per source (`max_object_bytes`, `max_line_bytes`, `max_rows_per_file`): an object
//! listed larger than its limit is not read; a CSV or NDJSON line longer than its limit is
//! skipped to the next line without being held (at most the limit plus its line end is ever
//! buffered for a line); rows past the row limit are not read. Each refusal is one dead letter
//! (class `file_limit`) naming the file, the line (or row) and the reason, and a warning; the
//! file is then recorded as done like any other, so it is not read again until it changes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tributary_core::bus::{
    DeadLetter, KafkaConfig, OutboundRecord, Producer, dead_letter_record, read_partition,
};
use tributary_core::lake::{Lake, LakeConfig};
use tributary_core::schema::arrow::{AvroBatchEncoder, arrow_schema_for};
use tributary_core::schema::catalog::Topic;
use tributary_core::schema::conform::{Conformer, RowErrors, key_text};
use tributary_core::schema::sources::{FileFormat, FilesDecl};

use crate::config::ObjectStoreSettings;

/// Rows read and produced at a time.
const CHUNK_ROWS: usize = 5_000;

/// Bytes of CSV or NDJSON lines read at a time (a chunk ends at `CHUNK_ROWS` lines or once it
/// holds this much, so long lines do not multiply into a large chunk).
const CHUNK_BYTES: usize = 8 << 20;

/// Dead-letter class of rows that cannot be read or do not fit the topic.
const CLASS_ROW: &str = "file_row";

/// Dead-letter class of what a limit refused: an object, a line, the rows past the last allowed.
const CLASS_LIMIT: &str = "file_limit";

/// What the progress topic records of an ingested file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Done {
    size: u64,
    e_tag: Option<String>,
    sha256: String,
    records: u64,
    bad_rows: u64,
    /// Why the file (or its rest) was refused, if it was; an object refused for its size is
    /// recorded unread, with an empty `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

impl Done {
    /// Whether a listed object of `size` and `e_tag` is the one recorded and needs no reading:
    /// the same size and e-tag; or, refused unread for its size, the same size (and e-tag, if
    /// any) and still over `max_object_bytes` (a raised limit reads it).
    fn covers(&self, size: u64, e_tag: Option<&String>, max_object_bytes: u64) -> bool {
        if self.size != size || self.e_tag.as_ref() != e_tag {
            return false;
        }
        if self.sha256.is_empty() {
            size > max_object_bytes
        } else {
            self.e_tag.is_some()
        }
    }
}

/// A running file source.
pub(crate) struct FileSource {
    decl: FilesDecl,
    lake: Lake,
    topic: Topic,
    schema_id: u32,
    target: SchemaRef,
    producer: Producer,
    progress_topic: String,
    done: HashMap<String, Done>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("name", &self.decl.name)
            .finish_non_exhaustive()
    }
}

fn progress_key(source: &str, path: &str) -> String {
    format!("{source}\u{1f}{path}")
}

impl FileSource {
    pub(crate) async fn start(
        decl: FilesDecl,
        topic: Topic,
        schema_id: u32,
        store: &ObjectStoreSettings,
        kafka: &KafkaConfig,
        producer: Producer,
        progress_topic: &str,
    ) -> anyhow::Result<Self> {
        let url = tributary_core::schema::sources::expand_env(&decl.url)
            .map_err(|e| anyhow::anyhow!("source {}: {e}", decl.name))?;
        let config = LakeConfig {
            url: url.clone(),
            s3_endpoint: store.s3_endpoint.clone(),
            s3_region: store.s3_region.clone(),
            s3_access_key_id: store.s3_access_key_id.clone(),
            s3_secret_access_key: store.s3_secret_access_key.clone(),
            allow_http: store.allow_http,
            options: Default::default(),
        };
        let lake =
            Lake::open(&config).with_context(|| format!("source {}: open {url}", decl.name))?;
        let target = arrow_schema_for(&topic.value_schema_json)?;
        let mut done = HashMap::new();
        let prefix = progress_key(&decl.name, "");
        for r in read_partition(kafka, progress_topic, 0).await? {
            let Some(key) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            if let Some(path) = key.strip_prefix(&prefix) {
                match r.payload.as_deref().map(serde_json::from_slice::<Done>) {
                    Some(Ok(d)) => {
                        done.insert(path.to_string(), d);
                    }
                    _ => {
                        done.remove(path);
                    }
                }
            }
        }
        info!(source = %decl.name, url = %url, topic = %topic.name, files_done = done.len(), "file source started");
        Ok(Self {
            decl,
            lake,
            topic,
            schema_id,
            target,
            producer,
            progress_topic: progress_topic.to_string(),
            done,
        })
    }

    /// Lists the prefix every `poll_seconds` and ingests what is new, until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.poll(&shutdown).await {
                error!(source = %self.decl.name, error = %format!("{e:#}"), "file source poll failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(self.decl.poll_seconds)) => {}
            }
        }
    }

    /// One listing: ingests every new or changed file, in path order.
    pub(crate) async fn poll(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut listed = Vec::new();
        let mut stream = self.lake.store().list(Some(self.lake.root()));
        while let Some(meta) = stream.next().await {
            listed.push(meta?);
        }
        listed.sort_by(|a, b| a.location.cmp(&b.location));
        for meta in listed {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let path = meta.location.to_string();
            let relative = path
                .strip_prefix(self.lake.root().as_ref())
                .unwrap_or(&path)
                .trim_start_matches('/');
            let Some(format) = self.decl.format.or_else(|| FileFormat::from_name(relative)) else {
                continue;
            };
            if let Some(d) = self.done.get(&path)
                && d.covers(meta.size, meta.e_tag.as_ref(), self.decl.max_object_bytes)
            {
                continue;
            }
            if let Err(e) = self
                .ingest(&meta.location, meta.size, meta.e_tag.clone(), format)
                .await
            {
                error!(source = %self.decl.name, file = %path, error = %format!("{e:#}"), "file not ingested; retried at the next poll");
            }
        }
        Ok(())
    }

    async fn ingest(
        &mut self,
        location: &Path,
        size: u64,
        e_tag: Option<String>,
        format: FileFormat,
    ) -> anyhow::Result<()> {
        let path = location.to_string();
        let max_bytes = self.decl.max_object_bytes;
        if size > max_bytes {
            let reason = format!("object of {size} bytes is over max_object_bytes ({max_bytes})");
            return self.refuse_unread(&path, size, e_tag, reason).await;
        }
        // Stream the object to a temporary file, hashing it.
        let tmp = tempfile::NamedTempFile::new().context("create a temporary file")?;
        let mut hasher = Sha256::new();
        {
            let mut out = std::io::BufWriter::new(tmp.as_file());
            let mut body = self.lake.store().get(location).await?.into_stream();
            let mut read = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                read += chunk.len() as u64;
                if read > max_bytes {
                    // It grew after it was listed: what is known is that it is too large.
                    let reason = format!(
                        "object grew past max_object_bytes ({max_bytes}) while read (listed with {size} bytes)"
                    );
                    return self.refuse_unread(&path, size, e_tag, reason).await;
                }
                hasher.update(&chunk);
                out.write_all(&chunk)?;
            }
            out.flush()?;
        }
        let sha256: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(d) = self.done.get(&path)
            && d.sha256 == sha256
        {
            // The same content again: remember the new e-tag, produce nothing.
            let d = Done {
                size,
                e_tag,
                ..d.clone()
            };
            self.save_progress(&path, &d).await?;
            info!(source = %self.decl.name, file = %path, "file unchanged (same content); skipped");
            return Ok(());
        }
        let limits = RowLimits {
            max_line_bytes: self.decl.max_line_bytes,
            max_rows: self.decl.max_rows_per_file,
        };
        let mut reader = Rows::open(
            tmp.path(),
            format,
            self.decl.csv_delimiter,
            &self.target,
            limits,
        )?;
        let mut encoder = AvroBatchEncoder::new(
            self.schema_id,
            &self.topic.value_schema_json,
            self.target.clone(),
        )?;
        let (mut records, mut bad) = (0u64, 0u64);
        let mut refused = None;
        loop {
            let chunk = tokio::task::block_in_place(|| reader.next_chunk())?;
            let Some(chunk) = chunk else { break };
            let mut out: Vec<OutboundRecord> = Vec::new();
            for (line, message) in &chunk.errors {
                bad += 1;
                out.push(self.dead_letter(&path, Some(*line), CLASS_ROW, message));
            }
            for (line, reason) in &chunk.too_long {
                bad += 1;
                warn!(source = %self.decl.name, file = %path, line, reason = %reason, "file line refused");
                out.push(self.dead_letter(&path, Some(*line), CLASS_LIMIT, reason));
            }
            if let Some((line, reason)) = &chunk.stop {
                warn!(source = %self.decl.name, file = %path, line, reason = %reason, "rest of file refused");
                out.push(self.dead_letter(&path, Some(*line), CLASS_LIMIT, reason));
                refused = Some(reason.clone());
            }
            for (batch, lines) in chunk.batches {
                let conformer = match Conformer::new(&batch.schema(), self.target.clone()) {
                    Ok(c) => c,
                    Err(problems) => bail!(
                        "the columns of {path} do not fit {}: {problems}",
                        self.topic.name
                    ),
                };
                let (fitted, row_errors) = fit_rows(&conformer, &batch)?;
                // Rows that do not fit go to the dead-letter topic, the rest on.
                for (row, message) in &row_errors {
                    bad += 1;
                    out.push(self.dead_letter(&path, Some(lines[*row]), CLASS_ROW, message));
                }
                let Some(fitted) = fitted else { continue };
                let payloads = encoder.encode(&fitted)?;
                let keys = match &self.topic.key_field {
                    Some(k) => key_text(fitted.column_by_name(k).context("key column")?)
                        .map_err(anyhow::Error::msg)?,
                    None => vec![None; fitted.num_rows()],
                };
                records += payloads.len() as u64;
                out.extend(
                    keys.into_iter()
                        .zip(payloads)
                        .map(|(k, p)| OutboundRecord::new(self.topic.name.clone(), k, p.to_vec())),
                );
            }
            self.producer
                .send_all(&out)
                .await
                .context("produce the file's records")?;
        }
        let d = Done {
            size,
            e_tag,
            sha256,
            records,
            bad_rows: bad,
            refused,
        };
        self.save_progress(&path, &d).await?;
        info!(source = %self.decl.name, file = %path, records, bad_rows = bad, "file ingested");
        Ok(())
    }

    /// Refuses a whole object without reading it: one dead letter, then the progress record
    /// (unread: no hash), after the dead letter was acknowledged.
    async fn refuse_unread(
        &mut self,
        path: &str,
        size: u64,
        e_tag: Option<String>,
        reason: String,
    ) -> anyhow::Result<()> {
        warn!(source = %self.decl.name, file = %path, reason = %reason, "file refused");
        let letter = self.dead_letter(path, None, CLASS_LIMIT, &reason);
        self.producer
            .send(&letter)
            .await
            .context("produce the file's dead letter")?;
        let d = Done {
            size,
            e_tag,
            sha256: String::new(),
            records: 0,
            bad_rows: 0,
            refused: Some(reason),
        };
        self.save_progress(path, &d).await
    }

    /// A dead letter for `path`: at `line` (a row for Parquet and Avro), or the whole file.
    fn dead_letter(
        &self,
        path: &str,
        line: Option<u64>,
        class: &str,
        message: &str,
    ) -> OutboundRecord {
        let what = if matches!(
            self.decl.format.or_else(|| FileFormat::from_name(path)),
            Some(FileFormat::Parquet | FileFormat::Avro)
        ) {
            "row"
        } else {
            "line"
        };
        let at = match line {
            Some(line) => format!(" {what} {line}"),
            None => String::new(),
        };
        let message = format!("source {}: file {path}{at}: {message}", self.decl.name);
        let letter = DeadLetter {
            stage: "ingest",
            source_topic: path,
            partition: -1,
            offset: line.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
            error_class: class,
            message: &message,
        };
        dead_letter_record(&letter, None, Vec::new())
    }

    async fn save_progress(&mut self, path: &str, d: &Done) -> anyhow::Result<()> {
        let record = OutboundRecord::new(
            self.progress_topic.clone(),
            Some(progress_key(&self.decl.name, path).into_bytes()),
            serde_json::to_vec(d)?,
        );
        self.producer
            .send(&record)
            .await
            .context("write the file's progress")?;
        self.done.insert(path.to_string(), d.clone());
        Ok(())
    }
}

/// The limits a file's rows are read within.
#[derive(Debug, Clone, Copy)]
struct RowLimits {
    /// Longest CSV or NDJSON line, without its line end.
    max_line_bytes: usize,
    /// Most rows read.
    max_rows: u64,
}

/// A chunk of rows: batches with the line (or row) number of each row, rows that could not be
/// read, lines over the length limit, and where the file stops before its end (past the row
/// limit, or a CSV header over the line limit), each with its line (or row) and reason.
#[derive(Default)]
struct Chunk {
    batches: Vec<(RecordBatch, Vec<u64>)>,
    errors: Vec<(u64, String)>,
    too_long: Vec<(u64, String)>,
    stop: Option<(u64, String)>,
}

/// Reads a file in chunks, within its limits.
struct Rows {
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
    fn open(
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

    fn next_chunk(&mut self) -> anyhow::Result<Option<Chunk>> {
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

/// A batch of a file's rows fitted to the topic: the rows that fit (none if no row does), and
/// each row that does not, with why.
fn fit_rows(
    conformer: &Conformer,
    batch: &RecordBatch,
) -> anyhow::Result<(Option<RecordBatch>, RowErrors)> {
    let row_errors = match conformer.apply(batch) {
        Ok(fitted) => return Ok((Some(fitted), Vec::new())),
        Err(row_errors) => row_errors,
    };
    let mut keep = vec![true; batch.num_rows()];
    for (row, _) in &row_errors {
        keep[*row] = false;
    }
    let kept = arrow::compute::filter_record_batch(batch, &arrow::array::BooleanArray::from(keep))?;
    if kept.num_rows() == 0 {
        return Ok((None, row_errors));
    }
    let fitted = conformer
        .apply(&kept)
        .map_err(|e| anyhow::anyhow!("rows that fit one by one do not fit together: {e:?}"))?;
    Ok((Some(fitted), row_errors))
}

/// Fuzz target (see `tributary_fuzz`): a CSV or NDJSON file (the input's first byte chooses:
/// odd is NDJSON) read under small limits as a file source reads it into the catalog's
/// `files.products`: every line is a row, a refusal or an error, never more rows than the limit,
/// and every row that fits encodes to a datum of the topic's schema that decodes whole.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_target() -> tributary_fuzz::Harness {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use tributary_core::schema::catalog::Catalog;
    let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let catalog = Catalog::load(&schemas).unwrap();
    let topic = catalog.topic("files.products").unwrap().clone();
    let target = arrow_schema_for(&topic.value_schema_json).unwrap();
    let avro = apache_avro::Schema::parse_str(&topic.value_schema_json).unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("input");
    let limits = RowLimits {
        max_line_bytes: 300,
        max_rows: 40,
    };
    let header = "product_id,sku,name,category,price,currency,in_stock,updated_at\n";
    let csv = format!(
        "\u{0}{header}p-1,SKU000001,Product 1,cat-1,1.01,EUR,false,2026-11-28T10:01:00Z\n\
         p-2,SKU000002,\"Product, 2\",cat-2,-0.5,EUR,true,2026-11-28T10:02:00.123+02:00\n\n\
         p-3,,P,c,12345678.99,USD,TRUE,1764000000000\n"
    );
    let ndjson = concat!(
        "\u{1}",
        r#"{"product_id":"p-1","sku":"S","name":"N","category":"c","price":"9.99","currency":"EUR","in_stock":true,"updated_at":"2026-11-28T10:01:00Z"}"#,
        "\n",
        r#"{"product_id":"p-2","sku":"S2","name":"N\u00e9","category":"c","price":0.5,"currency":"EUR","in_stock":false,"updated_at":1764000000000,"extra":[1]}"#,
        "\n\r\n"
    );
    tributary_fuzz::Target::new("file-rows", env!("CARGO_MANIFEST_DIR"))
        .seeds([csv.into_bytes(), ndjson.as_bytes().to_vec()])
        .dictionary([
            ",",
            "\"",
            "\n",
            "\r\n",
            ":",
            "{}",
            "null",
            "true",
            "1e400",
            "-0.001",
            "99999999999999999999",
            "\"price\":",
            "1970-01-01T00:00:00Z",
            "+99999-12-31",
        ])
        .harness(move |input| {
            let (format, body) = match input.split_first() {
                Some((b, rest)) if b % 2 == 1 => (FileFormat::Ndjson, rest),
                Some((_, rest)) => (FileFormat::Csv, rest),
                None => (FileFormat::Csv, input),
            };
            std::fs::write(&file, body).unwrap();
            let _folder = &work;
            let mut rows = Rows::open(&file, format, ',', &target, limits).unwrap();
            let mut encoder =
                AvroBatchEncoder::new(1, &topic.value_schema_json, target.clone()).unwrap();
            let (mut good, mut bad, mut stopped) = (0u64, 0u64, false);
            let mut first_error = String::new();
            while let Some(chunk) = rows.next_chunk().unwrap() {
                bad += (chunk.errors.len() + chunk.too_long.len()) as u64;
                if let Some((_, e)) = chunk.errors.first()
                    && first_error.is_empty()
                {
                    first_error = e.chars().take(24).collect();
                }
                stopped |= chunk.stop.is_some();
                for (batch, lines) in chunk.batches {
                    assert_eq!(batch.num_rows(), lines.len(), "a line for every row");
                    let Ok(conformer) = Conformer::new(&batch.schema(), target.clone()) else {
                        return format!("{format:?} columns do not fit");
                    };
                    let (fitted, errors) =
                        fit_rows(&conformer, &batch).expect("the rows that fit fit together");
                    let n = fitted.as_ref().map_or(0, |f| f.num_rows());
                    assert_eq!(
                        n + errors.len(),
                        batch.num_rows(),
                        "a row fits or has a reason"
                    );
                    bad += errors.len() as u64;
                    let Some(fitted) = fitted else { continue };
                    for payload in encoder.encode(&fitted).expect("fitted rows encode") {
                        let (_, mut datum) = tributary_core::schema::wire::parse(&payload).unwrap();
                        apache_avro::from_avro_datum(&avro, &mut datum, None)
                            .expect("an encoded row decodes");
                        assert!(datum.is_empty(), "bytes left after a row");
                        good += 1;
                    }
                }
            }
            assert!(
                good + bad <= limits.max_rows,
                "{good} + {bad} rows over the limit"
            );
            // Words, not counts: the fuzzer drops digits from outcomes.
            let some = |n: u64| if n > 0 { "some" } else { "none" };
            format!(
                "{format:?} good {} bad {} stopped {stopped} {first_error}",
                some(good),
                some(bad)
            )
        })
}

/// What [`read_line_bounded`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadLine {
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
fn read_line_bounded(
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

fn parse(
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
fn text_type(target: &SchemaRef, name: &str) -> DataType {
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
    use std::io::Read;

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

    #[test]
    fn a_file_refused_unread_is_skipped_while_still_over_the_limit() {
        let done = Done {
            size: 100,
            e_tag: None,
            sha256: String::new(),
            records: 0,
            bad_rows: 0,
            refused: Some("too large".into()),
        };
        assert!(done.covers(100, None, 99));
        assert!(!done.covers(100, None, 100), "a raised limit reads it");
        assert!(!done.covers(101, None, 99));
        let read = Done {
            sha256: "ab".into(),
            e_tag: Some("e".into()),
            refused: None,
            ..done.clone()
        };
        assert!(read.covers(100, Some(&"e".to_string()), 1));
        assert!(!read.covers(100, None, 1));
        // Progress written before the limits existed still reads.
        let old: Done = serde_json::from_str(
            r#"{"size":1,"e_tag":null,"sha256":"ab","records":1,"bad_rows":0}"#,
        )
        .unwrap();
        assert_eq!(old.refused, None);
    }
}
