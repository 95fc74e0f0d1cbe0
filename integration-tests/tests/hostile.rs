//! Hostile input (issue #18, docs/security.md): a corpus of over a thousand distinct bad inputs,
//! over HTTP to ingest and as records on the bus to transform and the archive, interleaved with
//! good ones. Every bad one must be answered 4xx or dead-lettered with a reason, every good one
//! delivered, every service still running. And a canary: secrets set in the services'
//! configuration never appear in their logs, `/metrics`, error bodies or dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use serde_json::{Value, json};
use tributary_core::schema::wire;
use tributary_integration_tests::{
    Archive, Feature, Ingest, LakeWatch, ReadRecord, Service, Stack, Transform, read_to_end, unique,
};

fn repo_schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

const TOPIC: &str = "raw.web_events";
/// Good events per good HTTP request.
const GOOD_PER_REQUEST: usize = 5;
/// A good request (or record) after this many bad ones.
const GOOD_EVERY: usize = 10;

fn keys(secret: &str) -> String {
    format!("[[ingest.credentials]]\nname = \"web\"\nsecret = \"{secret}\"\ntopics = [\"raw.*\"]\n")
}

fn event_id(i: u64) -> String {
    format!("7a3c1e5b-2d4f-4a6b-8c9d-{i:012x}")
}

/// A valid web event (it passes every rule of `clean_web_events`).
fn good_event(i: u64) -> Value {
    json!({
        "event_id": event_id(i),
        "user_id": format!("user-{}", i % 17),
        "event_type": "page_view",
        "occurred_at": 1_764_000_000_000i64 + i as i64,
        "page": {"url": format!("https://shop.test/p/{i}")},
        "properties": {"k": "v"},
    })
}

/// An HTTP request of the corpus.
#[derive(Debug, Clone)]
struct Request {
    label: String,
    topic: String,
    content_type: Option<&'static str>,
    encoding: Option<&'static str>,
    body: Vec<u8>,
}

impl Request {
    fn json(label: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            label: label.into(),
            topic: TOPIC.to_string(),
            content_type: Some("application/json"),
            encoding: None,
            body: body.into(),
        }
    }

    fn avro(label: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            content_type: Some("application/vnd.confluent.avro"),
            ..Self::json(label, body)
        }
    }
}

/// Avro's zig-zag varint of `n` (as `apache-avro` writes a long).
fn long(n: i64) -> Vec<u8> {
    apache_avro::to_avro_datum(&Schema::Long, Avro::Long(n)).unwrap_or_default()
}

fn avro_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = long(b.len() as i64);
    out.extend_from_slice(b);
    out
}

/// The parts of a `raw.web_events` datum, written by hand so that each can be broken.
#[derive(Debug, Clone)]
struct Datum {
    event_id: Vec<u8>,
    user_id: Vec<u8>,
    occurred_at: i64,
    url: Vec<u8>,
    /// `None`: null; else the decimal's two's-complement bytes.
    amount: Option<Vec<u8>>,
    /// The properties map as written (block count, entries, end).
    properties: Vec<u8>,
}

impl Datum {
    fn good(i: u64) -> Self {
        let mut properties = long(1);
        properties.extend(avro_bytes(b"k"));
        properties.extend(avro_bytes(b"v"));
        properties.extend(long(0));
        Self {
            event_id: event_id(i).into_bytes(),
            user_id: format!("user-{}", i % 17).into_bytes(),
            occurred_at: 1_764_000_000_000 + i as i64,
            url: format!("https://shop.test/p/{i}").into_bytes(),
            amount: None,
            properties,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = avro_bytes(&self.event_id);
        out.extend(avro_bytes(&self.user_id));
        out.extend(long(0)); // session_id: null
        out.extend(long(0)); // event_type: page_view
        out.extend(long(self.occurred_at));
        out.extend(avro_bytes(&self.url));
        out.extend(long(0)); // page.referrer: null
        out.extend(long(0)); // user_agent: null
        match &self.amount {
            None => out.extend(long(0)),
            Some(bytes) => {
                out.extend(long(1));
                out.extend(avro_bytes(bytes));
            }
        }
        out.extend_from_slice(&self.properties);
        out
    }
}

/// Broken `raw.web_events` datums (framed with `id`), each with a label: the Avro corpus shared
/// by HTTP and the bus.
fn avro_corpus(id: u32, foreign_id: u32, base: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let good = Datum::good(base).encode();
    let framed = wire::frame(id, &good);
    for magic in 1..=255u8 {
        let mut b = framed.clone();
        b[0] = magic;
        out.push((format!("magic byte {magic:#04x}"), b));
    }
    for cut in 0..framed.len() {
        out.push((format!("truncated to {cut} bytes"), framed[..cut].to_vec()));
    }
    for k in 0..10u32 {
        out.push((
            format!("unknown schema id {}", 900_000 + k),
            wire::frame(900_000 + k, &good),
        ));
    }
    // A schema registered under another subject (items that take no bytes, by the billion).
    let mut nulls = long(2_000_000_000);
    nulls.extend(long(0));
    out.push((
        "a foreign schema claiming 2e9 nulls".into(),
        wire::frame(foreign_id, &nulls),
    ));
    for exp in 6..=18u32 {
        let mut d = Datum::good(base);
        d.properties = long(10i64.pow(exp));
        d.properties.extend(avro_bytes(b"k"));
        out.push((
            format!("a map claiming 1e{exp} entries"),
            wire::frame(id, &d.encode()),
        ));
    }
    for (n, size) in [
        (-1i64, 1i64 << 40),
        (-(1 << 40), 3),
        (i64::MIN, 0),
        (-5, -5),
    ] {
        let mut d = Datum::good(base);
        d.properties = long(n);
        d.properties.extend(long(size));
        d.properties.extend(avro_bytes(b"k"));
        out.push((
            format!("a map block of count {n} and size {size}"),
            wire::frame(id, &d.encode()),
        ));
    }
    let invalid_utf8: [&[u8]; 10] = [
        b"\xff",
        b"\xfe\xff",
        b"user-\xc0\x80",
        b"\xed\xa0\x80",
        b"\x80user",
        b"user\xe2\x82",
        b"\xf8\x88\x80\x80\x80",
        b"\xf4\x90\x80\x80",
        b"a\xc3",
        b"\xc1\xbf",
    ];
    for (k, bytes) in invalid_utf8.iter().enumerate() {
        let mut d = Datum::good(base);
        d.user_id = bytes.to_vec();
        out.push((
            format!("invalid UTF-8 in user_id #{k}"),
            wire::frame(id, &d.encode()),
        ));
    }
    for exp in [20u32, 24, 31, 32, 40, 48, 56, 62] {
        let mut d = good.clone();
        // The event id claims 2^exp bytes.
        let rest = d.split_off(avro_bytes(&Datum::good(base).event_id).len());
        d = long(1i64 << exp);
        d.extend(rest);
        out.push((
            format!("an event id claiming 2^{exp} bytes"),
            wire::frame(id, &d),
        ));
    }
    for len in 17..=40usize {
        let mut d = Datum::good(base);
        let mut bytes = vec![0x7f];
        bytes.extend(std::iter::repeat_n(0xff, len - 1));
        d.amount = Some(bytes);
        out.push((
            format!("a decimal(12,2) amount of {len} bytes"),
            wire::frame(id, &d.encode()),
        ));
    }
    out
}

/// Bad JSON bodies for `raw.web_events`.
fn json_corpus(base: u64) -> Vec<Request> {
    let mut out = Vec::new();
    let good = json!([good_event(base)]).to_string();
    for cut in 0..good.len() {
        out.push(Request::json(
            format!("JSON truncated to {cut} bytes"),
            good.as_bytes()[..cut].to_vec(),
        ));
    }
    // Each field given each kind of JSON value its schema does not take.
    let kinds: [(&str, Value); 6] = [
        ("int", json!(123)),
        ("float", json!(-1.5)),
        ("bool", json!(true)),
        ("array", json!([1, 2])),
        ("object", json!({"x": 1})),
        ("null", Value::Null),
    ];
    let fields: [(&[&str], &[&str]); 10] = [
        (
            &["event_id"],
            &["int", "float", "bool", "array", "object", "null"],
        ),
        (
            &["user_id"],
            &["int", "float", "bool", "array", "object", "null"],
        ),
        (
            &["session_id"],
            &["int", "float", "bool", "array", "object"],
        ),
        (
            &["event_type"],
            &["int", "float", "bool", "array", "object", "null"],
        ),
        (
            &["occurred_at"],
            &["float", "bool", "array", "object", "null"],
        ),
        (&["page"], &["int", "float", "bool", "array", "null"]),
        (
            &["page", "url"],
            &["int", "float", "bool", "array", "object", "null"],
        ),
        (
            &["page", "referrer"],
            &["int", "float", "bool", "array", "object"],
        ),
        (
            &["user_agent"],
            &["int", "float", "bool", "array", "object"],
        ),
        (&["properties"], &["int", "float", "bool", "array", "null"]),
    ];
    for (path, bad) in fields {
        for (kind, value) in kinds.iter().filter(|(k, _)| bad.contains(k)) {
            let mut e = good_event(base);
            set(&mut e, path, value.clone());
            out.push(Request::json(
                format!("{} as {kind}", path.join(".")),
                json!([e]).to_string(),
            ));
        }
    }
    for value in [json!(1), json!(true), json!([]), json!({"a": {"b": 1}})] {
        let mut e = good_event(base);
        e["properties"] = json!({ "k": value });
        out.push(Request::json(
            format!("a property of value {value}"),
            json!([e]).to_string(),
        ));
    }
    for path in [
        &["event_id"][..],
        &["user_id"],
        &["event_type"],
        &["occurred_at"],
        &["page"],
        &["page", "url"],
    ] {
        let mut e = good_event(base);
        remove(&mut e, path);
        out.push(Request::json(
            format!("without {}", path.join(".")),
            json!([e]).to_string(),
        ));
    }
    for (label, value) in [
        ("event_type not a symbol", json!("teleport")),
        ("event_type empty", json!("")),
    ] {
        let mut e = good_event(base);
        e["event_type"] = value;
        out.push(Request::json(label, json!([e]).to_string()));
    }
    // Times beyond a long, and decimals beyond decimal(12,2) or not numbers at all.
    for raw in [
        "1e300",
        "-1e300",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "1.5",
    ] {
        let body = good.replacen(
            &format!("\"occurred_at\":{}", 1_764_000_000_000i64 + base as i64),
            &format!("\"occurred_at\":{raw}"),
            1,
        );
        out.push(Request::json(format!("occurred_at {raw}"), body));
    }
    for amount in [
        json!("1e400"),
        json!("99999999999999999999"),
        json!("10000000000.00"),
        json!("-10000000000.00"),
        json!("NaN"),
        json!("Infinity"),
        json!("-"),
        json!(""),
        json!("1.2.3"),
        json!("0x10"),
        json!(1e300),
        json!(-1e300),
    ] {
        let mut e = good_event(base);
        e["amount"] = amount.clone();
        out.push(Request::json(
            format!("amount {amount}"),
            json!([e]).to_string(),
        ));
    }
    // Deep nesting.
    for depth in [129usize, 200, 1_000, 10_000, 100_000] {
        let body = format!(
            "[{{\"event_id\":\"x\",\"properties\":{}{}}}]",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        out.push(Request::json(format!("nested {depth} deep"), body));
    }
    // Invalid UTF-8 inside a string, at several places.
    for (k, bad) in [
        &b"\xff"[..],
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\xe2\x82",
        b"\x80",
    ]
    .iter()
    .enumerate()
    {
        for anchor in ["user-", "https://", "page_view", "v\"}"] {
            if let Some(at) = good.find(anchor) {
                let mut body = good.as_bytes().to_vec();
                let at = at + 1;
                body.splice(at..at, bad.iter().copied());
                out.push(Request::json(
                    format!("invalid UTF-8 #{k} after {anchor:?}"),
                    body,
                ));
            }
        }
    }
    for (label, body) in [
        ("empty body", ""),
        ("empty batch", "[]"),
        ("a bare number", "42"),
        ("a string", "\"event\""),
        ("null", "null"),
        ("an array of numbers", "[1,2,3]"),
        ("an array of nulls", "[null]"),
        ("two documents", "[] []"),
        ("a lone brace", "{"),
    ] {
        out.push(Request::json(label, body));
    }
    // NDJSON: a bad line among good ones refuses the request.
    for (k, value) in kinds.iter().enumerate() {
        let mut bad = good_event(base);
        bad["user_id"] = value.1.clone();
        let body = format!("{}\n{}\n{}\n", good_event(base), good_event(base + 1), bad);
        out.push(Request {
            content_type: Some("application/x-ndjson"),
            ..Request::json(
                format!("NDJSON with a {} user_id at line 3 #{k}", value.0),
                body,
            )
        });
    }
    out
}

fn set(value: &mut Value, path: &[&str], to: Value) {
    let mut at = value;
    for p in &path[..path.len() - 1] {
        at = &mut at[*p];
    }
    at[path[path.len() - 1]] = to;
}

fn remove(value: &mut Value, path: &[&str]) {
    let mut at = value;
    for p in &path[..path.len() - 1] {
        at = &mut at[*p];
    }
    if let Some(map) = at.as_object_mut() {
        map.remove(path[path.len() - 1]);
    }
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Requests wrong in their framing: encodings, content types, topics.
fn framing_corpus(base: u64) -> Result<Vec<Request>> {
    let good = json!([good_event(base)]).to_string();
    let bomb = vec![b' '; 64 << 20];
    let mut out = vec![
        Request {
            encoding: Some("gzip"),
            ..Request::json("a gzip bomb (64 MiB of spaces)", gzip(&bomb)?)
        },
        Request {
            encoding: Some("zstd"),
            ..Request::json(
                "a zstd bomb (64 MiB of spaces)",
                zstd::encode_all(&bomb[..], 19)?,
            )
        },
        Request {
            encoding: Some("gzip"),
            ..Request::json("not gzip at all", good.clone())
        },
        Request {
            encoding: Some("zstd"),
            ..Request::json("gzip said to be zstd", gzip(good.as_bytes())?)
        },
        Request {
            encoding: Some("br"),
            ..Request::json("an unknown encoding", good.clone())
        },
        Request {
            encoding: Some("gzip"),
            ..Request::json("truncated gzip", {
                let g = gzip(good.as_bytes())?;
                g[..g.len() / 2].to_vec()
            })
        },
    ];
    for ct in [
        None,
        Some("text/plain"),
        Some("application/xml"),
        Some("application/avro"),
        Some("multipart/form-data"),
    ] {
        out.push(Request {
            content_type: ct,
            ..Request::json(format!("content type {ct:?}"), good.clone())
        });
    }
    for topic in [
        "raw.nope",
        "db.shop.orders",
        "train.requests",
        "clean.web_events",
        "..",
    ] {
        out.push(Request {
            topic: topic.to_string(),
            ..Request::json(format!("topic {topic}"), good.clone())
        });
    }
    Ok(out)
}

/// What came back for a request.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

async fn send(http: &reqwest::Client, ingest: &Ingest, key: &str, r: &Request) -> Result<Answer> {
    let mut request = http
        .post(format!("{}/v1/topics/{}/records", ingest.url(), r.topic))
        .header("X-API-Key", key)
        .body(r.body.clone());
    if let Some(ct) = r.content_type {
        request = request.header("Content-Type", ct);
    }
    if let Some(enc) = r.encoding {
        request = request.header("Content-Encoding", enc);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("send {}", r.label))?;
    Ok(Answer {
        status: response.status().as_u16(),
        body: response.text().await.unwrap_or_default(),
    })
}

/// Dead letters of `topic` by source offset of `raw.web_events`.
fn dead_letters(records: &[ReadRecord]) -> BTreeMap<(i32, i64), BTreeMap<String, String>> {
    records
        .iter()
        .filter(|r| r.headers.get("tributary.source.topic").map(String::as_str) == Some(TOPIC))
        .filter_map(|r| {
            let p = r.headers.get("tributary.source.partition")?.parse().ok()?;
            let o = r.headers.get("tributary.source.offset")?.parse().ok()?;
            Some(((p, o), r.headers.clone()))
        })
        .collect()
}

/// Waits until `topic` holds at least `count` records; returns them.
fn wait_for(stack: &Stack, topic: &str, count: usize, wait: Duration) -> Result<Vec<ReadRecord>> {
    let deadline = Instant::now() + wait;
    loop {
        let records = read_to_end(&stack.broker, topic, Duration::from_secs(30))?;
        if records.len() >= count || Instant::now() > deadline {
            return Ok(records);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_inputs_over_http_and_the_bus_are_refused_or_dead_lettered() -> Result<()> {
    let started = Instant::now();
    let stack = Stack::start(&repo_schemas()).await?;
    let key = unique("corpus-key");
    let mut ingest = Ingest::start(&stack.broker, &stack.registry, &keys(&key), "")?;
    let id = stack
        .client
        .register(
            &format!("{TOPIC}-value"),
            &stack
                .catalog
                .topic(TOPIC)
                .context("topic")?
                .value_schema_json,
        )
        .await?;
    let foreign_id = stack
        .client
        .register(
            &format!("{}-value", unique("foreign")),
            r#"{"type":"record","name":"X","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
        )
        .await?;
    // The hand-written datum is the catalog schema's.
    ensure!(
        Datum::good(1).encode() == stack.encode(TOPIC, &good_event(1)).await?[5..],
        "the corpus's datum writer disagrees with the schema"
    );
    let lake = tempfile::tempdir()?;
    let mut transform = Transform::start(
        &stack.broker,
        &stack.registry,
        &repo_schemas(),
        &format!(
            "group_id = \"{}\"\nonly = [\"clean_web_events\"]\nbatch_wait_ms = 20",
            unique("corpus-transform")
        ),
        "",
    )?;
    let mut archive = Archive::start(
        &stack.broker,
        &stack.registry,
        &format!(
            "group_id = \"{}\"\nmax_open_seconds = 2",
            unique("corpus-archive")
        ),
        &format!("url = \"file://{}\"", lake.path().display()),
        "",
    )?;

    // Over HTTP.
    let mut http_corpus: Vec<Request> = json_corpus(0);
    http_corpus.extend(framing_corpus(0)?);
    http_corpus.extend(
        avro_corpus(id, foreign_id, 0)
            .into_iter()
            .map(|(label, body)| Request::avro(format!("Avro: {label}"), body)),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut next_good = 1_000u64;
    let mut good_sent = 0usize;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (n, request) in http_corpus.iter().enumerate() {
        let answer = send(&http, &ingest, &key, request).await?;
        *statuses.entry(answer.status).or_default() += 1;
        let error_named = serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .is_some();
        if !(400..500).contains(&answer.status) || !error_named {
            wrong.push(format!(
                "{}: {} {}",
                request.label, answer.status, answer.body
            ));
        }
        if n % GOOD_EVERY == GOOD_EVERY - 1 {
            let events: Vec<Value> = (0..GOOD_PER_REQUEST as u64)
                .map(|k| good_event(next_good + k))
                .collect();
            next_good += GOOD_PER_REQUEST as u64;
            let good = Request::json("good", json!(events).to_string());
            let answer = send(&http, &ingest, &key, &good).await?;
            ensure!(
                answer.status == 200,
                "a good request after {} was answered {} {}",
                request.label,
                answer.status,
                answer.body
            );
            good_sent += GOOD_PER_REQUEST;
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} of {} bad requests not answered 4xx with an error:\n{}",
        wrong.len(),
        http_corpus.len(),
        wrong.join("\n")
    );
    ensure!(ingest.is_running(), "ingest died:\n{}", ingest.log());

    // On the bus: the Avro corpus produced straight to the topic, around good records.
    let bus_corpus = avro_corpus(id, foreign_id, 500_000);
    let mut bad_labels = Vec::new();
    for (n, (label, payload)) in bus_corpus.iter().enumerate() {
        stack
            .produce_raw(TOPIC, &format!("bad-{n}"), payload.clone())
            .await?;
        bad_labels.push(label.clone());
        if n % GOOD_EVERY == GOOD_EVERY - 1 {
            stack
                .produce(TOPIC, &[("good", good_event(next_good))])
                .await?;
            next_good += 1;
            good_sent += 1;
        }
    }
    let distinct: BTreeSet<&[u8]> = http_corpus
        .iter()
        .map(|r| r.body.as_slice())
        .chain(bus_corpus.iter().map(|(_, b)| b.as_slice()))
        .collect();
    println!(
        "corpus: {} requests over HTTP ({:?} by status), {} records on the bus, {} distinct \
         inputs; {good_sent} good events",
        http_corpus.len(),
        statuses,
        bus_corpus.len(),
        distinct.len()
    );
    ensure!(
        http_corpus.len() + bus_corpus.len() >= 1_000,
        "the corpus has {} inputs",
        http_corpus.len() + bus_corpus.len()
    );

    // Every good event reaches clean.web_events; every bad record is dead-lettered by
    // transform and by the archive, naming the record and the reason.
    let raw = read_to_end(&stack.broker, TOPIC, Duration::from_secs(60))?;
    ensure!(
        raw.len() == good_sent + bus_corpus.len(),
        "{} records in {TOPIC}, expected {good_sent} good and {} bad",
        raw.len(),
        bus_corpus.len()
    );
    let bad_at: BTreeSet<(i32, i64)> = raw
        .iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"bad-")))
        .map(|r| (r.partition, r.offset))
        .collect();
    let clean = tokio::task::block_in_place(|| {
        wait_for(
            &stack,
            "clean.web_events",
            good_sent,
            Duration::from_secs(180),
        )
    })?;
    let clean_ids: BTreeSet<String> = {
        let mut ids = BTreeSet::new();
        for r in &clean {
            let v = stack.decode(&r.payload).await?;
            ids.insert(v["event_id"].as_str().unwrap_or_default().to_string());
        }
        ids
    };
    ensure!(
        clean.len() == good_sent && clean_ids.len() == good_sent,
        "clean.web_events holds {} records ({} distinct), {good_sent} good sent",
        clean.len(),
        clean_ids.len()
    );
    for (stage, service) in [("transform", &mut *transform), ("archive", &mut *archive)] {
        let letters = tokio::task::block_in_place(|| {
            wait_for(
                &stack,
                &format!("dlq.{stage}"),
                bus_corpus.len(),
                Duration::from_secs(180),
            )
        })?;
        let by_source = dead_letters(&letters);
        let missing: Vec<String> = raw
            .iter()
            .filter(|r| bad_at.contains(&(r.partition, r.offset)))
            .filter(|r| !by_source.contains_key(&(r.partition, r.offset)))
            .map(|r| {
                let n: usize = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default())
                    .trim_start_matches("bad-")
                    .parse()
                    .unwrap_or(usize::MAX);
                bad_labels.get(n).cloned().unwrap_or_default()
            })
            .collect();
        let good_lettered = by_source.keys().filter(|at| !bad_at.contains(at)).count();
        let unexplained: Vec<&BTreeMap<String, String>> = by_source
            .values()
            .filter(|h| {
                h.get("tributary.error.message")
                    .is_none_or(|m| m.trim().is_empty())
            })
            .collect();
        let mut classes: BTreeMap<String, usize> = BTreeMap::new();
        for h in by_source.values() {
            *classes
                .entry(h.get("tributary.error.class").cloned().unwrap_or_default())
                .or_default() += 1;
        }
        println!(
            "{stage}: {} dead letters by class {classes:?}",
            by_source.len()
        );
        ensure!(
            missing.is_empty() && good_lettered == 0 && unexplained.is_empty(),
            "{stage}: {} bad records not dead-lettered ({}), {good_lettered} good ones \
             dead-lettered, {} without a reason\n{}",
            missing.len(),
            missing.join("; "),
            unexplained.len(),
            service.log()
        );
        ensure!(service.is_running(), "{stage} died:\n{}", service.log());
    }
    // The lake holds the good records of the topic, each once, and nothing else.
    let mut watch = LakeWatch::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        watch.poll_dir(&lake.path().join(TOPIC))?;
        if watch.row_count() >= good_sent || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        watch.row_count() == good_sent,
        "{} rows of {TOPIC} in the lake, {good_sent} good records",
        watch.row_count()
    );
    ensure!(ingest.is_running(), "ingest died:\n{}", ingest.log());
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A secret the tests put in every service's configuration, looked for everywhere it must not
/// be: logs, `/metrics`, HTTP error bodies, dead letters (headers and values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_appears_in_logs_metrics_errors_or_dead_letters() -> Result<()> {
    let stack = Stack::start(&repo_schemas()).await?;
    let ingest_key = unique("canary-ingest-key");
    let ingest = Ingest::start(&stack.broker, &stack.registry, &keys(&ingest_key), "")?;
    let lake = tempfile::tempdir()?;
    let transform = Transform::start(
        &stack.broker,
        &stack.registry,
        &repo_schemas(),
        &format!(
            "group_id = \"{}\"\nonly = [\"clean_web_events\"]\nbatch_wait_ms = 20",
            unique("canary-transform")
        ),
        "",
    )?;
    let feature = Feature::start(
        &stack.broker,
        &stack.registry,
        &repo_schemas(),
        &format!(
            "group_id = \"{}\"\nbatch_wait_ms = 20",
            unique("canary-feature")
        ),
        "",
    )?;
    let archive = Archive::start(
        &stack.broker,
        &stack.registry,
        &format!(
            "group_id = \"{}\"\nmax_open_seconds = 2",
            unique("canary-archive")
        ),
        &format!("url = \"file://{}\"", lake.path().display()),
        "",
    )?;
    // A service whose registry password is wrong (a canary too): it must not start, and must not
    // say the password it tried.
    let wrong_password = unique("canary-wrong-password");
    let section = stack
        .registry
        .section()
        .replace(stack.registry.services_password(), &wrong_password);
    let mut refused = Service::start(
        "tributary-transform",
        &format!(
            "[transform]\nschemas = \"{}\"\ngroup_id = \"{}\"\nonly = [\"clean_web_events\"]\n\n\
             [kafka]\nbootstrap_servers = \"{}\"\n\n{section}",
            repo_schemas().display(),
            unique("canary-refused"),
            stack.broker.bootstrap()
        ),
    )?;
    let canaries = [
        ("ingest key", ingest_key.clone()),
        ("feature lookup key", feature.lookup_key().to_string()),
        (
            "registry services password",
            stack.registry.services_password().to_string(),
        ),
        (
            "registry admin password",
            stack.registry.admin().1.to_string(),
        ),
        ("wrong registry password", wrong_password.clone()),
    ];

    // Traffic that exercises the error paths: good and bad events, wrong keys, refused topics,
    // lookups without and with keys, a poison record on the bus.
    let http = reqwest::Client::new();
    let mut bodies = Vec::new();
    let url = format!("{}/v1/topics/{TOPIC}/records", ingest.url());
    let mut good = good_event(1);
    good["event_id"] = json!(event_id(900_001));
    let mut bad = good_event(2);
    bad["occurred_at"] = json!("yesterday");
    for (key, body) in [
        (ingest_key.as_str(), json!([good]).to_string()),
        (ingest_key.as_str(), json!([bad]).to_string()),
        (ingest_key.as_str(), "{".to_string()),
        ("not-the-key", json!([good]).to_string()),
        (wrong_password.as_str(), json!([good]).to_string()),
    ] {
        let response = http
            .post(&url)
            .header("X-API-Key", key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        bodies.push(response.text().await?);
    }
    let response = http
        .post(format!("{}/v1/topics/train.requests/records", ingest.url()))
        .header("X-API-Key", &ingest_key)
        .header("Content-Type", "application/json")
        .body("[{}]")
        .send()
        .await?;
    bodies.push(response.text().await?);
    // The lookup API listens once the service has restored its state.
    let deadline = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("{}/v1/features/user_activity/x", feature.api_url()))
        .send()
        .await
        .is_err()
    {
        ensure!(
            Instant::now() < deadline,
            "the lookup API never listened:\n{}",
            feature.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for key in [Some(feature.lookup_key()), Some("wrong"), None] {
        let mut request = http.get(format!(
            "{}/v1/features/user_activity/user-1",
            feature.api_url()
        ));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        bodies.push(request.send().await?.text().await?);
    }
    let registry_answer = http
        .get(format!("{}/subjects", stack.registry.url()))
        .basic_auth("services", Some(&wrong_password))
        .send()
        .await?;
    bodies.push(registry_answer.text().await?);
    stack
        .produce_raw(TOPIC, "poison", b"\x00\x00\x00\x00\x01garbage".to_vec())
        .await?;

    // Let every service handle it: the poison record dead-lettered by transform and archive.
    let letters: Vec<ReadRecord> = tokio::task::block_in_place(|| -> Result<Vec<ReadRecord>> {
        let mut all = wait_for(&stack, "dlq.transform", 1, Duration::from_secs(120))?;
        all.extend(wait_for(
            &stack,
            "dlq.archive",
            1,
            Duration::from_secs(120),
        )?);
        Ok(all)
    })?;
    ensure!(letters.len() >= 2, "dead letters: {}", letters.len());
    let exited = tokio::task::block_in_place(|| refused.wait_exit(Duration::from_secs(60)))?;
    ensure!(
        exited.is_some_and(|s| !s.success()),
        "a service with a wrong registry password must stop with an error:\n{}",
        refused.log()
    );
    ensure!(
        refused.log().contains("401"),
        "it says why: {}",
        refused.log()
    );

    let mut places: Vec<(String, String)> = Vec::new();
    for (name, log) in [
        ("ingest log", ingest.log()),
        ("transform log", transform.log()),
        ("feature log", feature.log()),
        ("archive log", archive.log()),
        ("registry log", stack.registry.log()),
        ("refused transform log", refused.log()),
    ] {
        places.push((name.to_string(), log));
    }
    for (name, admin) in [
        ("ingest", ingest.admin_url()?),
        ("transform", transform.admin_url()?),
        ("feature", feature.admin_url()?),
        ("archive", archive.admin_url()?),
    ] {
        let metrics = http
            .get(format!("{admin}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        ensure!(
            metrics.contains("# TYPE"),
            "{name}'s /metrics answered: {metrics}"
        );
        places.push((format!("{name} /metrics"), metrics));
    }
    for (n, body) in bodies.iter().enumerate() {
        places.push((format!("HTTP answer #{n}"), body.clone()));
    }
    for r in &letters {
        places.push((
            format!("dead letter at {}:{}", r.partition, r.offset),
            format!("{:?} {}", r.headers, String::from_utf8_lossy(&r.payload)),
        ));
    }
    let mut leaks = Vec::new();
    for (what, secret) in &canaries {
        for (place, text) in &places {
            if text.contains(secret.as_str()) {
                leaks.push(format!("the {what} appears in the {place}"));
            }
        }
    }
    println!(
        "looked for {} secrets in {} places ({} bytes)",
        canaries.len(),
        places.len(),
        places.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
    if !leaks.is_empty() {
        bail!("{}", leaks.join("\n"));
    }
    Ok(())
}
