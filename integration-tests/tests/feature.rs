//! The feature service through a real broker and registry, checked against an independent
//! computation: the same input records given to DuckDB (python/features_sql.py), whose SQL gives
//! the expected features of every window type and aggregation, compared row by row (quantiles
//! within the sketch's 1% relative error).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tributary_core::bus::OutboundRecord;
use tributary_integration_tests::{Feature, Stack, key_of, read_all, unique};

const EVENT: &str = r#"{"type": "record", "name": "Event", "namespace": "test", "fields": [
  {"name": "user", "type": "string"},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "kind", "type": ["null", "string"], "default": null},
  {"name": "amount", "type": ["null", "double"], "default": null},
  {"name": "page", "type": "string"}
]}"#;

const FEATURES: &str = r#"{"type": "record", "name": "Features", "namespace": "test", "fields": [
  {"name": "user", "type": "string"},
  {"name": "window_start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "window_end", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "n", "type": "long"},
  {"name": "buys", "type": "long"},
  {"name": "spent", "type": "double"},
  {"name": "avg_amount", "type": ["null", "double"], "default": null},
  {"name": "min_amount", "type": ["null", "double"], "default": null},
  {"name": "max_amount", "type": ["null", "double"], "default": null},
  {"name": "sd_amount", "type": ["null", "double"], "default": null},
  {"name": "pages", "type": "long"},
  {"name": "last_kind", "type": ["null", "string"], "default": null},
  {"name": "p90", "type": ["null", "double"], "default": null}
]}"#;

const AGGREGATIONS: &str = r#"aggregation = [
  { name = "n", fn = "count" },
  { name = "buys", fn = "count", where = "kind = 'buy'" },
  { name = "spent", fn = "sum", expr = "amount" },
  { name = "avg_amount", fn = "mean", expr = "amount" },
  { name = "min_amount", fn = "min", expr = "amount" },
  { name = "max_amount", fn = "max", expr = "amount" },
  { name = "sd_amount", fn = "stddev", expr = "amount" },
  { name = "pages", fn = "distinct_count", expr = "page" },
  { name = "last_kind", fn = "last", expr = "kind" },
  { name = "p90", fn = "quantile", expr = "amount", quantile = 0.9 },
]"#;

/// The views: (name, output topic, window spec for DuckDB).
fn views() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "tumbling",
            "test.f_tumbling",
            json!({"name": "tumbling", "type": "tumbling", "size": 60_000}),
        ),
        (
            "hopping",
            "test.f_hopping",
            json!({"name": "hopping", "type": "hopping", "size": 60_000, "slide": 20_000}),
        ),
        (
            "session",
            "test.f_session",
            json!({"name": "session", "type": "session", "gap": 30_000}),
        ),
    ]
}

const PARTITIONS: i32 = 2;
const T0: i64 = 1_795_000_000_000;
const SKETCH_ALPHA: f64 = 0.01;

fn write_catalog(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("test.events-value.avsc"), EVENT)?;
    std::fs::write(dir.join("test.late-value.avsc"), EVENT)?;
    let mut toml = format!(
        "[[topic]]\nname = \"test.events\"\npartitions = {PARTITIONS}\nkey_field = \"user\"\nevent_time_field = \"at\"\n\n[[topic]]\nname = \"test.late\"\npartitions = 1\n\n"
    );
    for (name, topic, _) in views() {
        std::fs::write(dir.join(format!("{topic}-value.avsc")), FEATURES)?;
        toml.push_str(&format!(
            "[[topic]]\nname = \"{topic}\"\npartitions = {PARTITIONS}\nkey_field = \"user\"\nevent_time_field = \"window_end\"\n\n"
        ));
        let window = match name {
            "tumbling" => r#"{ type = "tumbling", size = "1m" }"#,
            "hopping" => r#"{ type = "hopping", size = "1m", slide = "20s" }"#,
            _ => r#"{ type = "session", gap = "30s" }"#,
        };
        let late = if name == "tumbling" {
            "late_topic = \"test.late\"\n"
        } else {
            ""
        };
        toml.push_str(&format!(
            "[[feature]]\nname = \"{name}\"\ninput = \"test.events\"\noutput = \"{topic}\"\nentity = \"user\"\nwindow = {window}\nallowed_lateness = \"30s\"\n{late}{AGGREGATIONS}\n\n"
        ));
    }
    std::fs::write(dir.join("catalog.toml"), toml)?;
    Ok(())
}

/// A reproducible event; `jitter` moves it back in time (out of order) by up to that much.
fn event(i: i64, jitter: i64) -> Value {
    let mix = (i.wrapping_mul(2_654_435_761) >> 7).rem_euclid(1_000_003);
    let kinds = [Some("view"), Some("buy"), Some("cart"), None, Some("view")];
    let amount = (mix % 5 != 0).then(|| (mix % 10_000) as f64 / 10.0 + 0.25);
    json!({
        "user": format!("u{}", mix % 12),
        // Unique times (so the latest record of a window is well defined), 250 ms apart.
        "at": T0 + i * 250 - (mix % (jitter + 1)),
        "kind": kinds[(mix % 5) as usize],
        "amount": amount,
        "page": format!("/p/{}", mix % 17),
    })
}

async fn produce_events(stack: &Stack, events: &[Value]) -> Result<()> {
    for chunk in events.chunks(1_000) {
        let mut records = Vec::with_capacity(chunk.len());
        for e in chunk {
            records.push(OutboundRecord::new(
                "test.events",
                Some(e["user"].as_str().unwrap_or_default().as_bytes().to_vec()),
                stack.encode("test.events", e).await?,
            ));
        }
        stack.producer.send_all(&records).await?;
    }
    Ok(())
}

/// A record far in the future on every partition: closes every window.
async fn flush(stack: &Stack) -> Result<()> {
    for p in 0..PARTITIONS {
        let e = json!({"user": "~flush", "at": T0 + 86_400_000, "kind": null, "amount": null, "page": "/"});
        let mut record = OutboundRecord::new(
            "test.events",
            Some(b"~flush".to_vec()),
            stack.encode("test.events", &e).await?,
        );
        record.partition = Some(p);
        stack.producer.send(&record).await?;
    }
    Ok(())
}

/// DuckDB's feature rows per view.
fn expected(events: &[Value]) -> Result<BTreeMap<String, Vec<Value>>> {
    let spec = json!({
        "events": events,
        "views": views().into_iter().map(|(_, _, v)| v).collect::<Vec<_>>(),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/features_sql.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(spec.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "features_sql.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: BTreeMap<String, Vec<Value>> = serde_json::from_slice(&out.stdout)?;
    Ok(parsed)
}

/// The latest emitted row per (user, window_start) of an output topic, and how many records.
async fn emitted(stack: &Stack, topic: &str) -> Result<(BTreeMap<(String, i64), Value>, usize)> {
    let records = read_all(&stack.broker, topic, usize::MAX, Duration::from_secs(2))?;
    let n = records.len();
    let mut latest = BTreeMap::new();
    // One entity's records are in one partition, in order: the last one read is the latest.
    for r in records {
        let v = stack.decode(&r.payload).await?;
        let user = key_of(&r);
        if user == "~flush" {
            continue;
        }
        let start = v["window_start"].as_i64().unwrap_or_default();
        latest.insert((user, start), v);
    }
    Ok((latest, n))
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * y.abs().max(1.0),
        _ => a.is_null() && b.is_null(),
    }
}

/// Differences between ours and DuckDB's rows (empty when they agree).
fn compare(ours: &BTreeMap<(String, i64), Value>, theirs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut keys = Vec::new();
    for t in theirs {
        let key = (
            t["user"].as_str().unwrap_or_default().to_string(),
            t["window_start"].as_i64().unwrap_or_default(),
        );
        keys.push(key.clone());
        let Some(o) = ours.get(&key) else {
            problems.push(format!("missing window {key:?}"));
            continue;
        };
        for field in ["window_end", "n", "buys", "pages", "last_kind"] {
            if o[field] != t[field] {
                problems.push(format!(
                    "{key:?} {field}: ours {} duckdb {}",
                    o[field], t[field]
                ));
            }
        }
        for field in [
            "spent",
            "avg_amount",
            "min_amount",
            "max_amount",
            "sd_amount",
        ] {
            if !close(&o[field], &t[field]) {
                problems.push(format!(
                    "{key:?} {field}: ours {} duckdb {}",
                    o[field], t[field]
                ));
            }
        }
        // The sketch's quantile: within 1% of the value of rank floor/ceil(0.9 (n - 1)).
        let amounts: Vec<f64> = t["amounts"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        match (o["p90"].as_f64(), amounts.is_empty()) {
            (None, true) => {}
            (Some(p), false) => {
                let rank = 0.9 * (amounts.len() - 1) as f64;
                let (lo, hi) = (
                    amounts[rank.floor() as usize],
                    amounts[rank.ceil() as usize],
                );
                if p < lo - SKETCH_ALPHA * lo.abs() || p > hi + SKETCH_ALPHA * hi.abs() {
                    problems.push(format!(
                        "{key:?} p90: ours {p}, exact between {lo} and {hi}"
                    ));
                }
            }
            _ => problems.push(format!(
                "{key:?} p90: ours {} with {} amounts",
                o["p90"],
                amounts.len()
            )),
        }
    }
    for key in ours.keys() {
        if !keys.contains(key) {
            problems.push(format!("window {key:?} is not in DuckDB's result"));
        }
    }
    problems
}

/// Waits until every view's output agrees with DuckDB; returns the number of records of each.
async fn wait_for_agreement(
    stack: &Stack,
    expected: &BTreeMap<String, Vec<Value>>,
    service_log: impl Fn() -> String,
) -> Result<BTreeMap<&'static str, usize>> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut counts = BTreeMap::new();
    for (name, topic, _) in views() {
        let theirs = expected.get(name).context("no expectation")?;
        loop {
            let (ours, n) = emitted(stack, topic).await?;
            let problems = compare(&ours, theirs);
            if problems.is_empty() {
                counts.insert(name, n);
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "view {name}: {} problems, e.g. {:?}\n{}",
                    problems.len(),
                    &problems[..problems.len().min(8)],
                    service_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(counts)
}

/// A lookup API key allowed only the `sliding` view (the harness's own key may read all).
const SLIDING_ONLY_KEY: &str = "sliding-only-key";

fn start_feature(stack: &Stack, dir: &Path) -> Result<Feature> {
    Feature::start(
        &stack.broker,
        &stack.registry,
        dir,
        // Checkpoints every 300 ms, so that the kill test's restart restores saved windows.
        &format!(
            "group_id = \"{}\"\nbatch_wait_ms = 20\ncheckpoint_ms = 300\n\n\
             [[feature.credentials]]\nname = \"sliding-reader\"\nsecret = \"{SLIDING_ONLY_KEY}\"\nviews = [\"sliding\"]\n",
            unique("feature")
        ),
        // A killed member leaves the group when its session times out (45 s by default).
        "[kafka.extra]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
    )
}

/// Every window type and aggregation, records in order, equal to DuckDB's; the lookup endpoint
/// serves an entity's latest window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_equal_duckdb_for_every_window_type_and_aggregation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_catalog(dir.path())?;
    let stack = Stack::start(dir.path()).await?;
    let mut feature = start_feature(&stack, dir.path())?;
    let events: Vec<Value> = (0..3_000).map(|i| event(i, 0)).collect();
    produce_events(&stack, &events).await?;
    flush(&stack).await?;
    let expected = expected(&events)?;
    let counts = wait_for_agreement(&stack, &expected, || feature.log()).await?;
    for (name, rows) in &expected {
        println!(
            "{name}: {} windows, DuckDB agrees ({} records emitted)",
            rows.len(),
            counts[name.as_str()]
        );
    }

    // The lookup: u3's latest tumbling window, as emitted.
    let (ours, _) = emitted(&stack, "test.f_tumbling").await?;
    let (key, row) = ours
        .iter()
        .filter(|((u, _), _)| u == "u3")
        .max_by_key(|((_, s), _)| *s)
        .context("u3 has windows")?;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/features/tumbling/u3", feature.api_url());
    // Who may look up (docs/security.md): no key or an unknown one is 401, a key for other
    // views 403, before anything about the view or entity is told.
    for (key, status) in [
        (None, 401),
        (Some("not-a-key"), 401),
        (Some(SLIDING_ONLY_KEY), 403),
    ] {
        let mut request = client.get(&url);
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), status, "key {key:?}");
        let body = response.text().await?;
        assert!(!body.contains("window_start"), "{body}");
    }
    let online: Value = client
        .get(&url)
        .header("Authorization", format!("Bearer {}", feature.lookup_key()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(online["window_start"], key.1, "{online}");
    assert_eq!(
        online["features"]["n"].as_f64(),
        row["n"].as_f64(),
        "{online}"
    );
    assert!(
        close(&online["features"]["spent"], &row["spent"]),
        "{online} vs {row}"
    );
    let missing = client
        .get(format!("{}/v1/features/tumbling/nobody", feature.api_url()))
        .header("X-API-Key", feature.lookup_key())
        .send()
        .await?;
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    assert!(feature.stop()?, "{}", feature.log());
    Ok(())
}

/// Records out of order within the allowed lateness update (and re-emit) their windows, so the
/// final features equal DuckDB's over all records; a record beyond the lateness goes to the late
/// topic (tumbling) or dlq.feature (the others) with the reason, and counts nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_records_within_lateness_count_and_later_ones_go_to_the_late_topic()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    write_catalog(dir.path())?;
    let stack = Stack::start(dir.path()).await?;
    let mut feature = start_feature(&stack, dir.path())?;
    // Up to 20 s back in time: inside the 30 s lateness.
    let events: Vec<Value> = (0..2_000).map(|i| event(i, 20_000)).collect();
    // In two parts, the second once windows of the first were emitted. The first ends 10 s
    // after a window boundary (T0 is 40 s into a minute; record 840 is at T0 + 210 s), so
    // records of the second, up to 20 s back, reach into the emitted window, which is emitted
    // again.
    const SPLIT: usize = 840;
    produce_events(&stack, &events[..SPLIT]).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_all(&stack.broker, "test.f_tumbling", 1, Duration::from_secs(1))?.is_empty() {
        ensure!(Instant::now() < deadline, "no output: {}", feature.log());
    }
    produce_events(&stack, &events[SPLIT..]).await?;
    // 5 minutes behind the newest record: beyond the lateness for every view.
    let mut too_late = event(2_000, 0);
    too_late["user"] = json!("u1");
    too_late["at"] = json!(T0 + 1_999 * 250 - 300_000);
    produce_events(&stack, std::slice::from_ref(&too_late)).await?;
    flush(&stack).await?;
    // A session window is open as long as it is within lateness of the watermark, and the
    // record falls inside u1's session: it counts there, and only there.
    let mut expected = expected(&events)?;
    let mut with_late = events.clone();
    with_late.push(too_late.clone());
    let sessions = self::expected(&with_late)?
        .remove("session")
        .context("session")?;
    expected.insert("session".to_string(), sessions);
    let counts = wait_for_agreement(&stack, &expected, || feature.log()).await?;
    // Out-of-order records re-emitted windows: more records than windows.
    let windows = expected["tumbling"].len();
    assert!(
        counts["tumbling"] > windows,
        "{} records for {windows} windows",
        counts["tumbling"]
    );

    let late = read_all(&stack.broker, "test.late", 1, Duration::from_secs(30))?;
    assert_eq!(late.len(), 1);
    let message = &late[0].headers["tributary.error.message"];
    let at = too_late["at"].as_i64().unwrap_or_default();
    assert!(
        message.starts_with(&format!("feature tumbling: event time {at} is "))
            && message.contains("ms behind the partition's watermark")
            && message.contains("allowed lateness 30000 ms"),
        "{message}"
    );
    assert_eq!(late[0].headers["tributary.error.class"], "late");
    let dlq = read_all(&stack.broker, "dlq.feature", 2, Duration::from_secs(10))?;
    assert_eq!(dlq.len(), 1, "only the hopping view finds it too late");
    let message = &dlq[0].headers["tributary.error.message"];
    assert!(
        message.starts_with("feature hopping: event time"),
        "{message}"
    );
    assert!(feature.stop()?, "{}", feature.log());
    Ok(())
}

/// kill -9 mid-stream and a restart: the state comes back from the changelog, input already
/// counted is skipped, and the final features equal DuckDB's (an uninterrupted run's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_stream_changes_no_final_feature() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_catalog(dir.path())?;
    let stack = Stack::start(dir.path()).await?;
    let mut feature = start_feature(&stack, dir.path())?;
    let events: Vec<Value> = (0..4_000).map(|i| event(i, 0)).collect();
    produce_events(&stack, &events[..2_500]).await?;
    // Kill once windows are being emitted.
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_all(&stack.broker, "test.f_hopping", 50, Duration::from_secs(1))?.len() < 50 {
        ensure!(
            Instant::now() < deadline,
            "no output before the kill: {}",
            feature.log()
        );
    }
    feature.kill()?;
    produce_events(&stack, &events[2_500..]).await?;
    tokio::time::sleep(stack.broker.replacement_delay()).await;
    feature.restart()?;
    flush(&stack).await?;
    let expected = expected(&events)?;
    wait_for_agreement(&stack, &expected, || feature.log()).await?;
    assert!(
        feature.log().contains("restored window state"),
        "{}",
        feature.log()
    );
    assert!(feature.stop()?, "{}", feature.log());
    Ok(())
}
