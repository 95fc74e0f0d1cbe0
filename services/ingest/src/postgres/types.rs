//! PostgreSQL column types: the Avro type each maps to, and the conversion of a value's text
//! form (what pgoutput sends, and what `column::text` returns with `TimeZone = UTC` and
//! `DateStyle = ISO`) to an Avro value.
//!
//! | PostgreSQL | Avro |
//! |---|---|
//! | `boolean` | `boolean` |
//! | `smallint`, `integer` | `int` |
//! | `bigint`, `oid` | `long` |
//! | `real`, `double precision` | `float`, `double` |
//! | `numeric(p, s)` (p ≤ 38) | `bytes`, `decimal(p, s)` |
//! | `numeric` without precision | `string` (the exact digits) |
//! | `text`, `varchar`, `char`, `name`, enums and other types | `string` |
//! | `uuid` | `string`, `uuid` |
//! | `json`, `jsonb` | `string` (the JSON text) |
//! | `date` | `int`, `date` |
//! | `timestamp with time zone` | `long`, `timestamp-micros` |
//! | `timestamp` | `long`, `local-timestamp-micros` |
//! | `time` | `long`, `time-micros` |
//! | `bytea` | `bytes` |
//! | one-dimensional arrays of the above | `array` of nullable items |

use apache_avro::Decimal;
use apache_avro::types::Value;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::json;

/// A column type, as far as the mapping cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(precision, scale)` with a precision Avro's decimal can carry.
    Numeric {
        precision: u32,
        scale: u32,
    },
    /// Text of any kind, unconstrained numerics, enums and types without a mapping.
    Text,
    Uuid,
    Json,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Bytea,
    Array(Box<PgType>),
}

impl PgType {
    /// The type of a column from its type oid and type modifier (`atttypmod`).
    pub(crate) fn from_oid(oid: u32, typmod: i32) -> Self {
        match oid {
            16 => Self::Bool,
            21 => Self::Int2,
            23 => Self::Int4,
            20 | 26 => Self::Int8,
            700 => Self::Float4,
            701 => Self::Float8,
            1700 => numeric(typmod),
            2950 => Self::Uuid,
            114 | 3802 => Self::Json,
            1082 => Self::Date,
            1114 => Self::Timestamp,
            1184 => Self::TimestampTz,
            1083 => Self::Time,
            17 => Self::Bytea,
            _ => match array_element(oid) {
                Some(element) => Self::Array(Box::new(Self::from_oid(element, typmod))),
                None => Self::Text,
            },
        }
    }

    /// The Avro type (JSON), not nullable.
    pub(crate) fn avro(&self) -> serde_json::Value {
        match self {
            Self::Bool => json!("boolean"),
            Self::Int2 | Self::Int4 => json!("int"),
            Self::Int8 => json!("long"),
            Self::Float4 => json!("float"),
            Self::Float8 => json!("double"),
            Self::Numeric { precision, scale } => json!({
                "type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale
            }),
            Self::Text | Self::Json => json!("string"),
            Self::Uuid => json!({"type": "string", "logicalType": "uuid"}),
            Self::Date => json!({"type": "int", "logicalType": "date"}),
            Self::Timestamp => json!({"type": "long", "logicalType": "local-timestamp-micros"}),
            Self::TimestampTz => json!({"type": "long", "logicalType": "timestamp-micros"}),
            Self::Time => json!({"type": "long", "logicalType": "time-micros"}),
            Self::Bytea => json!("bytes"),
            Self::Array(element) => json!({"type": "array", "items": ["null", element.avro()]}),
        }
    }

    /// The Avro value of a value's text form.
    pub(crate) fn parse(&self, text: &str) -> Result<Value, String> {
        let bad = |what: &str| format!("{text:?} is not a valid {what}");
        Ok(match self {
            Self::Bool => match text {
                "t" | "true" => Value::Boolean(true),
                "f" | "false" => Value::Boolean(false),
                _ => return Err(bad("boolean")),
            },
            Self::Int2 | Self::Int4 => Value::Int(text.parse().map_err(|_| bad("integer"))?),
            Self::Int8 => Value::Long(text.parse().map_err(|_| bad("bigint"))?),
            Self::Float4 => Value::Float(parse_float(text).ok_or_else(|| bad("real"))? as f32),
            Self::Float8 => Value::Double(parse_float(text).ok_or_else(|| bad("double"))?),
            Self::Numeric { precision, scale } => {
                Value::Decimal(decimal(text, *precision, *scale)?)
            }
            Self::Text | Self::Json => Value::String(text.to_string()),
            Self::Uuid => Value::Uuid(uuid::Uuid::parse_str(text).map_err(|_| bad("uuid"))?),
            Self::Date => {
                let d = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad("date"))?;
                let days = d.signed_duration_since(epoch_date()).num_days();
                Value::Date(i32::try_from(days).map_err(|_| bad("date"))?)
            }
            Self::Timestamp => {
                let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                    .map_err(|_| bad("timestamp"))?;
                Value::LocalTimestampMicros(t.and_utc().timestamp_micros())
            }
            Self::TimestampTz => Value::TimestampMicros(timestamptz_micros(text)?),
            Self::Time => {
                let t = NaiveTime::parse_from_str(text, "%H:%M:%S%.f").map_err(|_| bad("time"))?;
                let micros = t
                    .signed_duration_since(NaiveTime::MIN)
                    .num_microseconds()
                    .ok_or_else(|| bad("time"))?;
                Value::TimeMicros(micros)
            }
            Self::Bytea => Value::Bytes(bytea(text).ok_or_else(|| bad("bytea (hex)"))?),
            Self::Array(element) => Value::Array(
                array_items(text)?
                    .into_iter()
                    .map(|item| match item {
                        None => Ok(Value::Union(0, Box::new(Value::Null))),
                        Some(s) => Ok(Value::Union(1, Box::new(element.parse(&s)?))),
                    })
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

fn numeric(typmod: i32) -> PgType {
    // typmod = ((precision << 16) | scale) + VARHDRSZ; -1 when unconstrained.
    if typmod < 4 {
        return PgType::Text;
    }
    let packed = (typmod - 4) as u32;
    let precision = (packed >> 16) & 0xffff;
    let scale = packed & 0xffff;
    if precision == 0 || precision > 38 || scale > precision {
        PgType::Text
    } else {
        PgType::Numeric { precision, scale }
    }
}

/// The element type of the built-in one-dimensional array types.
fn array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => 16,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        1009 => 25,
        1015 => 1043,
        1014 => 1042,
        2951 => 2950,
        199 => 114,
        3807 => 3802,
        1182 => 1082,
        1115 => 1114,
        1185 => 1184,
        1183 => 1083,
        1001 => 17,
        _ => return None,
    })
}

fn epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN)
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// A decimal's unscaled value as Avro wants it: big-endian two's complement, shortest form.
fn decimal(text: &str, precision: u32, scale: u32) -> Result<Decimal, String> {
    let bad = || format!("{text:?} does not fit numeric({precision}, {scale})");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let scale = scale as usize;
    if fraction.len() > scale && fraction[scale..].bytes().any(|b| b != b'0') {
        return Err(bad());
    }
    let mut unscaled: i128 = 0;
    let padded = fraction.bytes().chain(std::iter::repeat(b'0')).take(scale);
    for b in whole.bytes().chain(padded) {
        unscaled = unscaled
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    if unscaled.to_string().len() > precision as usize && unscaled != 0 {
        return Err(bad());
    }
    if negative {
        unscaled = -unscaled;
    }
    let bytes = unscaled.to_be_bytes();
    // Drop leading bytes that only repeat the sign.
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    Ok(Decimal::from(bytes[start..].to_vec()))
}

/// `2024-01-02 03:04:05.123456+00` (or `+05:30`) as microseconds since the epoch.
fn timestamptz_micros(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a valid timestamp with time zone");
    // The offset starts at the last sign after the date part.
    let split = text
        .char_indices()
        .skip(10)
        .filter(|(_, c)| *c == '+' || *c == '-')
        .map(|(i, _)| i)
        .last()
        .ok_or_else(bad)?;
    let (local, offset) = text.split_at(split);
    let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f").map_err(|_| bad())?;
    let sign: i64 = if offset.starts_with('-') { -1 } else { 1 };
    let mut seconds = 0i64;
    for (i, part) in offset[1..].split(':').enumerate() {
        let v: i64 = part.parse().map_err(|_| bad())?;
        let unit = [3600, 60, 1].get(i).copied().ok_or_else(bad)?;
        seconds = v
            .checked_mul(unit)
            .and_then(|s| seconds.checked_add(s))
            .ok_or_else(bad)?;
    }
    seconds
        .checked_mul(sign * 1_000_000)
        .and_then(|offset| t.and_utc().timestamp_micros().checked_sub(offset))
        .ok_or_else(bad)
}

/// `\x0a0b` as bytes.
fn bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The items of a one-dimensional array literal: `{1,NULL,"a \"b\""}`.
pub(crate) fn array_items(text: &str) -> Result<Vec<Option<String>>, String> {
    let bad = |why: &str| format!("{text:?} is not a one-dimensional array literal: {why}");
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| bad("no braces"))?;
    let mut items = Vec::new();
    if inner.is_empty() {
        return Ok(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let item = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('\\') => s.push(chars.next().ok_or_else(|| bad("dangling escape"))?),
                    Some('"') => break,
                    Some(c) => s.push(c),
                    None => return Err(bad("unterminated quote")),
                }
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' {
                    return Err(bad("more than one dimension"));
                }
                s.push(c);
                chars.next();
            }
            if s.eq_ignore_ascii_case("NULL") {
                None
            } else {
                Some(s)
            }
        };
        items.push(item);
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => return Err(bad(&format!("unexpected {c:?}"))),
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn maps_types_by_oid() {
        assert_eq!(PgType::from_oid(20, -1), PgType::Int8);
        assert_eq!(
            PgType::from_oid(1700, ((12 << 16) | 2) + 4),
            PgType::Numeric {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(PgType::from_oid(1700, -1), PgType::Text);
        assert_eq!(
            PgType::from_oid(1007, -1),
            PgType::Array(Box::new(PgType::Int4))
        );
        assert_eq!(PgType::from_oid(99999, -1), PgType::Text);
    }

    #[test]
    fn decimals_are_twos_complement() {
        let d = |t: &str| -> Vec<u8> {
            let v: Vec<u8> = (&decimal(t, 12, 2).unwrap()).try_into().unwrap();
            v
        };
        assert_eq!(d("1.00"), vec![100]);
        assert_eq!(d("-1.00"), vec![0x9c]);
        assert_eq!(d("1.28"), vec![0x00, 0x80]);
        assert_eq!(d("-1.28"), vec![0x80]);
        assert_eq!(d("0"), vec![0]);
        assert_eq!(d("12345.6"), 1_234_560i32.to_be_bytes()[1..].to_vec());
        assert!(decimal("NaN", 12, 2).is_err());
        assert!(decimal("1.234", 12, 2).is_err());
        assert!(decimal("12345678901.00", 12, 2).is_err());
    }

    #[test]
    fn timestamps_with_offsets() {
        assert_eq!(
            timestamptz_micros("1970-01-01 00:00:01.5+00").unwrap(),
            1_500_000
        );
        assert_eq!(timestamptz_micros("1970-01-01 01:00:00+01").unwrap(), 0);
        assert_eq!(
            timestamptz_micros("1970-01-01 00:00:00-05:30").unwrap(),
            19_800_000_000
        );
        assert!(timestamptz_micros("infinity").is_err());
        // An absurd offset is an error, not an overflow.
        assert!(timestamptz_micros("1970-01-01 00:00:00+9999999999999999").is_err());
        assert!(timestamptz_micros("1970-01-01 00:00:00-2562047789:00").is_err());
        assert_eq!(
            PgType::Timestamp.parse("1970-01-02 00:00:00").unwrap(),
            Value::LocalTimestampMicros(86_400_000_000)
        );
        assert_eq!(PgType::Date.parse("1970-01-03").unwrap(), Value::Date(2));
        assert_eq!(
            PgType::Time.parse("00:00:02.25").unwrap(),
            Value::TimeMicros(2_250_000)
        );
    }

    #[test]
    fn arrays_quotes_and_nulls() {
        assert_eq!(
            array_items(r#"{1,NULL,"a \"b\"","c,d"}"#).unwrap(),
            vec![
                Some("1".into()),
                None,
                Some("a \"b\"".into()),
                Some("c,d".into())
            ]
        );
        assert_eq!(array_items("{}").unwrap(), Vec::<Option<String>>::new());
        assert!(array_items("{{1},{2}}").is_err());
        assert_eq!(
            PgType::Array(Box::new(PgType::Int4))
                .parse("{1,NULL}")
                .unwrap(),
            Value::Array(vec![
                Value::Union(1, Box::new(Value::Int(1))),
                Value::Union(0, Box::new(Value::Null))
            ])
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(PgType::Bool.parse("t").unwrap(), Value::Boolean(true));
        assert_eq!(PgType::Bool.parse("false").unwrap(), Value::Boolean(false));
        assert_eq!(
            PgType::Bytea.parse("\\x00ff").unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert!(PgType::Int4.parse("x").is_err());
        assert!(matches!(
            PgType::Uuid
                .parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
                .unwrap(),
            Value::Uuid(_)
        ));
    }
}
