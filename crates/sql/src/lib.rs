//! Row-wise SQL over the Arrow batches of a stream: a statement is planned once over an
//! in-memory table named `input`, whose contents are swapped before each run. Only row-wise
//! plans are accepted (projections, filters, functions, `CASE`, `UNNEST`): a batch is an
//! arbitrary cut of a stream, so aggregates, joins, sorts, windows and limits over it would mean
//! nothing. Row-wise plans keep the input order.
//!
//! A field of a null record is null in `input` (see [`nulls`]).

pub mod nulls;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::PartitionData;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use datafusion::error::DataFusionError;

/// A statement that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// DataFusion refused it (syntax, unknown column or function, types).
    #[error("{0}")]
    Plan(#[from] DataFusionError),
    /// It is not row-wise.
    #[error(
        "the SQL uses {0}: it runs on arbitrary batches of a stream, so it must work row by row"
    )]
    NotRowWise(&'static str),
}

/// The table `input` with a fixed schema, and the statements planned over it.
pub struct InputTable {
    /// The schema batches are given in.
    schema: SchemaRef,
    /// The table's: every field below a nullable record nullable ([`nulls::relax`]).
    table_schema: SchemaRef,
    ctx: SessionContext,
    slot: PartitionData,
}

impl std::fmt::Debug for InputTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A statement planned over an [`InputTable`].
#[derive(Debug, Clone)]
pub struct Statement {
    plan: LogicalPlan,
}

impl Statement {
    /// The schema of what the statement produces.
    pub fn schema(&self) -> &arrow::datatypes::Schema {
        self.plan.schema().as_arrow()
    }
}

impl InputTable {
    /// An empty table `input` for batches of `schema`.
    pub fn new(schema: SchemaRef) -> Result<Self, SqlError> {
        // One partition: plans run single-threaded and keep the input order.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let table_schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(
            schema
                .fields()
                .iter()
                .map(|f| nulls::relax(f))
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ));
        let table = MemTable::try_new(table_schema.clone(), vec![vec![]])?;
        let slot = table.batches.first().cloned().ok_or_else(|| {
            SqlError::Plan(DataFusionError::Internal(
                "an in-memory table has one partition".into(),
            ))
        })?;
        ctx.register_table("input", Arc::new(table))?;
        Ok(Self {
            schema,
            table_schema,
            ctx,
            slot,
        })
    }

    /// The schema of the batches [`Self::run`] takes.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Plans a query over `input`, refusing what is not row-wise, and runs it once on no rows
    /// (the physical planner reports some errors only then).
    pub async fn plan(&self, sql: &str) -> Result<Statement, SqlError> {
        let plan = self.ctx.state().create_logical_plan(sql).await?;
        let mut refused = None;
        plan.apply(|node| {
            refused = not_row_wise(node);
            Ok(if refused.is_some() {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })?;
        if let Some(what) = refused {
            return Err(SqlError::NotRowWise(what));
        }
        let statement = Statement { plan };
        self.run(&statement, RecordBatch::new_empty(self.schema.clone()))
            .await?;
        Ok(statement)
    }

    /// Runs a statement over `batch` as the table `input`. The batch must have the schema the
    /// table was made with; the nulls of its records are pushed into their fields.
    pub async fn run(
        &self,
        statement: &Statement,
        batch: RecordBatch,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let columns = batch
            .columns()
            .iter()
            .zip(batch.schema_ref().fields())
            .map(|(column, field)| nulls::push_down(column, field))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.table_schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        *self.slot.write().await = vec![batch];
        let result = match self.ctx.execute_logical_plan(statement.plan.clone()).await {
            Ok(frame) => frame.collect().await,
            Err(e) => Err(e),
        };
        self.slot.write().await.clear();
        result
    }
}

fn not_row_wise(node: &LogicalPlan) -> Option<&'static str> {
    match node {
        LogicalPlan::Aggregate(_) => Some("an aggregate (GROUP BY, COUNT, ...)"),
        LogicalPlan::Window(_) => Some("a window function"),
        LogicalPlan::Join(_) => Some("a join (use a lookup to enrich)"),
        LogicalPlan::Sort(_) => Some("ORDER BY"),
        LogicalPlan::Limit(_) => Some("LIMIT"),
        LogicalPlan::Distinct(_) => Some("DISTINCT (use dedup)"),
        LogicalPlan::Union(_) => Some("UNION"),
        LogicalPlan::RecursiveQuery(_) => Some("a recursive query"),
        LogicalPlan::Dml(_)
        | LogicalPlan::Ddl(_)
        | LogicalPlan::Copy(_)
        | LogicalPlan::Statement(_)
        | LogicalPlan::Explain(_)
        | LogicalPlan::Analyze(_)
        | LogicalPlan::DescribeTable(_) => Some("a statement that is not a query"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn table() -> InputTable {
        InputTable::new(Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ])))
        .unwrap()
    }

    #[tokio::test]
    async fn a_statement_runs_on_each_batch_in_order() {
        let t = table();
        let s = t
            .plan("SELECT id * 2 AS twice, upper(name) AS name FROM input WHERE id <> 2")
            .await
            .unwrap();
        for round in 0..2 {
            let batch = RecordBatch::try_new(
                t.schema().clone(),
                vec![
                    Arc::new(Int64Array::from(vec![3, 2, 1])),
                    Arc::new(StringArray::from(vec![Some("c"), None, Some("a")])),
                ],
            )
            .unwrap();
            let out = t.run(&s, batch).await.unwrap();
            let out = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
            let twice = out.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            assert_eq!(twice.values(), &[6, 2], "round {round}");
        }
    }

    #[tokio::test]
    async fn plans_that_are_not_row_wise_are_refused() {
        let t = table();
        for (sql, what) in [
            ("SELECT count(*) AS n FROM input", "aggregate"),
            ("SELECT id FROM input ORDER BY id", "ORDER BY"),
            (
                "SELECT a.id FROM input a JOIN input b ON a.id = b.id",
                "join",
            ),
            ("SELECT DISTINCT id FROM input", "DISTINCT"),
        ] {
            let e = t.plan(sql).await.unwrap_err().to_string();
            assert!(e.contains(what), "{sql}: {e}");
        }
        assert!(t.plan("SELECT nope FROM input").await.is_err());
    }
}
