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
use tracing::{error, info};
use tributary_core::bus::{
    DeadLetter, KafkaConfig, OutboundRecord, Producer, dead_letter_record, read_partition,
};
use tributary_core::lake::{Lake, LakeConfig};
use tributary_core::schema::arrow::{AvroBatchEncoder, arrow_schema_for};
use tributary_core::schema::catalog::Topic;
use tributary_core::schema::conform::{Conformer, key_text};
use tributary_core::schema::sources::{FileFormat, FilesDecl};

use crate::config::ObjectStoreSettings;

/// Rows read and produced at a time.
const CHUNK_ROWS: usize = 5_000;

/// What the progress topic records of an ingested file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Done {
    size: u64,
    e_tag: Option<String>,
    sha256: String,
    records: u64,
    bad_rows: u64,
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
                && d.size == meta.size
                && d.e_tag.is_some()
                && d.e_tag == meta.e_tag
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
        // Stream the object to a temporary file, hashing it.
        let tmp = tempfile::NamedTempFile::new().context("create a temporary file")?;
        let mut hasher = Sha256::new();
        {
            let mut out = std::io::BufWriter::new(tmp.as_file());
            let mut body = self.lake.store().get(location).await?.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
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
        let mut reader = Rows::open(tmp.path(), format, self.decl.csv_delimiter, &self.target)?;
        let mut encoder = AvroBatchEncoder::new(
            self.schema_id,
            &self.topic.value_schema_json,
            self.target.clone(),
        )?;
        let (mut records, mut bad) = (0u64, 0u64);
        loop {
            let chunk = tokio::task::block_in_place(|| reader.next_chunk())?;
            let Some(chunk) = chunk else { break };
            let mut out: Vec<OutboundRecord> = Vec::new();
            for (line, message) in &chunk.errors {
                bad += 1;
                out.push(self.dead_letter(&path, *line, message));
            }
            for (batch, lines) in chunk.batches {
                let conformer = match Conformer::new(&batch.schema(), self.target.clone()) {
                    Ok(c) => c,
                    Err(problems) => bail!(
                        "the columns of {path} do not fit {}: {problems}",
                        self.topic.name
                    ),
                };
                let fitted = match conformer.apply(&batch) {
                    Ok(f) => Some(f),
                    Err(row_errors) => {
                        // Rows that do not fit go to the dead-letter topic, the rest on.
                        let mut keep = vec![true; batch.num_rows()];
                        for (row, message) in &row_errors {
                            keep[*row] = false;
                            bad += 1;
                            out.push(self.dead_letter(&path, lines[*row], message));
                        }
                        let kept = arrow::compute::filter_record_batch(
                            &batch,
                            &arrow::array::BooleanArray::from(keep),
                        )?;
                        if kept.num_rows() == 0 {
                            None
                        } else {
                            Some(
                                conformer
                                    .apply(&kept)
                                    .map_err(|e| anyhow::anyhow!("{e:?}"))?,
                            )
                        }
                    }
                };
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
        };
        self.save_progress(&path, &d).await?;
        info!(source = %self.decl.name, file = %path, records, bad_rows = bad, "file ingested");
        Ok(())
    }

    fn dead_letter(&self, path: &str, line: u64, message: &str) -> OutboundRecord {
        let what = if matches!(
            self.decl.format.or_else(|| FileFormat::from_name(path)),
            Some(FileFormat::Parquet | FileFormat::Avro)
        ) {
            "row"
        } else {
            "line"
        };
        let message = format!(
            "source {}: file {path} {what} {line}: {message}",
            self.decl.name
        );
        let letter = DeadLetter {
            stage: "ingest",
            source_topic: path,
            partition: -1,
            offset: i64::try_from(line).unwrap_or(i64::MAX),
            error_class: "file_row",
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

/// A chunk of rows: batches with the line (or row) number of each row, and rows that could not
/// be read.
struct Chunk {
    batches: Vec<(RecordBatch, Vec<u64>)>,
    errors: Vec<(u64, String)>,
}

/// Reads a file in chunks.
enum Rows {
    Lines {
        format: FileFormat,
        reader: BufReader<std::fs::File>,
        schema: SchemaRef,
        delimiter: u8,
        line: u64,
    },
    Batches {
        batches: Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send>,
        row: u64,
    },
}

impl Rows {
    fn open(
        file: &FsPath,
        format: FileFormat,
        delimiter: char,
        target: &SchemaRef,
    ) -> anyhow::Result<Self> {
        let f = std::fs::File::open(file)?;
        match format {
            FileFormat::Csv | FileFormat::Ndjson => {
                let mut reader = BufReader::new(f);
                let mut line = 0;
                let schema = if format == FileFormat::Csv {
                    // The header names the columns; each takes the type of the topic's field of
                    // that name (text for enums, which the conformer maps onto symbols).
                    let mut header = String::new();
                    reader.read_line(&mut header)?;
                    line = 1;
                    let names: Vec<String> = header
                        .trim_end_matches(['\r', '\n'])
                        .split(delimiter)
                        .map(|s| s.trim().trim_matches('"').to_string())
                        .collect();
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
                Ok(Self::Lines {
                    format,
                    reader,
                    schema,
                    delimiter: delimiter as u8,
                    line,
                })
            }
            FileFormat::Parquet => {
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?
                        .with_batch_size(CHUNK_ROWS)
                        .build()?;
                Ok(Self::Batches {
                    batches: Box::new(reader),
                    row: 0,
                })
            }
            FileFormat::Avro => {
                let reader = arrow_avro::reader::ReaderBuilder::new()
                    .with_batch_size(CHUNK_ROWS)
                    .build(BufReader::new(f))?;
                Ok(Self::Batches {
                    batches: Box::new(reader),
                    row: 0,
                })
            }
        }
    }

    fn next_chunk(&mut self) -> anyhow::Result<Option<Chunk>> {
        match self {
            Self::Batches { batches, row } => match batches.next() {
                None => Ok(None),
                Some(batch) => {
                    let batch = batch?;
                    let first = *row + 1;
                    *row += batch.num_rows() as u64;
                    let rows = (first..=*row).collect();
                    Ok(Some(Chunk {
                        batches: vec![(batch, rows)],
                        errors: Vec::new(),
                    }))
                }
            },
            Self::Lines {
                format,
                reader,
                schema,
                delimiter,
                line,
            } => {
                let mut text = Vec::new();
                let mut lines = Vec::new();
                let mut buf = String::new();
                while lines.len() < CHUNK_ROWS {
                    buf.clear();
                    if reader.read_line(&mut buf)? == 0 {
                        break;
                    }
                    *line += 1;
                    if buf.trim().is_empty() {
                        continue;
                    }
                    lines.push((*line, buf.trim_end_matches(['\r', '\n']).to_string()));
                }
                if lines.is_empty() {
                    return Ok(None);
                }
                for (_, l) in &lines {
                    text.extend_from_slice(l.as_bytes());
                    text.push(b'\n');
                }
                let mut chunk = Chunk {
                    batches: Vec::new(),
                    errors: Vec::new(),
                };
                match parse(*format, schema, *delimiter, &text) {
                    Ok(batch) if batch.num_rows() == lines.len() => {
                        chunk
                            .batches
                            .push((batch, lines.iter().map(|(n, _)| *n).collect()));
                    }
                    _ => {
                        // Find the lines at fault: parse them one by one.
                        for (n, l) in &lines {
                            let mut one = l.as_bytes().to_vec();
                            one.push(b'\n');
                            match parse(*format, schema, *delimiter, &one) {
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
        _ => arrow_json::ReaderBuilder::new(schema.clone())
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
        | DataType::Timestamp(_, _)
        | DataType::Decimal128(_, _) => field.data_type().clone(),
        _ => DataType::Utf8,
    }
}
