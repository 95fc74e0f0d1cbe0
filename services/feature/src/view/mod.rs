//! A feature view compiled from its declaration, its per-partition window state, and how a batch
//! of its input updates that state and emits windows.
//!
//! Event time: each input partition has a watermark, the latest event time seen in it. A record
//! updates every window it falls in that is still open (`end + allowed_lateness` beyond the
//! watermark); a record with no open window is late and goes to the late topic with the reason.
//! At the end of a batch, windows whose end the watermark passed are emitted (again, if a late
//! record updated them since), and windows past `end + allowed_lateness` are dropped. The
//! watermark is per partition because an entity's records all land in one partition: a slow
//! partition never makes another's records late, and the state of a partition moves between
//! replicas with it. A partition whose input stops emits nothing more until it moves again.
//!
//! State: at each checkpoint (chosen by the service), every entity changed since the last one
//! (all its open windows in one record, `changelog.rs`) and the partition's next offset and
//! watermark are written to the view's compacted changelog topic (same partition as the input);
//! the input offsets are committed only up to the last acknowledged checkpoint. A replica given
//! a partition restores its windows from the changelog and skips input below the restored
//! offset, so a crash neither loses nor double-counts a record.
//!
//! One concern a file: the view and its accessors here; `plan.rs` compiles the declaration,
//! `state.rs` holds a partition's windows, `process.rs` runs a batch through the SQL,
//! `columns.rs` reads the SQL's Arrow output, `windows.rs` adds a record to its windows,
//! `emit.rs` emits and drops windows, `online.rs` keeps the lookup's values, `checkpoint.rs`
//! and `restore.rs` write and read the changelog, and `avro.rs` encodes the output.

mod avro;
mod checkpoint;
mod columns;
mod emit;
mod online;
mod plan;
mod process;
mod restore;
mod state;
#[cfg(test)]
mod testing;
mod windows;

use std::collections::HashMap;

use apache_avro::Schema;
use tributary_core::schema::arrow::AvroBatchDecoder;
use tributary_core::schema::features::{AggregateFn, Window};
use tributary_sql::{InputTable, Statement};

pub(crate) use online::Online;
pub(crate) use state::WindowState;

use state::PartitionState;

/// One aggregation, compiled.
#[derive(Debug, Clone)]
struct Agg {
    name: String,
    function: AggregateFn,
    quantile: f64,
    has_expr: bool,
    has_filter: bool,
}

/// A running feature view.
pub(crate) struct View {
    pub(crate) name: String,
    pub(crate) input_topic: String,
    pub(crate) output_topic: String,
    pub(crate) late_topic: Option<String>,
    pub(crate) changelog_topic: String,
    pub(crate) input_partitions: i32,
    window: Window,
    lateness: i64,
    aggs: Vec<Agg>,
    decoder: AvroBatchDecoder,
    table: InputTable,
    statement: Statement,
    output_schema: Schema,
    output_schema_json: String,
    pub(crate) output_subject: String,
    output_id: u32,
    key_field: String,
    pub(crate) partitions: HashMap<i32, PartitionState>,
    pub(crate) online: Online,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl View {
    /// The output schema's text (for registration).
    pub(crate) fn output_schema_json(&self) -> &str {
        &self.output_schema_json
    }

    /// Sets the registry id of the output schema.
    pub(crate) fn set_output_id(&mut self, id: u32) {
        self.output_id = id;
    }

    /// The decoder, for learning writer schemas.
    pub(crate) fn decoder(&mut self) -> &mut AvroBatchDecoder {
        &mut self.decoder
    }

    /// Windows held over all partitions.
    pub(crate) fn open_windows(&self) -> usize {
        self.partitions.values().map(|p| p.by_end.len()).sum()
    }
}
