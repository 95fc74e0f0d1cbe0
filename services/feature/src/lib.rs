//! The feature service: computes the feature views declared in the catalog (`[[feature]]`):
//! per entity and event-time window (tumbling, hopping, session), aggregations of the input's
//! records, emitted to the output topic when the watermark passes a window's end and again when
//! a late record within the allowed lateness updates it. Window state lives in a compacted
//! changelog topic per view, restored for the partitions a replica is given; the latest values
//! of each entity are served at `GET /v1/features/{view}/{entity}`. See `docs/feature.md`.

mod agg;
mod api;
mod changelog;
pub mod config;
mod handler;
mod metrics;
mod view;

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::bus::{ConsumerLoopConfig, TopicSpec, create_topics};
use tributary_core::runtime::Runtime;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;

pub use config::Config;
use handler::Features;
use metrics::Metrics;
use view::View;

/// Runs the catalog's feature views until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = config.feature.clone();
    let catalog = Catalog::load(&settings.schemas).context("load the topic catalog")?;
    let declared = tributary_core::schema::catalog::pick(
        &catalog.features,
        |v| v.name.as_str(),
        &settings.only,
        "feature view",
        &settings.schemas,
    )
    .map_err(anyhow::Error::msg)?;
    let registry = RegistryClient::new(&config.registry)?;
    let mut views = Vec::new();
    for decl in declared {
        let mut v = View::plan(decl, &catalog).await?;
        let id = registry
            .register(&v.output_subject, v.output_schema_json())
            .await
            .with_context(|| format!("feature {}: register the output schema", v.name))?;
        v.set_output_id(id);
        views.push(v);
    }
    // Changelog topics: compacted, partitioned like the inputs.
    let specs: Vec<TopicSpec> = views
        .iter()
        .map(|v| TopicSpec {
            partitions: v.input_partitions,
            ..TopicSpec::compacted(&v.changelog_topic)
        })
        .collect();
    create_topics(&config.kafka, &specs)
        .await
        .context("create the changelog topics")?;

    let mut setup =
        Runtime::builder("feature", &config.telemetry, shutdown).with_kafka(&config.kafka)?;
    let metrics = Metrics::register(setup.registry());
    let mut runtime = setup.start().await?;

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listen on {}", settings.listen))?;
    info!(addr = %listener.local_addr()?, "feature lookup API listening");
    if settings.credentials.is_empty() {
        tracing::warn!(
            "no feature lookup credentials configured: every lookup will be refused with 401"
        );
    }
    let api = api::lookup_api(&views, settings.credentials.clone());
    runtime.spawn_http("lookup API", listener, api);

    let mut topics: Vec<String> = views.iter().map(|v| v.input_topic.clone()).collect();
    topics.sort();
    topics.dedup();
    let mut loop_config =
        ConsumerLoopConfig::new(settings.group_id.clone(), topics.clone(), "feature");
    loop_config.max_batch_records = settings.batch_records;
    loop_config.max_batch_wait = Duration::from_millis(settings.batch_wait_ms);
    let checkpoint_interval = Duration::from_millis(settings.checkpoint_ms);
    // While no record arrives, checkpoint what the last batches left unsaved.
    loop_config.tick_interval = Some(checkpoint_interval);
    let mut handler = Features {
        views,
        checkpoint_interval,
        checkpoint_records: settings.checkpoint_records,
        since_checkpoint: 0,
        last_checkpoint: Instant::now(),
        registry,
        kafka: config.kafka.clone(),
        metrics,
        shutdown: runtime.shutdown(),
    };
    info!(?topics, "feature running");
    let stats = runtime.run_consumer(loop_config, &mut handler).await?;
    info!(records = stats.records, "feature stopped");
    Ok(())
}
