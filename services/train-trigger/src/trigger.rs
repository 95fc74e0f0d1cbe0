//! A trigger compiled from its declaration, its state, and how records and time move it.
//!
//! Rows of the inputs are profiled (each feature's values) into tumbling windows of
//! `window_rows` rows. The first complete window after start is the reference; each later
//! window is compared with it (PSI, KS, Wasserstein for numbers, JS for categories) when it
//! closes. Policies are checked when a window closes, when the volume threshold is crossed, and
//! on every tick (schedules; conditions held back by the cooldown). When the combined policies
//! fire and no cooldown is running, a `train.requests` record is produced; the reference becomes
//! the latest window (the data the model is trained on), the volume count restarts, the firing
//! drift policy is disarmed until its measures fall below `threshold * rearm_below`, and the
//! actions are queued.
//!
//! The state (profiles, counts, positions per input partition, the last trigger, pending
//! actions) is written to the state topic with every batch's outputs, before the batch's
//! offsets are stored; after a restart, input below the stored positions is skipped, so the
//! decisions are those an uninterrupted run would make.

mod features;
mod plan;
mod policy;
mod process;
mod request;
mod window;

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use tributary_core::schema::arrow::AvroBatchDecoder;
use tributary_core::schema::triggers::TriggerDecl;
use tributary_sql::{InputTable, Statement};

use crate::actions::PendingAction;
use crate::cron::Cron;
use crate::drift::Profile;

/// The topic requests go to.
pub(crate) const REQUESTS_TOPIC: &str = "train.requests";

/// One drift measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Measure {
    pub(crate) feature: String,
    pub(crate) metric: String,
    pub(crate) value: f64,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// Next offset per input `topic:partition`; input below is already counted.
    pub(crate) positions: BTreeMap<String, i64>,
    /// Offset per input partition where the data of the next request starts.
    pub(crate) range_start: BTreeMap<String, i64>,
    pub(crate) rows_since_trigger: u64,
    pub(crate) window_rows: u64,
    pub(crate) current: Profile,
    pub(crate) last_window: Option<Profile>,
    pub(crate) reference: Option<Profile>,
    /// Measures of the last window compared with the reference, until a request uses them.
    pub(crate) measures: Vec<Measure>,
    /// Measures of the last window compared with the reference (for the metrics).
    pub(crate) reported: Vec<Measure>,
    /// Drift policies disarmed after firing (hysteresis).
    pub(crate) disarmed: Vec<String>,
    pub(crate) last_trigger_ms: Option<i64>,
    pub(crate) triggers: u64,
    pub(crate) schedule_checked_ms: Option<i64>,
    pub(crate) from_time: Option<i64>,
    pub(crate) to_time: Option<i64>,
    pub(crate) pending: Vec<PendingAction>,
}

struct InputPlan {
    decoder: AvroBatchDecoder,
    table: InputTable,
    statement: Statement,
    /// Features computed by this input's statement, in column order after `__time`.
    features: Vec<(String, bool)>,
}

/// What happened, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Events {
    pub(crate) fired: Vec<String>,
    pub(crate) suppressed: u64,
    pub(crate) windows: u64,
    pub(crate) rejected: Vec<(usize, String)>,
}

/// A running trigger.
pub(crate) struct Trigger {
    pub(crate) decl: TriggerDecl,
    inputs: HashMap<String, InputPlan>,
    crons: Vec<(String, Cron)>,
    cooldown_ms: i64,
    request_schema: Schema,
    pub(crate) request_id_schema: u32,
    archive_prefix: String,
    pub(crate) state: State,
    pub(crate) dirty: bool,
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("name", &self.decl.name)
            .finish_non_exhaustive()
    }
}

impl Trigger {
    pub(crate) fn decoder(&mut self, topic: &str) -> Option<&mut AvroBatchDecoder> {
        self.inputs.get_mut(topic).map(|i| &mut i.decoder)
    }
}

/// Restores a trigger's state from its last record in the state topic; a state that says
/// requests were made but not when is refused.
pub(crate) fn restore(trigger: &mut Trigger, bytes: &[u8]) -> anyhow::Result<()> {
    let state: State = serde_json::from_slice(bytes).context("trigger state")?;
    if state.triggers > 0 && state.last_trigger_ms.is_none() {
        bail!("inconsistent state: triggers without a time");
    }
    trigger.state = state;
    Ok(())
}
