//! The demo's shop database: `tributary up --demo` creates it on a reachable PostgreSQL server
//! (the one the catalog's `shop_db` source names, 127.0.0.1:5432 as `postgres` by default),
//! ingest captures its tables by change data capture, and [`run`] writes to them: customers
//! sign up and change segment, orders are placed and move from pending to delivered (a few are
//! cancelled, refunded, or deleted).
//!
//! Each data folder has its own database and replication slot (`tributary_demo_<id>`, kept in
//! the folder's `demo-database` file), so two stacks on one server never share a slot and a
//! later run on the folder continues from its slot. `SHOP_DB_NAME` names another database.
//! Such a database's comment names its host and folder: when the folder is gone, the next
//! `up --demo` on that host drops the database and its slot (a slot nobody reads keeps WAL on
//! the server for ever).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::Rng;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::sources::{PostgresDecl, PostgresMode, SourceDecl, expand_with};

/// The catalog's source the demo feeds, and the variables its URL and slot are read from.
const SOURCE: &str = "shop_db";
const NAME_VAR: &str = "SHOP_DB_NAME";
const SLOT_VAR: &str = "SHOP_DB_SLOT";
/// The tables (the catalog's `shop_db` captures them; their `.avsc` match these columns).
const SHOP_SQL: &str = include_str!("../../../../deploy/postgres/shop.sql");
/// How long to wait for the server before going on without it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The prefix of the databases `up --demo` names, and of their comments.
const OURS: &str = "tributary_demo_";
const NOTE: &str = "tributary up --demo ";
/// Customers created with the database; then about one signs up every 5 s.
const FIRST_CUSTOMERS: i64 = 150;

/// The shop database of a running demo.
#[derive(Debug, Clone)]
pub(crate) struct ShopDb {
    /// The catalog's source name, for ingest's `sources`.
    pub(crate) source: String,
    /// The database and the slot, for ingest's environment.
    pub(crate) database: String,
    pub(crate) slot: String,
    /// `host:port`, for the banner.
    pub(crate) server: String,
    config: tokio_postgres::Config,
}

impl ShopDb {
    /// What ingest needs in its environment to read this database with the catalog's source.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (NAME_VAR, self.database.clone()),
            (SLOT_VAR, self.slot.clone()),
        ]
    }
}

/// What [`prepare`] found.
#[derive(Debug)]
pub(crate) enum Prepared {
    Ready(Box<ShopDb>),
    /// The demo runs without its database, for this reason (shown in the banner).
    Off(String),
}

/// The database's name for a data folder: `SHOP_DB_NAME`, else the one kept in `file`, else a
/// new one written there.
fn database_name(file: &Path) -> Result<String> {
    if let Ok(name) = std::env::var(NAME_VAR)
        && !name.is_empty()
    {
        return Ok(name);
    }
    if let Ok(text) = std::fs::read_to_string(file)
        && is_identifier(text.trim())
    {
        return Ok(text.trim().to_string());
    }
    let name = format!("{OURS}{:08x}", rand::rng().random::<u32>());
    std::fs::write(file, format!("{name}\n"))
        .with_context(|| format!("write {}", file.display()))?;
    Ok(name)
}

/// Lower-case letters, digits and `_`, starting with a letter: safe as a database and a slot
/// name.
fn is_identifier(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// The slot for a database: the database's own name when it is one of ours, else prefixed.
fn slot_name(database: &str) -> String {
    let clean: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let slot = if clean.starts_with("tributary_") {
        clean
    } else {
        format!("tributary_{clean}")
    };
    slot.chars().take(63).collect()
}

/// Finds the catalog's `shop_db` source and makes its database ready: reachable, logical
/// decoding on, a free replication slot (or ours already there), the database and its tables
/// created. Anything missing turns the shop database off with the reason; the rest of the demo
/// runs either way.
pub(crate) async fn prepare(catalog: &Catalog, file: &Path) -> Result<Prepared> {
    let Some(decl) = catalog.sources.iter().find_map(|s| match s {
        SourceDecl::Postgres(p) if p.name == SOURCE && p.mode == PostgresMode::Cdc => Some(p),
        _ => None,
    }) else {
        return Ok(Prepared::Off(format!(
            "the catalog has no change data capture source named {SOURCE}"
        )));
    };
    let database = database_name(file)?;
    if !is_identifier(&database) {
        return Ok(Prepared::Off(format!(
            "{NAME_VAR}={database:?} is not a plain lower-case name"
        )));
    }
    let slot = slot_name(&database);
    let config = match connect_config(decl, &database, &slot) {
        Ok(config) => config,
        Err(e) => return Ok(Prepared::Off(format!("{e:#}"))),
    };
    let server = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let server = format!(
        "{server}:{}",
        config.get_ports().first().copied().unwrap_or(5432)
    );
    let mut admin = config.clone();
    admin.dbname("postgres");
    let client = match connect(&admin).await {
        Ok(client) => client,
        Err(e) => return Ok(Prepared::Off(format!("no PostgreSQL at {server} ({e:#})"))),
    };
    // Whatever the server refuses (a setting, a permission) leaves the demo without it.
    match set_up(&client, &config, &database, &slot, file).await {
        Ok(None) => {}
        Ok(Some(reason)) => return Ok(Prepared::Off(format!("PostgreSQL at {server}: {reason}"))),
        Err(e) => return Ok(Prepared::Off(format!("PostgreSQL at {server}: {e:#}"))),
    }
    Ok(Prepared::Ready(Box::new(ShopDb {
        source: decl.name.clone(),
        database,
        slot,
        server,
        config,
    })))
}

/// Checks the server, removes orphans, creates the database and its tables; `Some(why)` when
/// the server cannot run change data capture.
async fn set_up(
    client: &tokio_postgres::Client,
    config: &tokio_postgres::Config,
    database: &str,
    slot: &str,
    file: &Path,
) -> Result<Option<String>> {
    if let Some(reason) = check_server(client, slot).await? {
        return Ok(Some(reason));
    }
    let orphans = match remove_orphans(client, database).await {
        Ok(orphans) => orphans,
        Err(e) => {
            warn!(
                error = format!("{e:#}"),
                "demo: orphan shop databases not removed"
            );
            Vec::new()
        }
    };
    for (name, folder) in orphans {
        println!("demo: removed {name}, the shop database of the deleted data folder {folder}");
        info!(
            database = name,
            folder, "demo: orphan shop database removed"
        );
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&database.to_string()],
        )
        .await
        .context("look for the demo database")?
        .is_some();
    if !exists {
        // The name is checked by is_identifier: quoting is enough.
        client
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await
            .with_context(|| format!("create the demo database {database}"))?;
        info!(database, "demo: shop database created");
    }
    if database.starts_with(OURS) {
        let note = owner_note(file).replace('\'', "''");
        client
            .batch_execute(&format!("COMMENT ON DATABASE \"{database}\" IS '{note}'"))
            .await
            .context("note the demo database's folder")?;
    }
    let shop = connect(config)
        .await
        .with_context(|| format!("connect to the demo database {database}"))?;
    shop.batch_execute(SHOP_SQL)
        .await
        .with_context(|| format!("create the shop tables in {database}"))?;
    Ok(None)
}

/// `tributary up --demo <host>:<folder>`: the comment of a database made for the data folder
/// holding `file`.
fn owner_note(file: &Path) -> String {
    let folder = file.parent().unwrap_or(file);
    format!("{NOTE}{}:{}", host_name(), folder.display())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The data folder of a database made by `up --demo` on this host whose folder no longer names
/// it; `None` for any other database.
fn orphan_folder(database: &str, comment: &str, host: &str) -> Option<String> {
    let (note_host, folder) = comment.strip_prefix(NOTE)?.split_once(':')?;
    if !database.starts_with(OURS) || note_host != host || host.is_empty() {
        return None;
    }
    let named = std::fs::read_to_string(Path::new(folder).join("demo-database"))
        .is_ok_and(|text| text.trim() == database);
    (!named).then(|| folder.to_string())
}

/// Drops the demo databases (and their slots) of deleted data folders of this host, except
/// `keep` and any whose slot is being read. Returns (database, folder) of each dropped.
async fn remove_orphans(
    client: &tokio_postgres::Client,
    keep: &str,
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT d.datname::text, COALESCE(shobj_description(d.oid, 'pg_database'), ''), \
                    EXISTS (SELECT 1 FROM pg_replication_slots s \
                            WHERE s.database = d.datname AND s.active) \
             FROM pg_database d WHERE starts_with(d.datname, $1)",
            &[&OURS],
        )
        .await
        .context("list the demo databases")?;
    let host = host_name();
    let mut removed = Vec::new();
    for row in rows {
        let (name, comment, active): (String, String, bool) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let Some(folder) = orphan_folder(&name, &comment, &host) else {
            continue;
        };
        if name == keep || active || !is_identifier(&name) {
            continue;
        }
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = $1 AND NOT active",
                &[&name],
            )
            .await
            .with_context(|| format!("drop the slot of {name}"))?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .with_context(|| format!("drop {name}"))?;
        removed.push((name, folder));
    }
    Ok(removed)
}

/// The connection of the catalog's source, with the demo's database and slot.
fn connect_config(
    decl: &PostgresDecl,
    database: &str,
    slot: &str,
) -> Result<tokio_postgres::Config> {
    let lookup = |var: &str| match var {
        NAME_VAR => Some(database.to_string()),
        SLOT_VAR => Some(slot.to_string()),
        _ => std::env::var(var).ok(),
    };
    let url =
        expand_with(&decl.url, lookup).map_err(|e| anyhow::anyhow!("source {}: {e}", decl.name))?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .with_context(|| format!("source {}: the url is not a PostgreSQL URL", decl.name))?;
    if let Some(password) = decl
        .password()
        .map_err(|e| anyhow::anyhow!("source {}: {e}", decl.name))?
    {
        config.password(password);
    }
    config.application_name("tributary-up-demo");
    config.connect_timeout(CONNECT_TIMEOUT);
    Ok(config)
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT * 2, config.connect(tokio_postgres::NoTls))
            .await
            .context("timed out")??;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "demo: shop database connection closed");
        }
    });
    Ok(client)
}

/// Why change data capture cannot run on this server, if it cannot.
async fn check_server(client: &tokio_postgres::Client, slot: &str) -> Result<Option<String>> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), \
                    (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user), \
                    current_setting('max_replication_slots')::int \
                      - (SELECT count(*) FROM pg_replication_slots)::int, \
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .context("read the server's settings")?;
    let wal_level: String = row.try_get(0)?;
    let may_replicate: Option<bool> = row.try_get(1)?;
    let free_slots: i32 = row.try_get(2)?;
    let ours: bool = row.try_get(3)?;
    Ok(if wal_level != "logical" {
        Some(format!(
            "wal_level is {wal_level}; change data capture needs ALTER SYSTEM SET wal_level = logical and a restart"
        ))
    } else if may_replicate != Some(true) {
        Some("the user has neither REPLICATION nor SUPERUSER".into())
    } else if free_slots <= 0 && !ours {
        Some("every replication slot is taken (max_replication_slots)".into())
    } else {
        None
    })
}

/// What the demo did to the shop database, for the display.
#[derive(Debug, Default)]
pub(crate) struct ShopCounts {
    pub(crate) customers: AtomicU64,
    pub(crate) orders: AtomicU64,
    pub(crate) order_changes: AtomicU64,
}

/// The next status of an open order; `None` for a closed one.
fn next_status(status: &str, roll: f64) -> Option<&'static str> {
    match status {
        "pending" if roll < 0.1 => Some("cancelled"),
        "pending" => Some("paid"),
        "paid" => Some("shipped"),
        "shipped" => Some("delivered"),
        "delivered" if roll < 0.03 => Some("refunded"),
        _ => None,
    }
}

const COUNTRIES: [&str; 8] = ["de", "fr", "nl", "es", "it", "se", "pl", "at"];
const SEGMENTS: [Option<&str>; 4] = [None, Some("new"), Some("regular"), Some("vip")];
const FIRST_NAMES: [&str; 8] = [
    "Ada", "Jonas", "Mia", "Luca", "Sofia", "Emil", "Zoe", "Noah",
];
const LAST_NAMES: [&str; 8] = [
    "Keller", "Martin", "de Vries", "Garcia", "Rossi", "Lind", "Nowak", "Huber",
];

/// Writes to the shop database every second until `stop`: one transaction per second with new
/// orders, status moves and now and then a new customer, a segment change or a deleted
/// cancelled order. A lost connection is retried.
pub(crate) async fn run(
    shop: ShopDb,
    counts: Arc<super::demo::DemoCounts>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        if let Err(e) = write_until_stopped(&shop, &counts.shop, &stop).await {
            warn!(error = %format!("{e:#}"), "demo: shop database writes failed; retrying in 5 s");
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}

async fn write_until_stopped(
    shop: &ShopDb,
    counts: &ShopCounts,
    stop: &CancellationToken,
) -> Result<()> {
    let mut client = connect(&shop.config).await?;
    let row = client
        .query_one(
            "SELECT (SELECT COALESCE(max(customer_id), 0) FROM shop.customers), \
                    (SELECT COALESCE(max(order_id), 0) FROM shop.orders)",
            &[],
        )
        .await?;
    let mut customers: i64 = row.try_get(0)?;
    let mut orders: i64 = row.try_get(1)?;
    if customers == 0 {
        let tx = client.transaction().await?;
        for _ in 0..FIRST_CUSTOMERS {
            customers += 1;
            insert_customer(&tx, customers).await?;
        }
        tx.commit().await?;
        counts
            .customers
            .fetch_add(FIRST_CUSTOMERS as u64, Ordering::Relaxed);
        info!(customers, "demo: shop customers created");
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let (new_customer, new_orders, moves, segment_change, delete) = {
            let mut rng = rand::rng();
            (
                rng.random_bool(0.2),
                rng.random_range(0..=3),
                rng.random_range(1..=4),
                rng.random_bool(0.1),
                rng.random_bool(0.05),
            )
        };
        let tx = client.transaction().await?;
        if new_customer {
            customers += 1;
            insert_customer(&tx, customers).await?;
        }
        for _ in 0..new_orders {
            orders += 1;
            let (customer, cents, currency) = {
                let mut rng = rand::rng();
                // A few regulars place most orders.
                let x: f64 = rng.random();
                let customer = 1 + ((x * x) * customers as f64) as i64;
                // One in 50 has its currency written carelessly; transform cleans it.
                let currency = if rng.random_ratio(1, 50) {
                    " eur"
                } else {
                    "EUR"
                };
                (
                    customer.min(customers),
                    rng.random_range(1_500..40_000),
                    currency,
                )
            };
            tx.execute(
                "INSERT INTO shop.orders (order_id, customer_id, status, total, currency) \
                 VALUES ($1, $2, 'pending', $3::text::numeric, $4)",
                &[
                    &orders as &(dyn ToSql + Sync),
                    &customer,
                    &super::shop::cents(cents),
                    &currency,
                ],
            )
            .await?;
        }
        let open = tx
            .query(
                "SELECT order_id, status FROM shop.orders \
                 WHERE status IN ('pending', 'paid', 'shipped') \
                    OR (status = 'delivered' AND ordered_at > now() - interval '10 minutes') \
                 ORDER BY random() LIMIT $1",
                &[&(moves as i64)],
            )
            .await?;
        let mut changed = 0;
        for row in open {
            let id: i64 = row.try_get(0)?;
            let status: String = row.try_get(1)?;
            let roll: f64 = rand::rng().random();
            if let Some(next) = next_status(&status, roll) {
                tx.execute(
                    "UPDATE shop.orders SET status = $2 WHERE order_id = $1",
                    &[&id as &(dyn ToSql + Sync), &next],
                )
                .await?;
                changed += 1;
            }
        }
        if segment_change {
            let (id, segment) = {
                let mut rng = rand::rng();
                (
                    rng.random_range(1..=customers),
                    SEGMENTS[rng.random_range(1..SEGMENTS.len())],
                )
            };
            tx.execute(
                "UPDATE shop.customers SET segment = $2, updated_at = now() WHERE customer_id = $1",
                &[&id as &(dyn ToSql + Sync), &segment],
            )
            .await?;
        }
        if delete {
            changed += tx
                .execute(
                    "DELETE FROM shop.orders WHERE order_id = \
                     (SELECT order_id FROM shop.orders WHERE status = 'cancelled' LIMIT 1)",
                    &[],
                )
                .await?;
        }
        tx.commit().await?;
        counts
            .customers
            .fetch_add(u64::from(new_customer), Ordering::Relaxed);
        counts.orders.fetch_add(new_orders, Ordering::Relaxed);
        counts.order_changes.fetch_add(changed, Ordering::Relaxed);
    }
}

async fn insert_customer(tx: &tokio_postgres::Transaction<'_>, id: i64) -> Result<()> {
    let (first, last, country, segment) = {
        let mut rng = rand::rng();
        (
            FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
            LAST_NAMES[rng.random_range(0..LAST_NAMES.len())],
            COUNTRIES[rng.random_range(0..COUNTRIES.len())],
            SEGMENTS[rng.random_range(0..SEGMENTS.len())],
        )
    };
    let email = format!(
        "{}.{}{id}@mail.example",
        first.to_lowercase(),
        last.to_lowercase().replace(' ', "")
    );
    let name = format!("{first} {last}");
    let inserted = tx
        .execute(
            "INSERT INTO shop.customers (customer_id, email, full_name, country, segment) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id) DO NOTHING",
            &[
                &id as &(dyn ToSql + Sync),
                &email,
                &name,
                &country,
                &segment,
            ],
        )
        .await?;
    if inserted == 0 {
        bail!("customer {id} exists already: another writer uses the shop database");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_are_safe_and_kept_per_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("demo-database");
        if std::env::var(NAME_VAR).is_err() {
            let a = database_name(&file).unwrap();
            assert!(a.starts_with("tributary_demo_") && is_identifier(&a), "{a}");
            assert_eq!(database_name(&file).unwrap(), a);
            assert_eq!(slot_name(&a), a);
        }
        assert_eq!(slot_name("Shop-DB"), "tributary_shop_db");
        assert!(!is_identifier("shop\"; drop"));
        assert!(!is_identifier("1shop"));
        assert!(is_identifier("shop_2"));
    }

    #[test]
    fn only_databases_of_deleted_folders_of_this_host_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("demo-database");
        std::fs::write(&file, "tributary_demo_00000001\n").unwrap();
        let note = owner_note(&file);
        let host = host_name();
        assert!(note.starts_with(NOTE) && note.contains(&host), "{note}");
        // The folder names the database: not an orphan.
        assert_eq!(orphan_folder("tributary_demo_00000001", &note, &host), None);
        // The folder names another (it was deleted and made again): an orphan.
        assert_eq!(
            orphan_folder("tributary_demo_00000002", &note, &host).as_deref(),
            dir.path().to_str()
        );
        // Another host's, someone else's database, or no note: never.
        assert_eq!(
            orphan_folder("tributary_demo_00000002", &note, "elsewhere"),
            None
        );
        assert_eq!(orphan_folder("shop", &note, &host), None);
        assert_eq!(orphan_folder("tributary_demo_00000002", "", &host), None);
        drop(dir);
        assert!(orphan_folder("tributary_demo_00000001", &note, &host).is_some());
    }

    #[test]
    fn orders_move_forward_and_close() {
        assert_eq!(next_status("pending", 0.5), Some("paid"));
        assert_eq!(next_status("pending", 0.05), Some("cancelled"));
        assert_eq!(next_status("paid", 0.05), Some("shipped"));
        assert_eq!(next_status("shipped", 0.5), Some("delivered"));
        assert_eq!(next_status("delivered", 0.5), None);
        assert_eq!(next_status("delivered", 0.01), Some("refunded"));
        assert_eq!(next_status("cancelled", 0.01), None);
    }

    #[test]
    fn the_source_reads_the_demo_database_and_slot() {
        let catalog =
            Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")).unwrap();
        let decl = catalog
            .sources
            .iter()
            .find_map(|s| match s {
                SourceDecl::Postgres(p) if p.name == SOURCE => Some(p.clone()),
                _ => None,
            })
            .unwrap();
        let config = connect_config(&decl, "tributary_demo_1", "tributary_demo_1").unwrap();
        assert_eq!(config.get_dbname(), Some("tributary_demo_1"));
        // The catalog's slot names the variable the stack sets for ingest.
        let slot = expand_with(decl.slot.as_deref().unwrap(), |v| {
            (v == SLOT_VAR).then(|| "tributary_demo_1".to_string())
        })
        .unwrap();
        assert_eq!(slot, "tributary_demo_1");
    }
}
