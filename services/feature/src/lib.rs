//! The feature service: computes the feature views declared in the catalog (`[[feature]]`):
//! per entity and event-time window (tumbling, hopping, session), aggregations of the input's
//! records, emitted to the output topic when the watermark passes a window's end and again when
//! a late record within the allowed lateness updates it. Window state lives in a compacted
//! changelog topic per view, restored for the partitions a replica is given; the latest values
//! of each entity are served at `GET /v1/features/{view}/{entity}`. See `docs/feature.md`.

mod agg;
mod changelog;
pub mod config;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::auth::{self, ApiKey};
use tributary_core::bus::{
    BatchHandler, ConsumerLoopConfig, DeadLetter, HandlerError, InboundRecord, KafkaConfig, Output,
    TopicSpec, create_topics, dead_letter_record,
};
use tributary_core::runtime::Runtime;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::{RegistryClient, learn_writer_schemas};

pub use config::Config;
use view::{Online, View};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabel {
    view: String,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    records_in: Family<ViewLabel, Counter>,
    late: Family<ViewLabel, Counter>,
    rejected: Family<ViewLabel, Counter>,
    emitted: Family<ViewLabel, Counter>,
    open_windows: Family<ViewLabel, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them (as `tributary_feature_*`) on `registry`.
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("feature");
        r.register(
            "records_in",
            "input records handled",
            metrics.records_in.clone(),
        );
        r.register(
            "records_late",
            "records too late for every window (to the late topic)",
            metrics.late.clone(),
        );
        r.register(
            "records_rejected",
            "records that could not be read (to dlq.feature)",
            metrics.rejected.clone(),
        );
        r.register(
            "windows_emitted",
            "window results produced",
            metrics.emitted.clone(),
        );
        r.register(
            "open_windows",
            "windows held in state",
            metrics.open_windows.clone(),
        );
        metrics
    }
}

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
    let api = lookup_api(&views, settings.credentials.clone());
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

/// The lookup API over the views' online values.
fn lookup_api(views: &[View], keys: Vec<ApiKey>) -> axum::Router {
    let online: HashMap<String, Online> = views
        .iter()
        .map(|v| (v.name.clone(), v.online.clone()))
        .collect();
    axum::Router::new()
        .route("/v1/features/{view}/{entity}", get(lookup))
        .with_state(Arc::new(Lookup { online, keys }))
}

/// `GET /v1/features/{view}/{entity}`: the entity's latest window values from this replica's
/// state (404 when the view is unknown or the entity has none here). The caller's API key
/// must cover the view: 401 without a known key, 403 for another view.
async fn lookup(
    State(state): State<Arc<Lookup>>,
    Path((view, entity)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let refuse = |status: StatusCode, error: String| {
        (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
    };
    let key = match auth::authenticate_key(&state.keys, &headers) {
        Ok(key) => key,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    if !key.allows(&view) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("{} may not read the view {view}", key.name),
        );
    }
    let Some(values) = state.online.get(&view) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("no feature view {view}")})),
        )
            .into_response();
    };
    let found = values
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .lookup(&entity);
    match found {
        Some(v) => axum::Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("no values for {entity} in {view} on this replica")})),
        )
            .into_response(),
    }
}

/// What the lookup API serves, and to whom.
struct Lookup {
    online: HashMap<String, Online>,
    keys: Vec<ApiKey>,
}

struct Features {
    views: Vec<View>,
    /// Longest time between checkpoints while records arrive.
    checkpoint_interval: Duration,
    /// Most records handled between checkpoints.
    checkpoint_records: u64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    registry: RegistryClient,
    kafka: KafkaConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features")
            .field("views", &self.views.len())
            .finish_non_exhaustive()
    }
}

impl Features {
    /// Writes every view's unsaved state to its changelog (acknowledged with the batch's
    /// output, after which [`BatchHandler::commit_positions`] reports the new positions).
    async fn checkpoint(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        for view in &mut self.views {
            let records = view.checkpoint().map_err(|e| {
                HandlerError::fatal(format!("feature {}: checkpoint: {e:#}", view.name))
            })?;
            for record in records {
                out.send(record).await?;
            }
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

impl BatchHandler for Features {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        for view in &mut self.views {
            let label = ViewLabel {
                view: view.name.clone(),
            };
            // The view's records by partition, each in offset order.
            let mut by_partition: Vec<(i32, Vec<&InboundRecord>)> = Vec::new();
            for r in batch.iter().filter(|r| r.topic == view.input_topic) {
                match by_partition.iter_mut().find(|(p, _)| *p == r.partition) {
                    Some((_, records)) => records.push(r),
                    None => by_partition.push((r.partition, vec![r])),
                }
            }
            for (partition, records) in by_partition {
                view.ensure_restored(&self.kafka, partition)
                    .await
                    .map_err(|e| HandlerError::fatal(format!("feature {}: {e:#}", view.name)))?;
                let payloads: Vec<&[u8]> = records
                    .iter()
                    .filter_map(|r| r.payload.as_deref())
                    .collect();
                learn_writer_schemas(&self.registry, view.decoder(), &payloads, &self.shutdown)
                    .await?;
                let outcome = view
                    .process(partition, &records)
                    .await
                    .map_err(|e| HandlerError::fatal(format!("feature {}: {e:#}", view.name)))?;
                self.metrics
                    .records_in
                    .get_or_create(&label)
                    .inc_by(records.len() as u64);
                self.metrics
                    .emitted
                    .get_or_create(&label)
                    .inc_by(outcome.emitted);
                for record in outcome.outputs {
                    out.send(record).await?;
                }
                for (index, class, message) in outcome.rejected {
                    if let Some(r) = records.get(index) {
                        self.metrics.rejected.get_or_create(&label).inc();
                        out.dead_letter(r, class, &format!("feature {}: {message}", view.name))
                            .await?;
                    }
                }
                for (index, class, message) in outcome.late {
                    let Some(r) = records.get(index) else {
                        continue;
                    };
                    self.metrics.late.get_or_create(&label).inc();
                    match &view.late_topic {
                        None => out.dead_letter(r, class, &message).await?,
                        Some(topic) => {
                            let letter = DeadLetter {
                                stage: "feature",
                                source_topic: &r.topic,
                                partition: r.partition,
                                offset: r.offset,
                                error_class: class,
                                message: &message,
                            };
                            let mut record = dead_letter_record(
                                &letter,
                                r.key.clone(),
                                r.payload.clone().unwrap_or_default(),
                            );
                            record.topic = topic.clone();
                            out.send(record).await?;
                        }
                    }
                }
            }
            self.metrics
                .open_windows
                .get_or_create(&label)
                .set(i64::try_from(view.open_windows()).unwrap_or(i64::MAX));
        }
        self.since_checkpoint += batch.len() as u64;
        if self.since_checkpoint >= self.checkpoint_records
            || self.last_checkpoint.elapsed() >= self.checkpoint_interval
        {
            self.checkpoint(out).await?;
        }
        Ok(())
    }

    /// Offsets follow the checkpoints: a partition's position is stored only once the
    /// changelog records covering it (of every view reading it) were acknowledged, which the
    /// loop ensures by settling the batch's output before asking.
    fn commit_positions(&self) -> Option<Vec<(String, i32, i64)>> {
        let mut positions: HashMap<(&str, i32), i64> = HashMap::new();
        for view in &self.views {
            for (partition, next) in view.checkpointed() {
                positions
                    .entry((view.input_topic.as_str(), partition))
                    .and_modify(|p| *p = (*p).min(next))
                    .or_insert(next);
            }
        }
        Some(
            positions
                .into_iter()
                .map(|((topic, partition), next)| (topic.to_string(), partition, next))
                .collect(),
        )
    }

    async fn tick(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        if self.views.iter().any(View::unsaved) {
            self.checkpoint(out).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.checkpoint(out).await
    }

    fn partitions_revoked(&mut self, partitions: &[(String, i32)]) {
        for view in &mut self.views {
            for (topic, partition) in partitions {
                if *topic == view.input_topic {
                    view.partitions.remove(partition);
                }
            }
        }
    }
}
