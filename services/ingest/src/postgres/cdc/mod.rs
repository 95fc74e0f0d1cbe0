//! Change data capture through a logical replication slot and the `pgoutput` plugin.
//!
//! The slot is read with `pg_logical_slot_peek_binary_changes` over an ordinary connection and
//! moved on with `pg_replication_slot_advance` only after the broker acknowledged every record
//! of the transactions read: a crash at any point re-reads from the acknowledged position
//! (duplicates possible, nothing lost). Changes arrive whole transactions at a time, in commit
//! order.
//!
//! The first start creates the publication and the slot, then reads each table in a
//! `REPEATABLE READ` snapshot (`op = r`). The snapshot's visibility (`pg_current_snapshot()`)
//! is kept in the progress topic: a transaction the slot returns that the snapshot already saw
//! is skipped for that table, so the switch from snapshot to stream neither loses nor repeats
//! a change. A table added to the source later is added to the publication and snapshotted
//! the same way.
//!
//! While the tables are idle the slot is moved to the server's current WAL position every
//! `heartbeat_seconds`, so the server does not keep WAL for changes to other tables.

mod ack;
mod decode;
mod setup;
mod snapshot;
mod stream;

use std::collections::BTreeMap;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::SourceContext;
use super::db::connect;
use super::pgoutput;
use super::progress::{read_progress, save_progress};
use super::table::TableState;
use snapshot::{Snapshotted, snapshot};

/// A table under capture.
struct Captured {
    state: TableState,
    snapshot: Option<Snapshotted>,
}

/// The source's replication slot and publication, and how far the slot is confirmed.
struct Slot {
    name: String,
    publication: String,
    /// The slot's confirmed position: the changes before it were acknowledged by the broker.
    confirmed: u64,
}

pub(super) async fn run(ctx: &SourceContext, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let decl = &ctx.decl;
    let client = connect(decl).await?;
    setup::check_wal_level(&client, &decl.name).await?;
    let mut tables = Vec::with_capacity(decl.tables.len());
    for t in &decl.tables {
        let state = TableState::open(ctx, &client, t)
            .await
            .with_context(|| format!("source {}", decl.name))?;
        tables.push(Captured {
            state,
            snapshot: None,
        });
    }
    let slot = decl
        .slot_name()
        .map_err(|e| anyhow::anyhow!("source {}: slot: {e}", decl.name))?;
    let publication = decl
        .publication_name()
        .map_err(|e| anyhow::anyhow!("source {}: publication: {e}", decl.name))?;
    setup::ensure_publication(&client, &publication, &tables).await?;
    let (created, confirmed) = setup::ensure_slot(&client, &slot).await?;

    let mut progress: BTreeMap<String, Snapshotted> = read_progress(ctx).await?;
    for t in &mut tables {
        t.snapshot = progress
            .remove(&t.state.decl.table)
            .filter(|s| !created && s.slot == slot);
        if t.snapshot.is_none() {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let s = snapshot(ctx, &client, &t.state, &slot).await?;
            save_progress(ctx, &t.state.decl.table, &s).await?;
            t.snapshot = Some(s);
        }
    }
    info!(source = %decl.name, slot, publication, confirmed = %pgoutput::format_lsn(confirmed), tables = tables.len(), "change data capture streaming");
    let slot = Slot {
        name: slot,
        publication,
        confirmed,
    };
    stream::follow(ctx, &client, &mut tables, slot, shutdown).await
}
