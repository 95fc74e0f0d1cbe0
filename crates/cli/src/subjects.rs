//! The catalog's subjects as local files, and the registry look-ups the commands need.

use std::path::PathBuf;

use anyhow::{Context, Result};
use apache_avro::Schema;
use tributary_core::schema::catalog::{Catalog, Compatibility};
use tributary_core::schema::registry::{RegistryClient, RegistryError, SubjectSchema, Version};

/// Confluent's "subject not found" error code.
const SUBJECT_NOT_FOUND: i64 = 40401;
/// Confluent's "version not found" error code (a deleted version).
const VERSION_NOT_FOUND: i64 = 40402;

/// One subject of the catalog: a schema file and the level its evolution is checked under.
#[derive(Debug, Clone)]
pub(crate) struct LocalSubject {
    /// Registry subject, `<topic>-value` or `<topic>-key`.
    pub(crate) subject: String,
    /// The schema file, as found from the schemas folder given (for messages).
    pub(crate) path: PathBuf,
    /// The file name inside the schemas folder.
    pub(crate) file_name: String,
    /// The schema text as written in the file.
    pub(crate) json: String,
    /// The parsed schema.
    pub(crate) schema: Schema,
    /// The topic's compatibility level.
    pub(crate) level: Compatibility,
}

/// Every subject of the catalog, topic by topic: the value, then the key when there is one.
pub(crate) fn local_subjects(catalog: &Catalog) -> Result<Vec<LocalSubject>> {
    let mut out = Vec::new();
    for topic in catalog.topics.values() {
        let mut add = |subject: String, json: &str, schema: Schema| {
            let file_name = format!("{subject}.avsc");
            out.push(LocalSubject {
                path: catalog.dir.join(&file_name),
                file_name,
                subject,
                json: json.to_string(),
                schema,
                level: topic.compatibility,
            });
        };
        add(
            topic.value_subject(),
            &topic.value_schema_json,
            topic.value_schema.clone(),
        );
        if let Some(json) = &topic.key_schema_json {
            let subject = format!("{}-key", topic.name);
            // Catalog::load parsed it already; parsing again cannot fail unless the file changed.
            let schema = tributary_core::schema::parse_avro_schema(json)
                .with_context(|| format!("{}: invalid avro schema", subject))?;
            add(subject, json, schema);
        }
    }
    Ok(out)
}

/// The latest version of a subject, `None` when the registry does not know the subject.
pub(crate) async fn latest(
    client: &RegistryClient,
    subject: &str,
) -> Result<Option<SubjectSchema>, RegistryError> {
    match client.subject_version(subject, Version::Latest).await {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.error_code() == Some(SUBJECT_NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every version of a subject, oldest first (deleted versions skipped); empty when the
/// registry does not know the subject.
pub(crate) async fn versions(
    client: &RegistryClient,
    subject: &str,
) -> Result<Vec<SubjectSchema>, RegistryError> {
    let Some(latest) = latest(client, subject).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(latest.version as usize);
    for n in 1..latest.version {
        match client.subject_version(subject, Version::Number(n)).await {
            Ok(s) => out.push(s),
            Err(e) if e.error_code() == Some(VERSION_NOT_FOUND) => {}
            Err(e) => return Err(e),
        }
    }
    out.push(latest);
    Ok(out)
}
