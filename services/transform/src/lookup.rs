//! Lookup tables for enrichment: a topic (usually a compacted table such as the customers of
//! the database source) followed from its beginning by a background task that keeps the latest
//! value per message key. Before a batch, the transform turns the table into Arrow (again only
//! when it changed) and adds to each input record the value whose key matches one of the
//! record's columns.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, RecordBatch, StructArray, UInt32Array};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::{DataType, Field, SchemaRef};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::bus::{KafkaConfig, TopicFollower};
use tributary_core::runtime::Runtime;
use tributary_core::schema::arrow::AvroBatchDecoder;
use tributary_core::schema::registry::{RegistryClient, learn_writer_schemas};

/// The latest payload per key, written by the follower task.
#[derive(Debug, Default)]
struct Latest {
    values: HashMap<Vec<u8>, Vec<u8>>,
    /// Next offset to read, per partition.
    positions: BTreeMap<i32, i64>,
    /// Bumped on every change.
    version: u64,
}

/// One lookup table.
#[derive(Debug)]
pub(crate) struct LookupTable {
    pub(crate) name: String,
    pub(crate) topic: String,
    schema: SchemaRef,
    latest: Arc<Mutex<Latest>>,
    decoder: AvroBatchDecoder,
    /// The table as Arrow, the version it was built from, and each key's row.
    built: Option<(u64, RecordBatch, HashMap<Vec<u8>, u32>)>,
}

impl LookupTable {
    /// A table not loaded yet (see [`Self::start`]).
    pub(crate) fn new(name: &str, topic: &str, value_schema_json: &str) -> anyhow::Result<Self> {
        let schema = tributary_core::schema::arrow::arrow_schema_for(value_schema_json)?;
        Ok(Self {
            name: name.to_string(),
            topic: topic.to_string(),
            schema,
            latest: Arc::new(Mutex::new(Latest::default())),
            decoder: AvroBatchDecoder::new(Some(value_schema_json.to_string()), 8192),
            built: None,
        })
    }

    /// Starts following the topic, as the task `lookup <name> of transform <transform>` of
    /// `runtime` (it stops at the runtime's shutdown and is joined when the service stops), and
    /// waits until everything written to the topic before the call was read, so the first batch
    /// is enriched with the whole table.
    pub(crate) async fn start(
        &mut self,
        transform: &str,
        kafka: &KafkaConfig,
        runtime: &mut Runtime,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let shutdown = runtime.shutdown();
        let topic = self.topic.clone();
        let follower = TopicFollower::start(kafka, &topic)
            .await
            .with_context(|| format!("follow lookup topic {topic}"))?;
        let ends = follower.end_offsets().await?;
        let latest = self.latest.clone();
        runtime.spawn(
            format!("lookup {} of transform {transform}", self.name),
            follow(follower, latest.clone(), shutdown.clone()),
        );
        let mut waited = 0u64;
        loop {
            let caught_up = {
                let l = latest.lock().unwrap_or_else(PoisonError::into_inner);
                ends.iter()
                    .all(|(p, end)| l.positions.get(p).copied().unwrap_or(0) >= *end)
            };
            if caught_up {
                break;
            }
            if shutdown.is_cancelled() {
                anyhow::bail!("shut down while loading lookup topic {topic}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
            if waited.is_multiple_of(100) {
                let read: i64 = latest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .positions
                    .values()
                    .sum();
                info!(
                    topic,
                    read,
                    of = ends.values().sum::<i64>(),
                    "loading lookup table"
                );
            }
        }
        info!(lookup = %self.name, topic, keys = self.len(), "lookup table loaded");
        Ok(())
    }

    /// The type of the column this table adds to the input.
    pub(crate) fn field(&self) -> Field {
        Field::new(
            &self.name,
            DataType::Struct(self.schema.fields().clone()),
            true,
        )
    }

    /// Rebuilds the Arrow form of the table if it changed since the last call.
    pub(crate) async fn refresh(
        &mut self,
        registry: &RegistryClient,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (version, entries) = {
            let l = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            if self.built.as_ref().is_some_and(|(v, _, _)| *v == l.version) {
                return Ok(());
            }
            let entries: Vec<(Vec<u8>, Vec<u8>)> = l
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (l.version, entries)
        };
        let payloads: Vec<&[u8]> = entries.iter().map(|(_, v)| v.as_slice()).collect();
        learn_writer_schemas(registry, &mut self.decoder, &payloads, shutdown).await?;
        let decoded = self.decoder.decode(payloads.iter().copied());
        for (index, error) in &decoded.errors {
            if let Some((key, _)) = entries.get(*index) {
                warn!(topic = %self.topic, key = %String::from_utf8_lossy(key), %error, "lookup value cannot be decoded; left out");
            }
        }
        let mut rows = HashMap::with_capacity(entries.len());
        let mut batches = Vec::with_capacity(decoded.batches.len());
        let mut next = 0u32;
        for b in decoded.batches {
            for index in &b.rows {
                if let Some((key, _)) = entries.get(*index) {
                    rows.insert(key.clone(), next);
                }
                next += 1;
            }
            batches.push(b.batch);
        }
        let table = concat_batches(&self.schema, &batches)?;
        self.built = Some((version, table, rows));
        Ok(())
    }

    /// The column added to the input: for each key (the input's key column as text), the
    /// table's value for that key, or null.
    pub(crate) fn column(&self, keys: &[Option<Vec<u8>>]) -> anyhow::Result<ArrayRef> {
        let Some((_, table, rows)) = &self.built else {
            anyhow::bail!("lookup {} used before it was loaded", self.name);
        };
        let indices: UInt32Array = keys
            .iter()
            .map(|k| k.as_ref().and_then(|k| rows.get(k).copied()))
            .collect();
        let columns: Vec<ArrayRef> = table
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<Result<_, _>>()?;
        let nulls = indices.nulls().cloned();
        Ok(Arc::new(StructArray::try_new(
            self.schema.fields().clone(),
            columns,
            nulls,
        )?))
    }

    /// Keys in the table now.
    pub(crate) fn len(&self) -> usize {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .len()
    }
}

/// Applies every record of the topic to `latest` until shutdown; read errors are retried.
async fn follow(follower: TopicFollower, latest: Arc<Mutex<Latest>>, shutdown: CancellationToken) {
    loop {
        let record = tokio::select! {
            () = shutdown.cancelled() => return,
            r = follower.next() => r,
        };
        match record {
            Ok(record) => {
                let mut l = latest.lock().unwrap_or_else(PoisonError::into_inner);
                let key = record.key.unwrap_or_default();
                match record.payload {
                    Some(payload) => {
                        l.values.insert(key, payload);
                    }
                    None => {
                        l.values.remove(&key);
                    }
                }
                l.positions.insert(record.partition, record.offset + 1);
                l.version += 1;
            }
            Err(error) => {
                warn!(topic = follower.topic(), %error, "reading lookup topic failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
