//! The train-trigger service: evaluates the retraining triggers declared in the catalog
//! (`[[trigger]]`) over feature topics (and optionally a topic of model predictions): volume,
//! schedule and drift policies with a cooldown and hysteresis; emits `train.requests` records
//! naming the data to train on, and runs the declared actions (a webhook, a Kubernetes Job).
//! State lives in a compacted topic. See `docs/train-trigger.md`.

mod actions;
pub mod config;
mod cron;
mod drift;
mod template;
mod trigger;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tributary_core::bus::{
    BatchHandler, ConsumerLoopConfig, HandlerError, InboundRecord, OutboundRecord, Output,
    TopicSpec, create_topics, read_partition,
};
use tributary_core::runtime::Runtime;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::{RegistryClient, learn_writer_schemas};

pub use config::Config;
use config::Settings;
use trigger::{Events, REQUESTS_TOPIC, Trigger};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabel {
    trigger: String,
    feature: String,
    metric: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    trigger: String,
    policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabel {
    trigger: String,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    drift: Family<DriftLabel, Gauge<f64, AtomicU64>>,
    fired: Family<PolicyLabel, Counter>,
    suppressed: Family<TriggerLabel, Counter>,
    windows: Family<TriggerLabel, Counter>,
    action_failures: Family<TriggerLabel, Counter>,
    records_in: Family<TriggerLabel, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them (as `tributary_train_trigger_*`) on `registry`.
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("train_trigger");
        r.register(
            "drift",
            "drift of the last window against the reference, per feature and metric",
            metrics.drift.clone(),
        );
        r.register(
            "triggers_fired",
            "retraining requests, by policy",
            metrics.fired.clone(),
        );
        r.register(
            "triggers_suppressed",
            "requests held back by the cooldown",
            metrics.suppressed.clone(),
        );
        r.register(
            "windows",
            "drift windows evaluated",
            metrics.windows.clone(),
        );
        r.register(
            "action_failures",
            "webhook or job actions that failed every attempt",
            metrics.action_failures.clone(),
        );
        r.register(
            "records_in",
            "input records handled",
            metrics.records_in.clone(),
        );
        metrics
    }
}

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

struct Triggers {
    triggers: Vec<Trigger>,
    /// The parsed Job template of each trigger with a `kubernetes_job`, by trigger name.
    templates: HashMap<String, template::JobTemplate>,
    registry: RegistryClient,
    settings: Settings,
    metrics: Metrics,
    http: reqwest::Client,
    kubernetes: reqwest::Client,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("triggers", &self.triggers.len())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Triggers {
    /// Runs the actions of requests produced by earlier (settled) batches; an action that
    /// fails every attempt is dropped with an error logged and counted.
    async fn run_actions(&mut self) {
        for t in &mut self.triggers {
            if t.state.pending.is_empty() {
                continue;
            }
            let label = TriggerLabel {
                trigger: t.decl.name.clone(),
            };
            for action in std::mem::take(&mut t.state.pending) {
                let result = match action.kind {
                    actions::ActionKind::Webhook => match &t.decl.webhook {
                        Some(w) => {
                            actions::webhook(
                                &self.http,
                                w,
                                &self.settings.webhook_env,
                                &action,
                                &self.shutdown,
                            )
                            .await
                        }
                        None => Ok(()),
                    },
                    actions::ActionKind::KubernetesJob => {
                        match (&t.decl.kubernetes_job, self.templates.get(&t.decl.name)) {
                            (Some(j), Some(template)) => {
                                actions::kubernetes_job(
                                    &self.kubernetes,
                                    &self.settings.kubernetes,
                                    j,
                                    template,
                                    &action,
                                )
                                .await
                            }
                            (Some(_), None) => Err(anyhow::anyhow!("no job template was loaded")),
                            (None, _) => Ok(()),
                        }
                    }
                };
                if let Err(e) = result {
                    if self.shutdown.is_cancelled() {
                        // Kept for the next start.
                        t.state.pending.push(action);
                        continue;
                    }
                    error!(trigger = %t.decl.name, request_id = %action.request_id, error = %format!("{e:#}"), "action failed");
                    self.metrics.action_failures.get_or_create(&label).inc();
                }
            }
            t.dirty = true;
        }
    }

    fn record_events(&self, t: &Trigger, events: &Events) {
        let label = TriggerLabel {
            trigger: t.decl.name.clone(),
        };
        for policy in &events.fired {
            self.metrics
                .fired
                .get_or_create(&PolicyLabel {
                    trigger: t.decl.name.clone(),
                    policy: policy.clone(),
                })
                .inc();
        }
        self.metrics
            .suppressed
            .get_or_create(&label)
            .inc_by(events.suppressed);
        self.metrics
            .windows
            .get_or_create(&label)
            .inc_by(events.windows);
        for m in &t.state.reported {
            self.metrics
                .drift
                .get_or_create(&DriftLabel {
                    trigger: t.decl.name.clone(),
                    feature: m.feature.clone(),
                    metric: m.metric.clone(),
                })
                .set(m.value);
        }
    }

    async fn save(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        for t in &mut self.triggers {
            if t.dirty {
                let payload = serde_json::to_vec(&t.state).map_err(HandlerError::fatal)?;
                out.send(OutboundRecord::new(
                    self.settings.state_topic.clone(),
                    Some(t.decl.name.clone().into_bytes()),
                    payload,
                ))
                .await?;
                t.dirty = false;
            }
        }
        Ok(())
    }
}

impl BatchHandler for Triggers {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        self.run_actions().await;
        let now = now_ms();
        for i in 0..self.triggers.len() {
            let inputs = self.triggers[i].decl.inputs.clone();
            let mut events = Events::default();
            for topic in &inputs {
                let records: Vec<&InboundRecord> =
                    batch.iter().filter(|r| &r.topic == topic).collect();
                if records.is_empty() {
                    continue;
                }
                let t = &mut self.triggers[i];
                if let Some(decoder) = t.decoder(topic) {
                    let payloads: Vec<&[u8]> = records
                        .iter()
                        .filter_map(|r| r.payload.as_deref())
                        .collect();
                    learn_writer_schemas(&self.registry, decoder, &payloads, &self.shutdown)
                        .await?;
                }
                let requests = t
                    .process(topic, &records, now, &mut events)
                    .await
                    .map_err(|e| HandlerError::fatal(format!("trigger {}: {e:#}", t.decl.name)))?;
                self.metrics
                    .records_in
                    .get_or_create(&TriggerLabel {
                        trigger: t.decl.name.clone(),
                    })
                    .inc_by(records.len() as u64);
                for request in requests {
                    out.send(request).await?;
                }
                for (index, message) in std::mem::take(&mut events.rejected) {
                    if let Some(r) = records.get(index) {
                        out.dead_letter(
                            r,
                            "decode",
                            &format!("trigger {}: {message}", t.decl.name),
                        )
                        .await?;
                    }
                }
            }
            self.record_events(&self.triggers[i], &events);
        }
        self.save(out).await
    }

    async fn tick(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.run_actions().await;
        let now = now_ms();
        for i in 0..self.triggers.len() {
            let mut events = Events::default();
            let t = &mut self.triggers[i];
            if let Some(request) = t
                .check(now, &mut events)
                .map_err(|e| HandlerError::fatal(format!("trigger {}: {e:#}", t.decl.name)))?
            {
                out.send(request).await?;
            }
            self.record_events(&self.triggers[i], &events);
        }
        self.save(out).await
    }

    async fn finish(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.save(out).await
    }
}
