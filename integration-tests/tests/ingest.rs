//! The ingest HTTP API against a real broker and registry: every body format is consumed back
//! identical, every refusal leaves the topic untouched, a broker outage never yields a 2xx for a
//! record that is not stored, and CORS, the OpenAPI document and the metrics are served.

use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tributary_core::schema::json::json_to_avro;
use tributary_core::schema::registry::{RegistryClient, Version};
use tributary_core::schema::wire;
use tributary_integration_tests::{
    Broker, Ingest, Registry, create_catalog_topics, init_logs, unique,
};

const KEYS: &str = r#"
[[ingest.credentials]]
name = "web"
secret = "web-key"
topics = ["raw.web_events"]
"#;

/// A key for another topic only, a key for the `raw.` topics (as `tributary up`'s), and a
/// bearer token allowed every topic.
const MORE_KEYS: &str = r#"
[[ingest.credentials]]
name = "mobile"
secret = "mobile-key"
topics = ["raw.mobile_events"]

[[ingest.credentials]]
name = "apps"
secret = "raw-key"
topics = ["raw.*"]

[[ingest.credentials]]
name = "ops"
secret = "ops-token"
topics = ["*"]
"#;

const TOPIC: &str = "raw.web_events";
const SUBJECT: &str = "raw.web_events-value";
const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";
const AVRO: &str = "application/vnd.confluent.avro";

fn web_event(i: u32) -> Value {
    json!({
        "event_id": format!("0b6f2d3c-7f1e-4d8a-9a53-{:012x}", i),
        "user_id": format!("user-{}", i % 7),
        "event_type": "page_view",
        "occurred_at": 1_764_000_000_000_i64 + i64::from(i),
        "page": {"url": format!("https://shop.test/p/{i}")},
        "properties": {"i": i.to_string()}
    })
}

/// A web event using the schema's optional fields, unions, decimals and maps in turn.
fn rich_event(i: u32) -> Value {
    let mut e = web_event(i);
    match i % 4 {
        // Optional fields left out: the schema's defaults apply.
        0 => {
            if let Some(o) = e.as_object_mut() {
                o.remove("properties");
            }
        }
        1 => {
            e["session_id"] = json!(format!("s-{i}"));
            e["event_type"] = json!("click");
            e["occurred_at"] = json!(format!("2025-11-24T16:00:{:02}.123Z", i % 60));
            e["page"]["referrer"] = json!("https://search.test/?q=shoes&lang=fr");
        }
        2 => {
            e["event_type"] = json!("purchase");
            e["amount"] = json!("129.90");
            e["user_agent"] = json!("Mozilla/5.0 (X11; Linux x86_64)");
        }
        _ => {
            e["event_type"] = json!("add_to_cart");
            e["session_id"] = json!({"string": format!("s-{i}")});
            e["properties"] =
                json!({"sku": format!("sku-{i}"), "qty": "2", "note": "ünïcödé ✓ \"q\""});
        }
    }
    e
}

fn events(range: std::ops::Range<u32>) -> Vec<Value> {
    range.map(rich_event).collect()
}

fn ndjson(records: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        out.extend_from_slice(r.to_string().as_bytes());
        // Blank lines between records are allowed.
        out.extend_from_slice(if i == 1 { b"\n\n" } else { b"\n" });
    }
    out
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn zstd(data: &[u8]) -> Result<Vec<u8>> {
    Ok(zstd::encode_all(data, 3)?)
}

/// One test's services, dropped ingest first.
struct Stack {
    ingest: Ingest,
    registry: Registry,
    broker: Broker,
    http: reqwest::Client,
}

/// A fresh broker with the catalog's topics, a registry, and ingest configured with
/// `ingest_keys` in `[ingest]`, `kafka_keys` in `[kafka]` and `extra` at the end.
async fn stack(ingest_keys: &str, kafka_keys: &str, extra: &str) -> Result<Stack> {
    init_logs();
    let broker = Broker::start()?;
    create_catalog_topics(&broker).await?;
    let registry = Registry::start(&broker)?;
    let ingest = if kafka_keys.is_empty() {
        Ingest::start(&broker, &registry, ingest_keys, extra)?
    } else {
        Ingest::start_with_kafka(&broker, &registry, ingest_keys, kafka_keys, extra)?
    };
    Ok(Stack {
        ingest,
        registry,
        broker,
        http: reqwest::Client::new(),
    })
}

impl Stack {
    /// A POST to a topic's records, with an API key when given.
    fn post(&self, topic: &str, key: Option<&str>) -> RequestBuilder {
        let request = self
            .http
            .post(format!("{}/v1/topics/{topic}/records", self.ingest.url()));
        match key {
            Some(key) => request.header("x-api-key", key),
            None => request,
        }
    }

    /// A POST of a JSON body (one object or an array) with the `web` key.
    fn post_json(&self, body: &Value) -> RequestBuilder {
        self.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .body(body.to_string())
    }

    fn registry_client(&self) -> Result<RegistryClient> {
        self.registry.client()
    }

    /// Asserts that no record reached the topic: every partition's high-water mark is 0.
    fn assert_nothing_produced(&self, after: &str) -> Result<()> {
        let marks = high_water_marks(&self.broker, TOPIC)?;
        assert!(
            marks.iter().all(|&m| m == 0),
            "after {after}: records were produced, high-water marks {marks:?}\n{}",
            self.ingest.log()
        );
        Ok(())
    }

    /// Records in the topic, all partitions together.
    fn stored(&self) -> Result<i64> {
        Ok(high_water_marks(&self.broker, TOPIC)?.iter().sum())
    }
}

/// An answer of the service: status, Retry-After, and the JSON body (or the text).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

async fn reply(request: RequestBuilder) -> Result<Reply> {
    let response = request.send().await.context("send the request")?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// Asserts a refusal: its status and error name.
fn assert_refused(reply: &Reply, status: u16, error: &str, what: &str) {
    assert_eq!(reply.status.as_u16(), status, "{what}: {reply:?}");
    assert_eq!(reply.body["error"], error, "{what}: {reply:?}");
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: a message says why: {reply:?}"
    );
}

/// Asserts a 200 for `n` records on the topic; returns where the broker stored each.
fn assert_accepted(reply: &Reply, n: usize, schema_id: u32, what: &str) -> Vec<(i32, i64)> {
    assert_eq!(reply.status, StatusCode::OK, "{what}: {reply:?}");
    assert_eq!(reply.body["topic"], TOPIC, "{what}");
    assert_eq!(reply.body["schema_id"], schema_id, "{what}");
    let records = reply.body["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(records.len(), n, "{what}: one position per record");
    records
        .iter()
        .map(|r| {
            let partition = r["partition"].as_i64().and_then(|p| i32::try_from(p).ok());
            let offset = r["offset"].as_i64();
            match (partition, offset) {
                (Some(p), Some(o)) => (p, o),
                _ => panic!("{what}: bad position {r}"),
            }
        })
        .collect()
}

/// The high-water mark of every partition of `topic`.
fn high_water_marks(broker: &Broker, topic: &str) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = broker.kafka().client_config().create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    ensure!(partitions > 0, "topic {topic} has no partitions");
    (0..partitions)
        .map(|p| {
            let p = i32::try_from(p)?;
            Ok(consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))?
                .1)
        })
        .collect()
}

/// A record read back from the topic.
#[derive(Debug)]
struct Stored {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

/// Reads every record of `topic` from the beginning to the current high-water marks.
fn read_topic(broker: &Broker, topic: &str) -> Result<Vec<Stored>> {
    let marks = high_water_marks(broker, topic)?;
    let consumer: BaseConsumer = broker
        .kafka()
        .client_config()
        .set("group.id", unique("g-ingest"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..marks.len() {
        assignment.add_partition_offset(topic, i32::try_from(p)?, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let total = usize::try_from(marks.iter().sum::<i64>())?;
    let mut out = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < total {
        ensure!(
            Instant::now() < deadline,
            "read {} of the {total} records of {topic}",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        out.push(Stored {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
        });
    }
    Ok(out)
}

/// Decodes a framed value with the schema the registry has for its id.
async fn decode(registry: &RegistryClient, payload: &[u8]) -> Result<(u32, Avro)> {
    let (id, mut body) = wire::parse(payload)?;
    let schema = Schema::parse_str(&registry.schema_by_id(id).await?)?;
    let value = apache_avro::from_avro_datum(&schema, &mut body, None)?;
    ensure!(
        body.is_empty(),
        "{} bytes after the avro record",
        body.len()
    );
    Ok((id, value))
}

fn field<'a>(record: &'a Avro, name: &str) -> Option<&'a Avro> {
    match record {
        Avro::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}

fn event_id(record: &Avro) -> Option<String> {
    match field(record, "event_id")? {
        Avro::Uuid(u) => Some(u.to_string()),
        Avro::String(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_a_batch_and_answers_with_offsets() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    create_catalog_topics(&broker).await?;
    let registry = Registry::start(&broker)?;
    let ingest = Ingest::start(&broker, &registry, KEYS, "")?;
    let batch: Vec<Value> = (0..100).map(web_event).collect();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/topics/raw.web_events/records", ingest.url()))
        .header("x-api-key", "web-key")
        .json(&batch)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    assert_eq!(status, 200, "{body}\n{}", ingest.log());
    assert_eq!(body["records"].as_array().map(Vec::len), Some(100));
    assert_eq!(body["topic"], "raw.web_events");
    Ok(())
}

/// JSON object, JSON array, NDJSON, framed Avro, gzip and zstd bodies: each record is in the
/// topic where the answer says, keyed by `user_id`, and decodes (with the registry's schema for
/// its id) to exactly the Avro value of what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_format_is_consumed_back_identical() -> Result<()> {
    let s = stack(KEYS, "", "").await?;
    let registry = s.registry_client()?;
    let registered = registry.subject_version(SUBJECT, Version::Latest).await?;
    let schema = Schema::parse_str(&registered.schema)?;
    let id = registered.id;

    // Each request: what it was, the records it carried, and the answer.
    let mut sent: Vec<(&str, Vec<Value>, Reply)> = Vec::new();

    let one = rich_event(1);
    sent.push((
        "json object",
        vec![one.clone()],
        reply(s.post_json(&one)).await?,
    ));

    let array = events(10..16);
    let r = reply(s.post_json(&json!(array))).await?;
    sent.push(("json array", array, r));

    let lines = events(20..26);
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, NDJSON)
            .body(ndjson(&lines)),
    )
    .await?;
    sent.push(("ndjson", lines, r));

    let avro_event = rich_event(31);
    let datum = apache_avro::to_avro_datum(&schema, json_to_avro(&avro_event, &schema)?)?;
    let framed = wire::frame(id, &datum);
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, AVRO)
            .body(framed.clone()),
    )
    .await?;
    sent.push(("framed avro", vec![avro_event], r));

    let gz = events(40..46);
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .header(CONTENT_ENCODING, "gzip")
            .body(gzip(json!(gz).to_string().as_bytes())?),
    )
    .await?;
    sent.push(("gzip json array", gz, r));

    let zs = events(50..56);
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, NDJSON)
            .header(CONTENT_ENCODING, "zstd")
            .body(zstd(&ndjson(&zs))?),
    )
    .await?;
    sent.push(("zstd ndjson", zs, r));

    // Where each record should be, by the answers.
    let mut expected: BTreeMap<(i32, i64), (&str, Value)> = BTreeMap::new();
    for (what, records, r) in &sent {
        let positions = assert_accepted(r, records.len(), id, what);
        for (position, record) in positions.into_iter().zip(records) {
            let previous = expected.insert(position, (*what, record.clone()));
            assert!(
                previous.is_none(),
                "{what}: position {position:?} given twice"
            );
        }
    }

    let stored = read_topic(&s.broker, TOPIC)?;
    assert_eq!(
        stored.len(),
        expected.len(),
        "the topic holds exactly the records sent"
    );
    let mut partitions_of_user: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for record in &stored {
        let position = (record.partition, record.offset);
        let Some((what, json)) = expected.get(&position) else {
            panic!("a record at {position:?} that no answer listed");
        };
        let (writer_id, value) = decode(&registry, &record.payload).await?;
        assert_eq!(writer_id, id, "{what}: framed with the topic's schema id");
        let want = json_to_avro(json, &schema)?;
        assert_eq!(value, want, "{what}: the record at {position:?} as sent");
        let user = json["user_id"].as_str().unwrap_or_default();
        assert_eq!(
            record.key.as_deref(),
            Some(user.as_bytes()),
            "{what}: keyed by user_id"
        );
        partitions_of_user
            .entry(user.to_string())
            .or_default()
            .insert(record.partition);
        if *what == "framed avro" {
            assert_eq!(
                record.payload, framed,
                "avro bytes are produced as they came"
            );
        }
    }
    for (user, partitions) in &partitions_of_user {
        assert_eq!(partitions.len(), 1, "{user}: one key, one partition");
    }
    Ok(())
}

/// 401 without or with an unknown credential, 403 for a topic the key may not write, 404 for a
/// topic not in the catalog; nothing produced; then a valid bearer token is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_unknown_credentials_foreign_and_unknown_topics() -> Result<()> {
    let s = stack(&format!("{KEYS}{MORE_KEYS}"), "", "").await?;
    let body = json!([web_event(1), web_event(2)]).to_string();
    let json_body = |r: RequestBuilder| r.header(CONTENT_TYPE, JSON).body(body.clone());

    let r = reply(json_body(s.post(TOPIC, None))).await?;
    assert_refused(&r, 401, "unauthorized", "no credentials");
    for wrong in ["nope", "web-ke", "web-key2", "WEB-KEY"] {
        let r = reply(json_body(s.post(TOPIC, Some(wrong)))).await?;
        assert_refused(&r, 401, "unauthorized", &format!("unknown key {wrong}"));
    }
    let r = reply(json_body(
        s.post(TOPIC, None)
            .header("authorization", "Bearer not-a-token"),
    ))
    .await?;
    assert_refused(&r, 401, "unauthorized", "unknown bearer token");
    let r = reply(json_body(
        s.post(TOPIC, None)
            .header("authorization", "Basic d2ViOndlYi1rZXk="),
    ))
    .await?;
    assert_refused(&r, 401, "unauthorized", "basic authentication");

    let r = reply(json_body(s.post(TOPIC, Some("mobile-key")))).await?;
    assert_refused(&r, 403, "forbidden", "a key for another topic");
    assert!(
        !r.body.to_string().contains("mobile-key"),
        "the answer never shows the secret: {r:?}"
    );
    // A key scoped to a prefix writes nothing outside it: not the change-capture topics, not
    // the training requests (docs/security.md).
    for topic in ["train.requests", "db.shop.orders", "clean.web_events"] {
        let r = reply(json_body(s.post(topic, Some("raw-key")))).await?;
        assert_refused(&r, 403, "forbidden", &format!("raw.* key on {topic}"));
    }

    for key in ["web-key", "ops-token"] {
        let r = reply(json_body(s.post("raw.no_such_topic", Some(key)))).await?;
        assert_refused(&r, 404, "unknown_topic", "a topic not in the catalog");
    }
    // A wrong method or path is refused in the same JSON shape, a 405 naming what is allowed.
    let url = format!("{}/v1/topics/{TOPIC}/records", s.ingest.url());
    let response = s
        .http
        .get(&url)
        .header("x-api-key", "web-key")
        .send()
        .await?;
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(allow.as_deref(), Some("POST"), "{response:?}");
    let r = reply(s.http.get(&url).header("x-api-key", "web-key")).await?;
    assert_refused(&r, 405, "method_not_allowed", "GET on the records path");
    let r = reply(s.http.get(format!("{}/v2/nothing", s.ingest.url()))).await?;
    assert_refused(&r, 404, "not_found", "a path that is not served");
    s.assert_nothing_produced("401, 403 and 404")?;
    assert_eq!(
        high_water_marks(&s.broker, "raw.mobile_events")?
            .iter()
            .sum::<i64>(),
        0
    );

    // The same body with a valid bearer token is stored: the refusals were about credentials;
    // and with the prefix key, inside its prefix.
    let r = reply(json_body(
        s.post(TOPIC, None)
            .header("authorization", "Bearer ops-token"),
    ))
    .await?;
    assert_eq!(r.status, 200, "{r:?}");
    let r = reply(json_body(s.post(TOPIC, Some("raw-key")))).await?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.stored()?, 4);
    Ok(())
}

/// One invalid record among valid ones refuses the whole request with 400 naming the record
/// and field; malformed JSON, empty batches and bad Avro bodies too; nothing produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_record_refuses_the_whole_request() -> Result<()> {
    let s = stack(KEYS, "", "").await?;
    let invalid = |r: &Reply, record: u64, path: &str, what: &str| {
        assert_refused(r, 400, "invalid_record", what);
        assert_eq!(r.body["record"], record, "{what}: {r:?}");
        assert_eq!(r.body["path"], path, "{what}: {r:?}");
    };

    let mut batch = events(0..6);
    batch[3]["page"]["url"] = json!(7);
    let r = reply(s.post_json(&json!(batch))).await?;
    invalid(&r, 3, "$.page.url", "a number for page.url in record 3");
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("string")),
        "says what was expected: {r:?}"
    );

    let mut lines = events(10..14);
    if let Some(o) = lines[2].as_object_mut() {
        o.remove("user_id");
    }
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, NDJSON)
            .body(ndjson(&lines)),
    )
    .await?;
    invalid(&r, 2, "$.user_id", "ndjson line without user_id");

    let mut one = rich_event(20);
    one["properties"] = json!({"qty": 2});
    let r = reply(s.post_json(&one)).await?;
    invalid(&r, 0, "$.properties.qty", "a number in a map of strings");

    let mut bad_time = events(30..32);
    bad_time[1]["occurred_at"] = json!("yesterday");
    let r = reply(s.post_json(&json!(bad_time))).await?;
    invalid(&r, 1, "$.occurred_at", "a timestamp that is not one");

    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .body("[{\"event_id\": "),
    )
    .await?;
    invalid(&r, 0, "$", "malformed json");

    let r = reply(s.post_json(&json!([]))).await?;
    assert_refused(&r, 400, "no_records", "an empty array");
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .header(CONTENT_ENCODING, "gzip")
            .body(json!([web_event(1)]).to_string()),
    )
    .await?;
    assert_refused(&r, 400, "bad_encoding", "gzip that is not");

    // Avro: a truncated body, trailing bytes, and a schema id the registry does not know.
    let registry = s.registry_client()?;
    let registered = registry.subject_version(SUBJECT, Version::Latest).await?;
    let schema = Schema::parse_str(&registered.schema)?;
    let datum = apache_avro::to_avro_datum(&schema, json_to_avro(&rich_event(40), &schema)?)?;
    let framed = wire::frame(registered.id, &datum);
    let avro = |bytes: Vec<u8>| {
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, AVRO)
            .body(bytes)
    };
    let r = reply(avro(framed[..framed.len() - 4].to_vec())).await?;
    invalid(&r, 0, "$", "truncated avro");
    let mut trailing = framed.clone();
    trailing.extend_from_slice(b"junk");
    let r = reply(avro(trailing)).await?;
    invalid(&r, 0, "$", "bytes after the avro record");
    let r = reply(avro(vec![1, 2])).await?;
    invalid(&r, 0, "$", "not wire format");
    let r = reply(avro(wire::frame(registered.id + 1000, &datum))).await?;
    assert_refused(&r, 422, "schema_not_of_topic", "an unknown schema id");
    // An id of another topic's subject is refused too (#18: any schema id was taken).
    let foreign = registry
        .subject_version("raw.mobile_events-value", Version::Latest)
        .await?;
    let r = reply(avro(wire::frame(foreign.id, &datum))).await?;
    assert_refused(
        &r,
        422,
        "schema_not_of_topic",
        "another subject's schema id",
    );
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&foreign.id.to_string())),
        "{:?}",
        r.body
    );

    s.assert_nothing_produced("400s")?;

    // The first batch with its one bad field fixed goes through whole.
    batch[3]["page"]["url"] = json!("https://shop.test/fixed");
    let r = reply(s.post_json(&json!(batch))).await?;
    assert_accepted(&r, 6, registered.id, "the fixed batch");
    assert_eq!(s.stored()?, 6);
    Ok(())
}

/// A content type or encoding the service does not speak is refused with 415; nothing produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_content_types_and_encodings_are_415() -> Result<()> {
    let s = stack(KEYS, "", "").await?;
    let body = json!([web_event(1)]).to_string();
    for content_type in ["text/plain", "application/xml", "multipart/form-data"] {
        let r = reply(
            s.post(TOPIC, Some("web-key"))
                .header(CONTENT_TYPE, content_type)
                .body(body.clone()),
        )
        .await?;
        assert_refused(&r, 415, "unsupported_media_type", content_type);
    }
    let r = reply(s.post(TOPIC, Some("web-key")).body(body.clone())).await?;
    assert_refused(&r, 415, "unsupported_media_type", "no content type");
    for encoding in ["br", "deflate"] {
        let r = reply(
            s.post(TOPIC, Some("web-key"))
                .header(CONTENT_TYPE, JSON)
                .header(CONTENT_ENCODING, encoding)
                .body(body.clone()),
        )
        .await?;
        assert_refused(&r, 415, "unsupported_encoding", encoding);
    }
    s.assert_nothing_produced("415s")?;

    // Parameters and case of the media type do not matter.
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, "Application/JSON; charset=utf-8")
            .body(body),
    )
    .await?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.stored()?, 1);
    Ok(())
}

/// A JSON array of `records` padded with trailing whitespace to exactly `len` bytes.
fn padded(records: &[Value], len: usize) -> Vec<u8> {
    let mut body = json!(records).to_string().into_bytes();
    assert!(body.len() <= len, "records alone take {} bytes", body.len());
    body.resize(len, b' ');
    body
}

/// 413 for a body over max_body_bytes with and without Content-Length (chunked), for too many
/// records, and for gzip/zstd bombs over max_decompressed_bytes; nothing produced. Bodies at
/// exactly the limits are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_batches_are_413() -> Result<()> {
    const MAX_BODY: usize = 100_000;
    const MAX_DECOMPRESSED: usize = 1_000_000;
    let s = stack(
        &format!(
            "max_body_bytes = {MAX_BODY}\nmax_decompressed_bytes = {MAX_DECOMPRESSED}\nmax_records_per_request = 10\n{KEYS}"
        ),
        "",
        "",
    )
    .await?;
    let too_large = |r: &Reply, what: &str| assert_refused(r, 413, "body_too_large", what);

    // Five valid records, one byte over the limit.
    let big = padded(&events(0..5), MAX_BODY + 1);
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .body(big.clone()),
    )
    .await?;
    too_large(&r, "one byte over, with content-length");

    // Well over the limit, with Content-Length and chunked.
    let mut huge = events(0..5);
    for e in &mut huge {
        e["properties"]["blob"] = json!("x".repeat(30_000));
    }
    let huge = json!(huge).to_string().into_bytes();
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .body(huge.clone()),
    )
    .await?;
    too_large(&r, "150 kB with content-length");
    // Chunked: the first max_body_bytes + 1000 bytes at once, the rest 3 s later.
    let pause = Duration::from_secs(3);
    for body in [big, huge] {
        let n = body.len();
        let started = Instant::now();
        let r = reply(
            s.post(TOPIC, Some("web-key"))
                .header(CONTENT_TYPE, JSON)
                .body(chunked(body, MAX_BODY + 1, pause)),
        )
        .await?;
        too_large(&r, &format!("{n} bytes chunked, without content-length"));
        assert!(
            started.elapsed() < pause,
            "413 once the limit is passed, not after the whole body: {:?}",
            started.elapsed()
        );
    }

    let r = reply(s.post_json(&json!(events(0..11)))).await?;
    assert_refused(&r, 413, "too_many_records", "11 records, at most 10");

    // Bombs: one valid record then 50 MB of whitespace, compressed far under max_body_bytes.
    let mut bomb = json!([web_event(1)]).to_string().into_bytes();
    bomb.resize(50 * 1024 * 1024, b' ');
    for (encoding, compressed) in [("gzip", gzip(&bomb)?), ("zstd", zstd(&bomb)?)] {
        assert!(
            compressed.len() < MAX_BODY,
            "{encoding}: {}",
            compressed.len()
        );
        let r = reply(
            s.post(TOPIC, Some("web-key"))
                .header(CONTENT_TYPE, JSON)
                .header(CONTENT_ENCODING, encoding)
                .body(compressed),
        )
        .await?;
        too_large(&r, &format!("{encoding} bomb"));
    }
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .header(CONTENT_ENCODING, "gzip")
            .body(gzip(&padded(&events(0..3), MAX_DECOMPRESSED + 1))?),
    )
    .await?;
    too_large(&r, "gzip one byte over once decompressed");
    s.assert_nothing_produced("413s")?;

    // At the limits exactly: accepted, with and without Content-Length.
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .body(padded(&events(0..5), MAX_BODY)),
    )
    .await?;
    assert_eq!(r.status, 200, "exactly max_body_bytes: {r:?}");
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .body(chunked(
                padded(&events(5..10), MAX_BODY),
                usize::MAX,
                Duration::ZERO,
            )),
    )
    .await?;
    assert_eq!(r.status, 200, "exactly max_body_bytes chunked: {r:?}");
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .header(CONTENT_ENCODING, "gzip")
            .body(gzip(&padded(&events(10..13), MAX_DECOMPRESSED))?),
    )
    .await?;
    assert_eq!(r.status, 200, "exactly max_decompressed_bytes: {r:?}");
    let r = reply(s.post_json(&json!(events(20..30)))).await?;
    assert_eq!(r.status, 200, "exactly max_records_per_request: {r:?}");
    assert_eq!(s.stored()?, 5 + 5 + 3 + 10);
    Ok(())
}

/// A body streamed in 1000-byte chunks, hence sent without Content-Length (chunked transfer
/// encoding). What follows the first `pause_after` bytes (rounded up to whole chunks), if only
/// the end of the body, waits `pause`: an answer that comes sooner did not wait for the whole
/// body, and the service never closes the connection on a client still writing (which the
/// client could see as a reset instead of the answer).
fn chunked(body: Vec<u8>, pause_after: usize, pause: Duration) -> reqwest::Body {
    let mut chunks: Vec<(Duration, bytes::Bytes)> = body
        .chunks(1000)
        .map(|c| (Duration::ZERO, bytes::Bytes::copy_from_slice(c)))
        .collect();
    let at = pause_after.div_ceil(1000);
    if !pause.is_zero() {
        match chunks.get_mut(at) {
            Some(chunk) => chunk.0 = pause,
            None => chunks.push((pause, bytes::Bytes::new())),
        }
    }
    let stream = futures::stream::iter(chunks).then(|(wait, chunk)| async move {
        tokio::time::sleep(wait).await;
        Ok::<_, std::io::Error>(chunk)
    });
    reqwest::Body::wrap_stream(stream)
}

/// Over the per-key rate, 429 with Retry-After and nothing produced; other keys are not
/// limited, and the key is served again once tokens came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_is_429_with_retry_after() -> Result<()> {
    let keys = format!(
        "rate_limit_records_per_second = 1\nrate_limit_burst = 10\nmax_records_per_request = 10\n{KEYS}\n[[ingest.credentials]]\nname = \"web2\"\nsecret = \"web2-key\"\ntopics = [\"raw.web_events\"]\n"
    );
    let s = stack(&keys, "", "").await?;
    // Tokens come back at 1 a second from the burst on; on a loaded machine an answer can take
    // over a second (the broker's acknowledgement), so what is expected depends on the time
    // since the burst.
    let burst = Instant::now();
    let r = reply(s.post_json(&json!(events(0..10)))).await?;
    assert_eq!(r.status, 200, "the burst: {r:?}");

    let r = reply(s.post_json(&json!(events(10..20)))).await?;
    let back = burst.elapsed().as_secs();
    assert_refused(&r, 429, "rate_limited", "10 more at once");
    let wait: u64 = r
        .retry_after
        .as_deref()
        .context("429 without Retry-After")?
        .parse()?;
    assert!(
        wait <= 10 && wait + back + 1 >= 10,
        "10 tokens at 1/s, {back} s after the burst: {wait}"
    );
    // More records than tokens came back since the burst (at most a request's 10).
    let more = (u32::try_from(burst.elapsed().as_secs())? + 2).min(10);
    let r = reply(s.post_json(&json!(events(20..20 + more)))).await?;
    assert_refused(&r, 429, "rate_limited", "more than came back");
    assert_eq!(
        s.stored()?,
        10,
        "nothing of the refused requests was produced"
    );

    let r = reply(
        s.post(TOPIC, Some("web2-key"))
            .header(CONTENT_TYPE, JSON)
            .body(json!(events(30..40)).to_string()),
    )
    .await?;
    assert_eq!(r.status, 200, "each key has its own bucket: {r:?}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = reply(s.post_json(&rich_event(40))).await?;
    assert_eq!(r.status, 200, "a token came back: {r:?}");
    assert_eq!(s.stored()?, 21);
    Ok(())
}

/// Sends a signal (`STOP`, `CONT`) to a process this test started.
fn signal(pid: u32, name: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{name} {pid}: {status}");
    Ok(())
}

/// With max_in_flight_records records already waiting for the (paused) broker, another request
/// is answered 503 with Retry-After at once and nothing of it is produced; the waiting request
/// is stored once the broker resumes, and the refused one goes through afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_in_flight_ceiling_is_503_at_once_and_produces_nothing_of_the_request()
-> Result<()> {
    let s = stack(
        &format!("max_records_per_request = 20\nmax_in_flight_records = 20\n{KEYS}"),
        "",
        "",
    )
    .await?;
    let registry = s.registry_client()?;
    let id = registry.subject_version(SUBJECT, Version::Latest).await?.id;
    registry.schema_by_id(id).await?;
    let pid = s.broker.pid().context("the broker is not running")?;

    signal(pid, "STOP")?;
    let waiting = tokio::spawn(reply(s.post_json(&json!(events(0..20)))));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = events(100..105);
    let started = Instant::now();
    let r = reply(s.post_json(&json!(refused))).await;
    let elapsed = started.elapsed();
    signal(pid, "CONT")?;
    let r = r?;
    assert_refused(&r, 503, "unavailable", "5 more records with 20 in flight");
    assert_eq!(r.retry_after.as_deref(), Some("1"), "{r:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "answered at once, not after a timeout: {elapsed:?}"
    );
    let first = waiting.await??;
    assert_accepted(&first, 20, id, "the request that was waiting");

    let stored = read_topic(&s.broker, TOPIC)?;
    assert_eq!(stored.len(), 20, "only the waiting request's records");
    let refused_ids: BTreeSet<&str> = refused
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    for record in &stored {
        let (_, value) = decode(&registry, &record.payload).await?;
        let event = event_id(&value).context("a record without event_id")?;
        assert!(
            !refused_ids.contains(event.as_str()),
            "{event} of the refused request was produced"
        );
    }

    let r = reply(s.post_json(&json!(refused))).await?;
    assert_accepted(&r, 5, id, "the refused request, retried");
    assert_eq!(s.stored()?, 25);
    Ok(())
}

/// The issue's setting: a 5-message librdkafka queue and a 50-record batch (within
/// max_records_per_request and the default max_in_flight_records): 503 with Retry-After and,
/// like every refusal, nothing of the batch in the topic.
/// A records-in-flight ceiling above librdkafka's own queue would let a full queue refuse a
/// request after part of it was queued: the service refuses to start with such a config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceiling_above_the_producer_queue_is_a_startup_error() -> Result<()> {
    let started = stack(
        KEYS,
        "",
        "[kafka.extra]\n\"queue.buffering.max.messages\" = \"5\"\n",
    )
    .await;
    let error = format!(
        "{:#}",
        started
            .err()
            .ok_or_else(|| anyhow::anyhow!("ingest started with a ceiling above its queue"))?
    );
    assert!(error.contains("queue.buffering.max.messages"), "{error}");
    Ok(())
}

/// One single-record request's outcome in the outage test.
#[derive(Debug, Clone)]
struct Outcome {
    event_id: String,
    sent: Instant,
    answered: Instant,
    /// HTTP status, or the transport error.
    status: Result<u16, String>,
    retry_after: Option<String>,
    /// Where the answer says the record is, for a 200.
    position: Option<(i32, i64)>,
}

/// With the broker killed, requests are answered 503 within request_timeout_ms (plus slack);
/// across the kill and a restart, every record answered 2xx is in the topic at the position
/// the answer gave, and the service takes requests again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_503_in_time_and_no_2xx_record_is_lost() -> Result<()> {
    const TIMEOUT: Duration = Duration::from_millis(2000);
    let slack = TIMEOUT + Duration::from_secs(2);
    let mut s = stack(
        &format!("request_timeout_ms = {}\n{KEYS}", TIMEOUT.as_millis()),
        // Longer than the outage, so queued records wait for the broker rather than time out: a
        // timed-out record makes librdkafka bump the idempotent producer's epoch, on which Tansu
        // 0.6.0's SQLite storage panics ("more or less than one row") and then serves nothing.
        "delivery_timeout_ms = 60000",
        "",
    )
    .await?;
    let registry = s.registry_client()?;
    // Fetched (and cached) while the broker is up.
    let schema_id = registry.subject_version(SUBJECT, Version::Latest).await?.id;
    registry.schema_by_id(schema_id).await?;

    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let outcomes = outcomes.clone();
        let stop = stop.clone();
        let url = format!("{}/v1/topics/{TOPIC}/records", s.ingest.url());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        tokio::spawn(async move {
            let mut i = 10_000;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let event = web_event(i);
                let sent = Instant::now();
                let result = reply(
                    http.post(&url)
                        .header("x-api-key", "web-key")
                        .header(CONTENT_TYPE, JSON)
                        .body(event.to_string()),
                )
                .await;
                let answered = Instant::now();
                let outcome = match result {
                    Ok(r) => Outcome {
                        event_id: event["event_id"].as_str().unwrap_or_default().to_string(),
                        sent,
                        answered,
                        status: Ok(r.status.as_u16()),
                        retry_after: r.retry_after.clone(),
                        position: (r.status == StatusCode::OK).then(|| {
                            let p = &r.body["records"][0];
                            (
                                p["partition"].as_i64().unwrap_or(-1) as i32,
                                p["offset"].as_i64().unwrap_or(-1),
                            )
                        }),
                    },
                    Err(e) => Outcome {
                        event_id: event["event_id"].as_str().unwrap_or_default().to_string(),
                        sent,
                        answered,
                        status: Err(format!("{e:#}")),
                        retry_after: None,
                        position: None,
                    },
                };
                outcomes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(outcome);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let oks_since = |since: Instant| {
        outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|o| o.sent >= since && o.status == Ok(200))
            .count()
    };
    let wait_for_oks = |since: Instant, what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        while oks_since(since) < 5 {
            ensure!(
                Instant::now() < deadline,
                "fewer than 5 records accepted {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    };

    let start = Instant::now();
    wait_for_oks(start, "before the outage").await?;
    let killed = Instant::now();
    tokio::task::block_in_place(|| s.broker.kill())?;
    // Down until at least two requests sent after the kill were answered (at least 6 s; longer
    // on a loaded machine, where each answer takes longer).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while outcomes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|o| o.sent >= killed)
        .count()
        < 2
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restarting = Instant::now();
    tokio::task::block_in_place(|| s.broker.restart())?;
    let restarted = Instant::now();
    let recovered = wait_for_oks(restarted, "after the restart").await;
    stop.store(true, Ordering::SeqCst);
    sender.await?;
    let outcomes = outcomes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    recovered.with_context(|| format!("{outcomes:#?}\n{}", s.ingest.log()))?;

    // Every request was answered, 200 or 503, within the timeout and its slack.
    for o in &outcomes {
        let status = o.status.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(
            *status == 200 || *status == 503,
            "only 200 or 503 expected: {o:?}"
        );
        if *status == 503 {
            assert_eq!(o.retry_after.as_deref(), Some("1"), "{o:?}");
        }
        assert!(
            o.answered - o.sent <= slack,
            "answered after {:?}: {o:?}",
            o.answered - o.sent
        );
    }
    // While the broker was down, every request was refused.
    let during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.sent >= killed && o.answered <= restarting)
        .collect();
    assert!(during.len() >= 2, "requests during the outage: {during:?}");
    for o in &during {
        assert_eq!(o.status, Ok(503), "during the outage: {o:?}");
    }

    // Every 2xx record is stored where its answer said.
    let stored = read_topic(&s.broker, TOPIC)?;
    let mut at: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for record in &stored {
        let (_, value) = decode(&registry, &record.payload).await?;
        let id = event_id(&value).context("a record without event_id")?;
        at.insert((record.partition, record.offset), id);
    }
    let sent: BTreeSet<&str> = outcomes.iter().map(|o| o.event_id.as_str()).collect();
    for id in at.values() {
        assert!(sent.contains(id.as_str()), "a record never sent: {id}");
    }
    let mut acknowledged = 0;
    for o in outcomes.iter().filter(|o| o.status == Ok(200)) {
        acknowledged += 1;
        let position = o.position.context("a 200 without a position")?;
        assert_eq!(
            at.get(&position).map(String::as_str),
            Some(o.event_id.as_str()),
            "acknowledged at {position:?} but not there: {o:?}"
        );
    }
    let refused = outcomes.len() - acknowledged;
    let stored_ids: BTreeSet<&str> = at.values().map(String::as_str).collect();
    let refused_stored = outcomes
        .iter()
        .filter(|o| o.status != Ok(200) && stored_ids.contains(o.event_id.as_str()))
        .count();
    println!(
        "{} requests: {acknowledged} acknowledged (all stored), {refused} refused ({refused_stored} of them stored anyway); restart took {:?}",
        outcomes.len(),
        restarted - restarting
    );
    Ok(())
}

/// A CORS preflight from an allowed origin is answered with the allow headers; another origin
/// gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() -> Result<()> {
    let s = stack(
        &format!("cors_allowed_origins = [\"https://shop.test\"]\n{KEYS}"),
        "",
        "",
    )
    .await?;
    let url = format!("{}/v1/topics/{TOPIC}/records", s.ingest.url());
    let preflight = |origin: &str| {
        s.http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-api-key")
            .send()
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };

    let r = preflight("https://shop.test").await?;
    assert!(r.status().is_success(), "{r:?}");
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://shop.test")
    );
    assert!(
        header(&r, "access-control-allow-methods").is_some_and(|m| m.contains("post")),
        "{r:?}"
    );
    let allowed = header(&r, "access-control-allow-headers").unwrap_or_default();
    for h in [
        "content-type",
        "x-api-key",
        "content-encoding",
        "authorization",
    ] {
        assert!(allowed.contains(h), "{h} allowed: {allowed}");
    }

    let r = preflight("https://evil.test").await?;
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r:?}");

    // The actual request from the allowed origin exposes Retry-After to the page.
    let r = s
        .post_json(&json!([web_event(1)]))
        .header("origin", "https://shop.test")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://shop.test")
    );
    assert!(
        header(&r, "access-control-expose-headers").is_some_and(|h| h.contains("retry-after")),
        "{r:?}"
    );
    let r = s
        .post_json(&json!([web_event(2)]))
        .header("origin", "https://evil.test")
        .send()
        .await?;
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r:?}");
    Ok(())
}

/// The value of a sample line `name value` in a Prometheus/OpenMetrics text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// GET /v1/openapi.json serves the document in the repository; the admin server counts
/// requests by status in tributary_ingest_requests_total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_openapi_document_and_counts_requests_by_status() -> Result<()> {
    let s = stack(KEYS, "", "").await?;
    let r = s
        .http
        .get(format!("{}/v1/openapi.json", s.ingest.url()))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let served: Value = r.json().await?;
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../services/ingest/src/openapi.json");
    let document: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    assert_eq!(served, document);
    let responses = &served["paths"]["/v1/topics/{topic}/records"]["post"]["responses"];
    for status in [
        "200", "400", "401", "403", "404", "413", "415", "429", "503",
    ] {
        assert!(responses[status].is_object(), "documents {status}");
    }

    // 200 twice, 400, 401, 404 and 415 once each.
    for i in 0..2 {
        assert_eq!(reply(s.post_json(&rich_event(i))).await?.status, 200);
    }
    let mut bad = rich_event(3);
    bad["page"] = json!(null);
    assert_eq!(reply(s.post_json(&bad)).await?.status, 400);
    let r = reply(s.post(TOPIC, None).header(CONTENT_TYPE, JSON).body("{}")).await?;
    assert_eq!(r.status, 401);
    let r = reply(
        s.post("raw.nope", Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .body("{}"),
    )
    .await?;
    assert_eq!(r.status, 404);
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, "text/csv")
            .body("a,b"),
    )
    .await?;
    assert_eq!(r.status, 415);

    let admin = s.ingest.admin_url()?;
    let r = s.http.get(format!("{admin}/metrics")).send().await?;
    assert_eq!(r.status(), 200);
    let metrics = r.text().await?;
    for (status, count) in [(200, 2.0), (400, 1.0), (401, 1.0), (404, 1.0), (415, 1.0)] {
        assert_eq!(
            sample(
                &metrics,
                &format!("tributary_ingest_requests_total{{status=\"{status}\"}}")
            ),
            Some(count),
            "status {status}:\n{metrics}"
        );
    }
    assert_eq!(
        sample(&metrics, "tributary_ingest_requests_total{status=\"503\"}"),
        None
    );
    assert_eq!(
        sample(
            &metrics,
            "tributary_ingest_records_accepted_total{topic=\"raw.web_events\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "tributary_ingest_records_rejected_total{topic=\"raw.web_events\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let r = s.http.get(format!("{admin}/readyz")).send().await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

/// A valid record larger than the producer may send (librdkafka's message.max.bytes, 1 MB by
/// default) within the default body limits (gzip): bad input, so a 4xx, not a 503 that invites
/// retrying for ever; and the batch's other records are not produced either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_message_size_limit_is_a_client_error() -> Result<()> {
    let s = stack(KEYS, "", "").await?;
    let mut batch = events(0..3);
    batch[2]["properties"]["blob"] = json!("x".repeat(1_500_000));
    let r = reply(
        s.post(TOPIC, Some("web-key"))
            .header(CONTENT_TYPE, JSON)
            .header(CONTENT_ENCODING, "gzip")
            .body(gzip(json!(batch).to_string().as_bytes())?),
    )
    .await?;
    assert_refused(&r, 413, "record_too_large", "a 1.5 MB record");
    assert_eq!(r.retry_after, None, "{r:?}");
    s.assert_nothing_produced("a record over the message size limit")?;
    Ok(())
}

/// One acknowledged or refused attempt of the conservation test's clients.
#[derive(Debug, Clone)]
struct Attempt {
    event_id: String,
    /// Where the 200 answer says the record is; `None` for a refusal or a lost answer.
    position: Option<(i32, i64)>,
}

/// Fault suite scenario 6 (docs/reliability.md): ingest conservation. Four HTTP clients send
/// web events one per request, as real clients do: an event is sent again after a refusal
/// (503), a transport error or a lost answer, until acknowledged. Meanwhile ingest and the
/// broker are each SIGKILLed twice, in a seeded random order at random moments (the seed is
/// printed, `TRIBUTARY_FAULT_SEED` replays it), and restarted. Every acknowledged record must
/// be in the topic where its answer said (acknowledged-but-missing 0) and every event stored
/// (lost 0); events stored more than once (an answer lost to a kill, or a refusal for a record
/// the broker had already taken) are counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conservation_under_ingest_and_broker_kills() -> Result<()> {
    use rand::Rng;
    use rand::seq::SliceRandom;
    const CLIENTS: u32 = 4;
    let started = Instant::now();
    let (seed, mut rng) = tributary_integration_tests::faults::fault_rng()?;
    let mut s = stack(
        &format!("request_timeout_ms = 2000\n{KEYS}"),
        // Records queued while the broker is down wait for it (see the outage test above).
        "delivery_timeout_ms = 60000",
        "",
    )
    .await?;
    let registry = s.registry_client()?;
    let url = format!("{}/v1/topics/{TOPIC}/records", s.ingest.url());
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (attempts, stop, url) = (attempts.clone(), stop.clone(), url.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        clients.push(tokio::spawn(async move {
            let mut events = 0_u32;
            while !stop.load(Ordering::SeqCst) {
                let event = web_event(client * 1_000_000 + events);
                let id = event["event_id"].as_str().unwrap_or_default().to_string();
                events += 1;
                // Until acknowledged (bounded: a client that never gets through fails the test).
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let answer = reply(
                        http.post(&url)
                            .header("x-api-key", "web-key")
                            .header(CONTENT_TYPE, JSON)
                            .body(event.to_string()),
                    )
                    .await;
                    let position = match &answer {
                        Ok(r) if r.status == StatusCode::OK => {
                            let p = &r.body["records"][0];
                            Some((
                                p["partition"].as_i64().unwrap_or(-1) as i32,
                                p["offset"].as_i64().unwrap_or(-1),
                            ))
                        }
                        _ => None,
                    };
                    attempts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Attempt {
                            event_id: id.clone(),
                            position,
                        });
                    if position.is_some() {
                        break;
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "event {id} not acknowledged within 120 s: last answer {:?}",
                        answer.map(|r| r.status)
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            anyhow::Ok(events)
        }));
    }
    let acknowledged = || {
        attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|a| a.position.is_some())
            .count()
    };
    // Faults: ingest and the broker twice each, in a seeded order, each after 2–5 s of traffic
    // that got acknowledgements; ingest down 0.2–2 s, the broker 2–5 s.
    let mut faults = ["ingest", "broker", "ingest", "broker"];
    faults.shuffle(&mut rng);
    let mut schedule = Vec::new();
    for what in faults {
        let before = acknowledged();
        let deadline = Instant::now() + Duration::from_secs(90);
        while acknowledged() < before + 20 {
            ensure!(
                Instant::now() < deadline,
                "no acknowledgements before the {what} kill (seed {seed})\n{}",
                s.ingest.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let run = Duration::from_millis(rng.random_range(2_000..5_000));
        tokio::time::sleep(run).await;
        let down = match what {
            "ingest" => Duration::from_millis(rng.random_range(200..2_000)),
            _ => Duration::from_millis(rng.random_range(2_000..5_000)),
        };
        let at = started.elapsed();
        tokio::task::block_in_place(|| match what {
            "ingest" => s.ingest.kill(),
            _ => s.broker.kill(),
        })?;
        tokio::time::sleep(down).await;
        tokio::task::block_in_place(|| match what {
            "ingest" => s.ingest.restart(),
            _ => s.broker.restart(),
        })
        .with_context(|| format!("restart {what} (seed {seed})"))?;
        schedule.push(format!(
            "{what} killed at {:.1} s for {:.1} s",
            at.as_secs_f64(),
            down.as_secs_f64()
        ));
    }
    // Traffic after the last restart, then the clients finish the events they are sending.
    let before = acknowledged();
    let deadline = Instant::now() + Duration::from_secs(90);
    while acknowledged() < before + 50 {
        ensure!(
            Instant::now() < deadline,
            "no acknowledgements after the last restart (seed {seed}; {})\n{}",
            schedule.join(", "),
            s.ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut events = 0;
    for client in clients {
        events += client
            .await?
            .with_context(|| format!("seed {seed}; {}", schedule.join(", ")))?;
    }
    let attempts = attempts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();

    // The topic: which event is at which position.
    let stored = tokio::task::block_in_place(|| read_topic(&s.broker, TOPIC))?;
    let mut at: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for record in &stored {
        let (_, value) = decode(&registry, &record.payload).await?;
        let id = event_id(&value).context("a record without event_id")?;
        *copies.entry(id.clone()).or_default() += 1;
        at.insert((record.partition, record.offset), id);
    }
    let sent: BTreeSet<&str> = attempts.iter().map(|a| a.event_id.as_str()).collect();
    let unknown: Vec<&String> = at
        .values()
        .filter(|id| !sent.contains(id.as_str()))
        .collect();
    let acks: Vec<&Attempt> = attempts.iter().filter(|a| a.position.is_some()).collect();
    let missing: Vec<&&Attempt> = acks
        .iter()
        .filter(|a| a.position.and_then(|p| at.get(&p)) != Some(&a.event_id))
        .collect();
    let lost: Vec<&&str> = sent
        .iter()
        .filter(|id| !copies.contains_key(**id))
        .collect();
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    let retried = attempts.len() - acks.len();
    println!(
        "ingest conservation on {} (seed {seed}; {}): {events} events from {CLIENTS} clients, \
         {} requests ({retried} refused or unanswered and sent again), {} acknowledged, \
         {} records in the topic; acknowledged-but-missing {}, lost {}, duplicated {duplicates}; \
         {:.0} s",
        s.broker.kind().name(),
        schedule.join(", "),
        attempts.len(),
        acks.len(),
        stored.len(),
        missing.len(),
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    ensure!(
        unknown.is_empty(),
        "records never sent: {unknown:?} (seed {seed})"
    );
    ensure!(
        missing.is_empty(),
        "acknowledged but not where the answer said: {missing:?} (seed {seed})"
    );
    ensure!(
        lost.is_empty(),
        "events never stored: {lost:?} (seed {seed})"
    );
    ensure!(
        acks.len() == sent.len(),
        "{} events, {} acknowledgements (seed {seed})",
        sent.len(),
        acks.len()
    );
    Ok(())
}
