//! The ingest service: the HTTP front door. Web and mobile producers POST events as JSON,
//! NDJSON or Confluent-framed Avro; each record is validated against its topic's schema from
//! the catalog and produced with acks=all, and the answer is sent only once the broker
//! acknowledged every record.

mod api;
pub mod config;
mod files;
/// Fuzz targets (tests, and AFL++ through `crates/fuzz-afl`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod limits;
mod metrics;
mod postgres;
mod records;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::bus::{BusMetrics, Producer};
use tributary_core::schema::bounded::DatumBound;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::telemetry::{AdminServer, Readiness, new_registry};

pub use config::Config;

/// A started ingest service.
#[derive(Debug)]
pub struct Running {
    /// Address of the HTTP API.
    pub addr: SocketAddr,
    /// Address of the admin server.
    pub admin_addr: Option<SocketAddr>,
    /// Completes when the service stopped.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the service: loads the catalog, registers each topic's schema (the registry returns
/// the existing id for a known schema), then serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let settings = config.ingest.clone();
    if settings.rate_limit_burst < settings.max_records_per_request as f64 {
        bail!(
            "ingest.rate_limit_burst ({}) must be at least ingest.max_records_per_request ({}), or full requests could never pass",
            settings.rate_limit_burst,
            settings.max_records_per_request
        );
    }
    if settings.max_in_flight_records < settings.max_records_per_request {
        bail!(
            "ingest.max_in_flight_records ({}) must be at least ingest.max_records_per_request ({})",
            settings.max_in_flight_records,
            settings.max_records_per_request
        );
    }
    // The ceiling must keep librdkafka's own queue from ever filling, or a full queue could
    // refuse a request after part of it was queued.
    let queue_limit: usize =
        librdkafka_setting(&config.kafka, "queue.buffering.max.messages", 100_000)?;
    if settings.max_in_flight_records > queue_limit {
        bail!(
            "ingest.max_in_flight_records ({}) must not exceed the producer's queue.buffering.max.messages ({queue_limit})",
            settings.max_in_flight_records
        );
    }
    let max_record_bytes: usize =
        librdkafka_setting(&config.kafka, "message.max.bytes", 1_000_000)?;
    if settings.credentials.is_empty() {
        tracing::warn!("no credentials configured: every request will be refused with 401");
    }
    let catalog = Catalog::load(&settings.schemas).context("load the topic catalog")?;
    let registry = RegistryClient::new(&config.registry)?;
    let mut topics = BTreeMap::new();
    for topic in catalog.topics.values() {
        let id = registry
            .register(&topic.value_subject(), &topic.value_schema_json)
            .await
            .with_context(|| {
                format!(
                    "register the schema of {} at {}",
                    topic.name, config.registry.url
                )
            })?;
        topics.insert(
            topic.name.clone(),
            records::TopicCodec {
                topic: topic.clone(),
                schema_id: id,
                bound: DatumBound::from_json(&topic.value_schema_json)
                    .with_context(|| format!("the schema of {}", topic.name))?,
            },
        );
    }

    let mut metrics_registry = new_registry();
    let bus_metrics = BusMetrics::register(&mut metrics_registry);
    let metrics = metrics::IngestMetrics::register(&mut metrics_registry);
    let producer = Producer::new(&config.kafka, bus_metrics)?;
    let state = Arc::new(api::AppState {
        topics,
        credentials: settings.credentials.clone(),
        limiter: limits::RateLimiter::new(
            settings.rate_limit_records_per_second,
            settings.rate_limit_burst,
        ),
        in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight_records)),
        max_record_bytes,
        settings: settings.clone(),
        producer: producer.clone(),
        registry,
        metrics,
    });

    // File sources: each a task listing its prefix until shutdown.
    let sources: Vec<_> = catalog
        .sources
        .iter()
        .filter(|s| {
            settings
                .sources
                .as_ref()
                .is_none_or(|only| only.iter().any(|n| n == s.name()))
        })
        .collect();
    if let Some(only) = &settings.sources
        && let Some(unknown) = only
            .iter()
            .find(|n| !catalog.sources.iter().any(|s| s.name() == n.as_str()))
    {
        anyhow::bail!("ingest.sources names {unknown}, which the catalog does not declare");
    }
    if !sources.is_empty() {
        let compacted = |name: &String| tributary_core::bus::TopicSpec {
            name: name.clone(),
            partitions: 1,
            config: vec![("cleanup.policy".to_string(), "compact".to_string())],
        };
        tributary_core::bus::create_topics(
            &config.kafka,
            &[
                compacted(&settings.files_progress_topic),
                compacted(&settings.postgres_progress_topic),
            ],
        )
        .await
        .context("create the source progress topics")?;
    }
    // Joined at shutdown, before the producer is flushed: what a source produced last is
    // flushed too, and a source that failed is reported.
    let mut source_tasks = Vec::new();
    for source in sources {
        let decl = match source {
            tributary_core::schema::sources::SourceDecl::Files(decl) => decl,
            tributary_core::schema::sources::SourceDecl::Postgres(decl) => {
                let ctx = postgres::SourceContext {
                    decl: decl.clone(),
                    topics: catalog.topics.clone(),
                    registry: state.registry.clone(),
                    kafka: config.kafka.clone(),
                    producer: producer.clone(),
                    progress_topic: settings.postgres_progress_topic.clone(),
                    metrics: state.metrics.clone(),
                };
                let task = tokio::spawn(postgres::run(ctx, shutdown.clone()));
                source_tasks.push((decl.name.clone(), task));
                continue;
            }
        };
        let codec = state
            .topics
            .get(&decl.topic)
            .with_context(|| format!("source {}: no topic {}", decl.name, decl.topic))?;
        let file_source = files::FileSource::start(
            decl.clone(),
            codec.topic.clone(),
            codec.schema_id,
            &settings.object_store,
            &config.kafka,
            producer.clone(),
            &settings.files_progress_topic,
        )
        .await?;
        let task = tokio::spawn(file_source.run(shutdown.clone()));
        source_tasks.push((decl.name.clone(), task));
    }

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("bind the api to {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let readiness = Readiness::default();
    let admin = AdminServer::bind(
        config.telemetry.admin_addr,
        Arc::new(metrics_registry),
        readiness.clone(),
    )
    .await?;
    let admin_addr = admin.local_addr();
    let admin_task = tokio::spawn(admin.serve(shutdown.clone()));
    readiness.set(true);
    info!(%addr, topics = state.topics.len(), "ingest serving");

    let app = api::router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serve the api")?;
        // Requests in flight were answered; the sources stop at the shutdown signal too.
        let failed = join_sources(source_tasks).await;
        // Anything still queued is flushed before exit.
        producer
            .flush(std::time::Duration::from_secs(10))
            .context("flush the producer")?;
        admin_task
            .await
            .context("admin server task")?
            .context("admin server")?;
        match failed.as_slice() {
            [] => Ok(()),
            names => bail!("source task failed: {}", names.join(", ")),
        }
    });
    Ok(Running {
        addr,
        admin_addr,
        task,
    })
}

/// How long the sources may take to stop after the shutdown signal.
const SOURCE_STOP: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for every source task (they stop at the shutdown signal); answers the names of those
/// that panicked or did not stop within [`SOURCE_STOP`] (aborted).
async fn join_sources(tasks: Vec<(String, tokio::task::JoinHandle<()>)>) -> Vec<String> {
    let mut failed = Vec::new();
    let deadline = tokio::time::Instant::now() + SOURCE_STOP;
    for (name, mut task) in tasks {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(source = %name, error = %e, "source task failed");
                failed.push(name);
            }
            Err(_) => {
                tracing::error!(source = %name, "source did not stop in time; aborted");
                task.abort();
                failed.push(name);
            }
        }
    }
    failed
}

/// A numeric librdkafka setting from `[kafka.extra]`, or librdkafka's default.
fn librdkafka_setting(
    kafka: &tributary_core::bus::KafkaConfig,
    key: &str,
    default: usize,
) -> anyhow::Result<usize> {
    match kafka.extra.get(key) {
        Some(v) => v
            .parse()
            .with_context(|| format!("kafka.extra.{key:?} = {v:?} is not a number")),
        None => Ok(default),
    }
}

/// Runs the service until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown)
        .await?
        .task
        .await
        .context("ingest task")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sources_are_joined_and_a_failed_one_is_named() {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let tasks = vec![
            (
                "quick".to_string(),
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }),
            ),
            (
                "broken".to_string(),
                tokio::spawn(async { panic!("a source's bug") }),
            ),
        ];
        assert_eq!(join_sources(tasks).await, vec!["broken".to_string()]);
        assert!(done.load(std::sync::atomic::Ordering::SeqCst), "waited for");
    }
}
