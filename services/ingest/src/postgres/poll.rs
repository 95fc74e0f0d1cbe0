//! Polling: for databases where the source may not replicate. Each table is queried for rows
//! past the last position delivered, ordered by the position columns:
//!
//! * `incrementing_column` only: rows with a larger value. A value is read only once it was
//!   the table's largest for `delay_seconds`: a transaction that took a smaller value but
//!   commits after a larger one was read is not skipped, as long as it commits within the delay.
//! * `timestamp_column` (with `incrementing_column`, or the primary key, breaking ties): rows
//!   whose (timestamp, tie-breaker) is past the last one, and whose timestamp is older than
//!   `delay_seconds`, for the same reason.
//!
//! Rows are written with `op = r` (polling cannot tell inserts from updates, and does not see
//! deletes). The position is saved in the progress topic after the broker acknowledged the
//! rows: a restart resumes there.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::SourceContext;
use super::db::{connect, quote_ident, text_row};
use super::progress::{read_progress, save_progress};
use super::table::{Change, Op, Origin, TableState};

/// The last row delivered, as the text of its position columns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Position {
    timestamp: Option<String>,
    incrementing: Option<String>,
}

/// A table being polled.
struct Polled {
    state: TableState,
    /// Index of the timestamp column, if any.
    timestamp: Option<usize>,
    /// Index of the incrementing column (or the key breaking timestamp ties).
    incrementing: Option<usize>,
    position: Position,
    /// `(when, largest incrementing value then)`, for the delay of incrementing-only tables.
    highs: VecDeque<(Instant, String)>,
}

pub(super) async fn run(ctx: &SourceContext, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let decl = &ctx.decl;
    let client = connect(decl).await?;
    let mut progress: BTreeMap<String, Position> = read_progress(ctx).await?;
    let mut tables = Vec::new();
    for t in &decl.tables {
        let state = TableState::open(ctx, &client, t)
            .await
            .with_context(|| format!("source {}", decl.name))?;
        let index = |name: &str| {
            state
                .columns
                .iter()
                .position(|c| c.name == name)
                .with_context(|| {
                    format!(
                        "source {}: table {} has no column {name}",
                        decl.name, t.table
                    )
                })
        };
        let timestamp = t.timestamp_column.as_deref().map(index).transpose()?;
        let mut incrementing = t.incrementing_column.as_deref().map(index).transpose()?;
        if timestamp.is_some() && incrementing.is_none() {
            let keys: Vec<usize> = (0..state.columns.len())
                .filter(|i| state.columns[*i].key)
                .collect();
            match keys.as_slice() {
                [only] => incrementing = Some(*only),
                _ => bail!(
                    "source {}: table {} has a composite primary key; name an incrementing_column to break timestamp ties",
                    decl.name,
                    t.table
                ),
            }
        }
        tables.push(Polled {
            position: progress.remove(&t.table).unwrap_or_default(),
            state,
            timestamp,
            incrementing,
            highs: VecDeque::new(),
        });
    }
    info!(source = %decl.name, tables = tables.len(), "polling started");
    let delay = Duration::from_secs(decl.delay_seconds);
    while !shutdown.is_cancelled() {
        let mut full = false;
        for t in &mut tables {
            let n = poll_once(ctx, &client, t, delay).await?;
            full |= n >= decl.batch_rows as usize;
        }
        if !full {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(decl.poll_seconds)) => {}
            }
        }
    }
    Ok(())
}

/// Reads and delivers one batch of a table; returns how many rows it had.
async fn poll_once(
    ctx: &SourceContext,
    client: &tokio_postgres::Client,
    t: &mut Polled,
    delay: Duration,
) -> anyhow::Result<usize> {
    let s = &t.state;
    let col = |i: usize| quote_ident(&s.columns[i].name);
    let ty = |i: usize| s.columns[i].sql_type.clone();
    let limit = ctx.decl.batch_rows;
    let rows = match (t.timestamp, t.incrementing) {
        (Some(ts), Some(inc)) => {
            let sql = format!(
                "SELECT {list} FROM {table} \
                 WHERE {ts_col} < (now() - $3::text::interval)::{ts_ty} \
                   AND ($1::text IS NULL OR ({ts_col}, {inc_col}) > ($1::text::{ts_ty}, $2::text::{inc_ty})) \
                 ORDER BY {ts_col}, {inc_col} LIMIT {limit}",
                list = s.select_list(),
                table = s.quoted_table(),
                ts_col = col(ts),
                inc_col = col(inc),
                ts_ty = ty(ts),
                inc_ty = ty(inc),
            );
            let interval = format!("{} seconds", delay.as_secs());
            client
                .query(
                    &sql,
                    &[&t.position.timestamp, &t.position.incrementing, &interval],
                )
                .await
                .with_context(|| format!("poll {}", s.decl.table))?
        }
        (None, Some(inc)) => {
            // The largest value now; read only up to the largest seen `delay` ago.
            let high: Option<String> = client
                .query_one(
                    &format!("SELECT max({})::text FROM {}", col(inc), s.quoted_table()),
                    &[],
                )
                .await?
                .try_get(0)?;
            let now = Instant::now();
            if let Some(h) = high {
                t.highs.push_back((now, h));
            }
            let mut safe = None;
            while let Some((at, h)) = t.highs.front() {
                if now.duration_since(*at) >= delay {
                    safe = Some(h.clone());
                    // Keep the newest sample that is old enough; drop the ones before it.
                    if t.highs.len() > 1 && now.duration_since(t.highs[1].0) >= delay {
                        t.highs.pop_front();
                        continue;
                    }
                }
                break;
            }
            let Some(safe) = safe else {
                return Ok(0);
            };
            let sql = format!(
                "SELECT {list} FROM {table} \
                 WHERE ($1::text IS NULL OR {inc_col} > $1::text::{inc_ty}) AND {inc_col} <= $2::text::{inc_ty} \
                 ORDER BY {inc_col} LIMIT {limit}",
                list = s.select_list(),
                table = s.quoted_table(),
                inc_col = col(inc),
                inc_ty = ty(inc),
            );
            client
                .query(&sql, &[&t.position.incrementing, &safe])
                .await
                .with_context(|| format!("poll {}", s.decl.table))?
        }
        _ => bail!("table {}: no position column", s.decl.table),
    };
    if rows.is_empty() {
        return Ok(0);
    }
    let origin = Origin {
        lsn: None,
        txid: None,
        ts_ms: chrono::Utc::now().timestamp_millis(),
    };
    let mut out = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in &rows {
        let values = text_row(row)?;
        let (r, ok) = s.record_or_dead_letter(
            &ctx.decl.name,
            Change {
                op: Op::Read,
                before: None,
                after: Some(&values),
                key_row: &values,
                origin,
            },
        );
        out.push((s.decl.table.clone(), r, ok));
        last = Some(values);
    }
    ctx.deliver(out).await?;
    if let Some(last) = last {
        t.position = Position {
            timestamp: t.timestamp.and_then(|i| last.get(i).cloned().flatten()),
            incrementing: t.incrementing.and_then(|i| last.get(i).cloned().flatten()),
        };
        save_progress(ctx, &s.decl.table, &t.position).await?;
    }
    debug!(source = %ctx.decl.name, table = %s.decl.table, rows = rows.len(), "rows delivered");
    Ok(rows.len())
}
