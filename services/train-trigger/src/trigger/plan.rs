//! Compiling a declaration: each input's features as SQL over its records, and the schedules.

use std::collections::HashMap;

use anyhow::Context;
use tributary_core::schema::arrow::{AvroBatchDecoder, arrow_schema_for};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::triggers::{PolicyDecl, TriggerDecl};
use tributary_sql::InputTable;

use super::{InputPlan, REQUESTS_TOPIC, State, Trigger};
use crate::cron::Cron;

impl Trigger {
    pub(crate) async fn plan(
        decl: &TriggerDecl,
        catalog: &Catalog,
        archive_root: &str,
    ) -> anyhow::Result<Self> {
        let name = &decl.name;
        let mut inputs = HashMap::new();
        for topic in &decl.inputs {
            let t = catalog
                .topic(topic)
                .with_context(|| format!("trigger {name}: no topic {topic}"))?;
            let features: Vec<(String, bool)> = decl
                .features
                .iter()
                .filter(|f| f.topic.as_deref().unwrap_or(&decl.inputs[0]) == topic)
                .map(|f| (f.name.clone(), f.categorical))
                .collect();
            let time = t
                .event_time_field
                .clone()
                .map_or("NULL".to_string(), |f| format!("\"{f}\""));
            let mut columns = vec![format!("{time} AS \"__time\"")];
            for f in decl
                .features
                .iter()
                .filter(|f| features.iter().any(|(n, _)| *n == f.name))
            {
                columns.push(format!("({}) AS \"{}\"", f.expr, f.name.replace('"', "")));
            }
            let table = InputTable::new(arrow_schema_for(&t.value_schema_json)?)?;
            let statement = table
                .plan(&format!("SELECT {} FROM input", columns.join(", ")))
                .await
                .with_context(|| format!("trigger {name}: the features of {topic}"))?;
            inputs.insert(
                topic.clone(),
                InputPlan {
                    decoder: AvroBatchDecoder::new(Some(t.value_schema_json.clone()), 8192),
                    table,
                    statement,
                    features,
                },
            );
        }
        let mut crons = Vec::new();
        for p in &decl.policies {
            if let PolicyDecl::Schedule { name: policy, cron } = p {
                crons.push((
                    policy.clone(),
                    Cron::parse(cron)
                        .map_err(|e| anyhow::anyhow!("trigger {name}: policy {policy}: {e}"))?,
                ));
            }
        }
        let requests = catalog
            .topic(REQUESTS_TOPIC)
            .with_context(|| format!("the catalog has no {REQUESTS_TOPIC} topic"))?;
        Ok(Self {
            decl: decl.clone(),
            inputs,
            crons,
            cooldown_ms: decl
                .cooldown_ms()
                .map_err(|e| anyhow::anyhow!("trigger {name}: {e}"))?,
            request_schema: requests.value_schema.clone(),
            request_id_schema: 0,
            archive_prefix: format!("{}/{}/", archive_root.trim_end_matches('/'), decl.inputs[0]),
            state: State::default(),
            dirty: false,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn the_repository_triggers_plan() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let catalog = Catalog::load(&dir).unwrap();
        assert!(!catalog.triggers.is_empty());
        for decl in &catalog.triggers {
            if let Err(e) = Trigger::plan(decl, &catalog, "file:///lake").await {
                panic!("{e:#}");
            }
        }
    }
}
