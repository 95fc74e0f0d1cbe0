//! Progress of PostgreSQL sources: a record per table in the compacted progress topic.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tributary_core::bus::{OutboundRecord, read_partition};

use super::SourceContext;

/// The progress record key of a table.
fn progress_key(source: &str, table: &str) -> String {
    format!("postgres/{source}/{table}")
}

/// Reads the source's progress records (latest per table).
pub(super) async fn read_progress<T: for<'de> Deserialize<'de>>(
    ctx: &SourceContext,
) -> anyhow::Result<BTreeMap<String, T>> {
    let prefix = progress_key(&ctx.decl.name, "");
    let mut out = BTreeMap::new();
    for r in read_partition(&ctx.kafka, &ctx.progress_topic, 0)
        .await
        .context("read the postgresql progress topic")?
    {
        let Some(table) = r
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(&prefix))
        else {
            continue;
        };
        match r.payload.as_deref().map(serde_json::from_slice::<T>) {
            Some(Ok(p)) => {
                out.insert(table.to_string(), p);
            }
            _ => {
                out.remove(table);
            }
        }
    }
    Ok(out)
}

/// Writes a table's progress (after what it describes was acknowledged).
pub(super) async fn save_progress<T: Serialize>(
    ctx: &SourceContext,
    table: &str,
    progress: &T,
) -> anyhow::Result<()> {
    let record = OutboundRecord::new(
        ctx.progress_topic.clone(),
        Some(progress_key(&ctx.decl.name, table).into_bytes()),
        serde_json::to_vec(progress)?,
    );
    ctx.producer
        .send(&record)
        .await
        .context("write the source's progress")?;
    Ok(())
}
