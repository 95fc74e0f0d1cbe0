//! Planning a view: its declaration compiled against the catalog's schemas into the SQL that
//! evaluates each record's entity, event time and aggregation inputs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use arrow::datatypes::DataType;
use tributary_core::schema::arrow::{AvroBatchDecoder, arrow_schema_for};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::features::FeatureViewDecl;
use tributary_sql::InputTable;

use super::online::OnlineValues;
use super::{Agg, View};

impl View {
    /// Plans a view against the catalog's schemas (no network).
    pub(crate) async fn plan(decl: &FeatureViewDecl, catalog: &Catalog) -> anyhow::Result<Self> {
        let name = &decl.name;
        let input = catalog
            .topic(&decl.input)
            .with_context(|| format!("feature {name}: no topic {}", decl.input))?;
        let output = catalog
            .topic(&decl.output)
            .with_context(|| format!("feature {name}: no topic {}", decl.output))?;
        let window = decl
            .window
            .resolve()
            .map_err(|e| anyhow::anyhow!("feature {name}: {e}"))?;
        let lateness = decl
            .lateness_ms()
            .map_err(|e| anyhow::anyhow!("feature {name}: {e}"))?;
        let time = decl
            .time
            .clone()
            .or_else(|| input.event_time_field.clone())
            .with_context(|| format!("feature {name}: no event time"))?;
        let mut columns = vec![
            format!("CAST(({}) AS VARCHAR) AS \"__entity\"", decl.entity),
            format!("({time}) AS \"__time\""),
        ];
        let mut aggs = Vec::new();
        for (i, a) in decl.aggregations.iter().enumerate() {
            if let Some(expr) = &a.expr {
                columns.push(format!("({expr}) AS \"__v{i}\""));
            }
            if let Some(filter) = &a.filter {
                columns.push(format!("COALESCE(({filter}), false) AS \"__w{i}\""));
            }
            aggs.push(Agg {
                name: a.name.clone(),
                function: a.function,
                quantile: a.quantile.unwrap_or(0.5),
                has_expr: a.expr.is_some(),
                has_filter: a.filter.is_some(),
            });
        }
        let sql = format!("SELECT {} FROM input", columns.join(", "));
        let table = InputTable::new(arrow_schema_for(&input.value_schema_json)?)?;
        let statement = table.plan(&sql).await.with_context(|| {
            format!(
                "feature {name}: the entity, time and aggregation expressions over {}",
                input.name
            )
        })?;
        match statement
            .schema()
            .field_with_name("__time")
            .map(|f| f.data_type().clone())
        {
            Ok(DataType::Timestamp(_, _) | DataType::Int64 | DataType::Int32) => {}
            Ok(other) => bail!(
                "feature {name}: the event time {time} is {other}, not a timestamp or milliseconds"
            ),
            Err(e) => bail!("feature {name}: {e}"),
        }
        let key_field = output
            .key_field
            .clone()
            .with_context(|| format!("feature {name}: {} has no key_field", output.name))?;
        let names = aggs.iter().map(|a| a.name.clone()).collect();
        Ok(Self {
            name: name.clone(),
            input_topic: input.name.clone(),
            output_topic: output.name.clone(),
            late_topic: decl.late_topic.clone(),
            changelog_topic: decl.changelog_topic(),
            input_partitions: input.partitions,
            window,
            lateness,
            aggs,
            decoder: AvroBatchDecoder::new(Some(input.value_schema_json.clone()), 8192),
            table,
            statement,
            output_schema: output.value_schema.clone(),
            output_schema_json: output.value_schema_json.clone(),
            output_subject: output.value_subject(),
            output_id: 0,
            key_field,
            partitions: HashMap::new(),
            online: Arc::new(RwLock::new(OnlineValues::new(name.clone(), names))),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    #[tokio::test]
    async fn the_repository_views_plan() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let catalog = tributary_core::schema::catalog::Catalog::load(&dir).unwrap();
        assert!(!catalog.features.is_empty());
        for decl in &catalog.features {
            if let Err(e) = super::View::plan(decl, &catalog).await {
                panic!("{e:#}");
            }
        }
    }
}
