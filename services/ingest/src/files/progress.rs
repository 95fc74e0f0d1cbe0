//! Progress of file sources: what the compacted progress topic records of each file ingested.

use std::collections::HashMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tributary_core::bus::{KafkaConfig, OutboundRecord, read_partition};

use super::FileSource;

/// What the progress topic records of an ingested file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Done {
    pub(super) size: u64,
    pub(super) e_tag: Option<String>,
    pub(super) sha256: String,
    pub(super) records: u64,
    pub(super) bad_rows: u64,
    /// Why the file (or its rest) was refused, if it was; an object refused for its size is
    /// recorded unread, with an empty `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) refused: Option<String>,
}

impl Done {
    /// Whether a listed object of `size` and `e_tag` is the one recorded and needs no reading:
    /// the same size and e-tag; or, refused unread for its size, the same size (and e-tag, if
    /// any) and still over `max_object_bytes` (a raised limit reads it).
    pub(super) fn covers(&self, size: u64, e_tag: Option<&String>, max_object_bytes: u64) -> bool {
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

fn progress_key(source: &str, path: &str) -> String {
    format!("{source}\u{1f}{path}")
}

/// The files `source` ingested, by path: the latest progress record of each.
pub(super) async fn load(
    kafka: &KafkaConfig,
    progress_topic: &str,
    source: &str,
) -> anyhow::Result<HashMap<String, Done>> {
    let mut done = HashMap::new();
    let prefix = progress_key(source, "");
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
    Ok(done)
}

impl FileSource {
    pub(super) async fn save_progress(&mut self, path: &str, d: &Done) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

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
