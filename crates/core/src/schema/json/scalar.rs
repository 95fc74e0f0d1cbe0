//! Values of schemas with no nested schemas: primitives, bytes, fixed, enums, logical types.

use apache_avro::schema::{EnumSchema, Namespace};
use apache_avro::types::Value as Avro;
use apache_avro::{BigDecimal, Duration, Schema, Uuid};
use serde_json::Value as Json;

use super::decimal::{decimal_text, parse_decimal};
use super::path::{Path, Res, mismatch};
use super::time::{Clock, ticks};

pub(super) fn primitive_name(schema: &Schema) -> &'static str {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int => "int",
        Schema::Long => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes => "bytes",
        _ => "string",
    }
}

/// A value of a schema with no nested schemas; kept out of `convert` to keep recursion frames small.
#[inline(never)]
pub(super) fn scalar(json: &Json, schema: &Schema, ns: &Namespace, path: &Path<'_>) -> Res<Avro> {
    const MS: i64 = 1_000;
    const US: i64 = 1_000_000;
    const NS: i64 = 1_000_000_000;
    match (schema, json) {
        (Schema::Null, Json::Null) => Ok(Avro::Null),
        (Schema::Boolean, Json::Bool(b)) => Ok(Avro::Boolean(*b)),
        (Schema::String, Json::String(s)) => Ok(Avro::String(s.clone())),
        (Schema::Int, _) => narrow(integral(json, "int", path)?, "int", path).map(Avro::Int),
        (Schema::Long, _) => integral(json, "long", path).map(Avro::Long),
        (Schema::Float | Schema::Double, Json::Number(n)) => {
            let f = n.as_f64().unwrap_or(f64::INFINITY);
            match schema {
                Schema::Float if (f as f32).is_finite() => Ok(Avro::Float(f as f32)),
                Schema::Double if f.is_finite() => Ok(Avro::Double(f)),
                _ => Err(path.err(format!(
                    "expected {}, got out-of-range number {n}",
                    primitive_name(schema)
                ))),
            }
        }
        (Schema::Bytes, _) => bytes(json, "bytes", path).map(Avro::Bytes),
        (Schema::Fixed(f), _) => {
            let label = f.name.fullname(ns.clone());
            let b = bytes(json, &label, path)?;
            if b.len() != f.size {
                let msg = format!("expected {} bytes for {label}, got {}", f.size, b.len());
                return Err(path.err(msg));
            }
            Ok(Avro::Fixed(f.size, b))
        }
        (Schema::Enum(e), _) => enum_symbol(json, e, ns, path),
        (Schema::BigDecimal, _) => {
            let text = decimal_text(json, "big-decimal", path)?;
            let parsed = parse_decimal(&text).and_then(|_| text.parse::<BigDecimal>().ok());
            let invalid = || {
                path.err(format!(
                    "expected big-decimal, got invalid decimal {text:?}"
                ))
            };
            parsed.map(Avro::BigDecimal).ok_or_else(invalid)
        }
        (Schema::Uuid, Json::String(s)) => Uuid::parse_str(s)
            .map(Avro::Uuid)
            .map_err(|e| path.err(format!("expected uuid, got invalid uuid {s:?}: {e}"))),
        (Schema::Date, _) => {
            let days = ticks(json, Clock::Date, 1, "date", path)?;
            narrow(days, "date", path).map(Avro::Date)
        }
        (Schema::TimeMillis, _) => {
            let t = ticks(json, Clock::TimeOfDay, MS, "time-millis", path)?;
            narrow(t, "time-millis", path).map(Avro::TimeMillis)
        }
        (Schema::TimeMicros, _) => {
            ticks(json, Clock::TimeOfDay, US, "time-micros", path).map(Avro::TimeMicros)
        }
        (Schema::TimestampMillis, _) => {
            ticks(json, Clock::Instant, MS, "timestamp-millis", path).map(Avro::TimestampMillis)
        }
        (Schema::TimestampMicros, _) => {
            ticks(json, Clock::Instant, US, "timestamp-micros", path).map(Avro::TimestampMicros)
        }
        (Schema::TimestampNanos, _) => {
            ticks(json, Clock::Instant, NS, "timestamp-nanos", path).map(Avro::TimestampNanos)
        }
        (Schema::LocalTimestampMillis, _) => {
            ticks(json, Clock::Local, MS, "local-timestamp-millis", path)
                .map(Avro::LocalTimestampMillis)
        }
        (Schema::LocalTimestampMicros, _) => {
            ticks(json, Clock::Local, US, "local-timestamp-micros", path)
                .map(Avro::LocalTimestampMicros)
        }
        (Schema::LocalTimestampNanos, _) => {
            ticks(json, Clock::Local, NS, "local-timestamp-nanos", path)
                .map(Avro::LocalTimestampNanos)
        }
        (Schema::Duration, _) => {
            let raw = bytes(json, "duration", path)?;
            let len = raw.len();
            let raw = <[u8; 12]>::try_from(raw)
                .map_err(|_| path.err(format!("expected 12 bytes for duration, got {len}")))?;
            Ok(Avro::Duration(Duration::from(raw)))
        }
        (Schema::Null | Schema::Boolean | Schema::String | Schema::Float | Schema::Double, _) => {
            Err(mismatch(path, primitive_name(schema), json))
        }
        (Schema::Uuid, _) => Err(mismatch(path, "uuid", json)),
        _ => Err(path.err(format!("unsupported schema {schema:?}"))),
    }
}

/// Largest magnitude of an integer written as a float (`1.5e12`, `17.0`) that is taken: up to
/// 2^53 every integer is a float exactly; beyond, the float may be a rounding of the number
/// written (`-9223372036854775809` reads as -2^63), so it is refused rather than changed.
const MAX_EXACT_FLOAT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// An integral JSON number as i64: exact integers, or floats with no fractional part within
/// ±2^53.
pub(super) fn integral(json: &Json, label: &str, path: &Path<'_>) -> Res<i64> {
    let Json::Number(n) = json else {
        return Err(mismatch(path, label, json));
    };
    let out_of_range = || path.err(format!("expected {label}, got out-of-range number {n}"));
    if let Some(v) = n.as_i64() {
        return Ok(v);
    }
    match n.as_f64() {
        Some(_) if n.is_u64() => Err(out_of_range()),
        Some(f) if f.fract() != 0.0 => {
            Err(path.err(format!("expected {label}, got non-integral number {n}")))
        }
        Some(f) if f.abs() <= MAX_EXACT_FLOAT_INTEGER => Ok(f as i64),
        _ => Err(out_of_range()),
    }
}

fn narrow(v: i64, label: &str, path: &Path<'_>) -> Res<i32> {
    i32::try_from(v).map_err(|_| path.err(format!("expected {label}, got out-of-range number {v}")))
}

/// Bytes in the Avro JSON convention: a string with one char per byte, code points 0-255.
fn bytes(json: &Json, label: &str, path: &Path<'_>) -> Res<Vec<u8>> {
    let Json::String(s) = json else {
        return Err(mismatch(path, label, json));
    };
    let bytes = s
        .chars()
        .map(|c| u8::try_from(c).map_err(|_| c))
        .collect::<Result<_, char>>();
    bytes.map_err(|c| {
        let msg = format!(
            "expected {label} as code points 0-255, got U+{:04X}",
            u32::from(c)
        );
        path.err(msg)
    })
}

fn enum_symbol(json: &Json, e: &EnumSchema, ns: &Namespace, path: &Path<'_>) -> Res<Avro> {
    let label = e.name.fullname(ns.clone());
    let Json::String(s) = json else {
        return Err(mismatch(path, &label, json));
    };
    match e.symbols.iter().position(|sym| sym == s).map(u32::try_from) {
        Some(Ok(i)) => Ok(Avro::Enum(i, s.clone())),
        _ => {
            let symbols = e.symbols.join(", ");
            Err(path.err(format!(
                "expected one of [{symbols}] for {label}, got {s:?}"
            )))
        }
    }
}
