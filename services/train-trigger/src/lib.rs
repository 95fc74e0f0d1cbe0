//! The train-trigger service: evaluates the retraining triggers declared in the catalog
//! (`[[trigger]]`) over feature topics (and optionally a topic of model predictions): volume,
//! schedule and drift policies with a cooldown and hysteresis; emits `train.requests` records
//! naming the data to train on, and runs the declared actions (a webhook, a Kubernetes Job).
//! State lives in a compacted topic. See `docs/train-trigger.md`.

mod actions;
pub mod config;
mod cron;
mod drift;
mod handler;
mod metrics;
mod template;
mod trigger;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::bus::{ConsumerLoopConfig, TopicSpec, create_topics, read_partition};
use tributary_core::runtime::Runtime;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;

pub use config::Config;
use handler::Triggers;
use metrics::Metrics;
use trigger::{REQUESTS_TOPIC, Trigger};

/// Runs the catalog's triggers until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = config.train_trigger.clone();
    let catalog = Catalog::load(&settings.schemas).context("load the topic catalog")?;
    let declared = tributary_core::schema::catalog::pick(
        &catalog.triggers,
        |t| t.name.as_str(),
        &settings.only,
        "trigger",
        &settings.schemas,
    )
    .map_err(anyhow::Error::msg)?;
    // Job templates are parsed (and their placeholders checked) once, here: a broken one stops
    // the start.
    let mut templates = HashMap::new();
    for decl in &declared {
        if let Some(w) = &decl.webhook {
            actions::check_webhook_env(w, &settings.webhook_env)
                .with_context(|| format!("trigger {}", decl.name))?;
        }
        if let Some(j) = &decl.kubernetes_job {
            let template = template::JobTemplate::load(&settings.schemas, &j.template)
                .with_context(|| format!("trigger {}", decl.name))?;
            templates.insert(decl.name.clone(), template);
        }
    }
    let registry = RegistryClient::new(&config.registry)?;
    let requests = catalog
        .topic(REQUESTS_TOPIC)
        .context("no train.requests topic in the catalog")?;
    let request_id_schema = registry
        .register(&requests.value_subject(), &requests.value_schema_json)
        .await
        .context("register the schema of train.requests")?;
    let mut triggers = Vec::new();
    for decl in declared {
        let mut t = Trigger::plan(decl, &catalog, &settings.archive_root).await?;
        t.request_id_schema = request_id_schema;
        triggers.push(t);
    }
    create_topics(
        &config.kafka,
        &[TopicSpec::compacted(&settings.state_topic)],
    )
    .await
    .context("create the state topic")?;
    let saved = read_partition(&config.kafka, &settings.state_topic, 0)
        .await
        .context("read the trigger state")?;
    for t in &mut triggers {
        let latest = saved
            .iter()
            .rev()
            .find(|r| r.key.as_deref() == Some(t.decl.name.as_bytes()));
        if let Some(payload) = latest.and_then(|r| r.payload.as_deref()) {
            trigger::restore(t, payload)?;
            info!(trigger = %t.decl.name, requests = t.state.triggers, last = ?t.state.last_trigger_ms, "state restored");
        }
    }

    let mut setup =
        Runtime::builder("train-trigger", &config.telemetry, shutdown).with_kafka(&config.kafka)?;
    let metrics = Metrics::register(setup.registry());
    let runtime = setup.start().await?;

    let mut topics: Vec<String> = triggers
        .iter()
        .flat_map(|t| t.decl.inputs.clone())
        .collect();
    topics.sort();
    topics.dedup();
    let mut loop_config =
        ConsumerLoopConfig::new(settings.group_id.clone(), topics.clone(), "train-trigger");
    loop_config.max_batch_records = settings.batch_records;
    loop_config.max_batch_wait = Duration::from_millis(settings.batch_wait_ms);
    loop_config.tick_interval = Some(Duration::from_secs(settings.tick_seconds.max(1)));
    let mut handler = Triggers {
        // Redirects are not followed: a webhook answering 3xx could send the request, and its
        // headers, to another host.
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        kubernetes: if settings.kubernetes.dry_run {
            reqwest::Client::new()
        } else {
            actions::kubernetes_client(&settings.kubernetes)?
        },
        triggers,
        templates,
        registry,
        settings,
        metrics,
        shutdown: runtime.shutdown(),
    };
    info!(?topics, "train-trigger running");
    let stats = runtime.run_consumer(loop_config, &mut handler).await?;
    info!(records = stats.records, "train-trigger stopped");
    Ok(())
}
