//! The walk of a JSON value and its schema together: references, containers, records, unions.

use std::collections::HashMap;

use apache_avro::schema::{DecimalSchema, EnumSchema, Name, NamesRef, Namespace, RecordSchema};
use apache_avro::schema::{ResolvedSchema, UnionSchema};
use apache_avro::types::Value as Avro;
use apache_avro::{Decimal, Schema};
use serde_json::Value as Json;

use super::decimal::{decimal_text, parse_decimal, rescale, twos_complement};
use super::path::{JsonToAvroError, Path, ROOT, Res, Seg, kind, mismatch};
use super::scalar::{primitive_name, scalar};

/// Deepest JSON nesting accepted (serde_json's own parsing limit), so input cannot exhaust the stack.
const MAX_DEPTH: usize = 128;
/// Most conversion steps per value, so unions of records cannot backtrack for ever.
const MAX_STEPS: usize = 2_000_000;

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

/// Walks a JSON value and a schema together; `names` resolves `Schema::Ref`.
struct Converter<'a> {
    names: &'a NamesRef<'a>,
    steps: usize,
    /// How many enclosing unions are trying one of several branches that fit.
    speculative: usize,
    /// Record results while speculative, so backtracking never redoes a subtree.
    memo: HashMap<(*const Json, *const Schema), Res<Avro>>,
}

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

fn union_value(index: usize, value: Avro, path: &Path<'_>) -> Res<Avro> {
    let index = u32::try_from(index).map_err(|_| path.err("too many union branches"))?;
    Ok(Avro::Union(index, Box::new(value)))
}
