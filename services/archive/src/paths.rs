//! Object keys of the archive: `<root>/<topic>/dt=YYYY-MM-DD/hr=HH/<topic>+<partition>+<first offset>.parquet`.
//!
//! Keys are derived from (topic, partition, first offset) and the record time bucket only, so a
//! replay names the same object. Every value put into a key goes through [`encode_segment`], so
//! no value (`../x`, `/abs`, `a\b`, NUL, a very long string) can place an object outside the
//! topic's prefix.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Longest encoded segment kept as is; longer ones are cut and suffixed with a hash.
const MAX_SEGMENT: usize = 200;

/// The hour a record belongs to, from its event time (or Kafka timestamp) in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Bucket {
    pub(crate) hour_start_ms: i64,
}

impl Bucket {
    pub(crate) fn of_millis(ms: i64) -> Self {
        const HOUR_MS: i64 = 3_600_000;
        // The hours nearest i64::MIN start before it: such a time (always corrupt) gets the
        // lowest bucket, which is outside chrono's range like every absurd time (`dt=invalid`).
        Self {
            hour_start_ms: ms
                .div_euclid(HOUR_MS)
                .checked_mul(HOUR_MS)
                .unwrap_or(i64::MIN),
        }
    }

    /// `dt=YYYY-MM-DD/hr=HH` (Hive style, UTC).
    pub(crate) fn partition_path(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.hour_start_ms) {
            Some(t) => format!(
                "dt={:04}-{:02}-{:02}/hr={:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour()
            ),
            // Outside chrono's range (a corrupt time): a bucket of its own, still inside the prefix.
            None => format!("dt=invalid/hr={}", self.hour_start_ms),
        }
    }
}

/// The key of the file starting at `first_offset` of a partition, under `root` (no trailing slash).
pub(crate) fn object_key(
    root: &str,
    topic: &str,
    bucket: Bucket,
    partition: i32,
    first_offset: i64,
) -> String {
    let topic = encode_segment(topic);
    // The encoded topic, digits and `+`: safe as it is.
    let file = format!("{topic}+{partition}+{first_offset}.parquet");
    let prefix = if root.is_empty() {
        String::new()
    } else {
        format!("{root}/")
    };
    format!("{prefix}{topic}/{}/{file}", bucket.partition_path())
}

/// Makes one path segment out of any value: characters other than `A-Z a-z 0-9 - _ . + =` are
/// percent-encoded (so `/`, `\`, NUL and `%` cannot survive), a leading dot is encoded (so no
/// `.` or `..` segment), an empty value becomes `%00empty`, and long values are cut and given a
/// hash of the whole value so distinct values stay distinct.
pub(crate) fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, b) in value.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'+' | b'=')
            || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        return "%00empty".to_string();
    }
    if out.len() > MAX_SEGMENT {
        let mut cut = MAX_SEGMENT - 17;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        return format!("{}~{:016x}", &out[..cut], fnv1a(value.as_bytes()));
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        let bucket = Bucket::of_millis(1_764_374_400_000 + 5 * 3_600_000 + 123);
        assert_eq!(
            object_key("lake", "raw.web_events", bucket, 2, 4711),
            "lake/raw.web_events/dt=2025-11-29/hr=05/raw.web_events+2+4711.parquet"
        );
        assert_eq!(
            object_key("", "t", Bucket::of_millis(0), 0, 0),
            "t/dt=1970-01-01/hr=00/t+0+0.parquet"
        );
        assert_eq!(
            Bucket::of_millis(-1).partition_path(),
            "dt=1969-12-31/hr=23"
        );
    }

    #[test]
    fn hostile_values_stay_one_segment_inside_the_prefix() {
        let long = "x".repeat(10_000);
        for value in [
            "../x",
            "/abs",
            "a\\b",
            "nul\0byte",
            "..",
            ".",
            "",
            "%2F",
            long.as_str(),
            "ok/../../etc",
        ] {
            let s = encode_segment(value);
            assert!(
                !s.contains('/') && !s.contains('\\') && !s.contains('\0'),
                "{value:?} -> {s}"
            );
            assert!(
                s != "." && s != ".." && !s.starts_with('.'),
                "{value:?} -> {s}"
            );
            assert!(s.len() <= MAX_SEGMENT, "{value:?} -> {} bytes", s.len());
            let key = object_key("root", value, Bucket::of_millis(0), 0, 0);
            assert!(
                key.starts_with("root/") && key.split('/').count() == 5,
                "{value:?} -> {key}"
            );
            assert!(
                key.split('/')
                    .all(|seg| seg != ".." && seg != "." && !seg.is_empty()),
                "{key}"
            );
        }
        assert_ne!(
            encode_segment(&"y".repeat(500)),
            encode_segment(&"y".repeat(501))
        );
        assert_eq!(encode_segment("raw.web_events"), "raw.web_events");
    }

    #[test]
    fn absurd_times_stay_inside_the_prefix() {
        // i64::MIN's hour started before i64::MIN: this overflowed (a panic in debug builds,
        // a wrapped bucket in release ones).
        for ms in [i64::MAX, i64::MIN, i64::MIN + 1, i64::MIN / 2, i64::MAX - 1] {
            let key = object_key("r", "t", Bucket::of_millis(ms), 0, 0);
            assert!(key.starts_with("r/t/dt=invalid/"), "{ms}: {key}");
        }
        assert_eq!(Bucket::of_millis(-1).hour_start_ms, -3_600_000);
    }
}
