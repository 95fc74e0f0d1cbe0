//! Durations as the catalog writes them (`7d`, `12h`, `30m`, `90s`, `500ms`), in milliseconds.

/// A duration (`7d`, `12h`, `30m`, `90s`, `500ms`) that does not parse; each variant holds the
/// text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No leading number (or one too large for an `i64`).
    #[error("invalid retention {0:?}: expected e.g. 7d, 12h, 30m or forever")]
    Invalid(String),
    /// A unit other than `ms`, `s`, `m`, `h` or `d`.
    #[error("invalid retention unit in {0:?}: use ms, s, m, h or d")]
    Unit(String),
    /// Zero, or more milliseconds than an `i64` holds.
    #[error("invalid retention {0:?}: out of range")]
    OutOfRange(String),
}

/// A duration-valued key of a declaration (`allowed_lateness`, `cooldown`) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {error}")]
pub struct DurationKeyError {
    /// The key, as written in `catalog.toml`.
    pub key: &'static str,
    /// Why its value is refused.
    pub error: DurationError,
}

/// A day, in milliseconds.
pub(super) const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Parses `7d`, `12h`, `30m`, `90s`, `500ms` or `forever` into milliseconds (`-1` for forever).
pub(super) fn parse_retention(s: &str) -> Result<i64, DurationError> {
    if s == "forever" {
        return Ok(-1);
    }
    parse_duration(s)
}

/// Parses `7d`, `12h`, `30m`, `90s` or `500ms` into milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, DurationError> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| DurationError::Invalid(s.to_string()))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 60 * 60 * 1000,
        "d" => DAY_MS,
        _ => return Err(DurationError::Unit(s.to_string())),
    };
    n.checked_mul(factor)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| DurationError::OutOfRange(s.to_string()))
}
