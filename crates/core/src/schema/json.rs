//! JSON -> Avro validation.
//!
//! The HTTP ingest service receives JSON records; [`json_to_avro`] checks each one against the
//! topic's Avro schema and builds the Avro value, and [`json_to_avro_datum`] also encodes it to the
//! Avro binary body. Errors carry a JSONPath-like location (`$.items[2].price`) of the bad value.
//!
//! Unions take either the plain value (the first branch that accepts it wins) or the Avro JSON
//! encoding `{"<type name>": value}`. Bytes and fixed take the Avro JSON convention of a string
//! with one char (code point 0-255) per byte. Logical types take their underlying Avro JSON value
//! or a readable string: decimals as `"12.34"` or a number, uuids as strings, dates as
//! `"YYYY-MM-DD"`, times as `"HH:MM:SS[.f]"`, timestamps as RFC 3339 and local timestamps as
//! `"YYYY-MM-DDTHH:MM:SS[.f]"`.

use std::borrow::Cow;
use std::collections::HashMap;

use apache_avro::schema::{DecimalSchema, EnumSchema, Name, NamesRef, Namespace, RecordSchema};
use apache_avro::schema::{ResolvedSchema, UnionSchema};
use apache_avro::types::Value as Avro;
use apache_avro::{BigDecimal, Decimal, Duration, Schema, Uuid};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde_json::Value as Json;

/// Deepest JSON nesting accepted (serde_json's own parsing limit), so input cannot exhaust the stack.
const MAX_DEPTH: usize = 128;
/// Most conversion steps per value, so unions of records cannot backtrack for ever.
const MAX_STEPS: usize = 2_000_000;
/// Most digits of a decimal's unscaled value, whatever the schema's precision.
const MAX_DECIMAL_DIGITS: usize = 10_000;

/// Error converting a JSON value to Avro: `path` is like `$.items[2].price` or `$.address.city`, `$` for the root.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct JsonToAvroError {
    /// Where the bad value is, `$` for the root.
    pub path: String,
    /// What is wrong with it, e.g. `expected long, got string`.
    pub message: String,
}

/// Converts a JSON value to an Avro value of `schema`, checking every field.
pub fn json_to_avro(value: &Json, schema: &Schema) -> Result<Avro, JsonToAvroError> {
    let resolved =
        ResolvedSchema::try_from(schema).map_err(|e| ROOT.err(format!("invalid schema: {e}")))?;
    let mut converter = Converter {
        names: resolved.get_names(),
        steps: 0,
        speculative: 0,
        memo: HashMap::new(),
    };
    converter.convert(value, schema, &None, &ROOT)
}

/// Converts and encodes to the Avro binary body (no framing), ready for the Confluent wire format.
pub fn json_to_avro_datum(value: &Json, schema: &Schema) -> Result<Vec<u8>, JsonToAvroError> {
    let avro = json_to_avro(value, schema)?;
    apache_avro::to_avro_datum(schema, avro).map_err(|e| ROOT.err(format!("cannot encode: {e}")))
}

/// One step down from a parent location.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A location in the JSON input, as a chain of parents rendered only when an error needs it.
struct Path<'a> {
    up: Option<(&'a Path<'a>, Seg<'a>)>,
    depth: usize,
}

const ROOT: Path<'static> = Path { up: None, depth: 0 };

impl<'a> Path<'a> {
    fn child(&'a self, seg: Seg<'a>) -> Path<'a> {
        Path {
            up: Some((self, seg)),
            depth: self.depth + 1,
        }
    }

    fn err(&self, message: impl Into<String>) -> JsonToAvroError {
        let mut segs = Vec::with_capacity(self.depth);
        let mut at = self;
        while let Some((parent, seg)) = at.up {
            segs.push(seg);
            at = parent;
        }
        let mut path = String::from("$");
        for seg in segs.iter().rev() {
            match seg {
                Seg::Index(i) => path.push_str(&format!("[{i}]")),
                Seg::Key(k) if is_identifier(k) => path.push_str(&format!(".{k}")),
                Seg::Key(k) => path.push_str(&format!("[{}]", Json::String((*k).to_owned()))),
            }
        }
        JsonToAvroError {
            path,
            message: message.into(),
        }
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn mismatch(path: &Path<'_>, expected: &str, json: &Json) -> JsonToAvroError {
    path.err(format!("expected {expected}, got {}", kind(json)))
}

/// Walks a JSON value and a schema together; `names` resolves `Schema::Ref`.
struct Converter<'a> {
    names: &'a NamesRef<'a>,
    steps: usize,
    /// How many enclosing unions are trying one of several branches that fit.
    speculative: usize,
    /// Record results while speculative, so backtracking never redoes a subtree.
    memo: HashMap<(*const Json, *const Schema), Res<Avro>>,
}

type Res<T> = Result<T, JsonToAvroError>;

impl<'a> Converter<'a> {
    fn lookup(&self, name: &Name, ns: &Namespace) -> Option<(&'a Schema, Namespace)> {
        let full = name.fully_qualified_name(ns);
        self.names
            .get(&full)
            .map(|schema| (*schema, full.namespace))
    }

    fn exhausted(&self) -> bool {
        self.steps > MAX_STEPS
    }

    /// Kept small: it and the container methods below are the recursion, scalars are leaves.
    fn convert(
        &mut self,
        json: &Json,
        schema: &Schema,
        ns: &Namespace,
        path: &Path<'_>,
    ) -> Res<Avro> {
        self.steps += 1;
        if self.exhausted() {
            return Err(path.err("value too complex to validate"));
        }
        if path.depth > MAX_DEPTH {
            return Err(path.err(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let resolved_ns;
        let (schema, ns) = match schema {
            Schema::Ref { name } => {
                let Some((target, target_ns)) = self.lookup(name, ns) else {
                    return Err(path.err(format!("unresolved reference {}", name.fullname(None))));
                };
                resolved_ns = target_ns;
                (target, &resolved_ns)
            }
            other => (other, ns),
        };
        match schema {
            Schema::Array(a) => self.array(json, &a.items, ns, path),
            Schema::Map(m) => self.map(json, &m.types, ns, path),
            Schema::Record(r) if self.speculative > 0 => {
                self.memo_record(json, schema, r, ns, path)
            }
            Schema::Record(r) => self.record(json, r, ns, path),
            Schema::Union(u) => self.union(json, u, ns, path),
            Schema::Decimal(d) => self.decimal(json, d, ns, path),
            _ => scalar(json, schema, ns, path),
        }
    }

    fn array(&mut self, json: &Json, items: &Schema, ns: &Namespace, path: &Path<'_>) -> Res<Avro> {
        let Json::Array(values) = json else {
            return Err(mismatch(path, "array", json));
        };
        let mut out = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            out.push(self.convert(value, items, ns, &path.child(Seg::Index(i)))?);
        }
        Ok(Avro::Array(out))
    }

    fn map(&mut self, json: &Json, values: &Schema, ns: &Namespace, path: &Path<'_>) -> Res<Avro> {
        let Json::Object(entries) = json else {
            return Err(mismatch(path, "map", json));
        };
        let mut out = HashMap::with_capacity(entries.len());
        for (key, value) in entries {
            let value = self.convert(value, values, ns, &path.child(Seg::Key(key)))?;
            out.insert(key.clone(), value);
        }
        Ok(Avro::Map(out))
    }

    fn memo_record(
        &mut self,
        json: &Json,
        schema: &Schema,
        r: &RecordSchema,
        ns: &Namespace,
        path: &Path<'_>,
    ) -> Res<Avro> {
        let key = (std::ptr::from_ref(json), std::ptr::from_ref(schema));
        if let Some(done) = self.memo.get(&key) {
            return done.clone();
        }
        let done = self.record(json, r, ns, path);
        self.memo.insert(key, done.clone());
        done
    }

    fn record(
        &mut self,
        json: &Json,
        r: &RecordSchema,
        ns: &Namespace,
        path: &Path<'_>,
    ) -> Res<Avro> {
        let full = r.name.fully_qualified_name(ns);
        let Json::Object(obj) = json else {
            return Err(mismatch(path, &full.fullname(None), json));
        };
        let known =
            |key: &str| r.lookup.contains_key(key) || r.fields.iter().any(|f| f.name == key);
        if let Some(key) = obj.keys().find(|key| !known(key)) {
            return Err(path.child(Seg::Key(key)).err("unknown field"));
        }
        let mut fields = Vec::with_capacity(r.fields.len());
        for field in &r.fields {
            let at = path.child(Seg::Key(&field.name));
            let aliases = field.aliases.iter().flatten();
            let given = obj
                .get(&field.name)
                .or_else(|| aliases.filter_map(|a| obj.get(a)).next());
            let value = match (given, &field.default) {
                (Some(v), _) => self.convert(v, &field.schema, &full.namespace, &at)?,
                (None, Some(default)) => self
                    .convert(default, &field.schema, &full.namespace, &at)
                    .map_err(|e| JsonToAvroError {
                        message: format!("invalid default: {}", e.message),
                        ..e
                    })?,
                (None, None) => return Err(at.err("missing required field")),
            };
            fields.push((field.name.clone(), value));
        }
        Ok(Avro::Record(fields))
    }

    fn union(
        &mut self,
        json: &Json,
        u: &UnionSchema,
        ns: &Namespace,
        path: &Path<'_>,
    ) -> Res<Avro> {
        let branches = u.variants();
        let candidates: Vec<usize> = (0..branches.len())
            .filter(|&i| self.accepts_kind(&branches[i], json, ns))
            .collect();
        let mut wrapped_err = None;
        if let Json::Object(obj) = json
            && obj.len() == 1
            && let Some((key, inner)) = obj.iter().next()
            && let Some(i) = branches.iter().position(|b| self.names_branch(b, key, ns))
        {
            let at = path.child(Seg::Key(key));
            match self.attempt(inner, &branches[i], ns, &at, !candidates.is_empty()) {
                Ok(v) => return union_value(i, v, path),
                Err(e) if self.exhausted() => return Err(e),
                Err(e) => wrapped_err = Some(e),
            }
        }
        let mut last_err = None;
        for &i in &candidates {
            match self.attempt(json, &branches[i], ns, path, candidates.len() > 1) {
                Ok(v) => return union_value(i, v, path),
                Err(e) if self.exhausted() => return Err(e),
                Err(e) => last_err = Some(e),
            }
        }
        // A failed wrapped value, or the only branch of the right JSON kind, has the useful error.
        if let Some(e) = wrapped_err.or(last_err.filter(|_| candidates.len() == 1)) {
            return Err(e);
        }
        let labels: Vec<String> = branches.iter().map(|b| self.type_names(b, ns).0).collect();
        let labels = labels.join(", ");
        Err(path.err(format!(
            "no union branch matches ({labels}), got {}",
            kind(json)
        )))
    }

    /// Converts a union branch; `speculative` if another branch may be tried after it.
    fn attempt(
        &mut self,
        json: &Json,
        schema: &Schema,
        ns: &Namespace,
        path: &Path<'_>,
        speculative: bool,
    ) -> Res<Avro> {
        self.speculative += usize::from(speculative);
        let result = self.convert(json, schema, ns, path);
        self.speculative -= usize::from(speculative);
        result
    }

    /// Whether `json` has a JSON kind `schema` can take at all.
    fn accepts_kind(&self, schema: &Schema, json: &Json, ns: &Namespace) -> bool {
        use Schema as S;
        match (schema, json) {
            (S::Ref { name }, _) => self
                .lookup(name, ns)
                .is_some_and(|(s, ns)| self.accepts_kind(s, json, &ns)),
            (S::Null, Json::Null) | (S::Boolean, Json::Bool(_)) => true,
            (S::Array(_), Json::Array(_)) | (S::Map(_) | S::Record(_), Json::Object(_)) => true,
            (S::String | S::Bytes | S::Fixed(_) | S::Enum(_), Json::String(_)) => true,
            (S::Uuid | S::Duration, Json::String(_)) => true,
            (S::Uuid | S::Duration, _) => false,
            (S::Int | S::Long | S::Float | S::Double, Json::Number(_)) => true,
            // The other logical types, named unlike their underlying type, take numbers and strings.
            (_, Json::Number(_) | Json::String(_)) => {
                let (label, wire) = self.type_names(schema, ns);
                label != wire
            }
            _ => false,
        }
    }

    /// Whether `key` of a `{"<type name>": value}` union value names `branch`.
    fn names_branch(&self, branch: &Schema, key: &str, ns: &Namespace) -> bool {
        let (label, wire) = self.type_names(branch, ns);
        key == wire || key == label || wire.rsplit('.').next() == Some(key)
    }

    /// A readable name of a schema (full names for named types, logical type names) and its
    /// name in the Avro JSON encoding of unions (the underlying type of a logical type).
    fn type_names(&self, schema: &Schema, ns: &Namespace) -> (String, String) {
        let same = |name: String| (name.clone(), name);
        let pair = |label: &str, wire: &str| (label.to_owned(), wire.to_owned());
        match schema {
            Schema::Record(RecordSchema { name, .. }) | Schema::Enum(EnumSchema { name, .. }) => {
                same(name.fullname(ns.clone()))
            }
            Schema::Fixed(f) => same(f.name.fullname(ns.clone())),
            Schema::Ref { name } => match self.lookup(name, ns) {
                Some((target, target_ns)) => self.type_names(target, &target_ns),
                None => same(name.fullname(ns.clone())),
            },
            Schema::Decimal(d) => ("decimal".to_owned(), self.type_names(&d.inner, ns).1),
            Schema::BigDecimal => pair("big-decimal", "bytes"),
            Schema::Uuid => pair("uuid", "string"),
            Schema::Duration => pair("duration", "fixed"),
            Schema::Date => pair("date", "int"),
            Schema::TimeMillis => pair("time-millis", "int"),
            Schema::TimeMicros => pair("time-micros", "long"),
            Schema::TimestampMillis => pair("timestamp-millis", "long"),
            Schema::TimestampMicros => pair("timestamp-micros", "long"),
            Schema::TimestampNanos => pair("timestamp-nanos", "long"),
            Schema::LocalTimestampMillis => pair("local-timestamp-millis", "long"),
            Schema::LocalTimestampMicros => pair("local-timestamp-micros", "long"),
            Schema::LocalTimestampNanos => pair("local-timestamp-nanos", "long"),
            Schema::Array(_) => same("array".to_owned()),
            Schema::Map(_) => same("map".to_owned()),
            Schema::Union(_) => same("union".to_owned()),
            primitive => same(primitive_name(primitive).to_owned()),
        }
    }

    fn decimal(
        &self,
        json: &Json,
        d: &DecimalSchema,
        ns: &Namespace,
        path: &Path<'_>,
    ) -> Res<Avro> {
        let text = decimal_text(json, "decimal", path)?;
        let invalid = || path.err(format!("expected decimal, got invalid decimal {text:?}"));
        let lit = parse_decimal(&text).ok_or_else(invalid)?;
        let digits = rescale(lit.digits, lit.exp, d.precision, d.scale)
            .map_err(|m| path.err(format!("decimal {text} {m}")))?;
        let bytes = twos_complement(&digits, lit.negative);
        let fixed = match &*d.inner {
            Schema::Ref { name } => self.lookup(name, ns).map(|(s, _)| s),
            inner => Some(inner),
        };
        if let Some(Schema::Fixed(f)) = fixed
            && bytes.len() > f.size
        {
            return Err(path.err(format!("decimal {text} does not fit in {} bytes", f.size)));
        }
        Ok(Avro::Decimal(Decimal::from(bytes)))
    }
}

fn primitive_name(schema: &Schema) -> &'static str {
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
fn scalar(json: &Json, schema: &Schema, ns: &Namespace, path: &Path<'_>) -> Res<Avro> {
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

fn union_value(index: usize, value: Avro, path: &Path<'_>) -> Res<Avro> {
    let index = u32::try_from(index).map_err(|_| path.err("too many union branches"))?;
    Ok(Avro::Union(index, Box::new(value)))
}

/// Largest magnitude of an integer written as a float (`1.5e12`, `17.0`) that is taken: up to
/// 2^53 every integer is a float exactly; beyond, the float may be a rounding of the number
/// written (`-9223372036854775809` reads as -2^63), so it is refused rather than changed.
const MAX_EXACT_FLOAT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// An integral JSON number as i64: exact integers, or floats with no fractional part within
/// ±2^53.
fn integral(json: &Json, label: &str, path: &Path<'_>) -> Res<i64> {
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

/// The textual form of a decimal given as a JSON string or number.
fn decimal_text<'j>(json: &'j Json, label: &str, path: &Path<'_>) -> Res<Cow<'j, str>> {
    match json {
        Json::String(s) => Ok(Cow::Borrowed(s)),
        Json::Number(n) => Ok(Cow::Owned(n.to_string())),
        _ => Err(path.err(format!(
            "expected {label} (string or number), got {}",
            kind(json)
        ))),
    }
}

/// A decimal literal: `±digits * 10^exp`, `digits` without leading zeros (empty for zero).
struct DecimalLit {
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

fn parse_decimal(s: &str) -> Option<DecimalLit> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = || int.bytes().chain(frac.bytes());
    if (int.is_empty() && frac.is_empty()) || !all().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = all().map(|b| b - b'0').skip_while(|&d| d == 0).collect();
    let exp = i64::from(exp) - i64::try_from(frac.len()).ok()?;
    Some(DecimalLit {
        negative,
        digits,
        exp,
    })
}

/// Why [`rescale`] refused a decimal; displayed after `decimal <text> `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum RescaleError {
    /// Nonzero digits beyond the scale (rounding would lose them).
    #[error("has more than {scale} fractional digits")]
    FractionalDigits {
        /// The scale.
        scale: usize,
    },
    /// More digits than the precision (or `MAX_DECIMAL_DIGITS`) at the scale.
    #[error("exceeds precision {precision} at scale {scale}")]
    Precision {
        /// The precision.
        precision: usize,
        /// The scale.
        scale: usize,
    },
}

/// The unscaled digits of `digits * 10^exp` at `scale`, checked against `precision`.
fn rescale(
    mut digits: Vec<u8>,
    exp: i64,
    precision: usize,
    scale: usize,
) -> Result<Vec<u8>, RescaleError> {
    let shift = exp.saturating_add(i64::try_from(scale).unwrap_or(i64::MAX));
    let too_many = RescaleError::Precision { precision, scale };
    if shift < 0 {
        let keep = digits
            .len()
            .saturating_sub(usize::try_from(-shift).unwrap_or(usize::MAX));
        if digits[keep..].iter().any(|&d| d != 0) {
            return Err(RescaleError::FractionalDigits { scale });
        }
        digits.truncate(keep);
    } else if !digits.is_empty() {
        let total = digits
            .len()
            .saturating_add(usize::try_from(shift).unwrap_or(usize::MAX));
        if total > MAX_DECIMAL_DIGITS {
            return Err(too_many);
        }
        digits.resize(total, 0);
    }
    if digits.len() > precision {
        return Err(too_many);
    }
    Ok(digits)
}

/// Why [`decimal128_from_text`] refused a decimal's text; every variant but `NegativeScale`
/// holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not a decimal literal.
    #[error("invalid decimal {text:?}")]
    Invalid {
        /// The text.
        text: String,
    },
    /// The target type has a negative scale, which is not supported.
    #[error("negative scale {scale}")]
    NegativeScale {
        /// The scale.
        scale: i8,
    },
    /// Nonzero digits beyond the scale: the value is never rounded.
    #[error("decimal {text} has more than {scale} fractional digits")]
    TooManyFractionalDigits {
        /// The text.
        text: String,
        /// The scale.
        scale: usize,
    },
    /// More digits than the precision holds at the scale.
    #[error("decimal {text} exceeds precision {precision} at scale {scale}")]
    ExceedsPrecision {
        /// The text.
        text: String,
        /// The precision (at most 38).
        precision: usize,
        /// The scale.
        scale: usize,
    },
}

/// The unscaled value of a decimal's text (`-12.5`, `1e3`, `+0.125E-1`) at `scale`, checked
/// against `precision` (at most 38, as Arrow's `Decimal128` holds): the rule JSON events follow,
/// for text read elsewhere (file rows). Never rounds: more fractional digits than the scale is an
/// error, as is any exponent the precision cannot hold.
pub fn decimal128_from_text(text: &str, precision: u8, scale: i8) -> Result<i128, DecimalError> {
    let lit = parse_decimal(text.trim()).ok_or_else(|| DecimalError::Invalid {
        text: text.to_string(),
    })?;
    let scale = usize::try_from(scale).map_err(|_| DecimalError::NegativeScale { scale })?;
    let precision = usize::from(precision.min(38));
    let digits = rescale(lit.digits, lit.exp, precision, scale).map_err(|e| match e {
        RescaleError::FractionalDigits { scale } => DecimalError::TooManyFractionalDigits {
            text: text.to_string(),
            scale,
        },
        RescaleError::Precision { precision, scale } => DecimalError::ExceedsPrecision {
            text: text.to_string(),
            precision,
            scale,
        },
    })?;
    // At most 38 digits: fits i128.
    let magnitude = digits.iter().fold(0i128, |v, &d| v * 10 + i128::from(d));
    Ok(if lit.negative { -magnitude } else { magnitude })
}

/// Big-endian two's-complement bytes of a decimal digit string, as few as hold the value.
fn twos_complement(digits: &[u8], negative: bool) -> Vec<u8> {
    let mut le: Vec<u8> = Vec::new(); // the magnitude, little-endian base 256
    for &d in digits {
        let mut carry = u16::from(d);
        for byte in le.iter_mut() {
            let v = u16::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            le.push(carry as u8);
        }
    }
    if negative && !le.is_empty() {
        let mut carry = true;
        for byte in le.iter_mut() {
            *byte = !*byte;
            if carry {
                (*byte, carry) = byte.overflowing_add(1);
            }
        }
        if le.last().is_some_and(|&b| b & 0x80 == 0) {
            le.push(0xff);
        }
    } else if le.last().is_none_or(|&b| b & 0x80 != 0) {
        le.push(0);
    }
    le.reverse();
    le
}

/// The string form a date or time logical type takes besides its integer.
#[derive(Clone, Copy)]
enum Clock {
    Date,
    TimeOfDay,
    Instant,
    Local,
}

/// A date or time as an integer count of `1 / per_second` seconds (days for dates).
fn ticks(json: &Json, clock: Clock, per_second: i64, label: &str, path: &Path<'_>) -> Res<i64> {
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

#[cfg(test)]
mod tests;
