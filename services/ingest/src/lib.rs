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
use tributary_core::bus::{TopicSpec, create_topics};
use tributary_core::runtime::Runtime;
use tributary_core::schema::bounded::DatumBound;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::schema::sources::SourceDecl;

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
    let max_record_bytes = check_limits(&config)?;
    if settings.credentials.is_empty() {
        tracing::warn!("no credentials configured: every request will be refused with 401");
    }
    let catalog = Catalog::load(&settings.schemas).context("load the topic catalog")?;
    let registry = RegistryClient::new(&config.registry)?;
    let topics = register_topics(&catalog, &registry, &config).await?;

    let mut setup =
        Runtime::builder("ingest", &config.telemetry, shutdown).with_kafka(&config.kafka)?;
    let metrics = metrics::IngestMetrics::register(setup.registry());
    let mut runtime = setup.start().await?;
    let producer = runtime.producer()?.clone();
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
        producer,
        registry,
        metrics,
    });
    // Joined when the API stopped, before the producer is flushed: what a source produced last
    // is flushed too, and a source that failed is reported.
    start_sources(&mut runtime, &catalog, &config, &state).await?;

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("bind the api to {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = runtime.admin_addr();
    info!(%addr, topics = state.topics.len(), "ingest serving");
    let app = api::router(state);
    // Requests in flight are answered, then the sources joined and the producer flushed.
    let task = tokio::spawn(async move {
        runtime
            .run_http("api", listener, app)
            .await
            .map_err(anyhow::Error::from)
    });
    Ok(Running {
        addr,
        admin_addr,
        task,
    })
}

/// Checks that the limits fit together and the producer's; answers the largest record the
/// producer takes (`message.max.bytes`).
fn check_limits(config: &Config) -> anyhow::Result<usize> {
    let settings = &config.ingest;
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
    librdkafka_setting(&config.kafka, "message.max.bytes", 1_000_000)
}

/// Registers each catalog topic's schema (the registry answers the existing id for a known
/// one): the codec of every topic, by name.
async fn register_topics(
    catalog: &Catalog,
    registry: &RegistryClient,
    config: &Config,
) -> anyhow::Result<BTreeMap<String, records::TopicCodec>> {
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
    Ok(topics)
}

/// Starts the file and PostgreSQL sources the catalog declares (those `ingest.sources` names,
/// when set), each a task of `runtime` running until shutdown.
async fn start_sources(
    runtime: &mut Runtime,
    catalog: &Catalog,
    config: &Config,
    state: &api::AppState,
) -> anyhow::Result<()> {
    let settings = &config.ingest;
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
        create_topics(
            &config.kafka,
            &[
                TopicSpec::compacted(&settings.files_progress_topic),
                TopicSpec::compacted(&settings.postgres_progress_topic),
            ],
        )
        .await
        .context("create the source progress topics")?;
    }
    for source in sources {
        let decl = match source {
            SourceDecl::Files(decl) => decl,
            SourceDecl::Postgres(decl) => {
                let ctx = postgres::SourceContext {
                    decl: decl.clone(),
                    topics: catalog.topics.clone(),
                    registry: state.registry.clone(),
                    kafka: config.kafka.clone(),
                    producer: state.producer.clone(),
                    progress_topic: settings.postgres_progress_topic.clone(),
                    metrics: state.metrics.clone(),
                };
                runtime.spawn(decl.name.clone(), postgres::run(ctx, runtime.shutdown()));
                continue;
            }
        };
        let codec = state
            .topics
            .get(&decl.topic)
            .with_context(|| format!("source {}: no topic {}", decl.name, decl.topic))?;
        let file_source = files::FileSource::start(files::SourceSetup {
            decl: decl.clone(),
            topic: codec.topic.clone(),
            schema_id: codec.schema_id,
            store: &settings.object_store,
            kafka: &config.kafka,
            producer: state.producer.clone(),
            progress_topic: &settings.files_progress_topic,
            metrics: state.metrics.clone(),
        })
        .await?;
        runtime.spawn(decl.name.clone(), file_source.run(runtime.shutdown()));
    }
    Ok(())
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
