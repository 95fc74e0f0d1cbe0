//! Sources of the catalog (`[[source]]` in `catalog.toml`): where ingest federates data from
//! besides its HTTP API: files landing in object storage, and PostgreSQL tables (change data
//! capture or polling).
//!
//! URLs may name environment variables, `${VAR}` or `${VAR:-default}`, expanded when the source
//! starts ([`expand_env`]): one catalog serves a laptop, compose and Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::catalog::{DeclError, DeclKind, Topic};

/// A source as declared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum SourceDecl {
    /// Files under a prefix of object storage (`file://`, `s3://`, ...), each ingested once.
    Files(FilesDecl),
    /// Tables of a PostgreSQL database, by logical replication or by polling.
    Postgres(PostgresDecl),
}

impl SourceDecl {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Files(f) => &f.name,
            Self::Postgres(p) => &p.name,
        }
    }
}

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values, one record per line, a header line naming the columns.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet.
    Parquet,
    /// Avro object container files.
    Avro,
}

impl FileFormat {
    /// The format a file name's extension says, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit('.').next()?;
        match ext {
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            "parquet" => Some(Self::Parquet),
            "avro" => Some(Self::Avro),
            _ => None,
        }
    }
}

/// Files landing under a prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesDecl {
    /// Name (letters, digits, `_`), in progress keys, logs and metrics.
    pub name: String,
    /// The prefix watched, e.g. `s3://landing/products/` or `file:///var/lib/tributary/landing/products/`.
    pub url: String,
    /// The topic the rows go to (converted to its schema).
    pub topic: String,
    /// The format of every file; default: from each file's extension (files with none are
    /// skipped).
    pub format: Option<FileFormat>,
    /// How often the prefix is listed, in seconds. Default 10.
    #[serde(default = "default_poll")]
    pub poll_seconds: u64,
    /// CSV field delimiter. Default `,`.
    #[serde(default = "default_delimiter")]
    pub csv_delimiter: char,
    /// Largest object read, in bytes (its size as listed): a larger one is not read, one dead
    /// letter names it. Default 1 GiB.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: u64,
    /// Longest CSV or NDJSON line, in bytes without its line end: a longer one is dead-lettered
    /// and skipped to the next line, never held in memory. Default 1 MiB.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Most rows read from one file (lines for CSV, after the header, and NDJSON; rows for
    /// Parquet and Avro): the rest of a longer file is refused with one dead letter naming the
    /// first row not read. Default 10,000,000.
    #[serde(default = "default_max_rows_per_file")]
    pub max_rows_per_file: u64,
}

fn default_poll() -> u64 {
    10
}
fn default_max_object_bytes() -> u64 {
    1 << 30
}
fn default_max_line_bytes() -> usize {
    1 << 20
}
fn default_max_rows_per_file() -> u64 {
    10_000_000
}

/// How a PostgreSQL source reads its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostgresMode {
    /// Logical replication (pgoutput): a snapshot, then every insert, update and delete in
    /// commit order. Needs `wal_level = logical` and the REPLICATION attribute.
    Cdc,
    /// Repeated queries on an incrementing and/or timestamp column, for databases without
    /// replication rights. Sees the latest state of new and changed rows, not deletes.
    Poll,
}

/// Tables of one PostgreSQL database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresDecl {
    /// Name (letters, digits, `_`), in progress keys, logs, metrics and `source.connector`.
    pub name: String,
    /// `postgresql://user@host:port/database`; no password here (see `password_env`,
    /// `password_file`). `${VAR}` / `${VAR:-default}` are expanded.
    pub url: String,
    /// Environment variable holding the password; when it is unset no password is sent.
    pub password_env: Option<String>,
    /// File holding the password (a mounted secret), if the server asks for one.
    pub password_file: Option<String>,
    /// `cdc` or `poll`.
    pub mode: PostgresMode,
    /// The tables read and the topic of each.
    pub tables: Vec<TableDecl>,
    /// CDC: the replication slot (created when missing). Default `tributary_<name>`. Slot
    /// names are per server: two pipelines reading one server need two names.
    /// `${VAR}` / `${VAR:-default}` are expanded.
    pub slot: Option<String>,
    /// CDC: the publication (created when missing, tables added). Default `tributary_<name>`.
    /// `${VAR}` / `${VAR:-default}` are expanded.
    pub publication: Option<String>,
    /// CDC: how often the slot is read when idle, in milliseconds. Default 200.
    #[serde(default = "default_cdc_poll_ms")]
    pub poll_ms: u64,
    /// CDC: how often an idle slot is moved to the server's current WAL position, so the
    /// server does not keep WAL for tables that do not change, in seconds. Default 10.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// Poll: seconds between queries. Default 5.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Poll: rows are read only once they are this many seconds old (by their timestamp column,
    /// or by when their incrementing value was first seen), so a transaction that commits after
    /// a later one is not skipped. Default 10.
    #[serde(default = "default_delay")]
    pub delay_seconds: u64,
    /// Most rows read per query or per change batch. Default 5000.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: u32,
}

impl PostgresDecl {
    /// The replication slot's name (variables expanded); the error names an unset variable.
    pub fn slot_name(&self) -> Result<String, ExpandError> {
        self.name_or_default(self.slot.as_deref())
    }

    /// The publication's name (variables expanded); the error names an unset variable.
    pub fn publication_name(&self) -> Result<String, ExpandError> {
        self.name_or_default(self.publication.as_deref())
    }

    /// The password: `password_env`'s value when that variable is set, else the first line of
    /// `password_file`, else none (trust or peer authentication; the server says when it wants
    /// one). The error names the file that could not be read, never a password.
    pub fn password(&self) -> Result<Option<String>, PasswordError> {
        if let Some(password) = self
            .password_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
        {
            return Ok(Some(password));
        }
        match &self.password_file {
            Some(file) => std::fs::read_to_string(file)
                .map(|p| Some(p.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|error| PasswordError {
                    file: file.clone(),
                    error,
                }),
            None => Ok(None),
        }
    }

    fn name_or_default(&self, given: Option<&str>) -> Result<String, ExpandError> {
        match given {
            Some(text) => expand_env(text),
            None => Ok(format!("tributary_{}", self.name.to_ascii_lowercase())),
        }
    }
}

/// One table of a PostgreSQL source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDecl {
    /// `schema.table` (unquoted names; quoted when used).
    pub table: String,
    /// The topic its changes go to (Debezium envelope, schema derived from the columns).
    pub topic: String,
    /// Poll: a column that grows with every new row (a serial or identity key).
    pub incrementing_column: Option<String>,
    /// Poll: a column set to the time of every insert and update.
    pub timestamp_column: Option<String>,
}

impl TableDecl {
    /// The schema and table names.
    pub fn qualified(&self) -> (&str, &str) {
        match self.table.split_once('.') {
            Some((schema, table)) => (schema, table),
            None => ("public", self.table.as_str()),
        }
    }
}

fn default_cdc_poll_ms() -> u64 {
    200
}
fn default_heartbeat() -> u64 {
    10
}
fn default_poll_seconds() -> u64 {
    5
}
fn default_delay() -> u64 {
    10
}
fn default_batch_rows() -> u32 {
    5000
}

/// The password file of a PostgreSQL source that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("read the password file {file}: {error}")]
pub struct PasswordError {
    /// The file, as declared (`password_file`).
    pub file: String,
    /// Why it cannot be read.
    pub error: std::io::Error,
}

/// Text whose `${...}` references cannot be expanded; both variants hold the whole text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A `${` without its `}`.
    #[error("unterminated ${{ in {text:?}")]
    Unterminated {
        /// The text expanded.
        text: String,
    },
    /// A variable that is unset (or empty) and has no default.
    #[error("environment variable {var} is not set (in {text:?})")]
    Unset {
        /// The variable.
        var: String,
        /// The text expanded.
        text: String,
    },
}

/// Expands `${VAR}` and `${VAR:-default}` in `text` from the environment; the error names a
/// variable that is unset and has no default, or an unterminated `${`.
pub fn expand_env(text: &str) -> Result<String, ExpandError> {
    expand_with(text, |var| std::env::var(var).ok())
}

/// [`expand_env`] with the variables' values from `lookup` (an empty value counts as unset).
pub fn expand_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| ExpandError::Unterminated {
            text: text.to_string(),
        })?;
        let inner = &after[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        match (lookup(var), default) {
            (Some(value), _) if !value.is_empty() => out.push_str(&value),
            (_, Some(d)) => out.push_str(d),
            _ => {
                return Err(ExpandError::Unset {
                    var: var.to_string(),
                    text: text.to_string(),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
fn default_delimiter() -> char {
    ','
}

/// What is wrong with a `[[source]]` (besides its name:
/// [`DeclProblem`](super::catalog::DeclProblem)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceProblem {
    /// A files source's topic that the catalog does not declare.
    #[error("topic {topic} is not in the catalog")]
    UnknownTopic {
        /// The topic named.
        topic: String,
    },
    /// A files source's `url` without a scheme.
    #[error("url {url:?} is not a URL (file:///..., s3://...)")]
    NotAUrl {
        /// The url as declared.
        url: String,
    },
    /// A files source's `poll_seconds = 0`.
    #[error("poll_seconds must be at least 1")]
    NoPollSeconds,
    /// A files source's `csv_delimiter` that is not ASCII.
    #[error("csv_delimiter must be one ASCII character")]
    CsvDelimiter,
    /// One of a files source's limits is 0.
    #[error("max_object_bytes, max_line_bytes and max_rows_per_file must be at least 1")]
    NoFileLimit {
        /// The first limit that is 0.
        key: &'static str,
    },
    /// A PostgreSQL source's `url` that is not `postgres://` or `postgresql://`.
    #[error("url {url:?} is not a postgresql:// URL")]
    NotPostgresUrl {
        /// The url as declared.
        url: String,
    },
    /// A PostgreSQL source's `url` holding a password.
    #[error("the url must not hold a password: use password_env or password_file")]
    PasswordInUrl,
    /// A PostgreSQL source without tables.
    #[error("no tables")]
    NoTables,
    /// One of a PostgreSQL source's intervals or batch sizes is 0.
    #[error("poll_ms, poll_seconds, heartbeat_seconds and batch_rows must be at least 1")]
    NoPostgresSetting {
        /// The first setting that is 0.
        key: &'static str,
    },
    /// A table that is not `schema.table`.
    #[error("table {table:?} is not schema.table")]
    NotSchemaTable {
        /// The table as declared.
        table: String,
    },
    /// A table listed twice.
    #[error("table {table} listed twice")]
    TableListedTwice {
        /// The table as declared.
        table: String,
    },
    /// A table's topic that the catalog does not declare.
    #[error("topic {topic} of table {table} is not in the catalog")]
    UnknownTableTopic {
        /// The topic named.
        topic: String,
        /// The table.
        table: String,
    },
    /// A table of a poll source with neither an incrementing nor a timestamp column.
    #[error("table {table}: poll mode needs incrementing_column, timestamp_column or both")]
    PollWithoutColumn {
        /// The table.
        table: String,
    },
}

impl SourceProblem {
    /// The key at fault, as written in `catalog.toml`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::UnknownTopic { .. } => "topic",
            Self::NotAUrl { .. } | Self::NotPostgresUrl { .. } | Self::PasswordInUrl => "url",
            Self::NoPollSeconds => "poll_seconds",
            Self::CsvDelimiter => "csv_delimiter",
            Self::NoFileLimit { key } | Self::NoPostgresSetting { key } => key,
            Self::NoTables
            | Self::NotSchemaTable { .. }
            | Self::TableListedTwice { .. }
            | Self::UnknownTableTopic { .. }
            | Self::PollWithoutColumn { .. } => "tables",
        }
    }
}

/// Checks declarations against the catalog's topics; the error names the source.
pub(crate) fn validate(
    sources: &[SourceDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), DeclError> {
    let mut names = BTreeSet::new();
    for s in sources {
        DeclKind::Source.check_name(s.name(), &mut names)?;
        let checked = match s {
            SourceDecl::Files(f) => validate_files(f, topics),
            SourceDecl::Postgres(p) => validate_postgres(p, topics),
        };
        checked.map_err(|p| DeclError::new(DeclKind::Source, s.name(), p))?;
    }
    Ok(())
}

fn validate_files(f: &FilesDecl, topics: &BTreeMap<String, Topic>) -> Result<(), SourceProblem> {
    if !topics.contains_key(&f.topic) {
        return Err(SourceProblem::UnknownTopic {
            topic: f.topic.clone(),
        });
    }
    if !f.url.contains("://") {
        return Err(SourceProblem::NotAUrl { url: f.url.clone() });
    }
    if f.poll_seconds == 0 {
        return Err(SourceProblem::NoPollSeconds);
    }
    if !f.csv_delimiter.is_ascii() {
        return Err(SourceProblem::CsvDelimiter);
    }
    let limits = [
        ("max_object_bytes", f.max_object_bytes),
        (
            "max_line_bytes",
            u64::try_from(f.max_line_bytes).unwrap_or(u64::MAX),
        ),
        ("max_rows_per_file", f.max_rows_per_file),
    ];
    if let Some((key, _)) = limits.iter().find(|(_, v)| *v == 0) {
        return Err(SourceProblem::NoFileLimit { key });
    }
    Ok(())
}

/// `text` without its `${...}` references (whose `:-` defaults are not URL syntax).
fn without_variables(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => rest = &rest[start + end + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

fn validate_postgres(
    p: &PostgresDecl,
    topics: &BTreeMap<String, Topic>,
) -> Result<(), SourceProblem> {
    if !(p.url.starts_with("postgres://") || p.url.starts_with("postgresql://")) {
        return Err(SourceProblem::NotPostgresUrl { url: p.url.clone() });
    }
    let authority = p.url.split("://").nth(1).unwrap_or("");
    let userinfo = authority.split('/').next().unwrap_or("");
    if let Some((user, _)) = userinfo.rsplit_once('@')
        && without_variables(user).contains(':')
    {
        return Err(SourceProblem::PasswordInUrl);
    }
    if p.tables.is_empty() {
        return Err(SourceProblem::NoTables);
    }
    let settings = [
        ("poll_ms", p.poll_ms),
        ("poll_seconds", p.poll_seconds),
        ("heartbeat_seconds", p.heartbeat_seconds),
        ("batch_rows", u64::from(p.batch_rows)),
    ];
    if let Some((key, _)) = settings.iter().find(|(_, v)| *v == 0) {
        return Err(SourceProblem::NoPostgresSetting { key });
    }
    let mut seen = BTreeSet::new();
    for t in &p.tables {
        let (schema, table) = t.qualified();
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            return Err(SourceProblem::NotSchemaTable {
                table: t.table.clone(),
            });
        }
        if !seen.insert(&t.table) {
            return Err(SourceProblem::TableListedTwice {
                table: t.table.clone(),
            });
        }
        if !topics.contains_key(&t.topic) {
            return Err(SourceProblem::UnknownTableTopic {
                topic: t.topic.clone(),
                table: t.table.clone(),
            });
        }
        if p.mode == PostgresMode::Poll
            && t.incrementing_column.is_none()
            && t.timestamp_column.is_none()
        {
            return Err(SourceProblem::PollWithoutColumn {
                table: t.table.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn expands_variables_and_defaults() {
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            expand_env("file://${PATH}/landing/").unwrap(),
            format!("file://{path}/landing/")
        );
        assert_eq!(
            expand_env("file://${TRIBUTARY_TEST_UNSET_X:-/var/lib}/x").unwrap(),
            "file:///var/lib/x"
        );
        assert_eq!(expand_env("plain").unwrap(), "plain");
        assert!(
            expand_env("${TRIBUTARY_TEST_UNSET_Y}")
                .unwrap_err()
                .to_string()
                .contains("TRIBUTARY_TEST_UNSET_Y")
        );
        assert!(
            expand_env("${OPEN")
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
        assert_eq!(without_variables("${U:-postgres}@${H:-h}:5432"), "@:5432");
    }

    #[test]
    fn postgres_sources_are_checked() {
        let topics: BTreeMap<String, Topic> = BTreeMap::new();
        let decl = |url: &str| PostgresDecl {
            name: "db".into(),
            url: url.into(),
            password_env: None,
            password_file: None,
            mode: PostgresMode::Cdc,
            tables: vec![],
            slot: None,
            publication: None,
            poll_ms: 1,
            heartbeat_seconds: 1,
            poll_seconds: 1,
            delay_seconds: 0,
            batch_rows: 1,
        };
        assert!(
            validate_postgres(&decl("postgresql://u:secret@h/db"), &topics)
                .unwrap_err()
                .to_string()
                .contains("password")
        );
        assert!(
            validate_postgres(&decl("mysql://u@h/db"), &topics)
                .unwrap_err()
                .to_string()
                .contains("postgresql://")
        );
        assert!(
            validate_postgres(&decl("postgresql://${U:-u}@h/db"), &topics)
                .unwrap_err()
                .to_string()
                .contains("no tables")
        );
        assert_eq!(
            decl("postgresql://h/db").slot_name().unwrap(),
            "tributary_db"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut with_file = decl("postgresql://h/db");
        assert_eq!(with_file.password().unwrap(), None);
        with_file.password_file = Some(file.display().to_string());
        assert_eq!(with_file.password().unwrap().as_deref(), Some("s3cret"));
        with_file.password_file = Some("/nonexistent/pw".into());
        assert!(
            with_file
                .password()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/pw")
        );
        let mut named = decl("postgresql://h/db");
        named.slot = Some("${TRIBUTARY_TEST_UNSET_SLOT:-s_default}".into());
        named.publication = Some("${TRIBUTARY_TEST_UNSET_PUB}".into());
        assert_eq!(named.slot_name().unwrap(), "s_default");
        assert!(
            named
                .publication_name()
                .unwrap_err()
                .to_string()
                .contains("TRIBUTARY_TEST_UNSET_PUB")
        );
    }
}
