//! The window state of one input partition: each entity's windows, and what the next emission
//! and checkpoint have to do.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::agg::AggState;

/// One window's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowState {
    pub(crate) end: i64,
    pub(crate) aggs: Vec<AggState>,
    pub(crate) emitted: bool,
}

/// A window by entity and start.
pub(super) type WindowKey = (String, i64);

/// The state of one input partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    pub(super) next_offset: i64,
    pub(super) watermark: Option<i64>,
    /// Each entity's windows by start.
    pub(super) entities: HashMap<String, BTreeMap<i64, WindowState>>,
    /// (end, entity, start) of every window, to find those to emit and drop.
    pub(super) by_end: BTreeSet<(i64, String, i64)>,
    /// Entities changed since the last checkpoint.
    pub(super) dirty: HashSet<String>,
    /// Format-1 keys read at restore: tombstoned by the next checkpoint.
    pub(super) legacy_keys: HashSet<Vec<u8>>,
    /// The restore found a late progress record of an older checkpoint after the newest one:
    /// the next checkpoint writes the progress record again, so that compaction keeps the newest.
    pub(super) rewrite_meta: bool,
    /// Updated after being emitted: to emit again.
    pub(super) reemit: HashSet<WindowKey>,
    pub(super) touched: HashSet<String>,
    /// The next offset as of the last checkpoint (or restore): everything below it is in the
    /// changelog, acknowledged once the checkpoint's records are.
    pub(super) checkpointed: i64,
}

impl PartitionState {
    /// The window of `entity` that starts at `start`.
    pub(super) fn window(&self, entity: &str, start: i64) -> Option<&WindowState> {
        self.entities.get(entity).and_then(|w| w.get(&start))
    }

    /// Adds (or replaces) a window, marking its entity dirty.
    pub(super) fn insert(&mut self, entity: &str, start: i64, window: WindowState) {
        self.by_end.insert((window.end, entity.to_string(), start));
        match self.entities.get_mut(entity) {
            Some(windows) => {
                windows.insert(start, window);
            }
            None => {
                self.entities
                    .insert(entity.to_string(), BTreeMap::from([(start, window)]));
            }
        }
        self.mark_dirty(entity);
    }

    /// Removes a window, marking its entity dirty.
    pub(super) fn remove(&mut self, entity: &str, start: i64) -> Option<WindowState> {
        let windows = self.entities.get_mut(entity)?;
        let window = windows.remove(&start)?;
        if windows.is_empty() {
            self.entities.remove(entity);
        }
        let key = (entity.to_string(), start);
        self.by_end.remove(&(window.end, key.0.clone(), start));
        self.reemit.remove(&key);
        self.mark_dirty(entity);
        Some(window)
    }

    /// Marks `entity` to be written by the next checkpoint.
    pub(super) fn mark_dirty(&mut self, entity: &str) {
        if !self.dirty.contains(entity) {
            self.dirty.insert(entity.to_string());
        }
    }

    /// Whether the changelog lacks anything of this partition.
    pub(super) fn unsaved(&self) -> bool {
        self.next_offset != self.checkpointed
            || !self.dirty.is_empty()
            || !self.legacy_keys.is_empty()
            || self.rewrite_meta
    }
}
