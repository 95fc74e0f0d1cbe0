//! The initial snapshot of a table (`op = r`), and what the stream skips because it saw it.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::postgres::SourceContext;
use crate::postgres::db::text_row;
use crate::postgres::pgoutput;
use crate::postgres::table::{Change, Op, Origin, TableState};

/// What the progress topic keeps of a table's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Snapshotted {
    /// The slot the snapshot belongs to.
    pub(super) slot: String,
    /// `pg_current_wal_lsn()` inside the snapshot: no transaction committed after it is visible.
    lsn: u64,
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
    rows: u64,
}

impl Snapshotted {
    /// Whether the snapshot saw the changes of a transaction (then they are not delivered
    /// again from the stream).
    pub(super) fn saw(&self, xid: u32, end_lsn: u64) -> bool {
        if end_lsn > self.lsn {
            return false;
        }
        // Transaction ids in pgoutput are 32 bits; compare them as PostgreSQL does, modulo 2^32.
        let precedes = |a: u32, b: u64| (a.wrapping_sub(b as u32) as i32) < 0;
        precedes(xid, self.xmin)
            || (precedes(xid, self.xmax) && !self.xip.iter().any(|x| *x as u32 == xid))
    }
}

/// `xmin:xmax:xip1,xip2` (the text form of `pg_snapshot`).
fn parse_snapshot(text: &str) -> anyhow::Result<(u64, u64, Vec<u64>)> {
    let mut parts = text.split(':');
    let mut next = || parts.next().context("malformed pg_snapshot");
    let xmin = next()?.parse()?;
    let xmax = next()?.parse()?;
    let xip = next()?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    Ok((xmin, xmax, xip))
}

/// Reads a table in one `REPEATABLE READ` snapshot, producing `op = r` records.
pub(super) async fn snapshot(
    ctx: &SourceContext,
    client: &tokio_postgres::Client,
    table: &TableState,
    slot: &str,
) -> anyhow::Result<Snapshotted> {
    let name = &ctx.decl.name;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let row = client
        .query_one(
            "SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text, \
             (SELECT reltuples::int8 FROM pg_class WHERE oid = $1::text::regclass)",
            &[&table.quoted_table()],
        )
        .await?;
    let snap: String = row.try_get(0)?;
    let lsn: String = row.try_get(1)?;
    let estimate: Option<i64> = row.try_get(2)?;
    let (xmin, xmax, xip) = parse_snapshot(&snap)?;
    info!(source = %name, table = %table.decl.table, estimated_rows = estimate.unwrap_or(-1).max(0), "snapshot started");
    client
        .batch_execute(&format!(
            "DECLARE tributary_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {}",
            table.select_list(),
            table.quoted_table()
        ))
        .await
        .with_context(|| format!("read {}", table.decl.table))?;
    let fetch = format!("FETCH {} FROM tributary_snapshot", ctx.decl.batch_rows);
    let (mut rows_read, mut logged) = (0u64, Instant::now());
    loop {
        let rows = client.query(&fetch, &[]).await?;
        if rows.is_empty() {
            break;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let origin = Origin {
            lsn: None,
            txid: None,
            ts_ms: now,
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let values = text_row(row)?;
            let (r, ok) = table.record_or_dead_letter(
                name,
                Change {
                    op: Op::Read,
                    before: None,
                    after: Some(&values),
                    key_row: &values,
                    origin,
                },
            );
            out.push((table.decl.table.clone(), r, ok));
        }
        ctx.deliver(out).await?;
        rows_read += rows.len() as u64;
        if logged.elapsed() >= Duration::from_secs(5) {
            info!(source = %name, table = %table.decl.table, rows_read, estimated_rows = estimate.unwrap_or(-1).max(0), "snapshot in progress");
            logged = Instant::now();
        }
    }
    client.batch_execute("COMMIT").await?;
    info!(source = %name, table = %table.decl.table, rows = rows_read, "snapshot done");
    Ok(Snapshotted {
        slot: slot.to_string(),
        lsn: pgoutput::parse_lsn(&lsn).context("snapshot lsn")?,
        xmin,
        xmax,
        xip,
        rows: rows_read,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn snapshot_visibility() {
        let s = Snapshotted {
            slot: "s".into(),
            lsn: 1000,
            xmin: 100,
            xmax: 105,
            xip: vec![102],
            rows: 0,
        };
        assert!(s.saw(99, 900), "committed before the snapshot's xmin");
        assert!(s.saw(101, 900), "between xmin and xmax, not running");
        assert!(!s.saw(102, 900), "running when the snapshot was taken");
        assert!(!s.saw(105, 900), "started after the snapshot");
        assert!(!s.saw(99, 1001), "committed after the snapshot's position");
        assert_eq!(
            parse_snapshot("100:105:102,103").unwrap(),
            (100, 105, vec![102, 103])
        );
        assert_eq!(parse_snapshot("7:7:").unwrap(), (7, 7, vec![]));
    }
}
