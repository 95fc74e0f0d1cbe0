//! Writing a file to the lake, retried and never over another file; reading a file's last offset.

use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use tracing::{info, warn};
use tributary_core::bus::HandlerError;
use tributary_core::lake::{Created, Lake};

use super::partition::OpenFile;
use super::{
    Archiver, LAKE, META_AVRO_SCHEMA, META_FIRST_OFFSET, META_LAST_OFFSET, META_PARTITION,
    META_SCHEMA_ID, META_TOPIC,
};
use crate::paths::object_key;

impl Archiver {
    /// Writes a file to the lake, retrying with backoff until it is durable. Where another file
    /// already holds the key, the rows that file holds are dropped and the rest written under
    /// the key of their first offset (rule 1). Returns the last offset of the files found in
    /// the way, if any: the partition's records up to it are in the lake.
    pub(super) async fn write(&self, mut file: OpenFile) -> Result<Option<i64>, HandlerError> {
        let mut found: Option<i64> = None;
        loop {
            if file.batches.is_empty() {
                return Ok(found);
            }
            if self.write_once(&file).await? {
                return Ok(found);
            }
            let Some(last) = self.existing_last_offset(&file.key).await? else {
                // Deleted between the put and the look: try again.
                continue;
            };
            self.metrics.keys_taken.inc();
            info!(key = %file.key, last, "a file is already at the key; writing only what follows it");
            found = Some(found.map_or(last, |f| f.max(last)));
            file.drop_through(last)?;
            file.key = object_key(
                &self.root,
                &file.topic,
                file.bucket,
                file.partition,
                file.first_offset,
            );
        }
    }

    /// One file, retried while the store fails: `true` once written, `false` if the key is taken.
    async fn write_once(&self, file: &OpenFile) -> Result<bool, HandlerError> {
        let Some(first) = file.batches.first() else {
            return Ok(true);
        };
        let schema = first.schema();
        let mut metadata = vec![
            KeyValue::new(META_TOPIC.to_string(), file.topic.clone()),
            KeyValue::new(META_PARTITION.to_string(), file.partition.to_string()),
            KeyValue::new(META_FIRST_OFFSET.to_string(), file.first_offset.to_string()),
            KeyValue::new(META_LAST_OFFSET.to_string(), file.last_offset.to_string()),
            KeyValue::new(META_SCHEMA_ID.to_string(), file.schema_id.to_string()),
        ];
        if let Some(avro) = self.schemas.get(&file.schema_id) {
            metadata.push(KeyValue::new(
                META_AVRO_SCHEMA.to_string(),
                avro.to_string(),
            ));
        }
        let properties = self
            .properties
            .clone()
            .into_builder()
            .set_key_value_metadata(Some(metadata))
            .build();
        let path = Path::from(file.key.as_str());
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            match self
                .lake
                .create_parquet(&path, schema.clone(), properties.clone(), &file.batches)
                .await
            {
                Ok(Created::Written(size)) => {
                    self.readiness.recover(LAKE);
                    self.metrics
                        .file_written(file.records, size, started.elapsed());
                    tracing::debug!(key = %file.key, records = file.records, "file written");
                    return Ok(true);
                }
                Ok(Created::AlreadyExists) => {
                    self.readiness.recover(LAKE);
                    return Ok(false);
                }
                Err(e) => {
                    self.metrics.write_errors.inc();
                    warn!(key = %file.key, error = %e, "writing a file failed; retrying");
                    self.readiness
                        .fail(LAKE, format!("writing {} failed: {e}", file.key));
                    self.wait(backoff).await?;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// The last offset a file already in the lake holds, if there is one at `key`.
    pub(super) async fn existing_last_offset(
        &self,
        key: &str,
    ) -> Result<Option<i64>, HandlerError> {
        let path = Path::from(key);
        let mut backoff = Duration::from_millis(200);
        loop {
            let found = match self.lake.store().head(&path).await {
                Ok(meta) => read_last_offset(&self.lake, &path, meta.size).await,
                Err(e) => Err(FooterError::Store(e)),
            };
            match found {
                Ok(last) => {
                    self.readiness.recover(LAKE);
                    return Ok(Some(last));
                }
                Err(FooterError::Store(object_store::Error::NotFound { .. })) => {
                    self.readiness.recover(LAKE);
                    return Ok(None);
                }
                Err(FooterError::Invalid(message)) => return Err(HandlerError::fatal(message)),
                Err(FooterError::Store(e)) => {
                    warn!(key, error = %e, "checking for an existing file failed; retrying");
                    self.readiness
                        .fail(LAKE, format!("reading {key} failed: {e}"));
                    self.wait(backoff).await?;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Why the last offset of a file in the lake could not be read.
#[derive(Debug)]
enum FooterError {
    /// The store failed (retried by the caller), or the object is gone.
    Store(object_store::Error),
    /// The object is not a file this archive wrote.
    Invalid(String),
}

impl From<object_store::Error> for FooterError {
    fn from(e: object_store::Error) -> Self {
        Self::Store(e)
    }
}

/// Reads the last offset recorded in a Parquet file's footer.
async fn read_last_offset(lake: &Lake, path: &Path, size: u64) -> Result<i64, FooterError> {
    let invalid = |what: &str| FooterError::Invalid(format!("{path} {what}"));
    if size < 12 {
        return Err(invalid(&format!("is not a parquet file ({size} bytes)")));
    }
    let tail = lake.store().get_range(path, size - 8..size).await?;
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if &tail[4..8] != b"PAR1" || len + 8 > size {
        return Err(invalid("has no parquet footer"));
    }
    let footer = lake
        .store()
        .get_range(path, size - 8 - len..size - 8)
        .await?;
    let metadata = ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| invalid(&format!("has an unreadable footer: {e}")))?;
    metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == META_LAST_OFFSET))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| invalid("does not say which offsets it holds"))
}
