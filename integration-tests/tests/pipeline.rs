//! Fault suite scenario 7 (docs/reliability.md): the whole pipeline under kills. Web events go
//! over HTTP into ingest, through transform (validation, deduplication) to `clean.web_events`,
//! through the feature service to `features.user_activity`, and every topic into the lake;
//! transform, feature and archive are each SIGKILLed twice while events flow and restarted.
//! Counts must reconcile at every stage: nothing lost, dead letters where the rules say, the
//! features counting each clean record once, the lake holding each record once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tributary_core::schema::wire;
use tributary_integration_tests::{
    Archive, Feature, Ingest, LakeWatch, ReadRecord, Service, Stack, Transform, committed_and_end,
    read_to_end, to_json, unique,
};

fn repo_schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// Events sent.
const EVENTS: u64 = 30_000;
/// Users (entities of the feature view).
const USERS: u64 = 40;
/// Events per HTTP request (NDJSON), and requests per second.
const BATCH: u64 = 100;
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// Event time between two events: the run spans EVENTS × 5 ms = 150 s of event time, inside
/// the view's 10-minute allowed lateness, so that a record a restarted service reads again is
/// never late.
const EVENT_STEP_MS: i64 = 5;
/// Every 37th event breaks `page_url_is_http` (dead-lettered by transform).
const INVALID_EVERY: u64 = 37;
/// Every 53rd valid event is sent again five events later (dropped by transform's dedup).
const RESENT_EVERY: u64 = 53;
/// The feature view's hopping windows.
const SLIDE_MS: i64 = 15 * 60_000;
const SIZE_MS: i64 = 60 * 60_000;

const KEYS: &str = r#"
[[ingest.credentials]]
name = "web"
secret = "web-key"
topics = ["raw.web_events"]
"#;

fn t0() -> i64 {
    // Whole hours, so that the run's events fall in a few windows per user.
    1_764_000_000_000 - 1_764_000_000_000 % SIZE_MS
}

fn event_id(i: u64) -> String {
    format!("5e1f0c2a-9b7d-4e3f-8a6c-{i:012x}")
}

fn invalid(i: u64) -> bool {
    i.is_multiple_of(INVALID_EVERY)
}

fn event(i: u64, user: u64, at: i64, valid: bool) -> Value {
    let url = if valid {
        format!("https://shop.test/p/{i}")
    } else {
        format!("ftp://shop.test/p/{i}")
    };
    json!({
        "event_id": event_id(i),
        "user_id": format!("user-{user}"),
        "event_type": "page_view",
        "occurred_at": at,
        "page": {"url": url},
    })
}

/// Starts of the hopping windows holding `at`.
fn windows_of(at: i64) -> impl Iterator<Item = i64> {
    let last = at - at.rem_euclid(SLIDE_MS);
    (0..SIZE_MS / SLIDE_MS).map(move |k| last - k * SLIDE_MS)
}

/// A stage that is killed, and its consumer group.
struct Stage {
    name: &'static str,
    group: String,
    inputs: Vec<&'static str>,
}

/// The first stage whose group has not committed the end of its inputs, if any. Checked in
/// pipeline order: a stage commits only after its outputs were acknowledged, so the next
/// stage's check sees them.
fn lagging(stack: &Stack, stages: &[Stage]) -> Result<Option<String>> {
    for stage in stages {
        for topic in &stage.inputs {
            for (p, committed, end) in committed_and_end(&stack.broker, &stage.group, topic)? {
                if committed < end {
                    return Ok(Some(format!(
                        "{} at {committed} of {end} in {topic} partition {p}",
                        stage.name
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// Decodes Confluent-framed Avro records to JSON, each writer schema fetched once.
struct Decoder<'a> {
    stack: &'a Stack,
    schemas: BTreeMap<u32, apache_avro::Schema>,
}

impl Decoder<'_> {
    async fn decode(&mut self, payload: &[u8]) -> Result<Value> {
        let (id, mut body) = wire::parse(payload)?;
        if !self.schemas.contains_key(&id) {
            let text = self.stack.client.schema_by_id(id).await?;
            self.schemas
                .insert(id, apache_avro::Schema::parse_str(&text)?);
        }
        let schema = self.schemas.get(&id).context("schema just fetched")?;
        let value = apache_avro::from_avro_datum(schema, &mut body, None)?;
        ensure!(body.is_empty(), "{} bytes after the record", body.len());
        to_json(value)
    }

    /// Every record of `topic`, decoded.
    async fn topic(&mut self, topic: &str) -> Result<Vec<(ReadRecord, Value)>> {
        let broker = &self.stack.broker;
        let records =
            tokio::task::block_in_place(|| read_to_end(broker, topic, Duration::from_secs(60)))?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let value = self
                .decode(&r.payload)
                .await
                .with_context(|| format!("{topic} offset {} of {}", r.offset, r.partition))?;
            out.push((r, value));
        }
        Ok(out)
    }
}

fn text<'a>(value: &'a Value, name: &str) -> Result<&'a str> {
    value
        .get(name)
        .and_then(Value::as_str)
        .with_context(|| format!("no text {name} in {value}"))
}

fn number(value: &Value, name: &str) -> Result<i64> {
    value
        .get(name)
        .and_then(Value::as_i64)
        .with_context(|| format!("no number {name} in {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_killed_twice_counts_reconcile() -> Result<()> {
    use rand::Rng;
    use rand::seq::SliceRandom;
    let started = Instant::now();
    let (seed, mut rng) = tributary_integration_tests::faults::fault_rng()?;
    let stack = Stack::start(&repo_schemas()).await?;
    let ingest = Ingest::start(&stack.broker, &stack.registry, KEYS, "")?;
    let lake = tempfile::tempdir()?;
    // A killed member leaves its group when its session times out (45 s by default).
    let session =
        "[kafka.extra]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"";
    let stages = [
        Stage {
            name: "transform",
            group: unique("pipeline-transform"),
            inputs: vec!["raw.web_events"],
        },
        Stage {
            name: "feature",
            group: unique("pipeline-feature"),
            inputs: vec!["clean.web_events"],
        },
        Stage {
            name: "archive",
            group: unique("pipeline-archive"),
            inputs: vec![
                "raw.web_events",
                "clean.web_events",
                "features.user_activity",
            ],
        },
    ];
    let mut transform = Transform::start(
        &stack.broker,
        &stack.registry,
        &repo_schemas(),
        &format!(
            "group_id = \"{}\"\nonly = [\"clean_web_events\"]\nbatch_wait_ms = 20",
            stages[0].group
        ),
        session,
    )?;
    let mut feature = Feature::start(
        &stack.broker,
        &stack.registry,
        &repo_schemas(),
        &format!(
            "group_id = \"{}\"\nbatch_wait_ms = 20\ncheckpoint_ms = 1000",
            stages[1].group
        ),
        session,
    )?;
    let mut archive = Archive::start(
        &stack.broker,
        &stack.registry,
        &format!("group_id = \"{}\"\nmax_open_seconds = 2", stages[2].group),
        &format!("url = \"file://{}\"", lake.path().display()),
        session,
    )?;

    // What is sent: events in event-time order, some invalid, some sent twice, then one event
    // a day ahead per user, whose event time closes every window of the run.
    let t0 = t0();
    let mut plan: Vec<Value> = Vec::new();
    let mut resend: Vec<(u64, Value)> = Vec::new();
    let (mut valid, mut invalid_ids) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..EVENTS {
        let e = event(i, i % USERS, t0 + i as i64 * EVENT_STEP_MS, !invalid(i));
        if invalid(i) {
            invalid_ids.insert(event_id(i));
        } else {
            valid.insert(event_id(i));
            if i.is_multiple_of(RESENT_EVERY) {
                resend.push((i + 5, e.clone()));
            }
        }
        plan.push(e);
        while resend.first().is_some_and(|(at, _)| *at == i) {
            let (_, again) = resend.remove(0);
            plan.push(again);
        }
    }
    let resent = plan.len() - EVENTS as usize;
    for user in 0..USERS {
        let i = EVENTS + user;
        plan.push(event(i, user, t0 + 86_400_000, true));
        valid.insert(event_id(i));
    }
    let url = format!("{}/v1/topics/raw.web_events/records", ingest.url());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let sender = tokio::spawn({
        let plan = plan.clone();
        async move {
            let mut tick = tokio::time::interval(BATCH_EVERY);
            for chunk in plan.chunks(BATCH as usize) {
                tick.tick().await;
                let body: String = chunk.iter().map(|e| format!("{e}\n")).collect();
                let response = http
                    .post(&url)
                    .header("x-api-key", "web-key")
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                ensure!(
                    status.is_success(),
                    "ingest answered {status}: {}",
                    response.text().await.unwrap_or_default()
                );
            }
            anyhow::Ok(())
        }
    });

    // Each stage killed twice, in a seeded order at seeded moments while events flow, and
    // restarted after 0.2–1.5 s (as a supervisor would).
    let sending = BATCH_EVERY * u32::try_from(plan.len() as u64 / BATCH)?;
    let mut order = [
        "transform",
        "transform",
        "feature",
        "feature",
        "archive",
        "archive",
    ];
    order.shuffle(&mut rng);
    let mut moments: Vec<Duration> = order
        .iter()
        .map(|_| Duration::from_millis(rng.random_range(2_000..sending.as_millis() as u64 - 2_000)))
        .collect();
    moments.sort();
    let flow = Instant::now();
    let mut schedule = Vec::new();
    for (what, at) in order.iter().zip(moments) {
        tokio::time::sleep_until((flow + at).into()).await;
        // On Tansu, once the dead member's session has expired (`replacement_delay`).
        let down = Duration::from_millis(rng.random_range(200..1_500))
            .max(stack.broker.replacement_delay());
        let service: &mut Service = match *what {
            "transform" => &mut transform,
            "feature" => &mut feature,
            _ => &mut archive,
        };
        let killed = flow.elapsed();
        tokio::task::block_in_place(|| service.kill())?;
        tokio::time::sleep(down).await;
        tokio::task::block_in_place(|| service.restart())
            .with_context(|| format!("restart {what} (seed {seed})"))?;
        schedule.push(format!(
            "{what} at {:.1} s for {:.1} s",
            killed.as_secs_f64(),
            down.as_secs_f64()
        ));
    }
    let schedule = schedule.join(", ");
    sender
        .await?
        .with_context(|| format!("seed {seed}; {schedule}\n{}", ingest.log()))?;
    let sent_at = Instant::now();

    // Drained: every stage's group committed the end of its inputs.
    // Within nextest's 5 minutes, so that a stuck stage is reported with its logs.
    let deadline = Instant::now() + Duration::from_secs(150);
    while let Some(behind) = tokio::task::block_in_place(|| lagging(&stack, &stages))? {
        if Instant::now() > deadline {
            bail!(
                "not drained 150 s after the last event: {behind} (seed {seed}; {schedule})\n\
                 --- transform ---\n{}\n--- feature ---\n{}\n--- archive ---\n{}",
                transform.log(),
                feature.log(),
                archive.log()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let drain = sent_at.elapsed();

    let mut decoder = Decoder {
        stack: &stack,
        schemas: BTreeMap::new(),
    };
    let mut problems: Vec<String> = Vec::new();
    // Ingest: every event sent is in raw.web_events once (neither it nor the broker failed).
    let raw = decoder.topic("raw.web_events").await?;
    if raw.len() != plan.len() {
        problems.push(format!(
            "raw.web_events: {} records, {} sent",
            raw.len(),
            plan.len()
        ));
    }
    // Transform: raw = clean (distinct valid events) + dead letters (invalid ones) + the
    // duplicates its dedup dropped; whatever it wrote twice is counted.
    let clean = decoder.topic("clean.web_events").await?;
    let mut clean_ids: BTreeMap<String, usize> = BTreeMap::new();
    for (_, v) in &clean {
        *clean_ids
            .entry(text(v, "event_id")?.to_string())
            .or_default() += 1;
    }
    let lost: Vec<&String> = valid
        .iter()
        .filter(|id| !clean_ids.contains_key(*id))
        .collect();
    let leaked: Vec<&String> = invalid_ids
        .iter()
        .filter(|id| clean_ids.contains_key(*id))
        .collect();
    let clean_duplicates: usize = clean_ids.values().map(|n| n - 1).sum();
    let letters = decoder.topic("dlq.transform").await?;
    let mut lettered: BTreeSet<String> = BTreeSet::new();
    for (r, v) in &letters {
        let source = r.headers.values().any(|h| h == "raw.web_events");
        if source {
            lettered.insert(text(v, "event_id")?.to_string());
        }
    }
    let unlettered: Vec<&String> = invalid_ids
        .iter()
        .filter(|id| !lettered.contains(*id))
        .collect();
    for (what, list) in [
        ("valid events missing from clean.web_events", &lost),
        ("invalid events in clean.web_events", &leaked),
        ("invalid events not dead-lettered", &unlettered),
    ] {
        if !list.is_empty() {
            problems.push(format!(
                "{} {what}: {:?}",
                list.len(),
                &list[..list.len().min(5)]
            ));
        }
    }
    // Feature: each window counts every clean record once (clean duplicates included: the
    // feature service counts what it reads); the closing events' windows stay open.
    let mut expected: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (_, v) in &clean {
        let at = number(v, "occurred_at")?;
        if at >= t0 + 86_400_000 {
            continue;
        }
        for start in windows_of(at) {
            *expected
                .entry((text(v, "user_id")?.to_string(), start))
                .or_default() += 1;
        }
    }
    let mut emitted: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let features = decoder.topic("features.user_activity").await?;
    for (_, v) in &features {
        // An entity's windows are in one partition, in order: the last value read is final.
        emitted.insert(
            (text(v, "user_id")?.to_string(), number(v, "window_start")?),
            number(v, "page_views")?,
        );
    }
    let (mut counted_less, mut counted_more, mut not_emitted) = (0_i64, 0_i64, 0_usize);
    for (window, n) in &expected {
        match emitted.get(window) {
            Some(got) if got < n => counted_less += n - got,
            Some(got) => counted_more += got - n,
            None => not_emitted += 1,
        }
    }
    let unexpected = emitted
        .keys()
        .filter(|w| !expected.contains_key(*w))
        .count();
    if counted_less + counted_more > 0 || not_emitted + unexpected > 0 {
        problems.push(format!(
            "features.user_activity: {counted_less} records counted less, {counted_more} more, \
             {not_emitted} windows not emitted, {unexpected} unexpected"
        ));
    }
    let late = decoder.topic("dlq.feature").await?.len();
    if late > 0 {
        problems.push(format!(
            "{late} records dead-lettered by the feature service"
        ));
    }
    // Archive: each topic's records in the lake exactly once.
    let mut lake_figures = Vec::new();
    for (topic, records) in [
        ("raw.web_events", &raw),
        ("clean.web_events", &clean),
        ("features.user_activity", &features),
    ] {
        let mut watch = LakeWatch::default();
        watch.poll_dir(&lake.path().join(topic))?;
        let produced: Vec<(i32, i64)> = records
            .iter()
            .map(|(r, _)| (r.partition, r.offset))
            .collect();
        let check = watch.check_exactly_once(topic, &produced)?;
        lake_figures.push(format!(
            "{topic} {} rows in {} files",
            check.rows,
            watch.files.len()
        ));
        if !check.exactly_once() {
            problems.push(format!("lake {topic}: {check:?}"));
        }
    }

    println!(
        "whole pipeline on {} (seed {seed}; kills: {schedule}): {} events sent over HTTP ({} \
         invalid, {resent} sent twice, {USERS} closing), raw {} records; clean {} records ({} \
         distinct, {clean_duplicates} written twice by transform), {} dead letters ({} distinct); {} feature \
         windows, {} emitted ({counted_less} records counted less, {counted_more} more); lake: \
         {}; lost {}; drained {:.1} s after the last event; {:.0} s in all",
        stack.broker.kind().name(),
        plan.len(),
        invalid_ids.len(),
        raw.len(),
        clean.len(),
        clean_ids.len(),
        letters.len(),
        lettered.len(),
        expected.len(),
        emitted.len(),
        lake_figures.join(", "),
        lost.len(),
        drain.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (name, service) in [
        ("transform", &mut *transform),
        ("feature", &mut *feature),
        ("archive", &mut *archive),
    ] {
        ensure!(
            service.is_running(),
            "{name} exited (seed {seed})\n{}",
            service.log()
        );
    }
    ensure!(
        problems.is_empty(),
        "seed {seed}, kills {schedule}:\n{}",
        problems.join("\n")
    );
    Ok(())
}
