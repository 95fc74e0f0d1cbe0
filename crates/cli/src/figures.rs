//! The figures `tributary up` shows and `tributary status` prints: records per topic, consumer
//! lag per service group, Parquet files in the lake, dead letters, training requests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use tributary_core::bus::{BrokerInspector, KafkaConfig};
use tributary_core::lake::{Lake, LakeConfig};
use tributary_core::schema::catalog::{Catalog, DLQ_STAGES};
use tributary_core::schema::registry::{RegistryClient, RegistryConfig};

/// How long one broker request may take before the figure is left out.
const BROKER_TIMEOUT: Duration = Duration::from_secs(3);

/// The training requests topic.
pub(crate) const REQUESTS_TOPIC: &str = "train.requests";

/// A consumer group of the pipeline and the topics it reads.
#[derive(Debug, Clone)]
struct Group {
    service: &'static str,
    id: String,
    topics: Vec<String>,
}

/// One sample of the stack.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    /// When it was taken.
    pub(crate) at: Instant,
    /// Records per topic (catalog topics, then dead-letter topics); `None` when the topic does
    /// not exist.
    pub(crate) topics: Vec<(String, Option<i64>)>,
    /// Lag per group: (service, group id, records not yet committed); `None` when unknown.
    pub(crate) lag: Vec<(&'static str, String, Option<i64>)>,
    /// Parquet objects in the lake; `None` when no lake is known or it cannot be listed.
    pub(crate) parquet_files: Option<u64>,
    /// Subjects in the registry; `None` when it does not answer.
    pub(crate) subjects: Option<usize>,
    /// Why the broker's figures are missing.
    pub(crate) broker_error: Option<String>,
}

impl Figures {
    /// Records of a topic (0 when it does not exist or is unknown).
    pub(crate) fn records(&self, topic: &str) -> i64 {
        self.topics
            .iter()
            .find(|(name, _)| name == topic)
            .and_then(|(_, n)| *n)
            .unwrap_or(0)
    }

    /// The dead-letter topics and their records (`None`: unknown).
    pub(crate) fn dead_letters(&self) -> impl Iterator<Item = (&str, Option<i64>)> {
        self.topics
            .iter()
            .filter(|(name, _)| name.starts_with("dlq."))
            .map(|(name, n)| (name.as_str(), *n))
    }
}

/// Takes samples of a stack: a broker inspector (created at the first sample, then kept), the
/// registry's URL and the lake.
pub(crate) struct Probe {
    kafka: KafkaConfig,
    inspector: Option<Arc<BrokerInspector>>,
    topics: Vec<String>,
    groups: Vec<Group>,
    registry_url: String,
    registry: RegistryClient,
    lake: Option<Lake>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("bootstrap", &self.kafka.bootstrap_servers)
            .field("registry", &self.registry_url)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe of the stack at `kafka` and `registry`, reading the catalog's topics and the
    /// default consumer groups of the services; counts Parquet files in `lake` when given.
    pub(crate) fn new(
        catalog: &Catalog,
        kafka: &KafkaConfig,
        registry: &RegistryConfig,
        lake: Option<&LakeConfig>,
    ) -> Result<Self> {
        let mut topics: Vec<String> = catalog.topics.keys().cloned().collect();
        topics.extend(DLQ_STAGES.iter().map(|s| format!("dlq.{s}")));
        let lake = match lake {
            Some(config) => Some(
                Lake::open(config).with_context(|| format!("open the lake at {}", config.url))?,
            ),
            None => None,
        };
        Ok(Self {
            kafka: kafka.clone(),
            inspector: None,
            topics,
            groups: groups(catalog),
            registry_url: registry.url.clone(),
            registry: RegistryClient::new(&RegistryConfig {
                timeout_ms: 2_000,
                ..registry.clone()
            })
            .context("registry client")?,
            lake,
        })
    }

    fn inspector(&mut self) -> Result<Arc<BrokerInspector>> {
        if let Some(inspector) = &self.inspector {
            return Ok(inspector.clone());
        }
        let inspector = Arc::new(
            BrokerInspector::new(&self.kafka)
                .map_err(crate::kafka_error)?
                .with_timeout(BROKER_TIMEOUT),
        );
        self.inspector = Some(inspector.clone());
        Ok(inspector)
    }

    /// Takes a sample. Never fails: what cannot be read is left out and said why.
    pub(crate) async fn sample(&mut self) -> Figures {
        let at = Instant::now();
        let inspector = self.inspector();
        let (broker, subjects, parquet_files) = tokio::join!(
            sample_broker(inspector, &self.topics, &self.groups),
            subjects(&self.registry),
            count_parquet(self.lake.as_ref())
        );
        let (topics, lag, broker_error) = match broker {
            Ok((topics, lag)) => (topics, lag, None),
            Err(e) => (
                self.topics.iter().map(|t| (t.clone(), None)).collect(),
                self.groups
                    .iter()
                    .map(|g| (g.service, g.id.clone(), None))
                    .collect(),
                Some(format!("{e:#}")),
            ),
        };
        Figures {
            at,
            topics,
            lag,
            parquet_files,
            subjects,
            broker_error,
        }
    }
}

/// Records per topic and lag per group, from the broker. Fails only when its metadata cannot be
/// read; a figure it does not answer for is `None`.
#[allow(clippy::type_complexity)]
async fn sample_broker(
    inspector: Result<Arc<BrokerInspector>>,
    topics: &[String],
    groups: &[Group],
) -> Result<(
    Vec<(String, Option<i64>)>,
    Vec<(&'static str, String, Option<i64>)>,
)> {
    let inspector = inspector?;
    let offsets = inspector
        .topic_offsets(topics)
        .await
        .map_err(crate::kafka_error)
        .context("broker metadata")?;
    let counts = offsets
        .iter()
        .map(|t| (t.topic.clone(), t.records()))
        .collect();
    let mut lag = Vec::with_capacity(groups.len());
    for group in groups {
        // Records of the group's topics after its committed offsets (from the start of a
        // partition it never committed on).
        let read = offsets.iter().filter(|t| group.topics.contains(&t.topic));
        let total = inspector
            .group_lag(&group.id, read)
            .await
            .ok()
            .map(|lag| lag.total());
        lag.push((group.service, group.id.clone(), total));
    }
    Ok((counts, lag))
}

/// The services' consumer groups (their default ids) and the topics each reads, from the catalog.
fn groups(catalog: &Catalog) -> Vec<Group> {
    let set = |topics: BTreeSet<String>| topics.into_iter().collect::<Vec<_>>();
    vec![
        Group {
            service: "transform",
            id: "tributary-transform".into(),
            topics: set(catalog
                .transforms
                .iter()
                .flat_map(|t| t.inputs.iter().cloned())
                .collect()),
        },
        Group {
            service: "feature",
            id: "tributary-feature".into(),
            topics: set(catalog.features.iter().map(|f| f.input.clone()).collect()),
        },
        Group {
            service: "train-trigger",
            id: "tributary-train-trigger".into(),
            topics: set(catalog
                .triggers
                .iter()
                .flat_map(|t| {
                    t.inputs
                        .iter()
                        .cloned()
                        .chain(t.features.iter().filter_map(|f| f.topic.clone()))
                })
                .collect()),
        },
        Group {
            service: "archive",
            id: "tributary-archive".into(),
            topics: set(catalog
                .topics
                .values()
                .filter(|t| t.archive)
                .map(|t| t.name.clone())
                .collect()),
        },
    ]
}

/// Subjects in the registry, `None` when it does not answer (or refuses the credentials).
async fn subjects(registry: &RegistryClient) -> Option<usize> {
    registry.subjects().await.ok().map(|list| list.len())
}

/// Parquet objects under the lake's root.
async fn count_parquet(lake: Option<&Lake>) -> Option<u64> {
    let lake = lake?;
    let mut listing = lake.store().list(Some(lake.root()));
    let mut n = 0;
    while let Some(item) = listing.next().await {
        if item.ok()?.location.as_ref().ends_with(".parquet") {
            n += 1;
        }
    }
    Some(n)
}
