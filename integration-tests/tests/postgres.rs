//! PostgreSQL sources of ingest against the machine's PostgreSQL and a real broker:
//! change data capture (snapshot, then inserts, updates and deletes in commit order with the
//! right op and before/after; kill -9 and restart resume from the acknowledged position with
//! nothing lost; an added column keeps flowing as a new schema version; idle tables let the
//! slot move on), and polling (two transactions committing out of order are both delivered,
//! and without the delay window the earlier one is lost, which is what the window is for).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};
use tributary_integration_tests::{Service, Stack, TestDatabase, key_of, read_to_end, unique};

/// A source name (letters, digits and `_`).
fn source_name(prefix: &str) -> String {
    unique(prefix).replace('-', "_")
}

/// The envelope schema of a table whose row record has `fields` (what the catalog declares;
/// the source derives the rest from the columns).
fn envelope_avsc(namespace: &str, record: &str, id_type: Value, fields: Value) -> String {
    json!({
        "type": "record", "name": format!("{record}Change"), "namespace": namespace,
        "fields": [
            {"name": "id", "type": id_type},
            {"name": "before", "type": ["null", {"type": "record", "name": record, "fields": fields}], "default": null},
            {"name": "after", "type": ["null", record], "default": null},
            {"name": "op", "type": {"type": "enum", "name": "Op", "symbols": ["c", "u", "d", "r"]}},
            {"name": "source", "type": {"type": "record", "name": "Source", "fields": [
                {"name": "connector", "type": "string"},
                {"name": "db", "type": "string"},
                {"name": "schema", "type": "string"},
                {"name": "table", "type": "string"},
                {"name": "lsn", "type": ["null", "long"], "default": null},
                {"name": "txid", "type": ["null", "long"], "default": null},
                {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}}
            ]}},
            {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}}
        ]
    })
    .to_string()
}

fn topic_toml(name: &str) -> String {
    format!(
        "[[topic]]\nname = \"{name}\"\npartitions = 1\nkey_field = \"id\"\nevent_time_field = \"ts_ms\"\n\n"
    )
}

fn ingest_config(stack: &Stack, schemas: &Path, source: &str) -> String {
    format!(
        "[ingest]\nlisten = \"127.0.0.1:0\"\nschemas = \"{}\"\nsources = [\"{source}\"]\nfiles_progress_topic = \"{}\"\npostgres_progress_topic = \"{}\"\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}",
        schemas.display(),
        unique("_files"),
        unique("_pg"),
        stack.broker.bootstrap(),
        stack.registry.section()
    )
}

fn pg_url(db: &TestDatabase) -> String {
    let base = tributary_integration_tests::postgres_base();
    let field = |k: &str, default: &str| {
        base.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| default.to_string())
    };
    format!(
        "postgresql://{}@{}:{}/{}",
        field("user", "postgres"),
        field("host", "127.0.0.1"),
        field("port", "5432"),
        db.name
    )
}

/// A decoded record of a table's topic.
#[derive(Debug, Clone)]
struct Change {
    key: String,
    value: Value,
}

impl Change {
    fn op(&self) -> &str {
        self.value["op"].as_str().unwrap_or("?")
    }
}

/// Reads and decodes the whole topic.
async fn changes(stack: &Stack, topic: &str) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for r in read_to_end(&stack.broker, topic, Duration::from_secs(30))? {
        out.push(Change {
            key: key_of(&r),
            value: stack.decode(&r.payload).await?,
        });
    }
    Ok(out)
}

/// Waits until `done` holds for the topic's changes.
async fn wait_for(
    stack: &Stack,
    topic: &str,
    service: &Service,
    what: &str,
    done: impl Fn(&[Change]) -> bool,
) -> Result<Vec<Change>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all = changes(stack, topic).await?;
        if done(&all) {
            return Ok(all);
        }
        if Instant::now() > deadline {
            bail!(
                "{topic}: timed out waiting for {what}; {} records: {:?}\n{}",
                all.len(),
                all.iter().map(|c| (&c.key, c.op())).collect::<Vec<_>>(),
                service.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn confirmed_flush(db: &tokio_postgres::Client, slot: &str) -> Result<u64> {
    let row = db
        .query_one(
            "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(u64::try_from(row.try_get::<_, i64>(0)?)?)
}

async fn current_lsn(db: &tokio_postgres::Client) -> Result<u64> {
    let row = db
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8", &[])
        .await?;
    Ok(u64::try_from(row.try_get::<_, i64>(0)?)?)
}

const ORDERS: &str = "CREATE SCHEMA shop;
CREATE TABLE shop.orders (
    order_id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    total numeric(12, 2) NOT NULL,
    currency text NOT NULL,
    ordered_at timestamptz NOT NULL
);
ALTER TABLE shop.orders REPLICA IDENTITY FULL;
CREATE TABLE shop.kinds (
    id uuid PRIMARY KEY,
    doc jsonb,
    tags text[],
    nums integer[],
    day date,
    at timestamp,
    raw bytea,
    amount numeric,
    ok boolean,
    ratio double precision
);
CREATE TABLE shop.noise (n bigint);";

fn insert_order(id: i64, status: &str) -> String {
    format!(
        "INSERT INTO shop.orders VALUES ({id}, {}, '{status}', {id}.25, 'EUR', '2026-11-28 10:00:00+00')",
        id % 10
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_data_capture_in_commit_order_survives_kill_and_added_column() -> Result<()> {
    let db = TestDatabase::create().await?;
    let pg = db.connect().await?;
    pg.batch_execute(ORDERS).await?;
    for i in 1..=3 {
        pg.batch_execute(&insert_order(i, "pending")).await?;
    }

    let dir = tempfile::tempdir()?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    std::fs::copy(
        repo.join("db.shop.orders-value.avsc"),
        dir.path().join("db.shop.orders-value.avsc"),
    )?;
    // The kinds table's catalog schema names only the key; the other columns are derived.
    std::fs::write(
        dir.path().join("db.shop.kinds-value.avsc"),
        envelope_avsc(
            "io.tributary.test",
            "Kind",
            json!({"type": "string", "logicalType": "uuid"}),
            json!([{"name": "id", "type": {"type": "string", "logicalType": "uuid"}}]),
        ),
    )?;
    let source = source_name("cdc");
    let slot = format!("tributary_{source}");
    std::fs::write(
        dir.path().join("catalog.toml"),
        format!(
            "{}{}[[source]]\ntype = \"postgres\"\nname = \"{source}\"\nurl = \"{}\"\nmode = \"cdc\"\npoll_ms = 100\nheartbeat_seconds = 1\ntables = [\n  {{ table = \"shop.orders\", topic = \"db.shop.orders\" }},\n  {{ table = \"shop.kinds\", topic = \"db.shop.kinds\" }},\n]\n",
            topic_toml("db.shop.orders"),
            topic_toml("db.shop.kinds"),
            pg_url(&db)
        ),
    )?;
    let stack = Stack::start(dir.path()).await?;
    let mut ingest = Service::start(
        "tributary-ingest",
        &ingest_config(&stack, dir.path(), &source),
    )?;
    let topic = "db.shop.orders";

    // The snapshot: the three rows, op r, no before.
    let all = wait_for(&stack, topic, &ingest, "the snapshot", |c| c.len() >= 3).await?;
    assert_eq!(all.len(), 3);
    for (c, id) in all.iter().zip(1..) {
        assert_eq!(c.op(), "r");
        assert_eq!(c.key, id.to_string());
        assert_eq!(c.value["id"], id);
        assert_eq!(c.value["before"], Value::Null);
        assert_eq!(c.value["after"]["status"], "pending");
        assert_eq!(
            c.value["after"]["total"],
            id * 100 + 25,
            "numeric(12,2) as unscaled decimal"
        );
        assert_eq!(c.value["after"]["ordered_at"], 1_795_860_000_000_000_i64);
        assert_eq!(c.value["source"]["connector"], source.as_str());
        assert_eq!(c.value["source"]["lsn"], Value::Null);
    }

    // Changes, one transaction each and one with several statements.
    pg.batch_execute(&insert_order(4, "pending")).await?;
    pg.batch_execute("UPDATE shop.orders SET status = 'paid' WHERE order_id = 1")
        .await?;
    pg.batch_execute("DELETE FROM shop.orders WHERE order_id = 2")
        .await?;
    pg.batch_execute(&format!(
        "BEGIN; {}; UPDATE shop.orders SET status = 'paid' WHERE order_id = 5; UPDATE shop.orders SET total = 99.99 WHERE order_id = 4; COMMIT",
        insert_order(5, "pending")
    ))
    .await?;
    // Commit order, not start order: A starts first and commits last.
    let (a, a_conn) =
        tokio_postgres::connect(&db.connection_string(), tokio_postgres::NoTls).await?;
    tokio::spawn(a_conn);
    a.batch_execute(&format!("BEGIN; {}", insert_order(6, "pending")))
        .await?;
    pg.batch_execute(&insert_order(7, "pending")).await?;
    a.batch_execute("COMMIT").await?;

    let all = wait_for(&stack, topic, &ingest, "nine changes", |c| c.len() >= 3 + 8).await?;
    let stream: Vec<(&str, &str)> = all[3..].iter().map(|c| (c.op(), c.key.as_str())).collect();
    assert_eq!(
        stream,
        vec![
            ("c", "4"),
            ("u", "1"),
            ("d", "2"),
            ("c", "5"),
            ("u", "5"),
            ("u", "4"),
            ("c", "7"),
            ("c", "6"),
        ]
    );
    let update = &all[4].value;
    assert_eq!(update["before"]["status"], "pending");
    assert_eq!(update["after"]["status"], "paid");
    let delete = &all[5].value;
    assert_eq!(
        delete["before"]["order_id"], 2,
        "REPLICA IDENTITY FULL: the whole old row"
    );
    assert_eq!(delete["after"], Value::Null);
    assert_eq!(delete["id"], 2);
    assert_eq!(all[8].value["after"]["total"], 9999);
    // One transaction: one txid, rising positions.
    assert_eq!(
        all[6].value["source"]["txid"],
        all[8].value["source"]["txid"]
    );
    let lsns: Vec<i64> = all[3..]
        .iter()
        .map(|c| c.value["source"]["lsn"].as_i64().unwrap_or(0))
        .collect();
    assert!(lsns.iter().all(|l| *l > 0), "{lsns:?}");
    assert!(lsns[..6].windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
    // Acknowledged: the slot has moved past everything delivered so far.
    let acked_deadline = Instant::now() + Duration::from_secs(10);
    let after_changes = current_lsn(&pg).await?;
    while confirmed_flush(&pg, &slot).await? < lsns[7] as u64 {
        ensure!(Instant::now() < acked_deadline, "the slot was not advanced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Heartbeat: WAL written for a table outside the source; the idle slot follows.
    pg.batch_execute("INSERT INTO shop.noise SELECT generate_series(1, 20000)")
        .await?;
    let noise_end = current_lsn(&pg).await?;
    ensure!(noise_end > after_changes);
    let deadline = Instant::now() + Duration::from_secs(20);
    while confirmed_flush(&pg, &slot).await? < noise_end {
        ensure!(
            Instant::now() < deadline,
            "the idle slot stayed at {} while the server is at {noise_end}\n{}",
            confirmed_flush(&pg, &slot).await?,
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // kill -9 while a writer commits 300 transactions; restart; every one arrives.
    let writer_db = db.connection_string();
    let writer = tokio::spawn(async move {
        let (w, conn) = tokio_postgres::connect(&writer_db, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        for i in 100..400 {
            w.batch_execute(&insert_order(i, "pending")).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::Ok(())
    });
    wait_for(&stack, topic, &ingest, "the writer's first rows", |c| {
        c.iter().any(|c| c.key == "120")
    })
    .await?;
    ensure!(
        !writer.is_finished(),
        "the writer finished before the kill: raise its row count"
    );
    ingest.kill()?;
    writer.await??;
    ingest.restart()?;
    let all = wait_for(
        &stack,
        topic,
        &ingest,
        "all 300 rows after the restart",
        |c| (100..400).all(|i| c.iter().any(|c| c.key == i.to_string())),
    )
    .await?;
    let snapshot_reads = all.iter().filter(|c| c.op() == "r").count();
    assert_eq!(
        snapshot_reads, 3,
        "the restart resumed the stream, no second snapshot"
    );
    let per_key: BTreeMap<&str, usize> =
        all.iter()
            .filter(|c| c.op() == "c")
            .fold(BTreeMap::new(), |mut m, c| {
                *m.entry(c.key.as_str()).or_default() += 1;
                m
            });
    let duplicates: usize = per_key.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 mid-stream: {} distinct inserts delivered, {duplicates} duplicates, none lost",
        per_key.len()
    );

    // An added column: a new, compatible schema version; older records still decode.
    pg.batch_execute(
        "ALTER TABLE shop.orders ADD COLUMN coupon text NOT NULL DEFAULT 'none';
         INSERT INTO shop.orders VALUES (500, 1, 'pending', 5.00, 'EUR', '2026-11-28 11:00:00+00', 'WELCOME');
         UPDATE shop.orders SET status = 'shipped' WHERE order_id = 500;",
    )
    .await?;
    let all = wait_for(
        &stack,
        topic,
        &ingest,
        "the rows with the new column",
        |c| c.iter().filter(|c| c.key == "500").count() >= 2,
    )
    .await?;
    let added: Vec<&Change> = all.iter().filter(|c| c.key == "500").collect();
    assert_eq!(added[0].op(), "c");
    assert_eq!(added[0].value["after"]["coupon"], "WELCOME");
    assert_eq!(added[1].value["before"]["coupon"], "WELCOME");
    assert_eq!(added[1].value["after"]["status"], "shipped");
    let versions = stack.client.subject_version(
        "db.shop.orders-value",
        tributary_core::schema::registry::Version::Latest,
    );
    assert_eq!(
        versions.await?.version,
        2,
        "the catalog's schema, then the one with coupon"
    );
    assert_eq!(
        all[0].value["after"]["status"], "pending",
        "old records still decode"
    );

    // Types: uuid, jsonb, arrays, date, timestamp, bytea, numeric, boolean, double.
    pg.batch_execute(
        "INSERT INTO shop.kinds VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}',
            ARRAY['x', NULL, 'y z'], ARRAY[1, 2, 3], '2026-11-28', '2026-11-28 12:30:00.5',
            '\\x00ff', 12345678901234567890.123, true, 0.25);
         INSERT INTO shop.kinds (id) VALUES ('00000000-0000-0000-0000-000000000001');",
    )
    .await?;
    let kinds = wait_for(&stack, "db.shop.kinds", &ingest, "two kinds rows", |c| {
        c.len() >= 2
    })
    .await?;
    let row = &kinds[0].value["after"];
    assert_eq!(kinds[0].key, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(row["doc"], "{\"a\": [1, 2]}");
    assert_eq!(row["tags"], json!(["x", null, "y z"]));
    assert_eq!(row["nums"], json!([1, 2, 3]));
    assert_eq!(row["day"], 20_785, "days since 1970-01-01");
    assert_eq!(row["raw"], json!([0, 255]));
    assert_eq!(row["at"], 1_795_869_000_500_000_i64);
    assert_eq!(
        row["amount"], "12345678901234567890.123",
        "unconstrained numeric: exact text"
    );
    assert_eq!(row["ok"], true);
    assert_eq!(row["ratio"], 0.25);
    let nulls = &kinds[1].value["after"];
    assert_eq!(nulls["doc"], Value::Null);
    assert_eq!(nulls["tags"], Value::Null);

    // The source's figures on the admin port (since the restart: the rows after it).
    let metrics = reqwest::get(format!("{}/metrics", ingest.admin_url()?))
        .await?
        .text()
        .await?;
    let written = metrics
        .lines()
        .find(|l| {
            l.starts_with("tributary_ingest_source_records_total{")
                && l.contains("table=\"shop.kinds\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(written, Some(2), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "tributary_ingest_source_acknowledged_lsn{{source=\"{source}\"}}"
        )),
        "{metrics}"
    );

    assert!(ingest.stop()?, "clean exit on SIGTERM\n{}", ingest.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_delivers_transactions_that_commit_out_of_order() -> Result<()> {
    let db = TestDatabase::create().await?;
    let pg = db.connect().await?;
    pg.batch_execute(
        "CREATE SCHEMA app;
         CREATE TABLE app.events (id bigserial PRIMARY KEY, note text NOT NULL,
                                  updated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE app.logs (id bigserial PRIMARY KEY, note text NOT NULL);",
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let fields = json!([
        {"name": "id", "type": "long"},
        {"name": "note", "type": "string"},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-micros"}}
    ]);
    let log_fields = json!([{"name": "id", "type": "long"}, {"name": "note", "type": "string"}]);
    let mut catalog = String::new();
    for (topic, f) in [
        ("db.app.events", &fields),
        ("db.app.logs", &log_fields),
        ("db.app.events_nodelay", &fields),
        ("db.app.logs_nodelay", &log_fields),
    ] {
        std::fs::write(
            dir.path().join(format!("{topic}-value.avsc")),
            envelope_avsc("io.tributary.test", "Row", json!("long"), f.clone()),
        )?;
        catalog.push_str(&topic_toml(topic));
    }
    let (with_delay, without) = (source_name("poll"), source_name("nodelay"));
    for (name, delay, suffix) in [(&with_delay, 6, ""), (&without, 0, "_nodelay")] {
        catalog.push_str(&format!(
            "[[source]]\ntype = \"postgres\"\nname = \"{name}\"\nurl = \"{}\"\nmode = \"poll\"\npoll_seconds = 1\ndelay_seconds = {delay}\ntables = [\n  {{ table = \"app.events\", topic = \"db.app.events{suffix}\", timestamp_column = \"updated_at\", incrementing_column = \"id\" }},\n  {{ table = \"app.logs\", topic = \"db.app.logs{suffix}\", incrementing_column = \"id\" }},\n]\n\n",
            pg_url(&db)
        ));
    }
    std::fs::write(dir.path().join("catalog.toml"), catalog)?;
    let stack = Stack::start(dir.path()).await?;
    let config = |source: &str| ingest_config(&stack, dir.path(), source);
    let ingest = Service::start("tributary-ingest", &config(&with_delay))?;
    let nodelay = Service::start("tributary-ingest", &config(&without))?;
    // Both pollers run before the transactions start.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(ingest.log().contains("polling started") && nodelay.log().contains("polling started")) {
        ensure!(
            Instant::now() < deadline,
            "the pollers did not start\n{}\n{}",
            ingest.log(),
            nodelay.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Transaction A takes id 1 (and its start time) first but commits 3 s after B (id 2):
    // inside the 6 s delay window, and after several polls.
    let (a, a_conn) =
        tokio_postgres::connect(&db.connection_string(), tokio_postgres::NoTls).await?;
    tokio::spawn(a_conn);
    a.batch_execute(
        "BEGIN; INSERT INTO app.events (note) VALUES ('A'); INSERT INTO app.logs (note) VALUES ('A')",
    )
    .await?;
    pg.batch_execute(
        "INSERT INTO app.events (note) VALUES ('B'); INSERT INTO app.logs (note) VALUES ('B')",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.batch_execute("COMMIT").await?;
    pg.batch_execute(
        "INSERT INTO app.events (note) VALUES ('C'); INSERT INTO app.logs (note) VALUES ('C')",
    )
    .await?;

    for topic in ["db.app.events", "db.app.logs"] {
        let all = wait_for(&stack, topic, &ingest, "A, B and C", |c| {
            ["1", "2", "3"]
                .iter()
                .all(|k| c.iter().any(|c| c.key == *k))
        })
        .await?;
        let notes: BTreeSet<&str> = all
            .iter()
            .filter_map(|c| c.value["after"]["note"].as_str())
            .collect();
        assert_eq!(notes, BTreeSet::from(["A", "B", "C"]), "{topic}");
        assert!(all.iter().all(|c| c.op() == "r"));
        assert_eq!(all.len(), 3, "{topic}: each row once");
    }
    // Without the delay the poller passed id 2 before A committed: A is never read.
    for topic in ["db.app.events_nodelay", "db.app.logs_nodelay"] {
        let all = wait_for(&stack, topic, &nodelay, "B and C", |c| {
            ["2", "3"].iter().all(|k| c.iter().any(|c| c.key == *k))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let keys: Vec<String> = changes(&stack, topic)
            .await?
            .into_iter()
            .map(|c| c.key)
            .collect();
        assert_eq!(keys, vec!["2", "3"], "{topic}: {all:?}");
    }
    drop(nodelay);

    // The position survives a restart: nothing is read twice, new rows are.
    let mut ingest = ingest;
    ingest.kill()?;
    pg.batch_execute("INSERT INTO app.events (note) VALUES ('D')")
        .await?;
    ingest.restart()?;
    let all = wait_for(&stack, "db.app.events", &ingest, "D", |c| {
        c.iter().any(|c| c.key == "4")
    })
    .await?;
    assert_eq!(
        all.len(),
        4,
        "{:?}",
        all.iter().map(|c| &c.key).collect::<Vec<_>>()
    );
    Ok(())
}
