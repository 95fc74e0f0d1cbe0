use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

use super::{BusError, KafkaConfig};

/// A topic to create, usually from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Topic-level settings (`retention.ms`, `cleanup.policy`, ...).
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    /// A compacted topic (`cleanup.policy=compact`) of one partition, as services keep their
    /// state and progress in. For more partitions: `TopicSpec { partitions, ..compacted(name) }`.
    pub fn compacted(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            partitions: 1,
            config: vec![("cleanup.policy".to_string(), "compact".to_string())],
        }
    }
}

/// What creating a topic did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicOutcome {
    /// The topic was created.
    Created,
    /// The topic was already there; it was left as it is.
    Existed,
}

/// Creates the topics that do not exist yet (replication factor from `kafka`) and reports,
/// per topic, whether it was created or already there.
pub async fn create_topics(
    kafka: &KafkaConfig,
    topics: &[TopicSpec],
) -> Result<Vec<(String, TopicOutcome)>, BusError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config().create().map_err(BusError::Client)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            t.config.iter().fold(
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(kafka.replication_factor),
                ),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(BusError::Client)?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(name) => {
                info!(topic = %name, "topic created");
                outcomes.push((name, TopicOutcome::Created));
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((name, TopicOutcome::Existed))
            }
            Err((topic, code)) => {
                return Err(BusError::Admin {
                    topic,
                    message: code.to_string(),
                });
            }
        }
    }
    // Kafka answers CreateTopics once its controller committed the topics; the brokers learn of
    // them a moment later, and until then a client sees "unknown topic". Return once they serve.
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .filter(|t| {
            outcomes
                .iter()
                .any(|(name, o)| *name == t.name && *o == TopicOutcome::Created)
        })
        .map(|t| (t.name.clone(), t.partitions))
        .collect();
    if !wanted.is_empty() {
        wait_until_served(Arc::new(admin), wanted).await?;
    }
    Ok(outcomes)
}

/// How long a created topic or a raised partition count may take to reach the brokers.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the broker's metadata has every topic of `wanted` with at least its partition
/// count, each partition with a leader.
async fn wait_until_served(
    admin: Arc<AdminClient<DefaultClientContext>>,
    wanted: Vec<(String, i32)>,
) -> Result<(), BusError> {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + PROPAGATION_TIMEOUT;
        loop {
            let metadata = admin
                .inner()
                .fetch_metadata(None, ADMIN_TIMEOUT)
                .map_err(BusError::Client)?;
            let missing = wanted.iter().find(|(name, partitions)| {
                !metadata.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().len() >= usize::try_from(*partitions).unwrap_or(0)
                        && t.partitions()
                            .iter()
                            .all(|p| p.error().is_none() && p.leader() >= 0)
                })
            });
            match missing {
                None => return Ok(()),
                Some((name, partitions)) if std::time::Instant::now() > deadline => {
                    return Err(BusError::Admin {
                        topic: name.clone(),
                        message: format!(
                            "the broker does not serve its {partitions} partitions {} s after it \
                             acknowledged them",
                            PROPAGATION_TIMEOUT.as_secs()
                        ),
                    });
                }
                Some(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
    .await
    .map_err(|e| BusError::Admin {
        topic: "(all)".to_string(),
        message: format!("metadata task failed: {e}"),
    })?
}

/// One difference between a [`TopicSpec`] and the cluster, found (and, unless a dry run,
/// applied) by [`ensure_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicChange {
    /// The topic did not exist and was created.
    Created {
        /// Topic name.
        topic: String,
        /// Its partitions.
        partitions: i32,
    },
    /// The topic had fewer partitions than the spec asks for; they were raised.
    PartitionsRaised {
        /// Topic name.
        topic: String,
        /// Partitions before.
        from: i32,
        /// Partitions after.
        to: i32,
    },
    /// A topic setting differed from the spec and was set.
    ConfigChanged {
        /// Topic name.
        topic: String,
        /// The setting, e.g. `retention.ms`.
        key: String,
        /// Its value before (`None` when the broker did not report one).
        from: Option<String>,
        /// Its value now.
        to: String,
    },
    /// Not a change: the topic has more partitions than the spec asks for. Partitions are never
    /// lowered (Kafka cannot, and keyed records would move to other partitions), so the topic
    /// was left as it is.
    PartitionsNotLowered {
        /// Topic name.
        topic: String,
        /// Partitions the topic has.
        current: i32,
        /// Partitions the spec asks for.
        wanted: i32,
    },
}

impl TopicChange {
    /// The topic the change concerns.
    pub fn topic(&self) -> &str {
        match self {
            Self::Created { topic, .. }
            | Self::PartitionsRaised { topic, .. }
            | Self::ConfigChanged { topic, .. }
            | Self::PartitionsNotLowered { topic, .. } => topic,
        }
    }

    /// Whether the cluster was (or, in a dry run, would be) changed; `false` for warnings.
    pub fn is_change(&self) -> bool {
        !matches!(self, Self::PartitionsNotLowered { .. })
    }
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the cluster match `specs`, idempotently: creates the topics that are missing, raises the
/// partition count of topics that have fewer partitions than asked (never lowers it: that is
/// reported as [`TopicChange::PartitionsNotLowered`]), and sets the topic settings of each spec
/// that differ from the topic's. Settings the spec does not name are left as they are.
///
/// `on_change` is called with each change once it is made (with `dry_run`, once it is found,
/// and nothing is changed), before the next is attempted: after an error, the changes reported
/// are exactly those made. The result lists them all: missing topics first (created in one
/// request), then the other changes topic by topic in spec order. It is empty when the cluster
/// already matches.
///
/// Settings are written with the AlterConfigs request, which replaces a topic's whole dynamic
/// configuration, so the topic's other dynamic settings are read first and written back with
/// the new ones. rdkafka 0.39 has no IncrementalAlterConfigs; a broker without AlterConfigs or
/// CreatePartitions (Tansu 0.6) fails those two steps with an error naming the topic.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    specs: &[TopicSpec],
    dry_run: bool,
    mut on_change: impl FnMut(&TopicChange),
) -> Result<Vec<TopicChange>, BusError> {
    let mut changes = Vec::new();
    let mut report = |change: TopicChange| {
        on_change(&change);
        changes.push(change);
    };
    if specs.is_empty() {
        return Ok(changes);
    }
    let admin: Arc<AdminClient<DefaultClientContext>> =
        Arc::new(kafka.client_config().create().map_err(BusError::Client)?);
    let existing = partition_counts(admin.clone()).await?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));

    let missing: Vec<TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .cloned()
        .collect();
    if dry_run {
        missing.iter().for_each(|s| report(created(s)));
    } else if !missing.is_empty() {
        let outcomes = create_topics(kafka, &missing).await?;
        for spec in &missing {
            let was_created = outcomes
                .iter()
                .any(|(name, o)| *name == spec.name && *o == TopicOutcome::Created);
            if was_created {
                report(created(spec));
            }
        }
    }

    let present: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| existing.contains_key(&s.name))
        .collect();
    let configs = describe_topic_configs(&admin, &present, &options).await?;
    for spec in present {
        let current = existing[&spec.name];
        if spec.partitions > current {
            if !dry_run {
                raise_partitions(&admin, spec, &options).await?;
                wait_until_served(admin.clone(), vec![(spec.name.clone(), spec.partitions)])
                    .await?;
            }
            report(TopicChange::PartitionsRaised {
                topic: spec.name.clone(),
                from: current,
                to: spec.partitions,
            });
        } else if spec.partitions < current {
            report(TopicChange::PartitionsNotLowered {
                topic: spec.name.clone(),
                current,
                wanted: spec.partitions,
            });
        }

        let Some(current) = configs.get(&spec.name) else {
            continue;
        };
        let differing: Vec<TopicChange> = spec
            .config
            .iter()
            .filter(|(key, wanted)| current.value(key) != Some(wanted.as_str()))
            .map(|(key, wanted)| TopicChange::ConfigChanged {
                topic: spec.name.clone(),
                key: key.clone(),
                from: current.value(key).map(str::to_string),
                to: wanted.clone(),
            })
            .collect();
        if differing.is_empty() {
            continue;
        }
        if !dry_run {
            let mut settings = current.dynamic.clone();
            settings.extend(spec.config.iter().cloned());
            alter_topic_config(&admin, &spec.name, &settings, &options).await?;
        }
        differing.into_iter().for_each(&mut report);
    }
    Ok(changes)
}

fn created(spec: &TopicSpec) -> TopicChange {
    TopicChange::Created {
        topic: spec.name.clone(),
        partitions: spec.partitions,
    }
}

/// A topic's settings as the broker reports them.
#[derive(Debug, Default)]
struct TopicConfig {
    /// Every setting with a value.
    all: BTreeMap<String, String>,
    /// The settings set on the topic itself (not broker defaults): what AlterConfigs must
    /// write back to keep them.
    dynamic: BTreeMap<String, String>,
}

impl TopicConfig {
    fn value(&self, key: &str) -> Option<&str> {
        self.all.get(key).map(String::as_str)
    }
}

/// Partition count of every topic in the cluster.
async fn partition_counts(
    admin: Arc<AdminClient<DefaultClientContext>>,
) -> Result<BTreeMap<String, i32>, BusError> {
    // fetch_metadata blocks: run it off the async threads.
    tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(None, ADMIN_TIMEOUT)
            .map_err(BusError::Client)?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| {
                let n = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
                (t.name().to_string(), n)
            })
            .collect())
    })
    .await
    .map_err(|e| BusError::Admin {
        topic: "(all)".to_string(),
        message: format!("metadata task failed: {e}"),
    })?
}

/// The settings of the topics of `specs` that name settings, by topic.
async fn describe_topic_configs(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[&TopicSpec],
    options: &AdminOptions,
) -> Result<HashMap<String, TopicConfig>, BusError> {
    let specs: Vec<&TopicSpec> = specs
        .iter()
        .copied()
        .filter(|s| !s.config.is_empty())
        .collect();
    let Some(first) = specs.first() else {
        return Ok(HashMap::new());
    };
    let resources: Vec<ResourceSpecifier<'_>> = specs
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    let described = admin
        .describe_configs(&resources, options)
        .await
        .map_err(|e| admin_error(&first.name, "describing configs", &e.to_string()))?;
    let mut out = HashMap::new();
    for (spec, result) in specs.iter().zip(described) {
        let resource = result
            .map_err(|code| admin_error(&spec.name, "describing configs", &code.to_string()))?;
        let mut config = TopicConfig::default();
        for entry in resource.entries {
            let Some(value) = entry.value else { continue };
            if entry.source == ConfigSource::DynamicTopic {
                config.dynamic.insert(entry.name.clone(), value.clone());
            }
            config.all.insert(entry.name, value);
        }
        out.insert(spec.name.clone(), config);
    }
    Ok(out)
}

async fn raise_partitions(
    admin: &AdminClient<DefaultClientContext>,
    spec: &TopicSpec,
    options: &AdminOptions,
) -> Result<(), BusError> {
    let what = "raising partitions (CreatePartitions)";
    let count = usize::try_from(spec.partitions).unwrap_or(0);
    let results = admin
        .create_partitions(&[NewPartitions::new(&spec.name, count)], options)
        .await
        .map_err(|e| admin_error(&spec.name, what, &e.to_string()))?;
    for result in results {
        if let Err((topic, code)) = result {
            return Err(admin_error(&topic, what, &code.to_string()));
        }
    }
    info!(topic = %spec.name, partitions = spec.partitions, "partitions raised");
    Ok(())
}

async fn alter_topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    settings: &BTreeMap<String, String>,
    options: &AdminOptions,
) -> Result<(), BusError> {
    let what = "setting configs (AlterConfigs)";
    let alter = settings.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(topic)),
        |alter, (k, v)| alter.set(k, v),
    );
    let results = admin
        .alter_configs(&[alter], options)
        .await
        .map_err(|e| admin_error(topic, what, &e.to_string()))?;
    for result in results {
        if let Err((_, code)) = result {
            return Err(admin_error(topic, what, &code.to_string()));
        }
    }
    info!(%topic, "topic configs set");
    Ok(())
}

fn admin_error(topic: &str, what: &str, message: &str) -> BusError {
    BusError::Admin {
        topic: topic.to_string(),
        message: format!("{what}: {message}"),
    }
}
