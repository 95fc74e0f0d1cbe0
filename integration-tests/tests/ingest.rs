//! The ingest HTTP API against a real broker and registry.

use anyhow::Result;
use serde_json::{Value, json};
use tributary_integration_tests::{Broker, Ingest, Registry, create_catalog_topics, init_logs};

const KEYS: &str = r#"
[[ingest.credentials]]
name = "web"
secret = "web-key"
topics = ["raw.web_events"]
"#;

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
