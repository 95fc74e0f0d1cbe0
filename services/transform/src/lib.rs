//! The transform service: runs the transforms declared in the catalog (`[[transform]]`), each
//! reading input topics and writing one output topic: validation rules, deduplication, lookup
//! enrichment and a row-wise SQL statement (DataFusion on Arrow batches), at least once through
//! the shared consumer loop. Records that fail go to `dlq.transform` naming the transform, the
//! step and the reason. See `docs/transform.md`.

pub mod config;
mod dedup;
mod engine;
mod handler;
mod lookup;
mod metrics;
mod rules;

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::bus::ConsumerLoopConfig;
use tributary_core::runtime::Runtime;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;

pub use config::Config;
use engine::Transform;
use handler::Transformer;
use metrics::TransformMetrics;

/// Runs the catalog's transforms until `shutdown`; on a clean stop the last batch's outputs are
/// acknowledged and its offsets committed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = config.transform.clone();
    let catalog = Catalog::load(&settings.schemas).context("load the topic catalog")?;
    let declared = tributary_core::schema::catalog::pick(
        &catalog.transforms,
        |t| t.name.as_str(),
        &settings.only,
        "transform",
        &settings.schemas,
    )
    .map_err(anyhow::Error::msg)?;
    let registry = RegistryClient::new(&config.registry)?;

    let mut setup =
        Runtime::builder("transform", &config.telemetry, shutdown).with_kafka(&config.kafka)?;
    let metrics = TransformMetrics::register(setup.registry());
    let mut runtime = setup.start().await?;

    let mut transforms = Vec::new();
    for decl in declared {
        let t = Transform::plan(decl, &catalog)
            .await?
            .start(&registry, &config.kafka, &mut runtime)
            .await?;
        info!(transform = %t.name, inputs = ?decl.inputs, output = %t.output_topic, "transform ready");
        transforms.push(t);
    }
    let mut topics: Vec<String> = transforms
        .iter()
        .flat_map(|t| t.input_topics().cloned())
        .collect();
    topics.sort();
    topics.dedup();

    let mut loop_config =
        ConsumerLoopConfig::new(settings.group_id.clone(), topics.clone(), "transform");
    loop_config.max_batch_records = settings.batch_records;
    loop_config.max_batch_wait = Duration::from_millis(settings.batch_wait_ms);
    let mut handler = Transformer {
        transforms,
        registry,
        metrics,
        shutdown: runtime.shutdown(),
    };
    info!(?topics, "transform running");
    let stats = runtime.run_consumer(loop_config, &mut handler).await?;
    info!(records = stats.records, "transform stopped");
    Ok(())
}
