//! `tributary up --demo`: traffic for the local stack. Web and mobile events are POSTed to
//! ingest's HTTP API and product files dropped in the landing folder of the catalog's file
//! source.
//!
//! The first run on a data folder replays two hours of history in event-time order before
//! going live, so the feature service's hourly windows (sliding every 15 minutes) close and
//! emit within a minute instead of a quarter of an hour; later runs continue live.
//!
//! The shop database (customers and orders, captured by ingest) has its own writer, in
//! `super::shop_db`; its figures are counted here too.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::shop::{Shop, products_file};

/// History replayed on a folder's first run.
const HISTORY: Duration = Duration::from_secs(2 * 3600);
/// Web and mobile events of the history.
const HISTORY_WEB_EVENTS: usize = 6000;
const HISTORY_MOBILE_EVENTS: usize = 3000;
/// Records per POST of the history.
const HISTORY_CHUNK: usize = 500;
/// The history is sent a quarter of an hour (the feature view's slide) at a time ...
const QUARTER_MS: i64 = 15 * 60 * 1000;
/// ... with this pause between quarters.
const HISTORY_PAUSE: Duration = Duration::from_secs(2);
/// Live events per second, web and mobile (each drawn around this).
const LIVE_WEB_PER_SECOND: usize = 25;
const LIVE_MOBILE_PER_SECOND: usize = 10;
/// Time between product files.
const FILE_EVERY: Duration = Duration::from_secs(20);

/// What the demo has done, for the display.
#[derive(Debug, Default)]
pub(crate) struct DemoCounts {
    pub(crate) web: AtomicU64,
    pub(crate) mobile: AtomicU64,
    pub(crate) files: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) retries: AtomicU64,
    /// Rows written to the shop database.
    pub(crate) shop: super::shop_db::ShopCounts,
}

impl DemoCounts {
    /// `web=.. mobile=.. files=..` for a summary line.
    pub(crate) fn summary(&self) -> String {
        let mut out = format!(
            "demo web={} mobile={} files={} rejected={}",
            self.web.load(Ordering::Relaxed),
            self.mobile.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed)
        );
        let shop = &self.shop;
        let (customers, orders, changes) = (
            shop.customers.load(Ordering::Relaxed),
            shop.orders.load(Ordering::Relaxed),
            shop.order_changes.load(Ordering::Relaxed),
        );
        if customers + orders + changes > 0 {
            out.push_str(&format!(
                " customers={customers} orders={orders} order_changes={changes}"
            ));
        }
        out
    }
}

/// Where the demo sends its traffic.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) ingest_url: String,
    pub(crate) api_key: String,
    /// The file source's folder and a folder beside it to write files in before moving them.
    pub(crate) products: PathBuf,
    pub(crate) incoming: PathBuf,
    /// Present once the history was sent.
    pub(crate) marker: PathBuf,
}

/// Starts the demo's tasks; they stop at `stop`.
pub(crate) fn start(
    target: Target,
    counts: Arc<DemoCounts>,
    stop: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .context("build an http client")?;
    let shop = Arc::new(Mutex::new(Shop::new()));
    let events = tokio::spawn({
        let (target, counts, stop, shop) =
            (target.clone(), counts.clone(), stop.clone(), shop.clone());
        async move {
            if let Err(e) = run_events(&http, &target, &counts, &shop, &stop).await {
                warn!(error = %format!("{e:#}"), "demo events stopped");
            }
        }
    });
    let files = tokio::spawn(async move {
        if let Err(e) = run_files(&target, &counts, &shop, &stop).await {
            warn!(error = %format!("{e:#}"), "demo files stopped");
        }
    });
    Ok(vec![events, files])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn run_events(
    http: &reqwest::Client,
    target: &Target,
    counts: &DemoCounts,
    shop: &Mutex<Shop>,
    stop: &CancellationToken,
) -> Result<()> {
    if !target.marker.exists() {
        send_history(http, target, counts, shop, stop).await?;
        if stop.is_cancelled() {
            return Ok(());
        }
        std::fs::write(&target.marker, format!("{}\n", now_ms()))
            .with_context(|| format!("write {}", target.marker.display()))?;
    }
    info!("demo: live traffic");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let end = now_ms();
        let (web, mobile) = {
            let mut shop = shop.lock().await;
            let web_n = jitter(LIVE_WEB_PER_SECOND);
            let mobile_n = jitter(LIVE_MOBILE_PER_SECOND);
            let mut web: Vec<Value> = (0..web_n)
                .map(|i| shop.web_event(end - 1000 + (i * 1000 / web_n) as i64))
                .collect();
            let mut mobile: Vec<Value> = (0..mobile_n)
                .map(|i| shop.mobile_event(end - 1000 + (i * 1000 / mobile_n) as i64))
                .collect();
            web.sort_by_key(|e| e["occurred_at"].as_i64());
            mobile.sort_by_key(|e| e["occurred_at"].as_i64());
            (web, mobile)
        };
        post(
            http,
            target,
            "raw.web_events",
            &web,
            &counts.web,
            counts,
            stop,
        )
        .await;
        post(
            http,
            target,
            "raw.mobile_events",
            &mobile,
            &counts.mobile,
            counts,
            stop,
        )
        .await;
    }
    Ok(())
}

/// About `n`, between half and one and a half times it.
fn jitter(n: usize) -> usize {
    use rand::Rng;
    rand::rng().random_range(n / 2..=n + n / 2).max(1)
}

/// The last two hours, in event-time order, a quarter of an hour at a time with a pause
/// between: each quarter then reaches the feature service as its own batches, which close the
/// windows ending at that quarter together (one archive file per partition and hour of
/// `features.user_activity`, not one per hour flip of a mixed batch).
async fn send_history(
    http: &reqwest::Client,
    target: &Target,
    counts: &DemoCounts,
    shop: &Mutex<Shop>,
    stop: &CancellationToken,
) -> Result<()> {
    let end = now_ms() - 60_000;
    let start = end - HISTORY.as_millis() as i64;
    info!(
        from = start,
        to = end,
        "demo: replaying two hours of history"
    );
    let at = |i: usize, n: usize| start + ((end - start) as f64 * i as f64 / n as f64) as i64;
    let (web, mobile) = {
        let mut shop = shop.lock().await;
        let web: Vec<Value> = (0..HISTORY_WEB_EVENTS)
            .map(|i| shop.web_event(at(i, HISTORY_WEB_EVENTS)))
            .collect();
        let mobile: Vec<Value> = (0..HISTORY_MOBILE_EVENTS)
            .map(|i| shop.mobile_event(at(i, HISTORY_MOBILE_EVENTS)))
            .collect();
        (web, mobile)
    };
    let quarter = |e: &Value| (e["occurred_at"].as_i64().unwrap_or(start) - start) / QUARTER_MS;
    let quarters = (end - start) / QUARTER_MS + 1;
    for q in 0..quarters {
        let web_q: Vec<Value> = web.iter().filter(|e| quarter(e) == q).cloned().collect();
        let mobile_q: Vec<Value> = mobile.iter().filter(|e| quarter(e) == q).cloned().collect();
        for chunk in web_q.chunks(HISTORY_CHUNK) {
            post(
                http,
                target,
                "raw.web_events",
                chunk,
                &counts.web,
                counts,
                stop,
            )
            .await;
        }
        for chunk in mobile_q.chunks(HISTORY_CHUNK) {
            post(
                http,
                target,
                "raw.mobile_events",
                chunk,
                &counts.mobile,
                counts,
                stop,
            )
            .await;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(HISTORY_PAUSE) => {}
        }
    }
    Ok(())
}

/// POSTs records, retrying while ingest is busy (429, 503) or unreachable, until `stop`.
/// Records refused as invalid (4xx) are counted and logged, not retried.
async fn post(
    http: &reqwest::Client,
    target: &Target,
    topic: &str,
    records: &[Value],
    sent: &AtomicU64,
    counts: &DemoCounts,
    stop: &CancellationToken,
) {
    let url = format!("{}/v1/topics/{topic}/records", target.ingest_url);
    while !stop.is_cancelled() {
        let answer = http
            .post(&url)
            .header("X-API-Key", &target.api_key)
            .json(records)
            .send()
            .await;
        let wait = match answer {
            Ok(response) if response.status().is_success() => {
                sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                return;
            }
            Ok(response)
                if response.status().as_u16() == 429 || response.status().is_server_error() =>
            {
                let seconds = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                Duration::from_secs(seconds.clamp(1, 10))
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                warn!(topic, %status, body = %body.chars().take(300).collect::<String>(), "demo: records refused");
                counts
                    .rejected
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                warn!(topic, error = %e, "demo: ingest unreachable, retrying");
                Duration::from_secs(1)
            }
        };
        counts.retries.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Drops product files: the whole catalog first (when the folder is empty), then a few changed
/// products every [`FILE_EVERY`], CSV and NDJSON in turn; every fifth file has one bad row.
async fn run_files(
    target: &Target,
    counts: &DemoCounts,
    shop: &Mutex<Shop>,
    stop: &CancellationToken,
) -> Result<()> {
    let empty = std::fs::read_dir(&target.products)
        .with_context(|| format!("list {}", target.products.display()))?
        .next()
        .is_none();
    let mut n: u64 = 0;
    if empty {
        let all = shop.lock().await.products.clone();
        drop_file(target, &all, n, false)?;
        counts.files.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(FILE_EVERY) => {}
        }
        let updates = {
            use rand::Rng;
            let k = rand::rng().random_range(5..=25);
            shop.lock().await.product_updates(k)
        };
        drop_file(target, &updates, n, n % 5 == 4)?;
        counts.files.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
}

/// Writes a file in the incoming folder, then moves it into the source's folder, so that ingest
/// never lists a half-written file.
fn drop_file(
    target: &Target,
    products: &[super::shop::Product],
    n: u64,
    bad_row: bool,
) -> Result<()> {
    let now = chrono::Utc::now();
    let csv = n.is_multiple_of(2);
    let name = format!(
        "products-{}-{n:04}.{}",
        now.format("%Y%m%dT%H%M%S"),
        if csv { "csv" } else { "ndjson" }
    );
    let text = products_file(
        products,
        &now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        csv,
        bad_row,
    );
    let staged = target.incoming.join(&name);
    std::fs::write(&staged, text).with_context(|| format!("write {}", staged.display()))?;
    let landed = target.products.join(&name);
    std::fs::rename(&staged, &landed)
        .with_context(|| format!("move {} to {}", staged.display(), landed.display()))?;
    info!(file = %landed.display(), rows = products.len(), "demo: product file dropped");
    Ok(())
}
