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

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tributary_core::bus::OutboundRecord;

use super::SourceContext;
use super::db::{Column, TextRow, connect, quote_ident, text_row};
use super::pgoutput::{self, Datum, Message, OldTuple, RelColumn, Relation};
use super::progress::{read_progress, save_progress};
use super::table::{Change, Op, Origin, TableState};
use super::types::PgType;

/// What the progress topic keeps of a table's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshotted {
    /// The slot the snapshot belongs to.
    slot: String,
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
    fn saw(&self, xid: u32, end_lsn: u64) -> bool {
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

/// A table under capture.
struct Captured {
    state: TableState,
    snapshot: Option<Snapshotted>,
}

pub(super) async fn run(ctx: &SourceContext, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let decl = &ctx.decl;
    let client = connect(decl).await?;
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.try_get(0)?;
    if wal_level != "logical" {
        bail!(
            "source {}: the server's wal_level is {wal_level}; change data capture needs wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL), or use mode = \"poll\"",
            decl.name
        );
    }
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
    ensure_publication(&client, &publication, &tables).await?;
    let (created, mut confirmed) = ensure_slot(&client, &slot).await?;

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

    let mut stream = Stream {
        relations: HashMap::new(),
    };
    let mut last_heartbeat = Instant::now();
    let heartbeat = Duration::from_secs(decl.heartbeat_seconds);
    let options_publication = quote_ident(&publication);
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
            .query(peek, &[&slot, &batch, &options_publication])
            .await
            .with_context(|| format!("read the replication slot {slot}"))?;
        let n = rows.len();
        let (records, upto) = stream.decode(ctx, &mut tables, rows).await?;
        if !records.is_empty() {
            let n = records.len();
            ctx.deliver(records).await?;
            debug!(source = %decl.name, records = n, "changes delivered");
        }
        if let Some(upto) = upto.filter(|u| *u > confirmed) {
            advance(&client, &slot, upto).await?;
            confirmed = upto;
            acknowledged(ctx, confirmed);
        } else if n == 0 && last_heartbeat.elapsed() >= heartbeat {
            // Nothing of ours committed before `before`: the slot may move there.
            if before > confirmed {
                advance(&client, &slot, before).await?;
                debug!(source = %decl.name, lsn = %pgoutput::format_lsn(before), "heartbeat: idle slot moved on");
                confirmed = before;
                acknowledged(ctx, confirmed);
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

fn acknowledged(ctx: &SourceContext, lsn: u64) {
    ctx.metrics
        .source_acknowledged_lsn
        .get_or_create(&crate::metrics::SourceLabel {
            source: ctx.decl.name.clone(),
        })
        .set(i64::try_from(lsn).unwrap_or(i64::MAX));
}

async fn advance(client: &tokio_postgres::Client, slot: &str, lsn: u64) -> anyhow::Result<()> {
    client
        .query_one(
            "SELECT end_lsn::text FROM pg_replication_slot_advance($1::text::name, $2::text::pg_lsn)",
            &[&slot, &pgoutput::format_lsn(lsn)],
        )
        .await
        .with_context(|| format!("acknowledge {} to the slot {slot}", pgoutput::format_lsn(lsn)))?;
    Ok(())
}

/// Creates the publication, or adds the tables it lacks.
async fn ensure_publication(
    client: &tokio_postgres::Client,
    publication: &str,
    tables: &[Captured],
) -> anyhow::Result<()> {
    let exists = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?;
    let wanted: Vec<&TableState> = tables.iter().map(|t| &t.state).collect();
    match exists {
        None => {
            let list: Vec<String> = wanted.iter().map(|t| t.quoted_table()).collect();
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    quote_ident(publication),
                    list.join(", ")
                ))
                .await
                .with_context(|| format!("create the publication {publication} (the user must own the tables, or create it beforehand)"))?;
            info!(publication, "publication created");
        }
        Some(row) => {
            if row.try_get::<_, bool>(0)? {
                return Ok(());
            }
            let have: Vec<(String, String)> = client
                .query(
                    "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                    &[&publication],
                )
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, tokio_postgres::Error>>()?;
            for t in wanted {
                let (schema, table) = t.decl.qualified();
                if !have.iter().any(|(s, n)| s == schema && n == table) {
                    client
                        .batch_execute(&format!(
                            "ALTER PUBLICATION {} ADD TABLE {}",
                            quote_ident(publication),
                            t.quoted_table()
                        ))
                        .await
                        .with_context(|| {
                            format!("add {} to the publication {publication}", t.decl.table)
                        })?;
                    info!(publication, table = %t.decl.table, "table added to the publication");
                }
            }
        }
    }
    Ok(())
}

/// Creates the slot if missing; returns whether it was created and its confirmed position.
async fn ensure_slot(client: &tokio_postgres::Client, slot: &str) -> anyhow::Result<(bool, u64)> {
    let row = client
        .query_opt(
            "SELECT database::text, plugin::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    if let Some(row) = row {
        let database: Option<String> = row.try_get(0)?;
        let plugin: Option<String> = row.try_get(1)?;
        let current: String = client
            .query_one("SELECT current_database()::text", &[])
            .await?
            .try_get(0)?;
        if database.as_deref() != Some(current.as_str()) || plugin.as_deref() != Some("pgoutput") {
            bail!(
                "replication slot {slot} exists for database {} with plugin {}; this source needs a pgoutput slot on {current} (set `slot` to another name)",
                database.unwrap_or_default(),
                plugin.unwrap_or_default()
            );
        }
        let lsn: Option<String> = row.try_get(2)?;
        let lsn = lsn.as_deref().and_then(pgoutput::parse_lsn).unwrap_or(0);
        return Ok((false, lsn));
    }
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1::text::name, 'pgoutput')",
            &[&slot],
        )
        .await
        .with_context(|| {
            format!("create the replication slot {slot} (the user needs the REPLICATION attribute)")
        })?;
    let lsn: String = row.try_get(0)?;
    info!(slot, lsn, "replication slot created");
    Ok((true, pgoutput::parse_lsn(&lsn).unwrap_or(0)))
}

/// Reads a table in one `REPEATABLE READ` snapshot, producing `op = r` records.
async fn snapshot(
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

/// The decoding state kept across reads of the slot.
struct Stream {
    /// Relation id -> index of the table in the source's list.
    relations: HashMap<u32, usize>,
}

/// A change decoded but not yet known to be delivered: its table and record.
struct Pending {
    table: usize,
    record: OutboundRecord,
    /// Not a dead letter.
    ok: bool,
}

impl Stream {
    /// Turns the messages of one read into records. Returns them and the end of the last whole
    /// transaction (where the slot may move once they are acknowledged).
    async fn decode(
        &mut self,
        ctx: &SourceContext,
        tables: &mut [Captured],
        rows: Vec<tokio_postgres::Row>,
    ) -> anyhow::Result<(Vec<(String, OutboundRecord, bool)>, Option<u64>)> {
        let source = ctx.decl.name.as_str();
        let mut out = Vec::new();
        let mut upto = None;
        let mut tx: Option<(u32, i64)> = None;
        let mut pending: Vec<Pending> = Vec::new();
        for row in rows {
            let lsn: String = row.try_get(0)?;
            let data: Vec<u8> = row.try_get(1)?;
            let lsn = pgoutput::parse_lsn(&lsn);
            let message = pgoutput::parse(&data).with_context(|| {
                format!(
                    "source {source}: decode the change at {}",
                    lsn.map(pgoutput::format_lsn).unwrap_or_default()
                )
            })?;
            match message {
                Message::Begin { xid, commit_micros } => {
                    tx = Some((xid, commit_micros / 1000));
                    pending.clear();
                }
                Message::Commit { end_lsn } => {
                    if let Some((xid, _)) = tx.take() {
                        for p in pending.drain(..) {
                            let seen = tables[p.table]
                                .snapshot
                                .as_ref()
                                .is_some_and(|s| s.saw(xid, end_lsn));
                            if !seen {
                                let table = tables[p.table].state.decl.table.clone();
                                out.push((table, p.record, p.ok));
                            }
                        }
                    }
                    upto = Some(end_lsn);
                }
                Message::Relation(rel) => self.relation(ctx, tables, rel).await?,
                Message::Insert { relation, new } => {
                    let Some(&t) = self.relations.get(&relation) else {
                        continue;
                    };
                    let origin = change_origin(tx, lsn)?;
                    let state = &tables[t].state;
                    let record = match complete(&new, None) {
                        Ok(after) => state.record_or_dead_letter(
                            source,
                            Change {
                                op: Op::Create,
                                before: None,
                                after: Some(&after),
                                key_row: &after,
                                origin,
                            },
                        ),
                        Err(why) => (state.dead_letter(source, &texts(&new), lsn, &why), false),
                    };
                    let (record, ok) = record;
                    pending.push(Pending {
                        table: t,
                        record,
                        ok,
                    });
                }
                Message::Update { relation, old, new } => {
                    let Some(&t) = self.relations.get(&relation) else {
                        continue;
                    };
                    let origin = change_origin(tx, lsn)?;
                    let state = &tables[t].state;
                    let full_old = match &old {
                        Some(OldTuple::Full(o)) => Some(o),
                        _ => None,
                    };
                    let before = full_old.map(|o| texts(o));
                    let record = match complete(&new, full_old) {
                        Ok(after) => state.record_or_dead_letter(
                            source,
                            Change {
                                op: Op::Update,
                                before: before.as_ref(),
                                after: Some(&after),
                                key_row: &after,
                                origin,
                            },
                        ),
                        Err(why) => (state.dead_letter(source, &texts(&new), lsn, &why), false),
                    };
                    let (record, ok) = record;
                    pending.push(Pending {
                        table: t,
                        record,
                        ok,
                    });
                }
                Message::Delete { relation, old } => {
                    let Some(&t) = self.relations.get(&relation) else {
                        continue;
                    };
                    let origin = change_origin(tx, lsn)?;
                    let state = &tables[t].state;
                    let (before, key) = match &old {
                        OldTuple::Full(o) => (Some(texts(o)), texts(o)),
                        OldTuple::Key(k) => (None, texts(k)),
                    };
                    let record = state.record_or_dead_letter(
                        source,
                        Change {
                            op: Op::Delete,
                            before: before.as_ref(),
                            after: None,
                            key_row: &key,
                            origin,
                        },
                    );
                    let (record, ok) = record;
                    pending.push(Pending {
                        table: t,
                        record,
                        ok,
                    });
                }
                Message::Truncate { relations } => {
                    for r in relations {
                        if let Some(&t) = self.relations.get(&r) {
                            warn!(source, table = %tables[t].state.decl.table, "table truncated: the topic keeps its rows (no record is written for a truncate)");
                        }
                    }
                }
                Message::Other => {}
            }
        }
        Ok((out, upto))
    }

    /// A table's columns as the stream describes them: a change of columns derives (and
    /// registers, if new) the schema the following changes are written with.
    async fn relation(
        &mut self,
        ctx: &SourceContext,
        tables: &mut [Captured],
        rel: Relation,
    ) -> anyhow::Result<()> {
        let Some(index) = tables.iter().position(|t| {
            let (schema, table) = t.state.decl.qualified();
            schema == rel.schema && table == rel.table
        }) else {
            return Ok(());
        };
        self.relations.insert(rel.id, index);
        let state = &mut tables[index].state;
        if same_columns(&state.columns, &rel.columns) {
            return Ok(());
        }
        let columns: Vec<Column> = rel
            .columns
            .iter()
            .map(|c| {
                let known = state.columns.iter().find(|k| k.name == c.name);
                Column {
                    name: c.name.clone(),
                    ty: PgType::from_oid(c.type_oid, c.typmod),
                    type_oid: c.type_oid,
                    typmod: c.typmod,
                    sql_type: known.map(|k| k.sql_type.clone()).unwrap_or_default(),
                    // A column the table did not have when the source started may hold NULL
                    // for earlier rows: nullable.
                    not_null: known.is_some_and(|k| k.not_null && k.type_oid == c.type_oid),
                    // The primary key as read at start (pgoutput marks the replica identity,
                    // which is every column under REPLICA IDENTITY FULL).
                    key: known.is_some_and(|k| k.key),
                }
            })
            .collect();
        if !columns.iter().any(|c| c.key) {
            bail!(
                "table {}: the primary key columns are gone from the stream's columns",
                state.decl.table
            );
        }
        info!(source = %ctx.decl.name, table = %state.decl.table, columns = columns.len(), "the table's columns changed");
        state.adopt(ctx, columns).await
    }
}

fn same_columns(have: &[Column], stream: &[RelColumn]) -> bool {
    have.len() == stream.len()
        && have
            .iter()
            .zip(stream)
            .all(|(h, s)| h.name == s.name && h.type_oid == s.type_oid && h.typmod == s.typmod)
}

/// Where a change of the open transaction `tx` (its xid and commit time) at `lsn` came from.
fn change_origin(tx: Option<(u32, i64)>, lsn: Option<u64>) -> anyhow::Result<Origin> {
    let (xid, ts_ms) = tx.context("a change outside a transaction")?;
    Ok(Origin {
        lsn,
        txid: Some(xid),
        ts_ms,
    })
}

/// Text values of a tuple (`u`, unchanged TOAST, as NULL).
fn texts(tuple: &[Datum]) -> TextRow {
    tuple
        .iter()
        .map(|d| match d {
            Datum::Text(t) => Some(t.clone()),
            Datum::Null | Datum::Unchanged => None,
        })
        .collect()
}

/// The new row's values, unchanged TOASTed values taken from the old row when it was sent.
fn complete(new: &[Datum], old: Option<&Vec<Datum>>) -> Result<TextRow, String> {
    new.iter()
        .enumerate()
        .map(|(i, d)| match d {
            Datum::Text(t) => Ok(Some(t.clone())),
            Datum::Null => Ok(None),
            Datum::Unchanged => match old.and_then(|o| o.get(i)) {
                Some(Datum::Text(t)) => Ok(Some(t.clone())),
                Some(Datum::Null) => Ok(None),
                _ => Err(format!(
                    "column {} is a large (TOASTed) value PostgreSQL did not send because it did not change; set REPLICA IDENTITY FULL on the table to get it",
                    i + 1
                )),
            },
        })
        .collect()
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

    #[test]
    fn toasted_values_come_from_the_old_row() {
        let new = vec![Datum::Text("1".into()), Datum::Unchanged];
        let old = vec![Datum::Text("1".into()), Datum::Text("big".into())];
        assert_eq!(
            complete(&new, Some(&old)).unwrap(),
            vec![Some("1".into()), Some("big".into())]
        );
        assert!(
            complete(&new, None)
                .unwrap_err()
                .contains("REPLICA IDENTITY FULL")
        );
    }
}
