//! The server's setup for change data capture: `wal_level`, the publication, the slot.

use anyhow::{Context, bail};
use tracing::info;

use super::Captured;
use crate::postgres::db::quote_ident;
use crate::postgres::pgoutput;
use crate::postgres::table::TableState;

/// Fails unless the server's `wal_level` is `logical`.
pub(super) async fn check_wal_level(
    client: &tokio_postgres::Client,
    source: &str,
) -> anyhow::Result<()> {
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.try_get(0)?;
    if wal_level != "logical" {
        bail!(
            "source {}: the server's wal_level is {wal_level}; change data capture needs wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL), or use mode = \"poll\"",
            source
        );
    }
    Ok(())
}

/// Creates the publication, or adds the tables it lacks.
pub(super) async fn ensure_publication(
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
pub(super) async fn ensure_slot(
    client: &tokio_postgres::Client,
    slot: &str,
) -> anyhow::Result<(bool, u64)> {
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
