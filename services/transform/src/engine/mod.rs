//! A transform compiled from its declaration, and how it runs on a batch of one input topic:
//! decode (Avro to Arrow through the registry), add the lookup columns, check the rules, drop
//! duplicates, run the SQL, fit the result to the output schema and encode it. Records that fail
//! a step are returned as rejected, with the step and the reason, and the others go on.
//!
//! The SQL is planned once at start-up over an in-memory table named `input` whose contents are
//! swapped before each run. It must be row-wise (projections, filters, functions, `CASE`,
//! `UNNEST`): a batch is an arbitrary cut of a stream, so aggregates, joins, sorts, windows and
//! limits over it would mean nothing and are refused at start-up. Row-wise plans keep the input
//! order, so changes of one key stay in order.

mod columns;
mod output;
mod plan;
mod process;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use tributary_core::bus::KafkaConfig;
use tributary_core::runtime::Runtime;
use tributary_core::schema::arrow::{AvroBatchDecoder, AvroBatchEncoder};
use tributary_core::schema::conform::Conformer;
use tributary_core::schema::registry::RegistryClient;
use tributary_sql::{InputTable, Statement};

use crate::dedup::Dedup;
use crate::lookup::LookupTable;
use crate::rules::Rule;

/// Why a record did not reach the output (the dead letter's error class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not Confluent-framed Avro the registry and the input schema can read.
    Decode,
    /// Broke a declared rule.
    Validation,
    /// The SQL failed on it (a cast, a function).
    Sql,
    /// What the SQL made of it does not fit the output schema.
    Output,
}

impl Rejection {
    pub(crate) fn class(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Validation => "validation",
            Self::Sql => "sql",
            Self::Output => "output",
        }
    }
}

/// What a batch became.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Output records (key, payload), in input order.
    pub(crate) outputs: Vec<(Option<Vec<u8>>, Bytes)>,
    /// Records that failed, as (index in the batch, why, message), in input order.
    pub(crate) rejected: Vec<(usize, Rejection, String)>,
    /// Records dropped as duplicates.
    pub(crate) duplicates: u64,
    /// Tombstones skipped (nothing to transform).
    pub(crate) tombstones: u64,
}

/// The SQL of one input topic, planned.
struct InputPlan {
    schema: SchemaRef,
    decoder: AvroBatchDecoder,
    table: InputTable,
    plan: Statement,
    rules_plan: Option<Statement>,
    conformer: Conformer,
    /// Column holding the event time for deduplication (else the Kafka timestamp).
    time_column: Option<String>,
}

impl std::fmt::Debug for InputPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputPlan")
            .field("schema", &self.schema)
            .field("time_column", &self.time_column)
            .finish_non_exhaustive()
    }
}

/// A running transform.
#[derive(Debug)]
pub(crate) struct Transform {
    pub(crate) name: String,
    pub(crate) output_topic: String,
    output_schema: String,
    output_subject: String,
    target: SchemaRef,
    key_field: Option<String>,
    inputs: HashMap<String, InputPlan>,
    lookups: Vec<(LookupTable, String)>,
    rules: Vec<Rule>,
    dedup: Option<(Dedup, String)>,
    encoder: AvroBatchEncoder,
}

impl Transform {
    /// Makes a planned transform ready to run: registers the output schema (its id goes in
    /// front of every output record) and loads the lookup tables from their topics, each
    /// followed by a task of `runtime` (see [`LookupTable::start`]).
    pub(crate) async fn start(
        mut self,
        registry: &RegistryClient,
        kafka: &KafkaConfig,
        runtime: &mut Runtime,
    ) -> anyhow::Result<Self> {
        let shutdown = runtime.shutdown();
        let name = &self.name;
        let id = registry
            .register(&self.output_subject, &self.output_schema)
            .await
            .with_context(|| {
                format!(
                    "transform {name}: register the schema of {}",
                    self.output_topic
                )
            })?;
        self.encoder = AvroBatchEncoder::new(id, &self.output_schema, self.target.clone())?;
        for (table, _) in &mut self.lookups {
            table
                .start(name, kafka, runtime)
                .await
                .with_context(|| format!("transform {name}: lookup {}", table.name))?;
            table.refresh(registry, &shutdown).await?;
        }
        Ok(self)
    }

    /// The input topics.
    pub(crate) fn input_topics(&self) -> impl Iterator<Item = &String> {
        self.inputs.keys()
    }

    /// Keys held by each lookup table, and by the deduplication window.
    pub(crate) fn state_sizes(&self) -> (Vec<(&str, usize)>, usize) {
        (
            self.lookups
                .iter()
                .map(|(t, _)| (t.name.as_str(), t.len()))
                .collect(),
            self.dedup.as_ref().map_or(0, |(d, _)| d.len()),
        )
    }
}

impl InputPlan {
    /// Runs a statement over `batch` as the table `input`.
    async fn run(
        &self,
        statement: &Statement,
        batch: RecordBatch,
    ) -> Result<Vec<RecordBatch>, tributary_sql::DataFusionError> {
        self.table.run(statement, batch).await
    }
}
