//! `tributary topics apply`: makes the cluster and the registry match the catalog, idempotently.
//! Topics first (created, partitions raised, settings set), then every subject's schema
//! registered. Each change is one line on stdout; `nothing to change` when there was none.
//! `tributary up` runs the same, writing both to its log.

use std::io::Write;

use anyhow::{Context, Result};
use tributary_core::bus::{TopicChange, ensure_topics};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;

use crate::config::CliConfig;
use crate::subjects::{self, LocalSubject};
use crate::usage;

/// What registering a subject did.
#[derive(Debug, PartialEq, Eq)]
enum Registered {
    /// A new version (or, in a dry run, one would be registered).
    Changed(String),
    /// The registry already had the schema.
    Unchanged(String),
}

/// Applies the catalog; prints the changes to `out` and progress and warnings to `progress`
/// (stderr for the command).
pub(crate) async fn run(
    catalog: &Catalog,
    config: &CliConfig,
    dry_run: bool,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<()> {
    // Built first, so that a bad registry setting fails before anything is changed.
    let registry =
        RegistryClient::new(&config.registry).map_err(|e| usage(format!("[registry]: {e}")))?;
    let mut changes = 0;

    let specs = catalog.topic_specs(config.topics.dlq_partitions);
    writeln!(
        progress,
        "{}topics: comparing {} topics with {}",
        if dry_run { "dry run: " } else { "" },
        specs.len(),
        config.kafka.bootstrap_servers
    )?;
    // Each line is printed once its change is made, so that after an error the output still
    // says exactly what was changed.
    let mut write_error = None;
    ensure_topics(&config.kafka, &specs, dry_run, |change| {
        let line = topic_line(change, dry_run);
        let written = if change.is_change() {
            changes += 1;
            writeln!(out, "{line}")
        } else {
            writeln!(progress, "warning: {line}")
        };
        if let Err(e) = written {
            write_error.get_or_insert(e);
        }
    })
    .await
    .with_context(|| format!("applying topics to {}", config.kafka.bootstrap_servers))?;
    if let Some(e) = write_error {
        return Err(e.into());
    }

    let local = subjects::local_subjects(catalog)?;
    writeln!(
        progress,
        "subjects: {} {} subjects {} {}",
        if dry_run { "comparing" } else { "registering" },
        local.len(),
        if dry_run { "with" } else { "at" },
        config.registry.url
    )?;
    for subject in &local {
        if let Some(line) = align_level(&registry, subject, dry_run)
            .await
            .with_context(|| format!("setting the compatibility level of {}", subject.subject))?
        {
            changes += 1;
            writeln!(out, "{line}")?;
        }
        let outcome = register(&registry, subject, dry_run)
            .await
            .with_context(|| {
                format!(
                    "registering {} ({}) at {}",
                    subject.subject,
                    subject.path.display(),
                    config.registry.url
                )
            })?;
        match outcome {
            Registered::Changed(line) => {
                changes += 1;
                writeln!(out, "{line}")?;
            }
            Registered::Unchanged(line) => writeln!(out, "{line}")?,
        }
    }

    if changes == 0 {
        writeln!(out, "nothing to change")?;
    }
    Ok(())
}

/// The output line of a topic change.
fn topic_line(change: &TopicChange, dry_run: bool) -> String {
    let would = if dry_run { "would change " } else { "" };
    match change {
        TopicChange::Created { topic, partitions } => {
            let verb = if dry_run { "would create" } else { "created" };
            let s = if *partitions == 1 { "" } else { "s" };
            format!("{verb} topic {topic} ({partitions} partition{s})")
        }
        TopicChange::PartitionsRaised { topic, from, to } => {
            format!("{would}partitions of {topic}: {from} -> {to}")
        }
        TopicChange::ConfigChanged {
            topic,
            key,
            from,
            to,
        } => {
            let from = from.as_deref().unwrap_or("(unset)");
            format!("{would}config of {topic}: {key} {from} -> {to}")
        }
        TopicChange::PartitionsNotLowered {
            topic,
            current,
            wanted,
        } => format!(
            "partitions of {topic}: the catalog asks for {wanted} but the topic has {current}; \
             partitions are never lowered"
        ),
    }
}

/// Sets the subject's compatibility level in the registry to the catalog's, so the registry
/// checks every later registration (from any client) under the level the catalog declares.
/// Returns the change line, or `None` when the level was already right.
async fn align_level(
    client: &RegistryClient,
    subject: &LocalSubject,
    dry_run: bool,
) -> Result<Option<String>> {
    let wanted = subject.level.as_str();
    let current = client.subject_level(&subject.subject).await?;
    if current
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case(wanted))
    {
        return Ok(None);
    }
    let from = current.as_deref().unwrap_or("(registry default)");
    if !dry_run {
        client.set_subject_level(&subject.subject, wanted).await?;
    }
    let would = if dry_run { "would change " } else { "" };
    Ok(Some(format!(
        "{would}compatibility of {}: {from} -> {wanted}",
        subject.subject
    )))
}

/// Registers one subject's schema (the registry answers an identical schema with its
/// existing id). In a dry run, compares the schema with the latest version instead.
async fn register(
    client: &RegistryClient,
    subject: &LocalSubject,
    dry_run: bool,
) -> Result<Registered> {
    let name = &subject.subject;
    let before = subjects::latest(client, name)
        .await
        .context("fetching the latest version")?;
    if dry_run {
        return Ok(match before {
            None => Registered::Changed(format!("would register {name} version 1 (new subject)")),
            Some(b) if same_schema(&b.schema, &subject.json) => {
                Registered::Unchanged(format!("unchanged {name} (id {})", b.id))
            }
            Some(b) => Registered::Changed(format!(
                "would register {name} (a new version after version {})",
                b.version
            )),
        });
    }
    let id = client.register(name, &subject.json).await?;
    if before.as_ref().is_some_and(|b| b.id == id) {
        return Ok(Registered::Unchanged(format!("unchanged {name} (id {id})")));
    }
    let after = subjects::latest(client, name)
        .await
        .context("fetching the version just registered")?
        .with_context(|| format!("the registry has no version of {name} after registering"))?;
    if after.id == id {
        Ok(Registered::Changed(format!(
            "registered {name} version {} (id {id})",
            after.version
        )))
    } else {
        // The schema equals an earlier version: the registry returned that one's id.
        Ok(Registered::Unchanged(format!(
            "unchanged {name} (id {id} is an earlier version; the latest is version {} id {})",
            after.version, after.id
        )))
    }
}

/// Whether two schema texts are the same JSON (layout aside).
fn same_schema(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn topic_lines() {
        let created = TopicChange::Created {
            topic: "raw.web_events".into(),
            partitions: 3,
        };
        assert_eq!(
            topic_line(&created, false),
            "created topic raw.web_events (3 partitions)"
        );
        assert_eq!(
            topic_line(&created, true),
            "would create topic raw.web_events (3 partitions)"
        );
        let raised = TopicChange::PartitionsRaised {
            topic: "x".into(),
            from: 3,
            to: 6,
        };
        assert_eq!(topic_line(&raised, false), "partitions of x: 3 -> 6");
        let config = TopicChange::ConfigChanged {
            topic: "x".into(),
            key: "retention.ms".into(),
            from: Some("604800000".into()),
            to: "2592000000".into(),
        };
        assert_eq!(
            topic_line(&config, false),
            "config of x: retention.ms 604800000 -> 2592000000"
        );
        assert_eq!(
            topic_line(&config, true),
            "would change config of x: retention.ms 604800000 -> 2592000000"
        );
    }

    #[test]
    fn schema_layout_does_not_matter() {
        assert!(same_schema(
            r#"{"type": "record", "name": "A", "fields": []}"#,
            r#"{"name":"A","type":"record","fields":[]}"#
        ));
        assert!(!same_schema(
            r#"{"type":"record","name":"A","fields":[]}"#,
            r#"{"type":"record","name":"B","fields":[]}"#
        ));
    }
}
