//! The online values: each entity's latest window, as the lookup endpoint serves it in JSON.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::Agg;
use super::state::PartitionState;
use crate::agg::Scalar;

/// An entity's latest window, kept for the lookup endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Latest {
    start: i64,
    end: i64,
    emitted: bool,
    values: Vec<Scalar>,
}

/// The latest values of each entity of a view, served by the lookup endpoint.
#[derive(Debug, Default)]
pub(crate) struct OnlineValues {
    view: String,
    names: Vec<String>,
    latest: HashMap<String, Latest>,
}

impl OnlineValues {
    /// No values yet for the view `view`, whose aggregations are `names`.
    pub(super) fn new(view: String, names: Vec<String>) -> Self {
        Self {
            view,
            names,
            latest: HashMap::new(),
        }
    }

    /// The lookup's answer for `entity`, if this replica has values for it.
    pub(crate) fn lookup(&self, entity: &str) -> Option<serde_json::Value> {
        let latest = self.latest.get(entity)?;
        let features: serde_json::Map<String, serde_json::Value> = self
            .names
            .iter()
            .zip(&latest.values)
            .map(|(name, value)| {
                let v = match value {
                    Scalar::Null => serde_json::Value::Null,
                    Scalar::Number(x) => serde_json::json!(x),
                    Scalar::Text(t) => serde_json::json!(t),
                };
                (name.clone(), v)
            })
            .collect();
        Some(serde_json::json!({
            "view": self.view,
            "entity": entity,
            "window_start": latest.start,
            "window_end": latest.end,
            "final": latest.emitted,
            "features": features,
        }))
    }

    /// Takes each entity `state` touched since the last call: its latest window (the one that
    /// starts last) becomes its values.
    pub(super) fn update(&mut self, aggs: &[Agg], state: &mut PartitionState) {
        for entity in state.touched.drain() {
            // The entity's latest window: the one that starts last.
            let Some((start, w)) = state
                .entities
                .get(&entity)
                .and_then(|windows| windows.iter().next_back())
            else {
                continue;
            };
            let values = aggs
                .iter()
                .zip(&w.aggs)
                .map(|(a, s)| s.result(a.quantile))
                .collect();
            self.latest.insert(
                entity,
                Latest {
                    start: *start,
                    end: w.end,
                    emitted: w.emitted,
                    values,
                },
            );
        }
    }
}

/// Shared with the lookup endpoint.
pub(crate) type Online = Arc<RwLock<OnlineValues>>;
