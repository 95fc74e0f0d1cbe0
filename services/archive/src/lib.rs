//! The archive service: every topic the catalog marks for archiving, as Parquet on object
//! storage at `<root>/<topic>/dt=YYYY-MM-DD/hr=HH/<topic>+<partition>+<first offset>.parquet`,
//! effectively once (see [`writer`] for how).

pub mod config;
mod metrics;
mod paths;
mod writer;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::bus::ConsumerLoopConfig;
use tributary_core::lake::Lake;
use tributary_core::runtime::Runtime;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;

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

    let mut setup =
        Runtime::builder("archive", &config.telemetry, shutdown).with_kafka(&config.kafka)?;
    let metrics = metrics::ArchiveMetrics::register(setup.registry());
    let runtime = setup.start().await?;

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
        runtime.shutdown(),
    )
    .with_readiness(runtime.readiness());
    info!(topics = ?names, lake = %config.lake.url, "archive running");
    let stats = runtime.run_consumer(loop_config, &mut archiver).await?;
    info!(records = stats.records, "archive stopped");
    Ok(())
}
