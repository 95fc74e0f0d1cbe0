//! Deterministic simulation of the archive's effectively-once rules.
//!
//! Each schedule, from a seed, builds a log of two partitions (Avro records under two schemas,
//! hour changes, tombstones, undecodable records) and plays a random sequence of what a consumer
//! group does to the archive: batches of random sizes, file cuts of every kind (hour, schema,
//! size, record count, age, memory, SIGTERM), stored positions committed or lost, kills,
//! clean rebalances, zombie replicas (a member that lost its partitions without hearing of it
//! and keeps writing; its commits are refused, as Kafka fences a stale generation), and an
//! object store that fails calls or loses the answer of a put that succeeded. A last owner
//! then reads to the end. Every schedule asserts: every record is in the lake, no offset is in
//! two files, no object was replaced, and every file's key and metadata name its first offset.
//!
//! `TRIBUTARY_SIM_SCHEDULES` sets the number of schedules (default 10,000) and
//! `TRIBUTARY_SIM_SEED` runs one seed; a failure prints its seed and its schedule.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{Int32Array, Int64Array};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::EnabledStatistics;
use prometheus_client::registry::Registry;
use tributary_core::bus::{BatchHandler, BoxError, InboundRecord};
use tributary_core::schema::registry::{RegistryClient, RegistryConfig};

use super::*;

const TOPIC: &str = "t";
const PARTITIONS: i32 = 2;
const SCHEMA_1: &str = r#"{"type":"record","name":"E","fields":[{"name":"n","type":"long"}]}"#;
const SCHEMA_2: &str = r#"{"type":"record","name":"E","fields":[{"name":"n","type":"long"},{"name":"s","type":"string","default":""}]}"#;

/// SplitMix64: small, seeded, the same on every machine.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `per_mille` times in a thousand.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Row,
    Tombstone,
    Undecodable,
}

fn zigzag(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// The topic's records per partition, and what each is.
fn build_log(rng: &mut Rng) -> Vec<Vec<(InboundRecord, Kind)>> {
    (0..PARTITIONS)
        .map(|partition| {
            let n = 10 + rng.below(110) as i64;
            let mut time: i64 = 1_767_225_600_000; // 2026-01-01T00:00Z
            let mut schema: u32 = 1;
            (0..n)
                .map(|offset| {
                    if rng.chance(30) {
                        time += 3_600_000;
                    } else {
                        time += rng.below(2_000) as i64;
                    }
                    if rng.chance(40) {
                        schema = 3 - schema;
                    }
                    let kind = match rng.below(100) {
                        0..=3 => Kind::Tombstone,
                        4..=6 => Kind::Undecodable,
                        _ => Kind::Row,
                    };
                    let payload = match kind {
                        Kind::Tombstone => None,
                        Kind::Undecodable => Some(b"not avro".to_vec()),
                        Kind::Row => {
                            let mut p = vec![0];
                            p.extend_from_slice(&schema.to_be_bytes());
                            zigzag(&mut p, offset);
                            if schema == 2 {
                                zigzag(&mut p, 1);
                                p.push(b'x');
                            }
                            Some(p)
                        }
                    };
                    let record = InboundRecord {
                        topic: TOPIC.to_string(),
                        partition,
                        offset,
                        key: None,
                        payload,
                        timestamp_ms: Some(time),
                        headers: Vec::new(),
                    };
                    (record, kind)
                })
                .collect()
        })
        .collect()
}

/// An in-memory object store that fails calls, or loses the answer of a put that succeeded,
/// while faults are on; it counts puts that replaced an object.
#[derive(Debug)]
struct FaultyStore {
    inner: InMemory,
    faults: Mutex<Faults>,
}

#[derive(Debug)]
struct Faults {
    rng: Rng,
    on: bool,
    replaced: u64,
    injected: u64,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore")
    }
}

impl FaultyStore {
    fn new(seed: u64) -> Self {
        Self {
            inner: InMemory::new(),
            faults: Mutex::new(Faults {
                rng: Rng(seed ^ 0x5eed),
                on: false,
                replaced: 0,
                injected: 0,
            }),
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn inject(&self, per_mille: u64, operation: &str) -> object_store::Result<()> {
        let mut f = self.faults();
        if f.on && f.rng.chance(per_mille) {
            f.injected += 1;
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: format!("injected {operation} failure").into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inject(250, "put")?;
        let existed = self.inner.head(location).await.is_ok();
        let overwrite = matches!(opts.mode, PutMode::Overwrite);
        let result = self.inner.put_opts(location, payload, opts).await?;
        if existed && overwrite {
            self.faults().replaced += 1;
        }
        // The object is stored, but the writer hears of a failure.
        self.inject(150, "put answer")?;
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if self.inner.head(location).await.is_ok() {
            self.faults().replaced += 1;
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inject(150, "get")?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A member of the consumer group: its archive and its consumer's positions.
struct Member {
    name: String,
    archiver: Archiver,
    /// Next offset the consumer fetches, per partition.
    fetch: BTreeMap<i32, i64>,
    /// Positions stored for the next commit, per partition.
    stored: BTreeMap<i32, i64>,
}

impl Member {
    fn store_positions(&mut self) {
        for (topic, partition, position) in self.archiver.commit_positions().unwrap_or_default() {
            if topic == TOPIC && self.fetch.contains_key(&partition) {
                self.stored.insert(partition, position);
            }
        }
    }
}

struct Sim {
    rng: Rng,
    log: Vec<Vec<(InboundRecord, Kind)>>,
    store: Arc<FaultyStore>,
    registry: RegistryClient,
    committed: BTreeMap<i32, i64>,
    owner: Option<Member>,
    zombies: Vec<Member>,
    members: u32,
    schedule: Vec<String>,
}

impl Sim {
    fn new_member(&mut self) -> Result<Member, BoxError> {
        let rng = &mut self.rng;
        let settings = ArchiveSettings {
            schemas: PathBuf::new(),
            group_id: "sim".into(),
            max_file_records: 1 + rng.below(40),
            max_file_bytes: 2_000 + rng.below(60_000),
            max_buffered_bytes: 4_000 + rng.below(200_000),
            max_open_seconds: 3_600,
            compression: "none".into(),
            batch_records: 1 + rng.below(40) as usize,
        };
        self.member_with(settings)
    }

    fn member_with(&mut self, settings: ArchiveSettings) -> Result<Member, BoxError> {
        self.members += 1;
        let name = format!(
            "m{} (file records {}, file bytes {}, buffered {}, decode batch {})",
            self.members,
            settings.max_file_records,
            settings.max_file_bytes,
            settings.max_buffered_bytes,
            settings.batch_records
        );
        let topics = HashMap::from([(
            TOPIC.to_string(),
            TopicInfo {
                event_time_field: None,
            },
        )]);
        let lake = Lake::from_store(self.store.clone(), Path::from("lake"));
        // Small files: no dictionaries, statistics or page indexes to build (the rules under
        // test do not depend on the encoding, and the schedules run in seconds).
        let properties = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_offset_index_disabled(true)
            .set_data_page_size_limit(4096)
            .set_write_batch_size(256)
            .build();
        let metrics = ArchiveMetrics::register(&mut Registry::default());
        let mut archiver = Archiver::new(
            lake,
            topics,
            self.registry.clone(),
            settings,
            properties,
            metrics,
            CancellationToken::new(),
        );
        for (id, schema) in [(1, SCHEMA_1), (2, SCHEMA_2)] {
            archiver.decoder.register(id, schema)?;
            archiver.schemas.insert(id, Arc::from(schema));
        }
        self.schedule.push(format!("new member {name}"));
        Ok(Member {
            name,
            archiver,
            fetch: self.committed.clone(),
            stored: BTreeMap::new(),
        })
    }

    /// The next records a member's consumer returns: up to `n`, partitions interleaved.
    fn fetch(&mut self, member: &mut Member, n: usize) -> Vec<InboundRecord> {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            let open: Vec<i32> = member
                .fetch
                .iter()
                .filter(|(p, next)| (**next as usize) < self.log[**p as usize].len())
                .map(|(p, _)| *p)
                .collect();
            if open.is_empty() {
                break;
            }
            let p = open[self.rng.below(open.len() as u64) as usize];
            let run = 1 + self.rng.below(8) as usize;
            for _ in 0..run {
                let next = member.fetch.get(&p).copied().unwrap_or(0);
                let Some((record, _)) = self.log[p as usize].get(next as usize) else {
                    break;
                };
                batch.push(record.clone());
                member.fetch.insert(p, next + 1);
                if batch.len() >= n {
                    break;
                }
            }
        }
        batch
    }

    async fn deliver(&mut self, mut member: Member, zombie: bool) -> Result<Member, BoxError> {
        let n = 1 + self.rng.below(30) as usize;
        let batch = self.fetch(&mut member, n);
        if batch.is_empty() {
            return Ok(member);
        }
        let span: Vec<String> = batch
            .iter()
            .map(|r| format!("{}:{}", r.partition, r.offset))
            .collect();
        let who = if zombie { "zombie " } else { "" };
        self.schedule
            .push(format!("{who}{} handles [{}]", member.name, span.join(" ")));
        member.archiver.process(&batch).await?;
        // Every store failure of the batch was retried until it passed: none is reported.
        let problems = member.archiver.readiness.problems();
        if !problems.is_empty() {
            return Err(format!("readiness still reports {problems:?} after the batch").into());
        }
        member.store_positions();
        Ok(member)
    }

    fn commit(&mut self, member: &Member) {
        for (p, position) in &member.stored {
            self.committed.insert(*p, *position);
        }
        self.schedule
            .push(format!("{} commits {:?}", member.name, self.committed));
    }

    async fn step(&mut self) -> Result<(), BoxError> {
        let owner = match self.owner.take() {
            Some(owner) => owner,
            None => self.new_member()?,
        };
        let roll = self.rng.below(100);
        match roll {
            0..=44 => {
                self.owner = Some(self.deliver(owner, false).await?);
            }
            45..=56 => {
                self.commit(&owner);
                self.owner = Some(owner);
            }
            57..=63 => {
                let mut owner = owner;
                self.schedule
                    .push(format!("{} writes its open files (age)", owner.name));
                owner.archiver.close_all(None).await?;
                owner.store_positions();
                self.owner = Some(owner);
            }
            64..=67 => {
                self.schedule.push(format!("{} killed", owner.name));
            }
            68..=71 => {
                let mut owner = owner;
                self.commit(&owner);
                let all: Vec<(String, i32)> =
                    (0..PARTITIONS).map(|p| (TOPIC.to_string(), p)).collect();
                owner.archiver.partitions_revoked(&all);
                if self.rng.chance(500) {
                    self.schedule
                        .push(format!("{} revoked and assigned again", owner.name));
                    owner.fetch = self.committed.clone();
                    owner.stored.clear();
                    self.owner = Some(owner);
                } else {
                    self.schedule
                        .push(format!("{} revoked; the partitions move", owner.name));
                }
            }
            72..=75 => {
                self.schedule.push(format!(
                    "{} stalls (becomes a zombie); the partitions move",
                    owner.name
                ));
                self.zombies.push(owner);
            }
            76..=78 => {
                let mut owner = owner;
                self.schedule.push(format!("{} SIGTERM", owner.name));
                owner.archiver.close_all(None).await?;
                owner.store_positions();
                self.commit(&owner);
            }
            79..=84 => {
                self.owner = Some(owner);
                if !self.zombies.is_empty() {
                    let i = self.rng.below(self.zombies.len() as u64) as usize;
                    let zombie = self.zombies.swap_remove(i);
                    let mut zombie = if self.rng.chance(600) {
                        self.deliver(zombie, true).await?
                    } else {
                        let mut zombie = zombie;
                        self.schedule
                            .push(format!("zombie {} writes its open files", zombie.name));
                        zombie.archiver.close_all(None).await?;
                        zombie
                    };
                    zombie.store_positions();
                    if self.rng.chance(300) {
                        self.schedule
                            .push(format!("zombie {} hears of its revocation", zombie.name));
                    } else {
                        self.zombies.push(zombie);
                    }
                }
            }
            _ => {
                self.owner = Some(owner);
                let mut faults = self.store.faults();
                faults.on = !faults.on;
                self.schedule.push(format!(
                    "object store faults {}",
                    if faults.on { "on" } else { "off" }
                ));
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), BoxError> {
        self.store.faults().on = false;
        self.schedule
            .push("object store faults off; the end".into());
        for mut zombie in std::mem::take(&mut self.zombies) {
            if self.rng.chance(500) {
                self.schedule
                    .push(format!("zombie {} writes its open files", zombie.name));
                zombie.archiver.close_all(None).await?;
            }
        }
        let mut owner = match self.owner.take() {
            Some(owner) => owner,
            None => self.new_member()?,
        };
        loop {
            let before = owner.fetch.clone();
            owner = self.deliver(owner, false).await?;
            if owner.fetch == before {
                break;
            }
        }
        self.schedule.push(format!("{} SIGTERM", owner.name));
        owner.archiver.close_all(None).await?;
        owner.store_positions();
        self.commit(&owner);
        Ok(())
    }

    /// Reads the lake and checks it against the log.
    async fn check(&self) -> Result<(), String> {
        let objects: Vec<ObjectMeta> = self
            .store
            .inner
            .list(None)
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let mut seen: BTreeMap<(i32, i64), String> = BTreeMap::new();
        let mut problems = Vec::new();
        for object in &objects {
            let key = object.location.to_string();
            let body: Bytes = self
                .store
                .inner
                .get(&object.location)
                .await
                .map_err(|e| e.to_string())?
                .bytes()
                .await
                .map_err(|e| e.to_string())?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(body.clone())
                .map_err(|e| format!("{key}: {e}"))?;
            let meta = |name: &str| {
                reader
                    .metadata()
                    .file_metadata()
                    .key_value_metadata()
                    .and_then(|kv| kv.iter().find(|k| k.key == name))
                    .and_then(|k| k.value.clone())
            };
            let first_meta = meta(META_FIRST_OFFSET);
            let last_meta = meta(META_LAST_OFFSET);
            let mut offsets = Vec::new();
            for batch in reader.build().map_err(|e| format!("{key}: {e}"))? {
                let batch = batch.map_err(|e| format!("{key}: {e}"))?;
                let column = |name: &str| batch.column_by_name(name).cloned();
                let (Some(p), Some(o)) = (column(LINEAGE_PARTITION), column(LINEAGE_OFFSET)) else {
                    return Err(format!("{key}: no lineage columns"));
                };
                let p = p
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .ok_or("partition column")?
                    .clone();
                let o = o
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or("offset column")?
                    .clone();
                for i in 0..batch.num_rows() {
                    offsets.push((p.value(i), o.value(i)));
                }
            }
            let first = offsets.iter().map(|(_, o)| *o).min();
            let last = offsets.iter().map(|(_, o)| *o).max();
            let named = format!("+{}.parquet", first.unwrap_or(-1));
            if !key.ends_with(&named)
                || first_meta != first.map(|f| f.to_string())
                || last_meta != last.map(|l| l.to_string())
            {
                problems.push(format!(
                    "{key}: holds offsets {first:?}..={last:?}, metadata says {first_meta:?}..={last_meta:?}"
                ));
            }
            for at in offsets {
                if let Some(other) = seen.insert(at, key.clone()) {
                    problems.push(format!(
                        "partition {} offset {} twice: in {other} and in {key}",
                        at.0, at.1
                    ));
                }
            }
        }
        for (p, records) in self.log.iter().enumerate() {
            for (record, kind) in records {
                let at = (p as i32, record.offset);
                match (kind, seen.contains_key(&at)) {
                    (Kind::Row, false) => {
                        problems.push(format!("partition {p} offset {} lost", record.offset))
                    }
                    (Kind::Tombstone | Kind::Undecodable, true) => problems.push(format!(
                        "partition {p} offset {} ({kind:?}) in the lake",
                        record.offset
                    )),
                    _ => {}
                }
            }
        }
        let replaced = self.store.faults().replaced;
        if replaced > 0 {
            problems.push(format!("{replaced} objects replaced"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            problems.truncate(20);
            Err(problems.join("\n"))
        }
    }
}

/// Plays one schedule; `Err` carries what went wrong and the schedule.
fn run_schedule(seed: u64, registry: &RegistryClient) -> Result<(u64, usize), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    let mut rng = Rng(seed);
    let log = build_log(&mut rng);
    let mut sim = Sim {
        rng,
        log,
        store: Arc::new(FaultyStore::new(seed)),
        registry: registry.clone(),
        committed: (0..PARTITIONS).map(|p| (p, 0)).collect(),
        owner: None,
        zombies: Vec::new(),
        members: 0,
        schedule: Vec::new(),
    };
    let steps = 10 + sim.rng.below(50);
    let outcome = runtime.block_on(async {
        for _ in 0..steps {
            sim.step().await.map_err(|e| e.to_string())?;
        }
        sim.finish().await.map_err(|e| e.to_string())?;
        sim.check().await
    });
    match outcome {
        Ok(()) => Ok((sim.store.faults().injected, sim.schedule.len())),
        Err(e) => Err(format!(
            "seed {seed}: {e}\nschedule:\n  {}",
            sim.schedule.join("\n  ")
        )),
    }
}

/// The overlap a CI run saw, step by step: a replay finds the file at 0 (0..=19) and skips one
/// batch of it (0..=9) with no file open; the position it may commit must be past the file it
/// found (20), not the next offset (10): from 10, the next owner would find no file with that
/// key and write 10..=19 again.
#[test]
fn a_replay_commits_past_the_file_it_found() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(async {
        let mut rng = Rng(7);
        let mut log = build_log(&mut rng);
        // One partition, one hour, one schema, every record archived.
        log.truncate(1);
        log[0].truncate(40);
        for (i, (record, kind)) in log[0].iter_mut().enumerate() {
            let mut payload = vec![0, 0, 0, 0, 1];
            zigzag(&mut payload, i as i64);
            record.payload = Some(payload);
            record.timestamp_ms = Some(1_767_225_600_000);
            *kind = Kind::Row;
        }
        let mut sim = Sim {
            rng,
            log,
            store: Arc::new(FaultyStore::new(7)),
            registry: RegistryClient::new(&RegistryConfig::new("http://127.0.0.1:9"))?,
            committed: BTreeMap::from([(0, 0)]),
            owner: None,
            zombies: Vec::new(),
            members: 0,
            schedule: Vec::new(),
        };
        let settings = ArchiveSettings {
            schemas: PathBuf::new(),
            group_id: "sim".into(),
            max_file_records: 20,
            max_file_bytes: u64::MAX,
            max_buffered_bytes: u64::MAX,
            max_open_seconds: 3_600,
            compression: "none".into(),
            batch_records: 100,
        };
        let records: Vec<InboundRecord> = sim.log[0].iter().map(|(r, _)| r.clone()).collect();
        // The first owner writes 0..=19 and 20..=39, then dies before committing.
        let mut first = sim.member_with(settings.clone())?;
        first.archiver.process(&records).await?;
        first.archiver.close_all(None).await?;
        // The replay: one batch of 10 records, all in the file at 0.
        let mut replay = sim.member_with(settings)?;
        replay.archiver.process(&records[..10]).await?;
        let positions = replay.archiver.commit_positions().unwrap_or_default();
        assert_eq!(positions, vec![(TOPIC.to_string(), 0, 20)]);
        Ok(())
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn every_schedule_keeps_every_record_once_and_replaces_no_object() {
    let registry = match RegistryClient::new(&RegistryConfig::new("http://127.0.0.1:9")) {
        Ok(r) => r,
        Err(e) => panic!("registry client: {e}"),
    };
    let seeds: Vec<u64> = match env_u64("TRIBUTARY_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_u64("TRIBUTARY_SIM_SCHEDULES").unwrap_or(10_000)).collect(),
    };
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let results: Vec<Result<(u64, usize), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = &seeds;
                let registry = &registry;
                scope.spawn(move || {
                    seeds
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|seed| run_schedule(*seed, registry))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                Err(_) => vec![Err("a simulation thread panicked".to_string())],
            })
            .collect()
    });
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let injected: u64 = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.0)
        .sum();
    let steps: usize = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.1)
        .sum();
    println!(
        "{} schedules ({} steps, {} store faults injected) in {:.1} s: {} failed",
        seeds.len(),
        steps,
        injected,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    if let Some(first) = failures.first() {
        panic!(
            "{} of {} schedules failed; the first:\n{first}",
            failures.len(),
            seeds.len()
        );
    }
}
