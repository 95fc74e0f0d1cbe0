//! Sources of the catalog (`[[source]]` in `catalog.toml`): where ingest federates data from
//! besides its HTTP API: files landing in object storage, and PostgreSQL tables (change data
//! capture or polling).
//!
//! URLs may name environment variables, `${VAR}` or `${VAR:-default}`, expanded when the source
//! starts ([`expand_env`]): one catalog serves a laptop, compose and Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::catalog::Topic;

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
    pub fn slot_name(&self) -> Result<String, String> {
        self.name_or_default(self.slot.as_deref())
    }

    /// The publication's name (variables expanded); the error names an unset variable.
    pub fn publication_name(&self) -> Result<String, String> {
        self.name_or_default(self.publication.as_deref())
    }

    /// The password: `password_env`'s value when that variable is set, else the first line of
    /// `password_file`, else none (trust or peer authentication; the server says when it wants
    /// one). The error names the file that could not be read, never a password.
    pub fn password(&self) -> Result<Option<String>, String> {
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
                .map_err(|e| format!("read the password file {file}: {e}")),
            None => Ok(None),
        }
    }

    fn name_or_default(&self, given: Option<&str>) -> Result<String, String> {
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

/// Expands `${VAR}` and `${VAR:-default}` in `text` from the environment; the error names a
/// variable that is unset and has no default, or an unterminated `${`.
pub fn expand_env(text: &str) -> Result<String, String> {
    expand_with(text, |var| std::env::var(var).ok())
}

/// [`expand_env`] with the variables' values from `lookup` (an empty value counts as unset).
pub fn expand_with(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
        let inner = &after[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        match (lookup(var), default) {
            (Some(value), _) if !value.is_empty() => out.push_str(&value),
            (_, Some(d)) => out.push_str(d),
            _ => {
                return Err(format!(
                    "environment variable {var} is not set (in {text:?})"
                ));
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

/// Checks declarations against the catalog's topics; the message names the source.
pub(crate) fn validate(
    sources: &[SourceDecl],
    topics: &BTreeMap<String, Topic>,
) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for s in sources {
        let fail = |m: String| Err(format!("source {}: {m}", s.name()));
        if !super::transforms::is_identifier(s.name()) {
            return fail(
                "the name must be letters, digits and _, not starting with a digit".into(),
            );
        }
        if !names.insert(s.name()) {
            return fail("declared twice".into());
        }
        match s {
            SourceDecl::Files(f) => {
                if !topics.contains_key(&f.topic) {
                    return fail(format!("topic {} is not in the catalog", f.topic));
                }
                if !f.url.contains("://") {
                    return fail(format!(
                        "url {:?} is not a URL (file:///..., s3://...)",
                        f.url
                    ));
                }
                if f.poll_seconds == 0 {
                    return fail("poll_seconds must be at least 1".into());
                }
                if !f.csv_delimiter.is_ascii() {
                    return fail("csv_delimiter must be one ASCII character".into());
                }
                if f.max_object_bytes == 0 || f.max_line_bytes == 0 || f.max_rows_per_file == 0 {
                    return fail(
                        "max_object_bytes, max_line_bytes and max_rows_per_file must be at least 1"
                            .into(),
                    );
                }
            }
            SourceDecl::Postgres(p) => validate_postgres(p, topics).or_else(fail)?,
        }
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

fn validate_postgres(p: &PostgresDecl, topics: &BTreeMap<String, Topic>) -> Result<(), String> {
    if !(p.url.starts_with("postgres://") || p.url.starts_with("postgresql://")) {
        return Err(format!("url {:?} is not a postgresql:// URL", p.url));
    }
    let authority = p.url.split("://").nth(1).unwrap_or("");
    let userinfo = authority.split('/').next().unwrap_or("");
    if let Some((user, _)) = userinfo.rsplit_once('@')
        && without_variables(user).contains(':')
    {
        return Err("the url must not hold a password: use password_env or password_file".into());
    }
    if p.tables.is_empty() {
        return Err("no tables".into());
    }
    if p.poll_ms == 0 || p.poll_seconds == 0 || p.heartbeat_seconds == 0 || p.batch_rows == 0 {
        return Err(
            "poll_ms, poll_seconds, heartbeat_seconds and batch_rows must be at least 1".into(),
        );
    }
    let mut seen = BTreeSet::new();
    for t in &p.tables {
        let (schema, table) = t.qualified();
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            return Err(format!("table {:?} is not schema.table", t.table));
        }
        if !seen.insert(&t.table) {
            return Err(format!("table {} listed twice", t.table));
        }
        if !topics.contains_key(&t.topic) {
            return Err(format!(
                "topic {} of table {} is not in the catalog",
                t.topic, t.table
            ));
        }
        if p.mode == PostgresMode::Poll
            && t.incrementing_column.is_none()
            && t.timestamp_column.is_none()
        {
            return Err(format!(
                "table {}: poll mode needs incrementing_column, timestamp_column or both",
                t.table
            ));
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
                .contains("TRIBUTARY_TEST_UNSET_Y")
        );
        assert!(expand_env("${OPEN").unwrap_err().contains("unterminated"));
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
                .contains("password")
        );
        assert!(
            validate_postgres(&decl("mysql://u@h/db"), &topics)
                .unwrap_err()
                .contains("postgresql://")
        );
        assert!(
            validate_postgres(&decl("postgresql://${U:-u}@h/db"), &topics)
                .unwrap_err()
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
                .contains("TRIBUTARY_TEST_UNSET_PUB")
        );
    }
}
