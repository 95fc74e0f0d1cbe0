//! The archive's lake as the archive writes it: Parquet files read for their lineage and
//! footers, a local lake watched while it is written, and its exactly-once check.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

// The archive's lake as the archive writes it, and its exactly-once check: shared by the tests
// that archive through failures (tests/failover.rs; tests/archive.rs has an older copy of its
// own that could move here).

/// The lineage of one row of an archived Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LakeRow {
    /// `_kafka_partition`.
    pub partition: i32,
    /// `_kafka_offset`.
    pub offset: i64,
    /// `_schema_id`.
    pub schema_id: i32,
}

/// One Parquet object of a local lake as read at some moment.
#[derive(Debug, Clone)]
pub struct LakeFile {
    /// Size in bytes.
    pub size: u64,
    /// FNV-1a of the content.
    pub hash: u64,
    /// When it was written (the file's modification time).
    pub modified: std::time::SystemTime,
    /// Every row's lineage, in file order.
    pub rows: Vec<LakeRow>,
    /// The `tributary.*` key/value metadata of the footer.
    pub meta: BTreeMap<String, String>,
}

/// (size, FNV-1a hash) of a file's content.
pub type LakeFingerprint = (u64, u64);

fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl LakeFile {
    /// Reads a Parquet file: fingerprint, footer metadata, lineage columns.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let modified = file.metadata()?.modified()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (size, hash) = (bytes.len() as u64, fnv1a_64(&bytes));
        // The same open file: its content is the one fingerprinted.
        Self::parse(file, size, hash, modified)
            .with_context(|| format!("{} is no whole Parquet file", path.display()))
    }

    fn parse(
        file: std::fs::File,
        size: u64,
        hash: u64,
        modified: std::time::SystemTime,
    ) -> Result<Self> {
        use arrow::array::{Int32Array, Int64Array};
        use parquet::arrow::ProjectionMask;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let meta = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kv| {
                kv.iter()
                    .filter(|k| k.key.starts_with("tributary."))
                    .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["_kafka_partition", "_kafka_offset", "_schema_id"],
        );
        let mut rows = Vec::new();
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let int32s = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<Int32Array>().cloned())
                    .with_context(|| format!("no Int32 column {name}"))
            };
            let partitions = int32s("_kafka_partition")?;
            let schema_ids = int32s("_schema_id")?;
            let offsets = batch
                .column_by_name("_kafka_offset")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .context("no Int64 column _kafka_offset")?;
            for i in 0..batch.num_rows() {
                rows.push(LakeRow {
                    partition: partitions.value(i),
                    offset: offsets.value(i),
                    schema_id: schema_ids.value(i),
                });
            }
        }
        Ok(Self {
            size,
            hash,
            modified,
            rows,
            meta,
        })
    }

    fn meta_i64(&self, key: &str) -> Result<i64> {
        self.meta
            .get(key)
            .with_context(|| format!("no {key} in the footer"))?
            .parse()
            .with_context(|| format!("{key} is not a number"))
    }
}

/// Watches a local lake folder while the archive writes it: every file each time its content
/// may have changed, so that a file ever seen with two different contents is caught.
#[derive(Debug, Default)]
pub struct LakeWatch {
    /// Latest content of each `.parquet` file, by path relative to the watched root.
    pub files: BTreeMap<String, LakeFile>,
    /// (size, modification time, inode) of each file when last read: unchanged means unread.
    stamps: BTreeMap<String, FileStamp>,
    /// Files seen with two different contents: (key, before, after).
    pub overwritten: Vec<(String, LakeFingerprint, LakeFingerprint)>,
    /// Files that disappeared.
    pub deleted: Vec<String>,
    /// Files that could not be read as Parquet: (key, error).
    pub unreadable: BTreeMap<String, String>,
}

/// What [`LakeWatch::check_exactly_once`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LakeCheck {
    /// Rows in the lake, duplicates included.
    pub rows: usize,
    /// Rows whose (partition, offset) another row has too.
    pub duplicates: usize,
    /// Produced records missing from the lake.
    pub missing: usize,
    /// Rows of records that were not produced (by this test).
    pub extra: usize,
    /// Broken promises other than counts: overwritten, deleted or unreadable files, footers
    /// or names that disagree with the rows, overlapping files of a partition.
    pub problems: Vec<String>,
}

impl LakeCheck {
    /// Whether the lake holds every produced record exactly once, in sound files.
    pub fn exactly_once(&self) -> bool {
        self.duplicates == 0 && self.missing == 0 && self.extra == 0 && self.problems.is_empty()
    }
}

/// What tells one version of a file from the next: its size, modification time and inode.
pub type FileStamp = (u64, std::time::SystemTime, u64);

/// Every `.parquet` file under a local folder, as `(key relative to root, path, stamp)`; a file
/// gone between the listing and the look is left out.
pub fn parquet_files(root: &Path) -> Result<Vec<(String, std::path::PathBuf, FileStamp)>> {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            let key = path.strip_prefix(root)?.to_string_lossy().into_owned();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            files.push((key, path, (meta.len(), meta.modified()?, meta.ino())));
        }
    }
    Ok(files)
}

impl LakeWatch {
    /// Looks at every `.parquet` file under `root`, reading the new and changed ones.
    pub fn poll_dir(&mut self, root: &Path) -> Result<()> {
        let mut present = std::collections::BTreeSet::new();
        for (key, path, stamp) in parquet_files(root)? {
            present.insert(key.clone());
            if self.stamps.get(&key) == Some(&stamp) {
                continue;
            }
            let file = match LakeFile::read(&path) {
                Ok(file) => file,
                // Gone between the listing and the read: the next poll sees what happened.
                Err(e)
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
                {
                    present.remove(&key);
                    continue;
                }
                Err(e) => {
                    self.unreadable.insert(key.clone(), format!("{e:#}"));
                    continue;
                }
            };
            self.stamps.insert(key.clone(), stamp);
            if let Some(old) = self.files.get(&key)
                && (old.size, old.hash) != (file.size, file.hash)
            {
                self.overwritten
                    .push((key.clone(), (old.size, old.hash), (file.size, file.hash)));
            }
            self.files.insert(key, file);
        }
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.files.remove(&key);
            self.stamps.remove(&key);
            self.deleted.push(key);
        }
        Ok(())
    }

    /// Rows in the lake, duplicates included.
    pub fn row_count(&self) -> usize {
        self.files.values().map(|f| f.rows.len()).sum()
    }

    /// Compares the lake of `topic` with the `produced` records (partition, offset): each once,
    /// in files whose names, footers and offset ranges agree and that were never overwritten.
    pub fn check_exactly_once(&self, topic: &str, produced: &[(i32, i64)]) -> Result<LakeCheck> {
        use std::collections::BTreeSet;
        let mut problems = Vec::new();
        for (key, before, after) in &self.overwritten {
            problems.push(format!("{key} overwritten: {before:?} -> {after:?}"));
        }
        for key in &self.deleted {
            problems.push(format!("{key} deleted"));
        }
        for (key, error) in &self.unreadable {
            problems.push(format!("{key} unreadable: {error}"));
        }
        let mut all: Vec<(i32, i64)> = Vec::new();
        let mut ranges: BTreeMap<i64, Vec<(i64, i64, &str)>> = BTreeMap::new();
        for (key, file) in &self.files {
            let partition = file.meta_i64("tributary.partition")?;
            let first = file.meta_i64("tributary.offset.first")?;
            let last = file.meta_i64("tributary.offset.last")?;
            let schema_id = file.meta_i64("tributary.schema.id")?;
            if file.meta.get("tributary.topic").map(String::as_str) != Some(topic) {
                problems.push(format!("{key}: footer topic is not {topic}"));
            }
            let offsets: Vec<i64> = file.rows.iter().map(|r| r.offset).collect();
            if offsets.is_empty() {
                problems.push(format!("{key} holds no row"));
            }
            if !offsets.windows(2).all(|w| w[0] < w[1]) {
                problems.push(format!("{key}: offsets not increasing"));
            }
            if (offsets.first(), offsets.last()) != (Some(&first), Some(&last)) {
                problems.push(format!(
                    "{key}: footer offsets {first}..={last} disagree with the rows"
                ));
            }
            if file
                .rows
                .iter()
                .any(|r| i64::from(r.partition) != partition || i64::from(r.schema_id) != schema_id)
            {
                problems.push(format!(
                    "{key}: rows of another partition or schema than its footer's"
                ));
            }
            if !key.ends_with(&format!("/{topic}+{partition}+{first}.parquet")) {
                problems.push(format!(
                    "{key} is not named after its partition and first offset"
                ));
            }
            ranges
                .entry(partition)
                .or_default()
                .push((first, last, key.as_str()));
            all.extend(file.rows.iter().map(|r| (r.partition, r.offset)));
        }
        for (partition, list) in &mut ranges {
            list.sort();
            for w in list.windows(2) {
                if w[0].1 >= w[1].0 {
                    problems.push(format!(
                        "partition {partition}: {} ({}..={}) overlaps {} ({}..={})",
                        w[0].2, w[0].0, w[0].1, w[1].2, w[1].0, w[1].1
                    ));
                }
            }
        }
        let distinct: BTreeSet<(i32, i64)> = all.iter().copied().collect();
        let expected: BTreeSet<(i32, i64)> = produced.iter().copied().collect();
        Ok(LakeCheck {
            rows: all.len(),
            duplicates: all.len() - distinct.len(),
            missing: expected.difference(&distinct).count(),
            extra: distinct.difference(&expected).count(),
            problems,
        })
    }
}
