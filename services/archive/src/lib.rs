//! The archive service: every topic the catalog marks for archiving, as Parquet on object
//! storage at `<root>/<topic>/dt=YYYY-MM-DD/hr=HH/<topic>+<partition>+<first offset>.parquet`,
//! effectively once (see [`writer`] for how).

pub mod config;
mod metrics;
mod paths;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::bus::{BusMetrics, ConsumerLoopConfig, Producer, run_consumer};
use tributary_core::lake::Lake;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::telemetry::{AdminServer, Readiness, new_registry};

pub use config::Config;

fn compression(name: &str) -> anyhow::Result<Compression> {
    Ok(match name {
        "zstd" => Compression::ZSTD(ZstdLevel::try_new(3)?),
        "snappy" => Compression::SNAPPY,
        "none" => Compression::UNCOMPRESSED,
        other => bail!("archive.compression {other:?}: use zstd, snappy or none"),
    })
}

/// Runs the archive until `shutdown`: on a clean stop every open file is written and its
/// offsets committed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = config.archive.clone();
    let catalog = Catalog::load(&settings.schemas).context("load the topic catalog")?;
    let topics: HashMap<String, writer::TopicInfo> = catalog
        .topics
        .values()
        .filter(|t| t.archive)
        .map(|t| {
            (
                t.name.clone(),
                writer::TopicInfo {
                    event_time_field: t.event_time_field.clone(),
                },
            )
        })
        .collect();
    if topics.is_empty() {
        bail!(
            "no topic in {} has archive = true",
            settings.schemas.display()
        );
    }
    let lake = Lake::open(&config.lake)
        .with_context(|| format!("open the lake at {}", config.lake.url))?;
    let registry = RegistryClient::new(&config.registry)?;
    let properties = WriterProperties::builder()
        .set_compression(compression(&settings.compression)?)
        .build();

    let mut metrics_registry = new_registry();
    let bus_metrics = BusMetrics::register(&mut metrics_registry);
    let metrics = metrics::ArchiveMetrics::register(&mut metrics_registry);
    let producer = Producer::new(&config.kafka, bus_metrics.clone())?;
    let readiness = Readiness::default();
    let admin = AdminServer::bind(
        config.telemetry.admin_addr,
        Arc::new(metrics_registry),
        readiness.clone(),
    )
    .await?;
    let admin_task = tokio::spawn(admin.serve(shutdown.clone()));

    let mut names: Vec<String> = topics.keys().cloned().collect();
    names.sort();
    let mut loop_config =
        ConsumerLoopConfig::new(settings.group_id.clone(), names.clone(), "archive");
    loop_config.max_batch_records = settings.batch_records;
    loop_config.max_batch_wait = Duration::from_millis(200);
    loop_config.tick_interval = Some(Duration::from_secs(1));
    let mut archiver = writer::Archiver::new(
        lake,
        topics,
        registry,
        settings,
        properties,
        metrics,
        shutdown.clone(),
    )
    .with_readiness(readiness.clone());
    readiness.set(true);
    info!(topics = ?names, lake = %config.lake.url, "archive running");
    let stats = run_consumer(
        &config.kafka,
        &loop_config,
        &producer,
        &bus_metrics,
        &mut archiver,
        shutdown,
    )
    .await
    .context("archive consumer")?;
    info!(records = stats.records, "archive stopped");
    admin_task.await.context("admin server task")??;
    Ok(())
}
