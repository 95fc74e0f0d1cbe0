//! Ingesting one file: rows fitted to the topic, encoded and produced; dead letters for the rest.

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use object_store::path::Path;
use tracing::{info, warn};
use tributary_core::bus::{DeadLetter, OutboundRecord, dead_letter_record};
use tributary_core::schema::arrow::AvroBatchEncoder;
use tributary_core::schema::conform::{Conformer, RowErrors, key_text};
use tributary_core::schema::sources::FileFormat;

use super::FileSource;
use super::progress::Done;
use super::rows::{RowLimits, Rows};
use super::scan::Fetched;
use crate::metrics::SourceTableLabel;

/// Dead-letter class of rows that cannot be read or do not fit the topic.
const CLASS_ROW: &str = "file_row";

/// Dead-letter class of what a limit refused: an object, a line, the rows past the last allowed.
const CLASS_LIMIT: &str = "file_limit";

impl FileSource {
    pub(super) async fn ingest(
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
        let Some(Fetched { file: tmp, sha256 }) = self.fetch(location, max_bytes).await? else {
            // It grew after it was listed: what is known is that it is too large.
            let reason = format!(
                "object grew past max_object_bytes ({max_bytes}) while read (listed with {size} bytes)"
            );
            return self.refuse_unread(&path, size, e_tag, reason).await;
        };
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
            let produced = records_in_chunk(&out, &self.topic.name);
            self.producer
                .send_all(&out)
                .await
                .context("produce the file's records")?;
            self.count(produced, out.len() - produced);
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
        self.count(0, 1);
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

    /// Counts what this source had acknowledged: records for its topic, and dead letters.
    fn count(&self, records: usize, dead_letters: usize) {
        let label = SourceTableLabel {
            source: self.decl.name.clone(),
            table: String::new(),
        };
        self.metrics
            .source_records
            .get_or_create(&label)
            .inc_by(records as u64);
        self.metrics
            .source_dead_letters
            .get_or_create(&label)
            .inc_by(dead_letters as u64);
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
}

/// A batch of a file's rows fitted to the topic: the rows that fit (none if no row does), and
/// each row that does not, with why.
pub(super) fn fit_rows(
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

/// How many of `out` go to the source's topic (the rest are dead letters).
fn records_in_chunk(out: &[OutboundRecord], topic: &str) -> usize {
    out.iter().filter(|r| r.topic == topic).count()
}
