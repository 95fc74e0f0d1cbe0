//! Deduplication by key within an event-time window, for producers that retry: a record whose
//! key equals that of a record kept less than `window` before or after it (event time) is
//! dropped; once further apart, the record is kept and becomes the new reference. Memory is
//! bounded by the keys seen within one window of the newest event time: older keys are evicted.
//!
//! The state is in memory: after a restart or a rebalance the window starts empty, so a retry
//! that straddles a restart is kept (the pipeline is at-least-once; this narrows duplicates, it
//! does not promise their absence).

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef};
use arrow::row::{RowConverter, SortField};

/// The keys kept within the window.
#[derive(Debug)]
pub(crate) struct Dedup {
    window_ms: i64,
    /// Key bytes -> event time of the record kept.
    seen: HashMap<Vec<u8>, i64>,
    newest_ms: i64,
    evicted_at_ms: i64,
}

impl Dedup {
    pub(crate) fn new(window_ms: i64) -> Self {
        Self {
            window_ms,
            seen: HashMap::new(),
            newest_ms: i64::MIN,
            evicted_at_ms: i64::MIN,
        }
    }

    /// For each row, whether it is kept. `keys` holds the key of each row (a null key is never
    /// a duplicate); `times` its event time in milliseconds.
    pub(crate) fn keep(&mut self, keys: &ArrayRef, times: &[i64]) -> Result<Vec<bool>, String> {
        let converter = RowConverter::new(vec![SortField::new(keys.data_type().clone())])
            .map_err(|e| e.to_string())?;
        let rows = converter
            .convert_columns(std::slice::from_ref(keys))
            .map_err(|e| e.to_string())?;
        let mut keep = Vec::with_capacity(times.len());
        for (i, &time) in times.iter().enumerate() {
            if keys.is_null(i) {
                keep.push(true);
                continue;
            }
            let key = rows.row(i);
            let duplicate = self
                .seen
                .get(key.as_ref())
                .is_some_and(|&kept| time.abs_diff(kept) < self.window_ms.unsigned_abs());
            if !duplicate {
                self.seen.insert(key.as_ref().to_vec(), time);
            }
            self.newest_ms = self.newest_ms.max(time);
            keep.push(!duplicate);
        }
        self.evict();
        Ok(keep)
    }

    /// Forgets keys kept more than a window before the newest event time, at most once per
    /// tenth of a window so eviction stays cheap.
    fn evict(&mut self) {
        if self.newest_ms.saturating_sub(self.evicted_at_ms) < self.window_ms / 10 {
            return;
        }
        let horizon = self.newest_ms.saturating_sub(self.window_ms);
        self.seen.retain(|_, &mut kept| kept >= horizon);
        self.evicted_at_ms = self.newest_ms;
    }

    /// Keys remembered now.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use arrow::array::StringArray;
    use std::sync::Arc;

    fn keys(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn duplicates_within_the_window_are_dropped_and_outside_kept() {
        let mut dedup = Dedup::new(60_000);
        let keep = dedup
            .keep(
                &keys(&[Some("a"), Some("b"), Some("a"), None, None]),
                &[0, 1_000, 59_999, 5, 5],
            )
            .unwrap();
        assert_eq!(keep, vec![true, true, false, true, true]);
        // 60 s after the kept "a": outside the window, kept, and the new reference.
        let keep = dedup
            .keep(
                &keys(&[Some("a"), Some("a"), Some("b")]),
                &[60_000, 61_000, 30_000],
            )
            .unwrap();
        assert_eq!(keep, vec![true, false, false]);
    }

    #[test]
    fn old_keys_are_evicted() {
        let mut dedup = Dedup::new(1_000);
        let many: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let refs: Vec<Option<&str>> = many.iter().map(|s| Some(s.as_str())).collect();
        dedup.keep(&keys(&refs), &[0; 100]).unwrap();
        assert_eq!(dedup.len(), 100);
        dedup.keep(&keys(&[Some("late")]), &[10_000]).unwrap();
        assert_eq!(dedup.len(), 1);
    }
}
