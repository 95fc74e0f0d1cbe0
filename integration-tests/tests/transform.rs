//! The transform service through a real broker and registry: the repository's declared
//! transforms (validation, deduplication, lookup enrichment, URL parsing, normalisation), a test
//! catalog exercising casts, renames, derived columns, filters, time zones, hashing and masking,
//! and a kill -9 mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tributary_integration_tests::{ReadRecord, Stack, Transform, key_of, read_all, unique};

fn repo_schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

const T0: i64 = 1_764_000_000_000;

fn event_id(i: u64) -> String {
    format!("7d3c1c9e-2f4b-4c1a-8e0d-{i:012x}")
}

fn web_event(id: u64, user: &str, kind: &str, at: i64, url: &str) -> Value {
    json!({
        "event_id": event_id(id),
        "user_id": user,
        "event_type": kind,
        "occurred_at": at,
        "page": {"url": url},
        "properties": {}
    })
}

fn customer(id: i64, country: &str, segment: Option<&str>, op: &str) -> Value {
    let row = json!({
        "customer_id": id,
        "email": format!("c{id}@shop.test"),
        "full_name": format!("Customer {id}"),
        "country": country,
        "segment": segment,
        "created_at": T0 * 1000,
        "updated_at": T0 * 1000,
    });
    json!({
        "id": id,
        "before": null,
        "after": row,
        "op": op,
        "source": {"connector": "test", "db": "shop", "schema": "shop", "table": "customers", "ts_ms": T0},
        "ts_ms": T0,
    })
}

fn by_event_id(records: &[(String, Value)]) -> BTreeMap<String, Vec<Value>> {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, v) in records {
        map.entry(v["event_id"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(v.clone());
    }
    map
}

/// Waits (up to `wait`) for `n` records on `clean.web_events`, then reads what is there a few
/// seconds later (duplicates may still arrive): the first read's count, every record, and how
/// many times each event id came out.
async fn clean_event_ids(
    stack: &Stack,
    n: u64,
    wait: Duration,
) -> Result<(usize, Vec<ReadRecord>, BTreeMap<String, u64>)> {
    let out = read_all(&stack.broker, "clean.web_events", n as usize, wait)?.len();
    let all = read_all(
        &stack.broker,
        "clean.web_events",
        usize::MAX,
        Duration::from_secs(5),
    )?;
    let mut ids = BTreeMap::new();
    for r in &all {
        let v = stack.decode(&r.payload).await?;
        *ids.entry(v["event_id"].as_str().unwrap_or_default().to_string())
            .or_insert(0u64) += 1;
    }
    Ok((out, all, ids))
}

/// The repository's `clean_web_events`: URL parsing, trimming, enrichment from the customers
/// table; rule failures to dlq.transform with the rule named; duplicates within the hour dropped
/// and outside it kept; a customer changed after start is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_web_events_validates_deduplicates_and_enriches() -> Result<()> {
    let stack = Stack::start(&repo_schemas()).await?;
    stack
        .produce(
            "db.shop.customers",
            &[
                ("1", customer(1, "fr", Some("vip"), "r")),
                ("2", customer(2, "DE", None, "r")),
            ],
        )
        .await?;
    let group = unique("transform");
    let mut transform = Transform::start(
        &stack.broker,
        &stack.registry,
        &repo_schemas(),
        &format!("group_id = \"{group}\"\nonly = [\"clean_web_events\"]\nbatch_wait_ms = 20"),
        "",
    )?;

    let mut referred = web_event(1, "1", "page_view", T0, "  https://shop.test/p/1?x=1#top ");
    referred["page"]["referrer"] = json!("https://User@WWW.Search.test:8443/q?s=shoes");
    let mut purchase = web_event(2, "2", "purchase", T0 + 1_000, "http://shop.test");
    purchase["amount"] = json!("12.50");
    let mut negative = web_event(13, "2", "purchase", T0, "https://shop.test/cart");
    negative["amount"] = json!("-5.00");
    let good_and_bad = vec![
        ("1", referred),
        ("2", purchase),
        (
            "99",
            web_event(3, "99", "click", T0 + 2_000, "https://shop.test/a/b/"),
        ),
        ("  ", web_event(10, "  ", "click", T0, "https://shop.test/")),
        ("1", web_event(11, "1", "click", T0, "ftp://shop.test/file")),
        (
            "2",
            web_event(12, "2", "purchase", T0, "https://shop.test/cart"),
        ),
        ("2", negative),
        // Retries of event 1: 10 s later (inside the hour: dropped), 2 h later (kept).
        (
            "1",
            web_event(1, "1", "page_view", T0 + 10_000, "https://shop.test/p/1"),
        ),
        (
            "1",
            web_event(1, "1", "page_view", T0 + 7_200_000, "https://shop.test/p/1"),
        ),
    ];
    stack.produce("raw.web_events", &good_and_bad).await?;
    stack
        .produce_raw("raw.web_events", "1", b"not avro at all".to_vec())
        .await?;

    let out = stack
        .read("clean.web_events", 4, Duration::from_secs(60))
        .await
        .with_context(|| transform.log())?;
    // Nothing beyond the four expected records arrives.
    let more = read_all(&stack.broker, "clean.web_events", 5, Duration::from_secs(3))?;
    assert_eq!(more.len(), 4, "unexpected extra output: {out:?}");
    let events = by_event_id(&out);
    assert_eq!(events.len(), 3, "{out:?}");
    let first = &events[&event_id(1)];
    assert_eq!(
        first.len(),
        2,
        "the retry 2 h later is kept, the one 10 s later dropped"
    );
    let e1 = &first[0];
    assert_eq!(e1["user_id"], "1");
    assert_eq!(e1["page_url"], "https://shop.test/p/1?x=1#top");
    assert_eq!(e1["page_path"], "/p/1");
    assert_eq!(e1["referrer_host"], "www.search.test");
    assert_eq!(e1["country"], "FR");
    assert_eq!(e1["customer_segment"], "vip");
    assert_eq!(e1["device"], "web");
    assert_eq!(e1["event_type"], "page_view");
    assert_eq!(e1["occurred_at"], T0);
    assert_eq!(first[1]["occurred_at"], T0 + 7_200_000);
    let e2 = &events[&event_id(2)][0];
    assert_eq!(e2["page_path"], "/");
    assert_eq!(e2["referrer_host"], Value::Null);
    assert_eq!(e2["amount"], 1250);
    assert_eq!(e2["country"], "DE");
    assert_eq!(e2["customer_segment"], Value::Null);
    let e3 = &events[&event_id(3)][0];
    assert_eq!(e3["page_path"], "/a/b/");
    assert_eq!(e3["country"], Value::Null, "user 99 is no customer");
    // Keys are the output's key field.
    for (key, v) in &out {
        assert_eq!(key, v["user_id"].as_str().unwrap_or_default());
    }

    let dlq = read_all(&stack.broker, "dlq.transform", 5, Duration::from_secs(30))?;
    let mut reasons: Vec<(String, String)> = dlq
        .iter()
        .map(|r| {
            (
                r.headers
                    .get("tributary.error.class")
                    .cloned()
                    .unwrap_or_default(),
                r.headers
                    .get("tributary.error.message")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert_eq!(reasons[0].0, "decode", "{reasons:?}");
    let rules: BTreeSet<&str> = reasons[1..]
        .iter()
        .map(|(class, message)| {
            assert_eq!(class, "validation");
            assert!(
                message.starts_with("transform clean_web_events: rule "),
                "{message}"
            );
            message
                .trim_start_matches("transform clean_web_events: rule ")
                .split(' ')
                .next()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        rules,
        BTreeSet::from([
            "amount_in_range",
            "page_url_is_http",
            "purchase_has_amount",
            "user_id_present"
        ])
    );
    for r in &dlq {
        assert_eq!(
            r.headers.get("tributary.source.topic").map(String::as_str),
            Some("raw.web_events")
        );
        assert_eq!(
            r.headers.get("tributary.stage").map(String::as_str),
            Some("transform")
        );
    }

    // A customer changed after start: later events carry the new country.
    stack
        .produce(
            "db.shop.customers",
            &[("1", customer(1, "be", Some("vip"), "u"))],
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_id = 100;
    let mut seen = 4;
    loop {
        stack
            .produce(
                "raw.web_events",
                &[(
                    "1",
                    web_event(next_id, "1", "click", T0 + 100_000, "https://shop.test/"),
                )],
            )
            .await?;
        seen += 1;
        let out = stack
            .read("clean.web_events", seen, Duration::from_secs(30))
            .await?;
        let latest = out
            .iter()
            .find(|(_, v)| v["event_id"] == event_id(next_id))
            .context("the new event did not come out")?;
        if latest.1["country"] == "BE" {
            break;
        }
        assert_eq!(latest.1["country"], "FR");
        if Instant::now() > deadline {
            bail!("the customer update was not picked up within 60 s");
        }
        next_id += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(transform.stop()?, "clean shutdown: {}", transform.log());
    Ok(())
}

const SIGNUP: &str = r#"{"type": "record", "name": "Signup", "namespace": "test", "fields": [
  {"name": "id", "type": "string"},
  {"name": "email", "type": "string"},
  {"name": "full_name", "type": "string"},
  {"name": "age", "type": "string"},
  {"name": "signed_up", "type": "string", "doc": "local time with its UTC offset"},
  {"name": "country", "type": "string"},
  {"name": "score", "type": "double"}
]}"#;

const USER: &str = r#"{"type": "record", "name": "User", "namespace": "test", "fields": [
  {"name": "user_id", "type": "long"},
  {"name": "email_sha256", "type": "string"},
  {"name": "email_masked", "type": "string"},
  {"name": "name", "type": "string"},
  {"name": "age", "type": "int"},
  {"name": "signed_up_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "country", "type": "string"},
  {"name": "score_pct", "type": "double"}
]}"#;

const SIGNUP_CATALOG: &str = r#"
[[topic]]
name = "test.signups"
key_field = "id"

[[topic]]
name = "test.users"
key_field = "user_id"
event_time_field = "signed_up_at"

[[transform]]
name = "users"
inputs = ["test.signups"]
output = "test.users"
sql = """
SELECT
  CAST(trim(id) AS BIGINT) AS user_id,
  encode(sha256(lower(trim(email))), 'hex') AS email_sha256,
  concat(substr(lower(trim(email)), 1, 1), '***', substr(lower(trim(email)), strpos(trim(email), '@'))) AS email_masked,
  regexp_replace(trim(full_name), '\\s+', ' ', 'g') AS name,
  CAST(age AS INT) AS age,
  to_timestamp_millis(signed_up) AS signed_up_at,
  upper(trim(country)) AS country,
  score * 100 AS score_pct
FROM input
WHERE lower(trim(country)) <> 'test'
"""
"#;

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Casts, renames, derived columns, a filter, normalisation, time zones to UTC, hashing and
/// masking, declared in a catalog of the test's own; a value the output cannot hold (an age
/// that is no number) goes to the dead-letter topic naming the field, the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_sql_casts_renames_derives_filters_hashes_and_masks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("catalog.toml"), SIGNUP_CATALOG)?;
    std::fs::write(dir.path().join("test.signups-value.avsc"), SIGNUP)?;
    std::fs::write(dir.path().join("test.users-value.avsc"), USER)?;
    let stack = Stack::start(dir.path()).await?;
    let mut transform = Transform::start(
        &stack.broker,
        &stack.registry,
        dir.path(),
        &format!("group_id = \"{}\"\nbatch_wait_ms = 20", unique("transform")),
        "",
    )?;
    let signup = |id: &str,
                  email: &str,
                  name: &str,
                  age: &str,
                  at: &str,
                  country: &str,
                  score: f64| {
        json!({"id": id, "email": email, "full_name": name, "age": age, "signed_up": at, "country": country, "score": score})
    };
    stack
        .produce(
            "test.signups",
            &[
                (
                    "41",
                    signup(
                        " 41 ",
                        " Jane.Doe@Example.COM ",
                        "  Jane   Doe ",
                        "34",
                        "2026-11-28T10:00:00+02:00",
                        " fr ",
                        0.25,
                    ),
                ),
                (
                    "42",
                    signup(
                        "42",
                        "bob@shop.test",
                        "Bob",
                        "51",
                        "2026-11-28T23:30:00-05:00",
                        "us",
                        0.5,
                    ),
                ),
                (
                    "43",
                    signup(
                        "43",
                        "qa@shop.test",
                        "QA bot",
                        "1",
                        "2026-11-28T00:00:00Z",
                        "test",
                        1.0,
                    ),
                ),
                (
                    "44",
                    signup(
                        "44",
                        "x@shop.test",
                        "X",
                        "forty",
                        "2026-11-28T00:00:00Z",
                        "de",
                        0.1,
                    ),
                ),
            ],
        )
        .await?;
    let out = stack
        .read("test.users", 2, Duration::from_secs(60))
        .await
        .with_context(|| transform.log())?;
    assert_eq!(
        read_all(&stack.broker, "test.users", 3, Duration::from_secs(3))?.len(),
        2
    );
    let mut out: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
    out.sort_by_key(|v| v["user_id"].as_i64());
    assert_eq!(
        out[0],
        json!({
            "user_id": 41,
            "email_sha256": sha256_hex("jane.doe@example.com"),
            "email_masked": "j***@example.com",
            "name": "Jane Doe",
            "age": 34,
            // 10:00 at UTC+2 is 08:00 UTC.
            "signed_up_at": 1_795_852_800_000_i64,
            "country": "FR",
            "score_pct": 25.0
        })
    );
    assert_eq!(
        out[1]["signed_up_at"], 1_795_926_600_000_i64,
        "23:30 at UTC-5 is 04:30 UTC the next day"
    );
    assert_eq!(out[1]["email_masked"], "b***@shop.test");
    assert_eq!(out[1]["country"], "US");
    let dlq = read_all(&stack.broker, "dlq.transform", 1, Duration::from_secs(30))?;
    assert_eq!(dlq.len(), 1);
    let message = &dlq[0].headers["tributary.error.message"];
    assert!(message.starts_with("transform users: "), "{message}");
    assert_eq!(key_of(&dlq[0]), "44");
    assert!(transform.stop()?, "{}", transform.log());
    Ok(())
}

/// An SQL whose result does not fit the output schema stops the service at start-up with a
/// message naming the transform and the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_mismatch_is_a_start_up_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let catalog = SIGNUP_CATALOG.replace("AS score_pct\n", "AS score_percent\n");
    std::fs::write(dir.path().join("catalog.toml"), catalog)?;
    std::fs::write(dir.path().join("test.signups-value.avsc"), SIGNUP)?;
    std::fs::write(dir.path().join("test.users-value.avsc"), USER)?;
    let stack = Stack::start(dir.path()).await?;
    let mut transform = Transform::start(&stack.broker, &stack.registry, dir.path(), "", "")?;
    let status = transform
        .wait_exit(Duration::from_secs(60))?
        .context("the transform kept running")?;
    assert!(!status.success());
    let log = transform.log();
    assert!(
        log.contains("transform users: what the SQL makes of test.signups does not fit the schema of test.users"),
        "{log}"
    );
    assert!(log.contains("no column score_pct"), "{log}");
    assert!(
        log.contains("column score_percent is not a field of the output schema"),
        "{log}"
    );
    Ok(())
}

/// kill -9 while records flow, then a restart: every input record comes out at least once;
/// duplicates are counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_stream_loses_nothing() -> Result<()> {
    let stack = Stack::start(&repo_schemas()).await?;
    let group = unique("transform");
    let mut transform = Transform::start(
        &stack.broker,
        &stack.registry,
        &repo_schemas(),
        &format!(
            "group_id = \"{group}\"\nonly = [\"clean_web_events\"]\nbatch_records = 500\nbatch_wait_ms = 20"
        ),
        // A killed member leaves the group when its session times out (45 s by default).
        "[kafka.extra]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
    )?;
    const N: u64 = 10_000;
    let events: Vec<(String, Value)> = (0..N)
        .map(|i| {
            let user = format!("{}", i % 50);
            let v = web_event(
                i,
                &user,
                "page_view",
                T0 + i as i64,
                &format!("https://shop.test/p/{i}"),
            );
            (user, v)
        })
        .collect();
    let produce = async {
        for chunk in events.chunks(2_000) {
            let refs: Vec<(&str, Value)> =
                chunk.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            stack.produce("raw.web_events", &refs).await?;
        }
        anyhow::Ok(())
    };
    produce.await?;
    // Kill once part of the input came out.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = read_all(
            &stack.broker,
            "clean.web_events",
            3_000,
            Duration::from_secs(2),
        )?
        .len();
        if n >= 3_000 {
            break;
        }
        if Instant::now() > deadline {
            bail!("no progress before the kill: {}", transform.log());
        }
    }
    transform.kill()?;
    transform.restart()?;
    let (out, all, ids) = clean_event_ids(&stack, N, Duration::from_secs(300)).await?;
    let missing: Vec<u64> = (0..N)
        .filter(|i| !ids.contains_key(&event_id(*i)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?} (read {})",
        missing.len(),
        &missing[..missing.len().min(5)],
        out
    );
    let duplicates: u64 = ids.values().map(|n| n - 1).sum();
    println!(
        "kill -9 mid-stream: {N} records in, {} out, {duplicates} duplicates, 0 lost",
        all.len()
    );
    assert_eq!(all.len() as u64, N + duplicates);
    assert!(transform.stop()?, "{}", transform.log());
    Ok(())
}

/// A registry outage while records of a writer schema the transform has not seen wait: the
/// handler fails the batch as `Unavailable` before sending anything, the consumer loop hands it
/// again with backoff (`tributary_bus_handler_retries_total`), the service keeps running, and
/// once the registry is back every record comes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_holds_the_batch_and_loses_nothing() -> Result<()> {
    let mut stack = Stack::start(&repo_schemas()).await?;
    let group = unique("transform");
    let mut transform = Transform::start(
        &stack.broker,
        &stack.registry,
        &repo_schemas(),
        &format!(
            "group_id = \"{group}\"\nonly = [\"clean_web_events\"]\nbatch_records = 500\nbatch_wait_ms = 20"
        ),
        "",
    )?;
    // Ready: the output schema registered, the lookups loaded, the loop running.
    let admin = transform.admin_url()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reqwest::get(format!("{admin}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline || !transform.is_running() {
            bail!("the transform did not become ready: {}", transform.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A second, compatible version of the raw schema: its id is new to the transform.
    let topic = stack
        .catalog
        .topic("raw.web_events")
        .context("raw.web_events in the catalog")?;
    let mut evolved: Value = serde_json::from_str(&topic.value_schema_json)?;
    evolved["fields"]
        .as_array_mut()
        .context("a record schema")?
        .push(json!({"name": "test_note", "type": ["null", "string"], "default": null}));
    let evolved = evolved.to_string();
    let id = stack
        .client
        .register(&topic.value_subject(), &evolved)
        .await?;
    let schema = apache_avro::Schema::parse_str(&evolved)?;
    const N: u64 = 200;
    let mut payloads = Vec::new();
    for i in 0..N {
        let mut event = web_event(i, "7", "page_view", T0 + i as i64, "https://shop.test/p/1");
        event["test_note"] = json!(format!("note {i}"));
        payloads.push(tributary_core::schema::wire::frame(
            id,
            &tributary_core::schema::json::json_to_avro_datum(&event, &schema)?,
        ));
    }
    stack.registry.kill()?;
    for payload in payloads {
        stack.produce_raw("raw.web_events", "7", payload).await?;
    }
    // The registry stays down while the batch is retried: nothing comes out, nothing stops.
    let metrics = format!("{admin}/metrics");
    let deadline = Instant::now() + Duration::from_secs(120);
    let retries = loop {
        let text = reqwest::get(&metrics).await?.text().await?;
        let retries = text
            .lines()
            .find_map(|l| l.strip_prefix("tributary_bus_handler_retries_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if retries >= 2.0 {
            break retries;
        }
        if Instant::now() > deadline || !transform.is_running() {
            bail!("no retries seen: {}", transform.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(transform.is_running(), "{}", transform.log());
    let early = read_all(
        &stack.broker,
        "clean.web_events",
        usize::MAX,
        Duration::from_secs(2),
    )?;
    assert!(
        early.is_empty(),
        "{} records out before the registry came back",
        early.len()
    );
    stack.registry.restart()?;
    let (out, all, ids) = clean_event_ids(&stack, N, Duration::from_secs(120)).await?;
    let missing = (0..N).filter(|i| !ids.contains_key(&event_id(*i))).count();
    let twice = ids.values().filter(|n| **n > 1).count();
    println!(
        "registry outage: {retries} retries, {N} records in, {} out, {missing} missing, {twice} twice",
        all.len()
    );
    assert_eq!(missing, 0, "read {}: {}", out, transform.log());
    assert_eq!(twice, 0);
    assert_eq!(all.len() as u64, N);
    assert!(transform.stop()?, "{}", transform.log());
    Ok(())
}
