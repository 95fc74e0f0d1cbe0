//! The lake: object storage opened from a URL (`file://`, `s3://`, `memory://`, and the other
//! schemes object_store knows, by options), and Parquet files written to it: streamed through
//! object_store's buffered multipart writer ([`Lake::parquet_writer`]), or encoded in memory and
//! put once only if nothing is at the key yet ([`Lake::create_parquet`]), so that a file is never
//! replaced.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use parquet::arrow::{ArrowWriter, AsyncArrowWriter};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
use url::Url;

use crate::config::Secret;

/// Object storage settings (`[lake]` in a service's configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Root of the lake: `file:///var/lib/tributary/lake`, `s3://bucket/prefix`, `memory://`.
    pub url: String,
    /// S3 endpoint for S3-compatible stores (MinIO, moto); unset for AWS.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[serde(default)]
    pub s3_region: Option<String>,
    /// S3 access key id (unset: the usual AWS credential chain).
    #[serde(default)]
    pub s3_access_key_id: Option<Secret>,
    /// S3 secret access key.
    #[serde(default)]
    pub s3_secret_access_key: Option<Secret>,
    /// Allow plain HTTP to the endpoint (local test stores only).
    #[serde(default)]
    pub allow_http: bool,
    /// Further object_store options by name, for any scheme (`google_service_account`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, Secret>,
}

impl LakeConfig {
    /// A lake at `url` with no further options.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            allow_http: false,
            options: BTreeMap::new(),
        }
    }
}

/// A lake error.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The URL does not parse or names a scheme object_store does not support.
    #[error("invalid lake url {url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A local folder could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// An object store and the root prefix of the lake inside it.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

impl Lake {
    /// Opens the lake a configuration names. A `file://` root is created if missing.
    pub fn open(config: &LakeConfig) -> Result<Self, LakeError> {
        let url_err = |message: String| LakeError::Url {
            url: config.url.clone(),
            message,
        };
        let url = Url::parse(&config.url).map_err(|e| url_err(e.to_string()))?;
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|()| url_err("not an absolute file path".into()))?;
            std::fs::create_dir_all(&dir).map_err(|source| LakeError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut options: Vec<(String, String)> = Vec::new();
        let s3 = [
            ("aws_endpoint", config.s3_endpoint.clone()),
            ("aws_region", config.s3_region.clone()),
            (
                "aws_access_key_id",
                config
                    .s3_access_key_id
                    .as_ref()
                    .map(|s| s.expose().to_string()),
            ),
            (
                "aws_secret_access_key",
                config
                    .s3_secret_access_key
                    .as_ref()
                    .map(|s| s.expose().to_string()),
            ),
        ];
        if url.scheme() == "s3" {
            options.extend(
                s3.into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
            );
            if config.allow_http {
                options.push(("aws_allow_http".into(), "true".into()));
            }
        }
        options.extend(
            config
                .options
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string())),
        );
        let (store, root) =
            object_store::parse_url_opts(&url, options).map_err(|e| url_err(e.to_string()))?;
        Ok(Self {
            store: Arc::from(store),
            root,
        })
    }

    /// A lake over an existing store (tests, embedding).
    pub fn from_store(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self { store, root }
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The root prefix of the lake inside the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The full path of `relative` (slash-separated parts) under the root.
    pub fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    /// Starts a Parquet file at `path`. Data is uploaded in parts as it is written; the object
    /// appears only when [`ParquetSink::close`] succeeds.
    pub fn parquet_writer(
        &self,
        path: Path,
        schema: SchemaRef,
        properties: WriterProperties,
    ) -> Result<ParquetSink, LakeError> {
        let upload = BufWriter::with_capacity(self.store.clone(), path.clone(), PART_SIZE);
        let writer = AsyncArrowWriter::try_new(upload, schema, Some(properties))?;
        Ok(ParquetSink { writer, path })
    }
}

/// What [`Lake::create_parquet`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The file was written; its size in bytes.
    Written(u64),
    /// An object was already at the key: nothing was written.
    AlreadyExists,
}

impl Lake {
    /// Writes `batches` as one Parquet file at `path`, unless an object is already there. The
    /// file is encoded in memory and put once with [`PutMode::Create`] (S3's `If-None-Match: *`,
    /// a hard link on a file system): it appears whole or not at all, and an object at the key,
    /// whoever wrote it, is never replaced. A put that succeeded but whose answer was lost reads
    /// as [`Created::AlreadyExists`] when retried.
    pub async fn create_parquet(
        &self,
        path: &Path,
        schema: SchemaRef,
        properties: WriterProperties,
        batches: &[RecordBatch],
    ) -> Result<Created, LakeError> {
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties))?;
        for batch in batches {
            writer.write(batch)?;
        }
        let bytes = writer.into_inner()?;
        let size = bytes.len() as u64;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(Created::Written(size)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(e.into()),
        }
    }
}

/// Size of the parts a Parquet file is uploaded in (S3's minimum part is 5 MiB).
const PART_SIZE: usize = 10 * 1024 * 1024;

/// A Parquet file being written to the lake.
pub struct ParquetSink {
    writer: AsyncArrowWriter<BufWriter>,
    path: Path,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// Appends a batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        Ok(self.writer.write(batch).await?)
    }

    /// Bytes buffered in memory and not yet written out.
    pub fn buffered_bytes(&self) -> usize {
        self.writer.in_progress_size()
    }

    /// Path of the object.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the footer and completes the upload: once this returns the object is durable.
    pub async fn close(self) -> Result<ParquetMetaData, LakeError> {
        Ok(self.writer.close().await?)
    }
}
