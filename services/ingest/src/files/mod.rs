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

#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;
mod lines;
mod produce;
mod progress;
mod rows;
mod scan;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use arrow::datatypes::SchemaRef;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tributary_core::bus::{KafkaConfig, Producer};
use tributary_core::lake::{Lake, LakeConfig};
use tributary_core::schema::arrow::arrow_schema_for;
use tributary_core::schema::catalog::Topic;
use tributary_core::schema::sources::FilesDecl;

use crate::config::ObjectStoreSettings;
use crate::metrics::IngestMetrics;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use self::fuzz::fuzz_target;
use self::progress::Done;

/// Rows read and produced at a time.
const CHUNK_ROWS: usize = 5_000;

/// Bytes of CSV or NDJSON lines read at a time (a chunk ends at `CHUNK_ROWS` lines or once it
/// holds this much, so long lines do not multiply into a large chunk).
const CHUNK_BYTES: usize = 8 << 20;

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
    metrics: IngestMetrics,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("name", &self.decl.name)
            .finish_non_exhaustive()
    }
}

/// What a file source is started with: its declaration, its topic and the topic's schema id,
/// where its objects are, and where its records and progress go.
pub(crate) struct SourceSetup<'a> {
    pub decl: FilesDecl,
    pub topic: Topic,
    pub schema_id: u32,
    pub store: &'a ObjectStoreSettings,
    pub kafka: &'a KafkaConfig,
    pub producer: Producer,
    /// Compacted topic holding each ingested file's progress.
    pub progress_topic: &'a str,
    /// Where the records and dead letters it produces are counted.
    pub metrics: IngestMetrics,
}

impl FileSource {
    pub(crate) async fn start(setup: SourceSetup<'_>) -> anyhow::Result<Self> {
        let SourceSetup {
            decl,
            topic,
            schema_id,
            store,
            kafka,
            producer,
            progress_topic,
            metrics,
        } = setup;
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
        let done = progress::load(kafka, progress_topic, &decl.name).await?;
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
            metrics,
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
}
