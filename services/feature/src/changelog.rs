//! The changelog's record formats.
//!
//! Format 2 (this one): one record per entity, key `"\0e" + entity`, holding all the entity's
//! open windows in a compact binary encoding; a tombstone when it has none left. The progress
//! record (key `"\0meta"`) holds the partition's next input offset and watermark. Every value
//! starts with its format version byte, checked on restore.
//!
//! Format 1 (before): one JSON record per window, key `entity + "\x1f" + start`, and a JSON
//! progress record. It is still read on restore (a JSON value starts with `{`), and the first
//! checkpoint after such a restore tombstones the old keys and rewrites their entities in
//! format 2.
//!
//! Every format-2 entity record carries the checkpoint it belongs to in a header
//! ([`STAMP_HEADER`]), so that a late checkpoint from a paused replica cannot replace a newer
//! one on restore (`view/restore.rs`).

use std::collections::{BTreeMap, BTreeSet};

use tributary_core::sketch::Sketch;

use crate::agg::{AggState, Scalar};
use crate::view::WindowState;

/// Version byte that starts every format-2 value.
pub(crate) const FORMAT_VERSION: u8 = 2;

/// Key of the progress record in a changelog partition (no entity starts with NUL).
pub(crate) const META_KEY: &[u8] = b"\0meta";

/// Prefix of format-2 entity keys.
const ENTITY_PREFIX: &[u8] = b"\0e";

/// Header on every entity record (and tombstone) a checkpoint writes: the partition's next
/// input offset that checkpoint saves, in decimal. A replica paused past its session (a zombie)
/// can wake and write a checkpoint of its old state after the partition's new owner wrote
/// newer ones; on restore, an entity's record with the highest stamp wins, not the last one.
pub(crate) const STAMP_HEADER: &str = "tributary.checkpoint";

/// The stamp header's value.
pub(crate) fn encode_stamp(next_offset: i64) -> Vec<u8> {
    next_offset.to_string().into_bytes()
}

/// The stamp of a changelog record, from its headers; `None` for records written before
/// stamps (they rank below every stamped record and among themselves by log order).
pub(crate) fn decode_stamp(headers: &[(String, Vec<u8>)]) -> Result<Option<i64>, FormatError> {
    let Some((_, value)) = headers.iter().find(|(name, _)| name == STAMP_HEADER) else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| FormatError::Invalid(format!("checkpoint stamp {value:?}")))
}

/// An error reading a changelog record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("changelog format version {0} is unknown (this build reads 1, JSON, and 2)")]
    Version(u8),
    #[error("changelog record ends early")]
    Truncated,
    #[error("changelog record: unknown aggregation tag {0}")]
    Tag(u8),
    #[error("changelog record: {0}")]
    Invalid(String),
}

/// A changelog key, classified.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Meta,
    /// Format 2: all windows of an entity.
    Entity(&'a str),
    /// Format 1: one window (entity, start).
    Window(&'a str, i64),
}

pub(crate) fn parse_key(bytes: &[u8]) -> Result<Key<'_>, FormatError> {
    if bytes == META_KEY {
        return Ok(Key::Meta);
    }
    if let Some(entity) = bytes.strip_prefix(ENTITY_PREFIX) {
        let entity =
            std::str::from_utf8(entity).map_err(|e| FormatError::Invalid(e.to_string()))?;
        return Ok(Key::Entity(entity));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| FormatError::Invalid(e.to_string()))?;
    let (entity, start) = text
        .rsplit_once('\u{1f}')
        .ok_or_else(|| FormatError::Invalid(format!("key {text:?} has no separator")))?;
    let start = start
        .parse()
        .map_err(|e| FormatError::Invalid(format!("key {text:?}: {e}")))?;
    Ok(Key::Window(entity, start))
}

pub(crate) fn entity_key(entity: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(ENTITY_PREFIX.len() + entity.len());
    key.extend_from_slice(ENTITY_PREFIX);
    key.extend_from_slice(entity.as_bytes());
    key
}

/// The format-1 key of a window.
#[cfg(test)]
pub(crate) fn legacy_window_key(entity: &str, start: i64) -> Vec<u8> {
    format!("{entity}\u{1f}{start}").into_bytes()
}

/// Whether a value is format 1 (JSON) rather than binary; an unknown version is an error.
pub(crate) fn is_json(value: &[u8]) -> Result<bool, FormatError> {
    match value.first() {
        Some(b'{') => Ok(true),
        Some(&FORMAT_VERSION) => Ok(false),
        Some(&v) => Err(FormatError::Version(v)),
        None => Err(FormatError::Truncated),
    }
}

/// The progress record: next input offset and watermark.
pub(crate) fn encode_meta(next_offset: i64, watermark: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&next_offset.to_le_bytes());
    out.extend_from_slice(&watermark.to_le_bytes());
    out
}

pub(crate) fn decode_meta(value: &[u8]) -> Result<(i64, i64), FormatError> {
    let mut r = Reader::new(value)?;
    Ok((r.i64()?, r.i64()?))
}

/// An entity's windows (start → state) as a format-2 value.
pub(crate) fn encode_entity(
    windows: &BTreeMap<i64, WindowState>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    out.push(FORMAT_VERSION);
    put_varint(out, windows.len() as u64);
    for (start, w) in windows {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&w.end.to_le_bytes());
        out.push(u8::from(w.emitted));
        put_varint(out, w.aggs.len() as u64);
        for a in &w.aggs {
            encode_agg(a, out)?;
        }
    }
    Ok(())
}

pub(crate) fn decode_entity(value: &[u8]) -> Result<BTreeMap<i64, WindowState>, FormatError> {
    let mut r = Reader::new(value)?;
    let n = r.varint()?;
    let mut windows = BTreeMap::new();
    for _ in 0..n {
        let start = r.i64()?;
        let end = r.i64()?;
        let emitted = r.u8()? != 0;
        let count = r.len()?;
        let mut aggs = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            aggs.push(decode_agg(&mut r)?);
        }
        windows.insert(start, WindowState { end, aggs, emitted });
    }
    if !r.rest.is_empty() {
        return Err(FormatError::Invalid(format!(
            "{} bytes after the last window",
            r.rest.len()
        )));
    }
    Ok(windows)
}

fn encode_agg(a: &AggState, out: &mut Vec<u8>) -> Result<(), FormatError> {
    match a {
        AggState::Count(n) => {
            out.push(0);
            put_varint(out, *n);
        }
        AggState::Sum(s) => {
            out.push(1);
            out.extend_from_slice(&s.to_le_bytes());
        }
        AggState::Mean { sum, n } => {
            out.push(2);
            out.extend_from_slice(&sum.to_le_bytes());
            put_varint(out, *n);
        }
        AggState::Min(m) | AggState::Max(m) => {
            out.push(if matches!(a, AggState::Min(_)) { 3 } else { 4 });
            match m {
                None => out.push(0),
                Some(x) => {
                    out.push(1);
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        AggState::Stddev { n, mean, m2 } => {
            out.push(5);
            put_varint(out, *n);
            out.extend_from_slice(&mean.to_le_bytes());
            out.extend_from_slice(&m2.to_le_bytes());
        }
        AggState::Distinct(set) => {
            out.push(6);
            put_varint(out, set.len() as u64);
            for h in set {
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        AggState::Last { time, value } => {
            out.push(7);
            out.extend_from_slice(&time.to_le_bytes());
            match value {
                Scalar::Null => out.push(0),
                Scalar::Number(x) => {
                    out.push(1);
                    out.extend_from_slice(&x.to_le_bytes());
                }
                Scalar::Text(t) => {
                    out.push(2);
                    put_varint(out, t.len() as u64);
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
        AggState::Quantile(sketch) => {
            out.push(8);
            // Sketches are rare and their fields private to the core library: JSON inside.
            let json = serde_json::to_vec(sketch)
                .map_err(|e| FormatError::Invalid(format!("sketch: {e}")))?;
            put_varint(out, json.len() as u64);
            out.extend_from_slice(&json);
        }
    }
    Ok(())
}

fn decode_agg(r: &mut Reader<'_>) -> Result<AggState, FormatError> {
    Ok(match r.u8()? {
        0 => AggState::Count(r.varint()?),
        1 => AggState::Sum(r.f64()?),
        2 => AggState::Mean {
            sum: r.f64()?,
            n: r.varint()?,
        },
        tag @ (3 | 4) => {
            let m = match r.u8()? {
                0 => None,
                _ => Some(r.f64()?),
            };
            if tag == 3 {
                AggState::Min(m)
            } else {
                AggState::Max(m)
            }
        }
        5 => AggState::Stddev {
            n: r.varint()?,
            mean: r.f64()?,
            m2: r.f64()?,
        },
        6 => {
            let n = r.len()?;
            let mut set = BTreeSet::new();
            for _ in 0..n {
                set.insert(u64::from_le_bytes(r.array()?));
            }
            AggState::Distinct(set)
        }
        7 => {
            let time = r.i64()?;
            let value = match r.u8()? {
                0 => Scalar::Null,
                1 => Scalar::Number(r.f64()?),
                _ => {
                    let n = r.len()?;
                    let bytes = r.bytes(n)?;
                    Scalar::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|e| FormatError::Invalid(e.to_string()))?,
                    )
                }
            };
            AggState::Last { time, value }
        }
        8 => {
            let n = r.len()?;
            let sketch: Sketch = serde_json::from_slice(r.bytes(n)?)
                .map_err(|e| FormatError::Invalid(format!("sketch: {e}")))?;
            AggState::Quantile(sketch)
        }
        tag => return Err(FormatError::Tag(tag)),
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a format-2 value after checking its version byte.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(value: &'a [u8]) -> Result<Self, FormatError> {
        match value.split_first() {
            Some((&FORMAT_VERSION, rest)) => Ok(Self { rest }),
            Some((&v, _)) => Err(FormatError::Version(v)),
            None => Err(FormatError::Truncated),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.rest.len() < n {
            return Err(FormatError::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, FormatError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    fn varint(&mut self) -> Result<u64, FormatError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(FormatError::Invalid("varint too long".to_string()))
    }

    /// A count of items that each take at least one byte: no larger than what is left.
    fn len(&mut self) -> Result<usize, FormatError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.rest.len() => Ok(n),
            _ => Err(FormatError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tributary_core::schema::features::AggregateFn;

    fn every_state() -> Vec<AggState> {
        let mut states = Vec::new();
        for f in [
            AggregateFn::Count,
            AggregateFn::Sum,
            AggregateFn::Mean,
            AggregateFn::Min,
            AggregateFn::Max,
            AggregateFn::Stddev,
            AggregateFn::DistinctCount,
            AggregateFn::Last,
            AggregateFn::Quantile,
        ] {
            let empty = AggState::new(f);
            let mut full = AggState::new(f);
            full.add(&Scalar::Number(2.5), 10);
            full.add(&Scalar::Number(-1.0), 12);
            states.push(empty);
            states.push(full);
        }
        let mut last = AggState::new(AggregateFn::Last);
        last.add(&Scalar::Text("buy é".into()), 3);
        states.push(last);
        states
    }

    #[test]
    fn entities_round_trip_and_damage_is_an_error() {
        let mut windows = BTreeMap::new();
        windows.insert(
            -60_000,
            WindowState {
                end: 0,
                aggs: every_state(),
                emitted: true,
            },
        );
        windows.insert(
            1_000,
            WindowState {
                end: 61_000,
                aggs: vec![AggState::Count(3)],
                emitted: false,
            },
        );
        let mut bytes = Vec::new();
        encode_entity(&windows, &mut bytes).unwrap();
        assert_eq!(decode_entity(&bytes).unwrap(), windows);
        for cut in 0..bytes.len() {
            assert!(decode_entity(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        bytes[0] = 9;
        assert!(matches!(
            decode_entity(&bytes),
            Err(FormatError::Version(9))
        ));
        assert!(matches!(is_json(&bytes), Err(FormatError::Version(9))));
        assert_eq!(decode_meta(&encode_meta(42, -7)).unwrap(), (42, -7));
    }

    #[test]
    fn keys_of_both_formats_are_told_apart() {
        assert_eq!(parse_key(META_KEY).unwrap(), Key::Meta);
        assert_eq!(
            parse_key(&entity_key("u\u{1f}1")).unwrap(),
            Key::Entity("u\u{1f}1")
        );
        assert_eq!(
            parse_key(&legacy_window_key("u\u{1f}1", -5)).unwrap(),
            Key::Window("u\u{1f}1", -5)
        );
        assert!(parse_key(b"no separator").is_err());
    }
}
