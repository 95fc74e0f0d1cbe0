//! Decoding what the slot returned: transactions of pgoutput messages into records.

use std::collections::HashMap;

use anyhow::{Context, bail};
use tracing::{info, warn};
use tributary_core::bus::OutboundRecord;

use super::Captured;
use crate::postgres::SourceContext;
use crate::postgres::db::{Column, TextRow};
use crate::postgres::pgoutput::{self, Datum, Message, OldTuple, RelColumn, Relation};
use crate::postgres::table::{Change, Op, Origin};
use crate::postgres::types::PgType;

/// The decoding state kept across reads of the slot.
#[derive(Default)]
pub(super) struct Stream {
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
    pub(super) async fn decode(
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
