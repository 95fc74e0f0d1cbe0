//! The database side: the connection, a table's columns from the system catalog, rows as text.

use std::str::FromStr;

use anyhow::{Context, bail};
use tributary_core::schema::sources::{PostgresDecl, TableDecl, expand_env};

use super::types::PgType;

/// Connects with the source's URL and password; the password is never logged.
pub(super) async fn connect(decl: &PostgresDecl) -> anyhow::Result<tokio_postgres::Client> {
    let url = expand_env(&decl.url).map_err(|e| anyhow::anyhow!("source {}: {e}", decl.name))?;
    let mut config = tokio_postgres::Config::from_str(&url)
        .with_context(|| format!("source {}: the url is not a PostgreSQL URL", decl.name))?;
    if let Some(password) = decl
        .password()
        .map_err(|e| anyhow::anyhow!("source {}: {e}", decl.name))?
    {
        config.password(password);
    }
    config.application_name("tributary-ingest");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| {
            format!(
                "source {}: connect to {} database {}",
                decl.name,
                config
                    .get_hosts()
                    .first()
                    .map(|h| format!("{h:?}"))
                    .unwrap_or_default(),
                config.get_dbname().unwrap_or("(default)")
            )
        })?;
    let name = decl.name.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(source = %name, error = %e, "postgresql connection closed");
        }
    });
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 3; SET bytea_output = 'hex'",
        )
        .await
        .context("set the session's formats")?;
    Ok(client)
}

/// An identifier, quoted for SQL.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column of a table.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) ty: PgType,
    pub(super) type_oid: u32,
    pub(super) typmod: i32,
    /// The type's name for casts (`bigint`, `timestamp with time zone`).
    pub(super) sql_type: String,
    pub(super) not_null: bool,
    pub(super) key: bool,
}

/// The columns of a table, from the system catalog.
pub(super) async fn table_columns(
    client: &tokio_postgres::Client,
    table: &TableDecl,
) -> anyhow::Result<Vec<Column>> {
    let (schema, name) = table.qualified();
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, \
                    format_type(a.atttypid, NULL), a.attnotnull, \
                    COALESCE(a.attnum = ANY(i.indkey), false) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &name],
        )
        .await
        .with_context(|| format!("read the columns of {}", table.table))?;
    if rows.is_empty() {
        bail!(
            "table {} does not exist (or this user cannot see it)",
            table.table
        );
    }
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: i64 = row.try_get(1)?;
        let typmod: i32 = row.try_get(2)?;
        let oid = u32::try_from(oid).context("type oid")?;
        columns.push(Column {
            name: row.try_get(0)?,
            ty: PgType::from_oid(oid, typmod),
            type_oid: oid,
            typmod,
            sql_type: row.try_get(3)?,
            not_null: row.try_get(4)?,
            key: row.try_get(5)?,
        });
    }
    if !columns.iter().any(|c| c.key) {
        bail!(
            "table {} has no primary key: a source needs one for the record key",
            table.table
        );
    }
    for c in &columns {
        if !is_avro_name(&c.name) {
            bail!(
                "table {}: column {:?} is not a valid Avro field name (letters, digits and _, not starting with a digit); rename it or read it through a view",
                table.table,
                c.name
            );
        }
    }
    Ok(columns)
}

fn is_avro_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A row's values in text form, in column order (`None` is SQL NULL).
pub(super) type TextRow = Vec<Option<String>>;

/// The text values of a query row.
pub(super) fn text_row(row: &tokio_postgres::Row) -> anyhow::Result<TextRow> {
    (0..row.len())
        .map(|i| {
            row.try_get::<_, Option<String>>(i)
                .map_err(anyhow::Error::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert!(is_avro_name("_a1") && !is_avro_name("1a") && !is_avro_name("a-b"));
    }
}
