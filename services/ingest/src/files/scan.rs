//! Listing a file source's prefix, and fetching an object to a temporary file, hashed.

use std::io::Write;

use anyhow::Context;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::error;
use tributary_core::schema::sources::FileFormat;

use super::FileSource;

/// An object fetched whole: the temporary file holding it and its SHA-256, in hex.
pub(super) struct Fetched {
    pub(super) file: tempfile::NamedTempFile,
    pub(super) sha256: String,
}

impl FileSource {
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

    /// Streams the object at `location` to a temporary file (never held in memory whole),
    /// hashing it; `None` if it is over `max_bytes` (it grew after it was listed).
    pub(super) async fn fetch(
        &self,
        location: &Path,
        max_bytes: u64,
    ) -> anyhow::Result<Option<Fetched>> {
        let file = tempfile::NamedTempFile::new().context("create a temporary file")?;
        let mut hasher = Sha256::new();
        {
            let mut out = std::io::BufWriter::new(file.as_file());
            let mut body = self.lake.store().get(location).await?.into_stream();
            let mut read = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                read += chunk.len() as u64;
                if read > max_bytes {
                    return Ok(None);
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
        Ok(Some(Fetched { file, sha256 }))
    }
}
