//! `tributary up --demo`: the built command runs the whole pipeline (the broker
//! `TRIBUTARY_TEST_BROKER` names, Apache Kafka or Tansu, passed as `--broker`; the registry; the
//! five services) on a temporary data folder with free ports. Records reach every topic the
//! demo feeds and the topics the catalog derives from them, the archive's Parquet files read in
//! DuckDB, SIGINT stops everything with exit code 0, and a second run on the same folder
//! continues: offsets go on from where they were, and the archive holds no record twice.
//!
//! The machine's PostgreSQL (wal_level = logical, set by the test command) hosts the demo's
//! shop database: its orders and customers reach `db.shop.*` by change data capture and
//! `clean.orders` through transform. The database and its slot are dropped at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use tributary_core::bus::KafkaConfig;
use tributary_integration_tests::{
    BrokerKind, TestDatabase, kafka_launcher, postgres_base, repo_catalog, tansu_binary, unique,
    workspace_bin,
};

/// The topics the demo writes to (HTTP, the landing folder and the shop database).
const FED: [&str; 5] = [
    "raw.web_events",
    "raw.mobile_events",
    "files.products",
    "db.shop.customers",
    "db.shop.orders",
];
/// Longest wait for the stack to start and records to reach every topic (debug builds on a
/// loaded 2-core machine).
const FLOW_TIMEOUT: Duration = Duration::from_secs(240);
/// Longest wait for the exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// A running `tributary up --demo`, killed when dropped.
struct Up {
    child: Option<Child>,
    data: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Up {
    fn start(broker: BrokerKind, data: &Path, run: &str) -> Result<Self> {
        let broker_bin = match broker {
            BrokerKind::Kafka => kafka_launcher(),
            BrokerKind::Tansu => tansu_binary(),
        };
        let stdout = data.with_extension(format!("{run}.out"));
        let stderr = data.with_extension(format!("{run}.err"));
        let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let child = Command::new(workspace_bin("tributary")?)
            .arg("--schemas")
            .arg(&schemas)
            .args(["up", "--demo", "--free-ports", "--data"])
            .arg(data)
            .args(["--broker", broker.name(), "--broker-bin"])
            .arg(broker_bin)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .context("start tributary up")?;
        Ok(Self {
            child: Some(child),
            data: data.to_path_buf(),
            stdout,
            stderr,
        })
    }

    /// Its output and the tail of each log, for failure messages.
    fn report(&self) -> String {
        let mut out = format!(
            "stdout:\n{}\nstderr:\n{}\n",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        if let Ok(entries) = std::fs::read_dir(self.data.join("logs")) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!(
                    "--- {} (last lines)\n{}\n",
                    entry.path().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        out
    }

    /// Fails (with the report) when the process has exited.
    fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("tributary up exited with {status}\n{}", self.report());
        }
        Ok(())
    }

    /// The broker's address, from the stack file `up` writes before starting it.
    fn bootstrap(&mut self) -> Result<String> {
        let file = self.data.join("tributary.toml");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_running()?;
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some(address) = text.lines().find_map(|l| {
                    l.strip_prefix("bootstrap_servers = \"")
                        .and_then(|r| r.strip_suffix('"'))
                })
            {
                return Ok(address.to_string());
            }
            if Instant::now() > deadline {
                bail!("no {} after 60 s\n{}", file.display(), self.report());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends SIGINT and waits for the exit.
    fn interrupt(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        child.kill()?;
        child.wait()?;
        bail!(
            "tributary up did not exit within {STOP_TIMEOUT:?} of SIGINT\n{}",
            self.report()
        )
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The demo's topics and every topic the catalog's transforms and feature views make from them.
fn expected_topics() -> Result<BTreeSet<String>> {
    let catalog = repo_catalog()?;
    let mut topics: BTreeSet<String> = FED.iter().map(|t| t.to_string()).collect();
    loop {
        let before = topics.len();
        for t in &catalog.transforms {
            if t.inputs.iter().any(|i| topics.contains(i)) {
                topics.insert(t.output.clone());
            }
        }
        for f in &catalog.features {
            if topics.contains(&f.input) {
                topics.insert(f.output.clone());
            }
        }
        if topics.len() == before {
            return Ok(topics);
        }
    }
}

/// End offsets per topic (sum over partitions; 0 for a missing topic).
fn end_offsets(
    consumer: &BaseConsumer,
    topics: &BTreeSet<String>,
) -> Result<BTreeMap<String, i64>> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut out = BTreeMap::new();
    for name in topics {
        let mut total = 0;
        if let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) {
            for p in topic.partitions() {
                total += consumer
                    .fetch_watermarks(name, p.id(), Duration::from_secs(10))?
                    .1;
            }
        }
        out.insert(name.clone(), total);
    }
    Ok(out)
}

/// Parquet files under a folder, recursively.
fn parquet_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                parquet_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

/// Runs SQL in DuckDB (python/lake_sql.py); one result (rows of JSON values) per statement.
fn duckdb(statements: &[String]) -> Result<Vec<Vec<Vec<Value>>>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/lake_sql.py");
    let output = Command::new("python3")
        .arg(script)
        .args(statements)
        .output()
        .context("run python3 lake_sql.py (pip install duckdb)")?;
    if !output.status.success() {
        bail!(
            "lake_sql.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let results: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    results
        .into_iter()
        .map(|r| Ok(serde_json::from_value(r["rows"].clone())?))
        .collect()
}

/// (rows, distinct (partition, offset) pairs, highest offset) of a topic in the lake.
fn archived(lake: &Path, topic: &str) -> Result<(i64, i64, i64)> {
    let glob = lake.join(topic).join("**/*.parquet");
    let sql = format!(
        "SELECT count(*), count(DISTINCT (_kafka_partition, _kafka_offset)), max(_kafka_offset) \
         FROM read_parquet('{}', hive_partitioning = true, union_by_name = true)",
        glob.display()
    );
    let rows = duckdb(&[sql])?;
    let row = rows
        .first()
        .and_then(|r| r.first())
        .context("no result row")?;
    let n = |i: usize| row.get(i).and_then(Value::as_i64).unwrap_or(-1);
    Ok((n(0), n(1), n(2)))
}

/// Waits until `done` holds, checking the process meanwhile.
fn wait_until(
    up: &mut Up,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        up.check_running()?;
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}\n{}", up.report());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Runs SQL statements on the machine's PostgreSQL (`database`, or the default one); the first
/// column of the last statement's rows, as text.
fn psql(database: Option<&str>, statements: &[String]) -> Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut conn = postgres_base();
        if let Some(db) = database {
            conn.push_str(&format!(" dbname={db}"));
        }
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let mut last = Vec::new();
        for statement in statements {
            last = client
                .simple_query(statement)
                .await?
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                    _ => None,
                })
                .collect();
        }
        Ok(last)
    })
}

/// A demo database (with a replication slot) of a data folder of this host that was deleted:
/// the next `up --demo` removes both.
fn orphan_demo_database() -> Result<String> {
    let name = unique("tributary_demo").replace('-', "_");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let gone = std::env::temp_dir().join(unique("deleted-folder"));
    psql(
        None,
        &[
            format!("CREATE DATABASE \"{name}\""),
            format!(
                "COMMENT ON DATABASE \"{name}\" IS 'tributary up --demo {}:{}'",
                host.trim(),
                gone.display()
            ),
        ],
    )?;
    psql(
        Some(&name),
        &[format!(
            "SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')"
        )],
    )?;
    Ok(name)
}

#[test]
fn up_demo_runs_the_pipeline_stops_on_sigint_and_continues() -> Result<()> {
    let broker = BrokerKind::from_env()?;
    let folder = tempfile::tempdir()?;
    let data = folder.path().join("data");
    let lake = data.join("lake");
    let topics = expected_topics()?;
    assert!(
        topics.contains("clean.web_events") && topics.contains("features.user_activity"),
        "{topics:?}"
    );

    let orphan = orphan_demo_database()?;
    let _orphan = TestDatabase {
        name: orphan.clone(),
    };

    // First run: records flow to every topic, the archive writes Parquet.
    let mut up = Up::start(broker, &data, "1")?;
    let consumer: BaseConsumer = KafkaConfig::new(up.bootstrap()?).client_config().create()?;
    // `up` names the folder's shop database before it starts the broker; dropping this guard
    // drops the database and its replication slot.
    let database = std::fs::read_to_string(data.join("demo-database"))
        .context("up --demo wrote no demo-database file")?;
    let _shop = TestDatabase {
        name: database.trim().to_string(),
    };
    let out = std::fs::read_to_string(&up.stdout)?;
    assert!(
        !out.contains("no shop database"),
        "the demo ran without its shop database\n{}",
        up.report()
    );
    // The deleted folder's database and slot are gone; this folder's are there.
    assert!(
        out.contains(&format!("removed {orphan}")),
        "{}",
        up.report()
    );
    let left = psql(
        None,
        &[format!(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name = '{orphan}' \
             UNION ALL SELECT datname FROM pg_database WHERE datname = '{orphan}'"
        )],
    )?;
    assert!(left.is_empty(), "{left:?}");
    let mut first = BTreeMap::new();
    wait_until(&mut up, "records in every topic", FLOW_TIMEOUT, || {
        first = end_offsets(&consumer, &topics).unwrap_or_default();
        Ok(first.len() == topics.len() && first.values().all(|n| *n > 0))
    })?;
    wait_until(
        &mut up,
        "parquet files of raw.web_events",
        FLOW_TIMEOUT,
        || Ok(parquet_files(&lake.join("raw.web_events")) > 0),
    )?;
    // The first run replays two hours of history before going live; a later run must not.
    let marker = data.join("demo-history-sent");
    wait_until(&mut up, "the demo's history sent", FLOW_TIMEOUT, || {
        Ok(marker.exists())
    })?;
    let first = end_offsets(&consumer, &topics)?;
    let status = up.interrupt()?;
    let out = std::fs::read_to_string(&up.stdout)?;
    assert!(status.success(), "exit {status}\n{}", up.report());
    assert!(out.contains("stopped cleanly"), "{}", up.report());
    drop(consumer);

    // The folder remembers its broker: `up` with the other one is refused (exit code 2) before
    // it starts anything (so any executable stands for the other broker's program).
    let recorded = std::fs::read_to_string(data.join("broker-kind"))?;
    assert_eq!(recorded.trim(), broker.name());
    let other = match broker {
        BrokerKind::Kafka => "tansu",
        BrokerKind::Tansu => "kafka",
    };
    let refused = Command::new(workspace_bin("tributary")?)
        .arg("--schemas")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"))
        .args([
            "up",
            "--free-ports",
            "--broker",
            other,
            "--broker-bin",
            "/bin/true",
        ])
        .arg("--data")
        .arg(&data)
        .stdin(Stdio::null())
        .output()?;
    let message = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert!(
        message.contains(&format!("--broker {}", broker.name())),
        "{message}"
    );

    // DuckDB reads the lake; every archived record once.
    for topic in [
        "raw.web_events",
        "raw.mobile_events",
        "clean.web_events",
        "clean.orders",
    ] {
        let (rows, distinct, _) = archived(&lake, topic)?;
        assert!(rows > 0, "{topic}: no rows in the lake");
        assert_eq!(rows, distinct, "{topic}: records archived twice");
    }
    // Web visitors are the shop's customers: transform's lookup finds their country.
    let glob = lake.join("clean.web_events/**/*.parquet");
    let enriched = duckdb(&[format!(
        "SELECT count(country) FROM read_parquet('{}', hive_partitioning = true, union_by_name = true)",
        glob.display()
    )])?;
    let enriched = enriched
        .first()
        .and_then(|r| r.first())
        .and_then(|row| row.first())
        .and_then(Value::as_i64)
        .unwrap_or(0);
    assert!(enriched > 0, "no clean.web_events record has a country");
    let (_, _, first_max) = archived(&lake, "raw.web_events")?;
    let files_first = parquet_files(&lake);

    // Second run on the same folder: the broker's data is there and grows; the archive resumes.
    let mut up = Up::start(broker, &data, "2")?;
    let consumer: BaseConsumer = KafkaConfig::new(up.bootstrap()?).client_config().create()?;
    // Kafka lists a topic before it has elected its partitions' leaders again after a
    // restart (watermarks answer NotLeaderForPartition meanwhile): wait until every catalog
    // topic's end offsets can be read.
    let mut resumed = BTreeMap::new();
    wait_until(
        &mut up,
        "the broker of the second run, every partition led",
        FLOW_TIMEOUT,
        || {
            let listed = consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| m.topics().iter().any(|t| t.name() == "raw.web_events"));
            if !listed {
                return Ok(false);
            }
            match end_offsets(&consumer, &topics) {
                Ok(ends) => {
                    resumed = ends;
                    Ok(true)
                }
                Err(_) => Ok(false),
            }
        },
    )?;
    for (topic, n) in &first {
        assert!(
            resumed[topic] >= *n,
            "{topic}: {} after the restart, {n} before",
            resumed[topic]
        );
    }
    wait_until(
        &mut up,
        "new web events after the restart",
        FLOW_TIMEOUT,
        || {
            let Ok(now) = end_offsets(&consumer, &topics) else {
                return Ok(false);
            };
            Ok(now["raw.web_events"] > first["raw.web_events"] + 100
                && now["db.shop.orders"] > resumed["db.shop.orders"])
        },
    )?;
    // At least one archive file of the second run (they are cut every 30 s), then stop.
    wait_until(
        &mut up,
        "parquet files of the second run",
        FLOW_TIMEOUT,
        || Ok(parquet_files(&lake) > files_first),
    )?;
    let status = up.interrupt()?;
    assert!(status.success(), "exit {status}\n{}", up.report());

    let (rows, distinct, max) = archived(&lake, "raw.web_events")?;
    assert_eq!(
        rows, distinct,
        "raw.web_events archived twice across the runs"
    );
    assert!(
        max > first_max,
        "no offset beyond {first_max} archived by the second run"
    );
    Ok(())
}
