//! The train-trigger service through a real broker and registry: drift values checked against
//! numpy/scipy on the same samples; a stationary stream of 200,000 records fires nothing; the
//! same stream with a shift fires exactly one request, within one window after the shift; the
//! cooldown holds back a second, also across a kill -9; a webhook that fails once still gets
//! exactly one accepted request per trigger.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tributary_core::bus::OutboundRecord;
use tributary_integration_tests::bench::counter_sum;
use tributary_integration_tests::{Stack, TrainTrigger, read_all, unique};

const SIGNALS: &str = r#"{"type": "record", "name": "Signal", "namespace": "test", "fields": [
  {"name": "user", "type": "string"},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "x", "type": "double"},
  {"name": "y", "type": "double"},
  {"name": "segment", "type": "string"}
]}"#;

const WINDOW: u64 = 10_000;
const T0: i64 = 1_795_000_000_000;

fn write_catalog(dir: &Path, webhook: &str) -> Result<()> {
    std::fs::write(dir.join("test.signals-value.avsc"), SIGNALS)?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    std::fs::copy(
        repo.join("train.requests-value.avsc"),
        dir.join("train.requests-value.avsc"),
    )?;
    std::fs::write(
        dir.join("catalog.toml"),
        format!(
            r#"
[[topic]]
name = "test.signals"
partitions = 1
key_field = "user"
event_time_field = "at"

[[topic]]
name = "train.requests"
partitions = 1
key_field = "model"
event_time_field = "requested_at"

[[trigger]]
name = "drifty"
model = "m1"
inputs = ["test.signals"]
window_rows = {WINDOW}
min_samples = 1000
cooldown = "1h"
feature = [
  {{ name = "x", expr = "x" }},
  {{ name = "y", expr = "y" }},
  {{ name = "segment", expr = "segment", categorical = true }},
]
policy = [{{ name = "drift", type = "drift", thresholds = {{ psi = 0.2, ks = 0.1, js = 0.1 }} }}]
webhook = {{ url = "{webhook}", max_attempts = 5 }}
"#
        ),
    )?;
    Ok(())
}

/// splitmix64: reproducible pseudo-random numbers.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn uniform(seed: u64) -> f64 {
    ((mix(seed) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Record `i`: x ~ N(x_mean, 1), y ~ N(10, 2), segment a/b/c with the given weights.
fn signal(i: u64, x_mean: f64, weights: [f64; 3]) -> Value {
    let (u1, u2) = (uniform(3 * i), uniform(3 * i + 1));
    let r = (-2.0 * u1.ln()).sqrt();
    let (z1, z2) = (
        r * (std::f64::consts::TAU * u2).cos(),
        r * (std::f64::consts::TAU * u2).sin(),
    );
    let u3 = uniform(3 * i + 2);
    let segment = if u3 < weights[0] {
        "a"
    } else if u3 < weights[0] + weights[1] {
        "b"
    } else {
        "c"
    };
    json!({
        "user": format!("u{}", mix(i) % 1000),
        "at": T0 + i as i64,
        "x": x_mean + z1,
        "y": 10.0 + 2.0 * z2,
        "segment": segment,
    })
}

const STEADY: [f64; 3] = [0.5, 0.3, 0.2];

async fn produce(stack: &Stack, values: &[Value]) -> Result<()> {
    for chunk in values.chunks(2_000) {
        let mut records = Vec::with_capacity(chunk.len());
        for v in chunk {
            records.push(OutboundRecord::new(
                "test.signals",
                Some(v["user"].as_str().unwrap_or_default().as_bytes().to_vec()),
                stack.encode("test.signals", v).await?,
            ));
        }
        stack.producer.send_all(&records).await?;
    }
    Ok(())
}

/// A webhook receiver that fails the first delivery of each request (500) and accepts the next.
#[derive(Debug, Default)]
struct Receiver {
    attempts: BTreeMap<String, u32>,
    accepted: Vec<(String, Value)>,
}

async fn start_receiver() -> Result<(String, Arc<Mutex<Receiver>>)> {
    let state = Arc::new(Mutex::new(Receiver::default()));
    let shared = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let shared = shared.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let mut r = shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = r.attempts.entry(key.clone()).or_default();
                *n += 1;
                if *n == 1 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                r.accepted.push((key, body.0));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, state))
}

async fn metrics(service: &TrainTrigger) -> Result<String> {
    Ok(reqwest::get(format!("{}/metrics", service.admin_url()?))
        .await?
        .text()
        .await?)
}

/// Waits until the service has handled `records` input records (its own count since start).
async fn wait_handled(service: &mut TrainTrigger, records: u64) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        ensure!(
            service.is_running(),
            "train-trigger exited: {}",
            service.log()
        );
        if let Ok(text) = metrics(service).await
            && counter_sum(&text, "tributary_train_trigger_records_in_total") >= records
        {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!(
                "train-trigger did not handle {records} records: {}",
                service.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn gauge(text: &str, feature: &str, metric: &str) -> Option<f64> {
    let prefix = "tributary_train_trigger_drift{";
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .find(|l| {
            l.contains(&format!("feature=\"{feature}\""))
                && l.contains(&format!("metric=\"{metric}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn drift_check(reference: &[Value], current: &[Value]) -> Result<Value> {
    let column =
        |rows: &[Value], f: &str| -> Vec<Value> { rows.iter().map(|r| r[f].clone()).collect() };
    let spec = json!({
        "numeric": {
            "x": {"reference": column(reference, "x"), "current": column(current, "x")},
            "y": {"reference": column(reference, "y"), "current": column(current, "y")},
        },
        "categorical": {
            "segment": {"reference": column(reference, "segment"), "current": column(current, "segment")},
        },
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/drift_check.py");
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
        "drift_check.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn start(stack: &Stack, dir: &Path) -> Result<TrainTrigger> {
    TrainTrigger::start(
        &stack.broker,
        &stack.registry,
        dir,
        &format!(
            "group_id = \"{}\"\nstate_topic = \"{}\"\ntick_seconds = 1\nbatch_wait_ms = 20",
            unique("trigger"),
            unique("_state")
        ),
        "[kafka.extra]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
    )
}

/// The drift of a window against the reference equals numpy/scipy's on the same samples:
/// PSI within 0.02 + 5%, KS within 0.01, Wasserstein within 2% (+0.005), JS within 1e-9 (exact
/// counts). The request that follows names the data, and the webhook gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_values_match_scipy_and_the_webhook_gets_one_request() -> Result<()> {
    let (url, receiver) = start_receiver().await?;
    let dir = tempfile::tempdir()?;
    write_catalog(dir.path(), &url)?;
    let stack = Stack::start(dir.path()).await?;
    let mut service = start(&stack, dir.path())?;
    let reference: Vec<Value> = (0..WINDOW).map(|i| signal(i, 0.0, STEADY)).collect();
    let current: Vec<Value> = (WINDOW..2 * WINDOW)
        .map(|i| signal(i, 0.3, [0.35, 0.3, 0.35]))
        .collect();
    produce(&stack, &reference).await?;
    produce(&stack, &current).await?;
    let text = wait_handled(&mut service, 2 * WINDOW).await?;
    let expected = drift_check(&reference, &current)?;
    for feature in ["x", "y"] {
        for (metric, abs, rel) in [
            ("psi", 0.02, 0.05),
            ("ks", 0.01, 0.0),
            ("wasserstein", 0.005, 0.02),
        ] {
            let ours = gauge(&text, feature, metric)
                .with_context(|| format!("no {feature} {metric} in\n{text}"))?;
            let theirs = expected[feature][metric].as_f64().context("expected")?;
            assert!(
                (ours - theirs).abs() <= abs + rel * theirs.abs(),
                "{feature} {metric}: ours {ours}, scipy {theirs}"
            );
            println!("{feature} {metric}: ours {ours:.5}, numpy/scipy {theirs:.5}");
        }
    }
    let ours = gauge(&text, "segment", "js").context("no segment js")?;
    let theirs = expected["segment"]["js"].as_f64().context("expected")?;
    assert!(
        (ours - theirs).abs() < 1e-9,
        "segment js: ours {ours}, scipy {theirs}"
    );
    println!("segment js: ours {ours:.6}, scipy {theirs:.6}");

    // x drifted (KS about 0.12 > 0.1): one request naming offsets 0..20000 of the topic.
    let requests = read_all(&stack.broker, "train.requests", 2, Duration::from_secs(20))?;
    assert_eq!(requests.len(), 1);
    let request = stack.decode(&requests[0].payload).await?;
    assert_eq!(request["model"], "m1");
    assert_eq!(request["policy"], "drift");
    assert_eq!(
        request["data"]["topics"],
        json!([{"topic": "test.signals", "partition": 0, "start_offset": 0, "end_offset": 20_000}])
    );
    assert_eq!(request["data"]["from_time"], T0);
    assert_eq!(request["data"]["to_time"], T0 + 20_000);
    assert!(
        request["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("x ks"),
        "{request}"
    );
    // The webhook: refused once, then accepted once, with the request's id as key.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (accepted, attempts) = {
            let r = receiver
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                r.accepted.clone(),
                r.attempts.values().copied().collect::<Vec<_>>(),
            )
        };
        if !accepted.is_empty() {
            assert_eq!(accepted.len(), 1, "{accepted:?}");
            assert_eq!(
                accepted[0].0,
                request["request_id"].as_str().unwrap_or_default()
            );
            assert_eq!(attempts, vec![2]);
            assert_eq!(accepted[0].1["data"]["topics"][0]["end_offset"], 20_000);
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no webhook delivery: {}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(service.stop()?, "{}", service.log());
    Ok(())
}

/// 200,000 stationary records: no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stationary_stream_fires_no_trigger() -> Result<()> {
    let (url, receiver) = start_receiver().await?;
    let dir = tempfile::tempdir()?;
    write_catalog(dir.path(), &url)?;
    let stack = Stack::start(dir.path()).await?;
    let mut service = start(&stack, dir.path())?;
    let stream: Vec<Value> = (0..200_000).map(|i| signal(i, 0.0, STEADY)).collect();
    produce(&stack, &stream).await?;
    let text = wait_handled(&mut service, 200_000).await?;
    assert_eq!(
        counter_sum(&text, "tributary_train_trigger_windows_total"),
        20
    );
    assert_eq!(
        counter_sum(&text, "tributary_train_trigger_triggers_fired_total"),
        0
    );
    assert!(read_all(&stack.broker, "train.requests", 1, Duration::from_secs(3))?.is_empty());
    assert!(
        receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .attempts
            .is_empty()
    );
    println!(
        "stationary: 20 windows, largest KS of x {:?}",
        gauge(&text, "x", "ks")
    );
    assert!(service.stop()?, "{}", service.log());
    Ok(())
}

/// The same stream with x shifted by one standard deviation from record 100,000: exactly one
/// request, at the end of the first window after the shift (record 110,000). A shift back at
/// 150,000 is held back by the cooldown; so is a third shift after a kill -9 and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_fires_once_and_the_cooldown_survives_a_restart() -> Result<()> {
    let (url, receiver) = start_receiver().await?;
    let dir = tempfile::tempdir()?;
    write_catalog(dir.path(), &url)?;
    let stack = Stack::start(dir.path()).await?;
    let mut service = start(&stack, dir.path())?;
    let stream: Vec<Value> = (0..170_000u64)
        .map(|i| match i {
            0..100_000 => signal(i, 0.0, STEADY),
            100_000..150_000 => signal(i, 1.0, STEADY),
            _ => signal(i, 0.0, STEADY),
        })
        .collect();
    produce(&stack, &stream).await?;
    let text = wait_handled(&mut service, 170_000).await?;
    let requests = read_all(&stack.broker, "train.requests", 2, Duration::from_secs(5))?;
    assert_eq!(requests.len(), 1, "exactly one request");
    let request = stack.decode(&requests[0].payload).await?;
    let end = request["data"]["topics"][0]["end_offset"]
        .as_i64()
        .unwrap_or_default();
    assert_eq!(
        end, 110_000,
        "fired when the first window after the shift closed: {request}"
    );
    assert!(
        counter_sum(&text, "tributary_train_trigger_triggers_suppressed_total") >= 1,
        "the shift back was held back:\n{text}"
    );

    // kill -9 during the cooldown, then a third shift: still held back.
    service.kill()?;
    tokio::time::sleep(stack.broker.replacement_delay()).await;
    service.restart()?;
    let more: Vec<Value> = (170_000..200_000u64)
        .map(|i| signal(i, 2.0, STEADY))
        .collect();
    produce(&stack, &more).await?;
    let text = wait_handled(&mut service, 30_000).await?;
    assert!(
        service.log().contains("state restored"),
        "{}",
        service.log()
    );
    // Windows close at 180,000 and 190,000 (and 200,000): the drift is there, the cooldown holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = text;
    while counter_sum(&text, "tributary_train_trigger_triggers_suppressed_total") == 0 {
        ensure!(
            Instant::now() < deadline,
            "nothing suppressed after the restart:\n{text}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        text = metrics(&service).await?;
    }
    assert_eq!(
        read_all(&stack.broker, "train.requests", 2, Duration::from_secs(5))?.len(),
        1
    );
    let accepted = receiver
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .accepted
        .len();
    assert_eq!(accepted, 1, "one webhook delivery for one request");
    assert!(service.stop()?, "{}", service.log());
    Ok(())
}
