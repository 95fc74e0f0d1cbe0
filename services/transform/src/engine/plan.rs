//! Planning a transform from its declaration: the SQL, the rules and the dedup over each input.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::datatypes::{DataType, Field, Schema};
use tributary_core::schema::arrow::{AvroBatchDecoder, AvroBatchEncoder, arrow_schema_for};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::conform::Conformer;
use tributary_core::schema::transforms::TransformDecl;
use tributary_sql::InputTable;

use super::{InputPlan, Transform};
use crate::dedup::Dedup;
use crate::lookup::LookupTable;
use crate::rules;

impl Transform {
    /// Plans a declaration without touching the network: the SQL and the rules over every
    /// input (with the lookup columns), the check that the SQL's output fits the output schema,
    /// and the dedup columns. Every error names the transform and what is wrong.
    pub(crate) async fn plan(decl: &TransformDecl, catalog: &Catalog) -> anyhow::Result<Self> {
        let name = &decl.name;
        let topic = |t: &str| {
            catalog
                .topic(t)
                .with_context(|| format!("transform {name}: topic {t} is not in the catalog"))
        };
        let output = topic(&decl.output)?;
        let target = arrow_schema_for(&output.value_schema_json)?;
        // The id is set by `start`, once the registry has the schema.
        let encoder = AvroBatchEncoder::new(0, &output.value_schema_json, target.clone())?;

        let mut lookups = Vec::new();
        for l in &decl.lookups {
            let lookup_topic = topic(&l.topic)?;
            let table = LookupTable::new(&l.name, &l.topic, &lookup_topic.value_schema_json)
                .with_context(|| format!("transform {name}: lookup {}", l.name))?;
            lookups.push((table, l.key.clone()));
        }

        let mut inputs = HashMap::new();
        let mut rules_compiled = Vec::new();
        let mut dedup = None;
        for input_name in &decl.inputs {
            let input = topic(input_name)?;
            let decoded = arrow_schema_for(&input.value_schema_json)?;
            for (table, key) in &lookups {
                if rules::field_type(&decoded, key).is_none() {
                    bail!(
                        "transform {name}: lookup {}: key {key} is not a column of {input_name}",
                        table.name
                    );
                }
                if decoded.field_with_name(&table.name).is_ok() {
                    bail!(
                        "transform {name}: lookup {} has the name of a column of {input_name}",
                        table.name
                    );
                }
            }
            let mut fields: Vec<Field> = decoded
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.extend(lookups.iter().map(|(t, _)| t.field()));
            let schema = Arc::new(Schema::new(fields));

            let table = InputTable::new(schema.clone())?;
            let plan = table
                .plan(&decl.sql)
                .await
                .with_context(|| format!("transform {name}: the SQL over {input_name}"))?;
            let conformer = Conformer::new(plan.schema(), target.clone()).map_err(|problems| {
                anyhow::anyhow!(
                    "transform {name}: what the SQL makes of {input_name} does not fit the schema of {}: {problems}",
                    output.name
                )
            })?;
            let (rules_sql, compiled) = rules::compile(&decl.rules, &schema)
                .map_err(|e| anyhow::anyhow!("transform {name}: {e}"))?;
            let rules_plan =
                match rules_sql {
                    Some(sql) => Some(table.plan(&sql).await.with_context(|| {
                        format!("transform {name}: the rules over {input_name}")
                    })?),
                    None => None,
                };
            rules_compiled = compiled;

            let time_column = match &decl.dedup {
                Some(d) => {
                    if rules::field_type(&schema, &d.key).is_none() {
                        bail!(
                            "transform {name}: dedup key {} is not a column of {input_name}",
                            d.key
                        );
                    }
                    let time = d
                        .time_field
                        .clone()
                        .or_else(|| input.event_time_field.clone());
                    if let Some(t) = &time {
                        match rules::field_type(&schema, t) {
                            Some(DataType::Timestamp(_, _) | DataType::Int64) => {}
                            _ => bail!(
                                "transform {name}: dedup time field {t} of {input_name} must be a timestamp or long"
                            ),
                        }
                    }
                    let window = d
                        .window_ms()
                        .map_err(|e| anyhow::anyhow!("transform {name}: {e}"))?;
                    dedup = Some((Dedup::new(window), d.key.clone()));
                    time
                }
                None => None,
            };

            let input_plan = InputPlan {
                schema,
                decoder: AvroBatchDecoder::new(Some(input.value_schema_json.clone()), 8192),
                table,
                plan,
                rules_plan,
                conformer,
                time_column,
            };
            inputs.insert(input_name.clone(), input_plan);
        }
        Ok(Self {
            name: name.clone(),
            output_topic: output.name.clone(),
            output_schema: output.value_schema_json.clone(),
            output_subject: output.value_subject(),
            key_field: output.key_field.clone(),
            inputs,
            lookups,
            rules: rules_compiled,
            dedup,
            target,
            encoder,
        })
    }
}
