//! Sources of the catalog (`[[source]]` in `catalog.toml`): where ingest federates data from
//! besides its HTTP API. Today: files landing in object storage.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::catalog::Topic;

/// A source as declared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum SourceDecl {
    /// Files under a prefix of object storage (`file://`, `s3://`, ...), each ingested once.
    Files(FilesDecl),
}

impl SourceDecl {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Files(f) => &f.name,
        }
    }
}

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values, one record per line, a header line naming the columns.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet.
    Parquet,
    /// Avro object container files.
    Avro,
}

impl FileFormat {
    /// The format a file name's extension says, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit('.').next()?;
        match ext {
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            "parquet" => Some(Self::Parquet),
            "avro" => Some(Self::Avro),
            _ => None,
        }
    }
}

/// Files landing under a prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesDecl {
    /// Name (letters, digits, `_`), in progress keys, logs and metrics.
    pub name: String,
    /// The prefix watched, e.g. `s3://landing/products/` or `file:///var/lib/tributary/landing/products/`.
    pub url: String,
    /// The topic the rows go to (converted to its schema).
    pub topic: String,
    /// The format of every file; default: from each file's extension (files with none are
    /// skipped).
    pub format: Option<FileFormat>,
    /// How often the prefix is listed, in seconds. Default 10.
    #[serde(default = "default_poll")]
    pub poll_seconds: u64,
    /// CSV field delimiter. Default `,`.
    #[serde(default = "default_delimiter")]
    pub csv_delimiter: char,
}

fn default_poll() -> u64 {
    10
}
fn default_delimiter() -> char {
    ','
}

/// Checks declarations against the catalog's topics; the message names the source.
pub(crate) fn validate(
    sources: &[SourceDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for s in sources {
        let fail = |m: String| Err(format!("source {}: {m}", s.name()));
        if !super::transforms::is_identifier(s.name()) {
            return fail(
                "the name must be letters, digits and _, not starting with a digit".into(),
            );
        }
        if !names.insert(s.name()) {
            return fail("declared twice".into());
        }
        match s {
            SourceDecl::Files(f) => {
                if !topics.contains_key(&f.topic) {
                    return fail(format!("topic {} is not in the catalog", f.topic));
                }
                if !f.url.contains("://") {
                    return fail(format!(
                        "url {:?} is not a URL (file:///..., s3://...)",
                        f.url
                    ));
                }
                if f.poll_seconds == 0 {
                    return fail("poll_seconds must be at least 1".into());
                }
                if !f.csv_delimiter.is_ascii() {
                    return fail("csv_delimiter must be one ASCII character".into());
                }
            }
        }
    }
    Ok(())
}
