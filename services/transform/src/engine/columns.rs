//! Event times of a decoded batch in milliseconds.

use arrow::array::{Array, ArrayRef};
use tributary_core::schema::columns::millis;

/// Event times in milliseconds (a null counts as 0).
pub(super) fn event_times(column: &ArrayRef) -> anyhow::Result<Vec<i64>> {
    let millis = millis(column)?;
    Ok((0..millis.len())
        .map(|i| {
            if millis.is_valid(i) {
                millis.value(i)
            } else {
                0
            }
        })
        .collect())
}
