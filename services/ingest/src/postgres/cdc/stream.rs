//! The streaming loop: read the slot, deliver the changes, move the slot on, heartbeats.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ack::{acknowledged, advance};
use super::decode::Stream;
use super::{Captured, Slot};
use crate::postgres::SourceContext;
use crate::postgres::db::quote_ident;
use crate::postgres::pgoutput;

/// Reads the slot until `shutdown`, delivering the changes and moving the slot on past them
/// once the broker acknowledged them.
pub(super) async fn follow(
    ctx: &SourceContext,
    client: &tokio_postgres::Client,
    tables: &mut [Captured],
    mut slot: Slot,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let decl = &ctx.decl;
    let mut stream = Stream::default();
    let mut last_heartbeat = Instant::now();
    let heartbeat = Duration::from_secs(decl.heartbeat_seconds);
    let options_publication = quote_ident(&slot.publication);
    let peek = "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1::text::name, NULL, $2::int, \
         'proto_version', '1', 'publication_names', $3::text)";
    let batch = i32::try_from(decl.batch_rows).unwrap_or(i32::MAX);
    while !shutdown.is_cancelled() {
        let before: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .try_get(0)?;
        let before = pgoutput::parse_lsn(&before).context("pg_current_wal_lsn")?;
        let rows = client
            .query(peek, &[&slot.name, &batch, &options_publication])
            .await
            .with_context(|| format!("read the replication slot {}", slot.name))?;
        let n = rows.len();
        let (records, upto) = stream.decode(ctx, tables, rows).await?;
        if !records.is_empty() {
            let n = records.len();
            ctx.deliver(records).await?;
            debug!(source = %decl.name, records = n, "changes delivered");
        }
        if let Some(upto) = upto.filter(|u| *u > slot.confirmed) {
            advance(client, &slot.name, upto).await?;
            slot.confirmed = upto;
            acknowledged(ctx, slot.confirmed);
        } else if n == 0 && last_heartbeat.elapsed() >= heartbeat {
            // Nothing of ours committed before `before`: the slot may move there.
            if before > slot.confirmed {
                advance(client, &slot.name, before).await?;
                debug!(source = %decl.name, lsn = %pgoutput::format_lsn(before), "heartbeat: idle slot moved on");
                slot.confirmed = before;
                acknowledged(ctx, slot.confirmed);
            }
            last_heartbeat = Instant::now();
        }
        if n < batch as usize {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(decl.poll_ms)) => {}
            }
        }
    }
    Ok(())
}
