//! The registry's storage: a compacted Kafka topic, followed from the beginning by every replica
//! and applied to a [`State`]. Writes go to the topic first; a write is done when the replica has
//! read it back, so every replica answers from the same log.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use apache_avro::Schema;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::bus::{
    BusError, KafkaConfig, OutboundRecord, Producer, TopicFollower, TopicSpec, create_topics,
};
use tributary_core::runtime::Runtime;
use tributary_core::schema::catalog::Compatibility;
use tributary_core::schema::compat;
use tributary_core::schema::parse_avro_schema;

use crate::error::ApiError;
use crate::state::{ConfigValue, DeletedValue, Key, MaxIdValue, SchemaValue, State};

/// How long a request waits for this replica to catch up with the topic.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times a registration is proposed again after losing to another replica.
const MAX_PROPOSALS: usize = 20;
/// The name the follower of the schemas topic runs under, as a task of the service runtime.
const FOLLOWER_TASK: &str = "schemas follower";

/// The Kafka-backed store.
#[derive(Debug)]
pub(crate) struct Store {
    state: Arc<RwLock<State>>,
    applied: watch::Receiver<i64>,
    follower: TopicFollower,
    producer: Producer,
    topic: String,
    default_level: Compatibility,
    /// Serializes this replica's own writes (replicas still race, and the log decides).
    writes: Mutex<()>,
}

/// A registered subject version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registered {
    pub(crate) subject: String,
    pub(crate) version: u32,
    pub(crate) id: u32,
    pub(crate) schema: String,
}

impl Store {
    /// Creates the topic if needed (one partition, compacted, kept forever), reads it to the
    /// end, and keeps following it as the task `schemas follower` of `runtime`, until the
    /// runtime's shutdown (it is joined when the service stops). Writes go through the
    /// runtime's producer (its metrics exported, flushed when the service stops).
    pub(crate) async fn open(
        kafka: &KafkaConfig,
        topic: &str,
        default_level: Compatibility,
        runtime: &mut Runtime,
    ) -> Result<Arc<Self>, BusError> {
        let spec = TopicSpec {
            name: topic.to_string(),
            partitions: 1,
            config: vec![
                ("cleanup.policy".into(), "compact".into()),
                ("retention.ms".into(), "-1".into()),
            ],
        };
        create_topics(kafka, &[spec]).await?;
        let follower = TopicFollower::start(kafka, topic).await?;
        let producer = runtime
            .producer()
            .map_err(|e| BusError::Admin {
                topic: topic.to_string(),
                message: e.to_string(),
            })?
            .clone();
        let state = Arc::new(RwLock::new(State::default()));
        let (applied_tx, applied) = watch::channel(0_i64);
        runtime.spawn(
            FOLLOWER_TASK,
            follow(
                follower.clone(),
                state.clone(),
                applied_tx,
                runtime.shutdown(),
            ),
        );
        let store = Arc::new(Self {
            state,
            applied,
            follower,
            producer,
            topic: topic.to_string(),
            default_level,
            writes: Mutex::new(()),
        });
        store.catch_up().await.map_err(|e| BusError::Admin {
            topic: topic.to_string(),
            message: e.message,
        })?;
        info!(
            topic,
            schemas = store.read().schemas.len(),
            "schemas loaded"
        );
        Ok(store)
    }

    /// The state as of the last record read.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The compatibility level used when neither the subject nor the global config sets one.
    pub(crate) fn default_level(&self) -> Compatibility {
        self.default_level
    }

    /// Waits until every record written before this call has been applied.
    pub(crate) async fn catch_up(&self) -> Result<(), ApiError> {
        let ends = self.follower.end_offsets().await.map_err(ApiError::store)?;
        let target = ends.values().copied().max().unwrap_or(0);
        self.wait_applied(target).await
    }

    async fn wait_applied(&self, next_offset: i64) -> Result<(), ApiError> {
        let mut applied = self.applied.clone();
        tokio::time::timeout(CATCH_UP_TIMEOUT, applied.wait_for(|a| *a >= next_offset))
            .await
            .map_err(|_| {
                ApiError::store(format!(
                    "not caught up with {} within {CATCH_UP_TIMEOUT:?}",
                    self.topic
                ))
            })?
            .map_err(|_| ApiError::store("the follower stopped"))?;
        Ok(())
    }

    /// Writes a record and waits until this replica has applied it.
    async fn write(&self, key: &Key, value: Option<Vec<u8>>) -> Result<(), ApiError> {
        let key = serde_json::to_vec(key).map_err(ApiError::store)?;
        let record = match value {
            Some(v) => OutboundRecord::new(&self.topic, Some(key), v),
            None => OutboundRecord::tombstone(&self.topic, key),
        };
        let delivered = self.producer.send(&record).await.map_err(ApiError::store)?;
        self.wait_applied(delivered.offset + 1).await
    }

    /// Registers a schema under a subject, returning the existing version if an equal schema
    /// (same normalized form) is already there; checks compatibility under the subject's level.
    pub(crate) async fn register(
        &self,
        subject: &str,
        schema_text: &str,
    ) -> Result<Registered, ApiError> {
        let schema = parse_avro_schema(schema_text).map_err(ApiError::invalid_schema)?;
        let normalized = normalize(&schema)?;
        let _guard = self.writes.lock().await;
        for _ in 0..MAX_PROPOSALS {
            self.catch_up().await?;
            let (id, version) = {
                let state = self.read();
                if let Some(found) = find_in_subject(&state, subject, &normalized) {
                    return Ok(found);
                }
                let existing: Vec<Schema> = state
                    .live_versions(subject)
                    .iter()
                    .filter_map(|(_, id)| state.schemas.get(id))
                    .filter_map(|s| parse_avro_schema(&s.schema).ok())
                    .collect();
                let reasons = compat::check(
                    state.level_for(subject, self.default_level),
                    &schema,
                    &existing,
                );
                if !reasons.is_empty() {
                    return Err(ApiError::incompatible(&reasons));
                }
                let id = state.id_of(&normalized).unwrap_or(state.max_id + 1);
                (id, state.next_version(subject))
            };
            let key = Key::Schema {
                subject: subject.to_string(),
                version,
                id,
                fingerprint: fingerprint(&normalized),
            };
            let value = SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                schema: schema_text.to_string(),
                normalized: normalized.clone(),
            };
            self.write(
                &key,
                Some(serde_json::to_vec(&value).map_err(ApiError::store)?),
            )
            .await?;
            if let Some(found) = find_in_subject(&self.read(), subject, &normalized) {
                return Ok(found);
            }
            // Another replica took the id or the version first: withdraw the proposal so that
            // compaction cannot bring it back, and propose again from the new state.
            warn!(
                subject,
                id, version, "registration lost a race with another replica; retrying"
            );
            self.write(&key, None).await?;
        }
        Err(ApiError::store(
            "registration kept losing races with other replicas",
        ))
    }

    /// Soft-deletes (or, when `permanent`, hard-deletes an already soft-deleted) subject version.
    pub(crate) async fn delete_version(
        &self,
        subject: &str,
        version: u32,
        permanent: bool,
    ) -> Result<(), ApiError> {
        let _guard = self.writes.lock().await;
        self.catch_up().await?;
        let (sv, normalized) = {
            let state = self.read();
            let sv = state
                .subjects
                .get(subject)
                .ok_or_else(|| ApiError::subject_not_found(subject))?
                .get(&version)
                .copied()
                .ok_or_else(|| ApiError::version_not_found(subject, &version.to_string()))?;
            let normalized = state
                .schemas
                .get(&sv.id)
                .map(|s| s.normalized.clone())
                .unwrap_or_default();
            (sv, normalized)
        };
        if !permanent {
            if sv.deleted {
                return Err(ApiError::version_not_found(subject, &version.to_string()));
            }
            let value =
                serde_json::to_vec(&DeletedValue { deleted: true }).map_err(ApiError::store)?;
            return self
                .write(
                    &Key::Deleted {
                        subject: subject.into(),
                        version,
                    },
                    Some(value),
                )
                .await;
        }
        if !sv.deleted {
            return Err(ApiError::not_soft_deleted(subject, version));
        }
        let max_id = self.read().max_id;
        let max = serde_json::to_vec(&MaxIdValue { max_id }).map_err(ApiError::store)?;
        self.write(&Key::MaxId, Some(max)).await?;
        let key = Key::Schema {
            subject: subject.into(),
            version,
            id: sv.id,
            fingerprint: fingerprint(&normalized),
        };
        self.write(&key, None).await?;
        self.write(
            &Key::Deleted {
                subject: subject.into(),
                version,
            },
            None,
        )
        .await
    }

    /// Sets (or with `None` removes) the compatibility level of a subject or, for `subject: None`,
    /// the global level.
    pub(crate) async fn set_level(
        &self,
        subject: Option<&str>,
        level: Option<Compatibility>,
    ) -> Result<(), ApiError> {
        let _guard = self.writes.lock().await;
        let key = Key::Config {
            subject: subject.map(str::to_string),
        };
        let value = match level {
            Some(l) => Some(
                serde_json::to_vec(&ConfigValue {
                    compatibility_level: l.as_str().to_string(),
                })
                .map_err(ApiError::store)?,
            ),
            None => None,
        };
        self.write(&key, value).await
    }
}

fn find_in_subject(state: &State, subject: &str, normalized: &str) -> Option<Registered> {
    let id = state.id_of(normalized)?;
    let (version, _) = state
        .live_versions(subject)
        .into_iter()
        .find(|(_, v_id)| *v_id == id)?;
    let schema = state.schemas.get(&id)?.schema.clone();
    Some(Registered {
        subject: subject.to_string(),
        version,
        id,
        schema,
    })
}

/// The schema's identity: its JSON as apache-avro writes it back after parsing. Whitespace,
/// attribute order and `{"type": "string"}` vs `"string"` do not matter; defaults, docs, aliases
/// and logical types do, so a new default is a new version (as in Confluent's registry), unlike
/// Avro's Parsing Canonical Form, which drops them.
pub(crate) fn normalize(schema: &Schema) -> Result<String, ApiError> {
    serde_json::to_string(schema).map_err(ApiError::invalid_schema)
}

/// A short, stable fingerprint of a normalized schema, for record keys.
fn fingerprint(normalized: &str) -> String {
    // FNV-1a, 64 bit: stable across versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in normalized.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Applies every record of the topic to the state, forever (until shutdown).
async fn follow(
    follower: TopicFollower,
    state: Arc<RwLock<State>>,
    applied: watch::Sender<i64>,
    shutdown: CancellationToken,
) {
    loop {
        let record = tokio::select! {
            () = shutdown.cancelled() => return,
            r = follower.next() => r,
        };
        match record {
            Ok(r) => {
                if let Some(key) = &r.key {
                    state
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .apply(key, r.payload.as_deref());
                }
                applied.send_replace(r.offset + 1);
            }
            Err(error) => {
                warn!(%error, "reading the schemas topic failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint(""), "cbf29ce484222325");
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }
}
