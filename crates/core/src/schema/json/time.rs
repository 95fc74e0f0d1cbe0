//! Dates, times and timestamps: integer ticks, or the readable strings they are parsed from.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde_json::Value as Json;

use super::path::{Path, Res, kind};
use super::scalar::integral;

/// The string form a date or time logical type takes besides its integer.
#[derive(Clone, Copy)]
pub(super) enum Clock {
    Date,
    TimeOfDay,
    Instant,
    Local,
}

/// A date or time as an integer count of `1 / per_second` seconds (days for dates).
pub(super) fn ticks(
    json: &Json,
    clock: Clock,
    per_second: i64,
    label: &str,
    path: &Path<'_>,
) -> Res<i64> {
    let (hint, format) = match clock {
        Clock::Date => ("int days or YYYY-MM-DD", "%Y-%m-%d"),
        Clock::TimeOfDay => ("integer or HH:MM:SS[.f]", "%H:%M:%S%.f"),
        Clock::Instant => ("integer or RFC 3339", ""),
        Clock::Local => ("integer or YYYY-MM-DDTHH:MM:SS[.f]", "%Y-%m-%dT%H:%M:%S%.f"),
    };
    let ticks = match json {
        Json::Number(_) => integral(json, label, path)?,
        Json::String(s) => {
            let utc = |t: DateTime<Utc>| (t.timestamp(), t.timestamp_subsec_nanos());
            let parsed = match clock {
                Clock::Date => {
                    NaiveDate::parse_from_str(s, format).map(|d| (i64::from(d.to_epoch_days()), 0))
                }
                Clock::TimeOfDay => NaiveTime::parse_from_str(s, format)
                    .map(|t| (i64::from(t.num_seconds_from_midnight()), t.nanosecond())),
                Clock::Instant => DateTime::parse_from_rfc3339(s).map(|t| utc(t.to_utc())),
                Clock::Local => NaiveDateTime::parse_from_str(s, format).map(|t| utc(t.and_utc())),
            };
            let (secs, nanos) = parsed.map_err(|e| {
                path.err(format!("expected {label}, got invalid {label} {s:?}: {e}"))
            })?;
            let per_tick = 1_000_000_000 / per_second;
            if i64::from(nanos) % per_tick != 0 {
                return Err(path.err(format!(
                    "expected {label}, got {s:?} with a finer fraction of a second"
                )));
            }
            let ticks = i128::from(secs) * i128::from(per_second)
                + i128::from(nanos) / i128::from(per_tick);
            i64::try_from(ticks)
                .map_err(|_| path.err(format!("expected {label}, got out-of-range {s:?}")))?
        }
        _ => return Err(path.err(format!("expected {label} ({hint}), got {}", kind(json)))),
    };
    let day = 86_400 * per_second;
    if matches!(clock, Clock::TimeOfDay) && !(0..day).contains(&ticks) {
        return Err(path.err(format!("expected {label} in 0..{day}, got {ticks}")));
    }
    Ok(ticks)
}
