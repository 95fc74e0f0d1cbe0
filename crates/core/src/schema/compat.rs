//! Schema compatibility by the Avro schema-resolution rules, as Confluent's registry checks it.
//!
//! [`reader_can_read`] lists every reason a reader schema cannot read data written with a writer
//! schema; [`check`] applies a subject's [`Compatibility`] level to a new schema and the existing
//! versions; [`canonical`] gives the Parsing Canonical Form used to spot an already registered
//! schema.
//!
//! Rules (Avro specification, "Schema Resolution"):
//! - primitives must be equal or promotable: int to long, float or double; long to float or
//!   double; float to double; string to bytes and bytes to string;
//! - records, enums and fixed match by unqualified name, as the specification and Avro's Java
//!   `SchemaCompatibility` (which Confluent uses) do, so moving a type to another namespace is
//!   accepted; a reader alias naming the writer's type also matches;
//! - each reader field is looked up in the writer by name, then by the reader field's aliases; a
//!   reader field missing in the writer needs a default; writer fields missing in the reader are
//!   skipped;
//! - writer enum symbols missing in the reader need a reader enum default; fixed sizes must be
//!   equal; arrays and maps recurse into items and values;
//! - a writer union needs every branch readable by the reader; a reader union needs one branch
//!   that reads the writer. When none does but one has the same shape (the record of the same
//!   name, an array, a map...), that branch's reasons are reported, so they point inside it;
//! - named references are resolved through each schema's own definitions (aliases included), and
//!   a stack of (reader name, writer name) pairs being checked stops recursive schemas.
//!
//! Logical types are checked as their underlying type, as Avro does when resolving data:
//! `timestamp-millis` reads `long` and `date` reads `int`, and the other way round. The one
//! exception is two decimals: a change of precision or scale changes the value read from the
//! same bytes, so it is a [`IncompatibilityKind::TypeMismatch`]. A decimal against plain `bytes`
//! or `fixed` is checked as its underlying type. apache-avro 0.20 keeps no underlying type for
//! `uuid` (checked as `string`, even when written on a `fixed`) nor `duration` (only matches
//! `duration`).
//!
//! Paths are JSON-Pointer-like locations in the reader schema, with field names instead of
//! indexes and without `type` steps: `/fields/address/fields/city`, `/fields/items/items/fields/sku` (array items),
//! `/fields/counts/values` (map values), `/fields/address/1/fields/city` (branch 1 of a reader
//! union), `/` for the root.

use std::collections::HashMap;
use std::fmt;

use apache_avro::Schema;
use apache_avro::schema::{Alias, EnumSchema, FixedSchema, RecordField, RecordSchema, UnionSchema};

use crate::schema::catalog::Compatibility;

#[cfg(test)]
mod tests;

/// Every level, for [`parse_level`].
const LEVELS: [Compatibility; 7] = [
    Compatibility::None,
    Compatibility::Backward,
    Compatibility::BackwardTransitive,
    Compatibility::Forward,
    Compatibility::ForwardTransitive,
    Compatibility::Full,
    Compatibility::FullTransitive,
];

/// Location of the whole schema.
const ROOT: &str = "/";

/// One reason a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Where in the reader schema, e.g. `/fields/address/fields/city`; `/` for the root.
    pub path: String,
    /// Which rule is broken.
    pub kind: IncompatibilityKind,
    /// What is wrong, naming the field, type or symbols.
    pub message: String,
}

impl Incompatibility {
    fn new(path: &str, kind: IncompatibilityKind, message: String) -> Self {
        Self {
            path: path.to_owned(),
            kind,
            message,
        }
    }
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.kind, self.path, self.message)
    }
}

/// The broken rule, with Confluent's (and Avro's) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncompatibilityKind {
    /// A reader field is missing in the writer and has no default.
    ReaderFieldMissingDefaultValue,
    /// The reader's type cannot read the writer's (no promotion applies).
    TypeMismatch,
    /// No branch of the reader union reads the writer's type.
    MissingUnionBranch,
    /// The writer has enum symbols the reader lacks, and the reader enum has no default.
    MissingEnumSymbols,
    /// Named types with different names and no reader alias for the writer's name.
    NameMismatch,
    /// Fixed types of different sizes.
    FixedSizeMismatch,
}

impl IncompatibilityKind {
    /// The kind as Confluent's registry spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReaderFieldMissingDefaultValue => "READER_FIELD_MISSING_DEFAULT_VALUE",
            Self::TypeMismatch => "TYPE_MISMATCH",
            Self::MissingUnionBranch => "MISSING_UNION_BRANCH",
            Self::MissingEnumSymbols => "MISSING_ENUM_SYMBOLS",
            Self::NameMismatch => "NAME_MISMATCH",
            Self::FixedSizeMismatch => "FIXED_SIZE_MISMATCH",
        }
    }
}

impl fmt::Display for IncompatibilityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compatibility level from its Confluent name, in any case (`backward_transitive`).
pub fn parse_level(s: &str) -> Option<Compatibility> {
    LEVELS
        .into_iter()
        .find(|level| level.as_str().eq_ignore_ascii_case(s.trim()))
}

/// Every reason `reader` cannot read data written with `writer` (empty = compatible).
pub fn reader_can_read(reader: &Schema, writer: &Schema) -> Vec<Incompatibility> {
    let mut checker = Checker {
        names: [names_of(reader), names_of(writer)],
        in_progress: Vec::new(),
        out: Vec::new(),
    };
    checker.visit(reader, writer, ROOT);
    checker.out
}

/// Checks a new schema against existing versions (oldest first) under a level; returns the
/// reasons (empty = compatible).
///
/// BACKWARD: the new schema reads the latest; FORWARD: the latest reads the new one; FULL: both;
/// the `_TRANSITIVE` levels check against every version instead of the latest; NONE always
/// passes. Reasons read `TYPE_MISMATCH at /fields/age: ...`; transitive levels prefix them with
/// `against version N: ` (versions numbered from 1 in the order of `existing`), and FULL levels
/// say which direction failed (`backward` = new reads old, `forward` = old reads new).
pub fn check(level: Compatibility, new: &Schema, existing: &[Schema]) -> Vec<String> {
    let (backward, forward, transitive) = match level {
        Compatibility::None => return Vec::new(),
        Compatibility::Backward => (true, false, false),
        Compatibility::BackwardTransitive => (true, false, true),
        Compatibility::Forward => (false, true, false),
        Compatibility::ForwardTransitive => (false, true, true),
        Compatibility::Full => (true, true, false),
        Compatibility::FullTransitive => (true, true, true),
    };
    let versions = existing.iter().enumerate();
    let skip = if transitive {
        0
    } else {
        existing.len().saturating_sub(1)
    };
    let mut reasons = Vec::new();
    for (index, old) in versions.skip(skip) {
        let mut report = |direction: &str, found: Vec<Incompatibility>| {
            let prefix = match (transitive, backward && forward) {
                (true, true) => format!("against version {} ({direction}): ", index + 1),
                (true, false) => format!("against version {}: ", index + 1),
                (false, true) => format!("{direction}: "),
                (false, false) => String::new(),
            };
            reasons.extend(found.iter().map(|reason| format!("{prefix}{reason}")));
        };
        if backward {
            report("backward", reader_can_read(new, old));
        }
        if forward {
            report("forward", reader_can_read(old, new));
        }
    }
    reasons
}

/// The Parsing Canonical Form text, for "same schema" comparisons.
///
/// This is apache-avro's `Schema::canonical_form`: it keeps full names, types, field order,
/// symbols, sizes and decimal precision and scale, and drops docs, aliases, defaults, which
/// logical type annotates a type (`timestamp-millis` and `timestamp-micros` share a form) and the
/// JSON layout. So two schemas differing only in a field default have the same form.
///
/// apache-avro 0.20 panics on some schemas it parsed (a decimal whose scale is beyond u64: found
/// by fuzzing, docs/security.md); for those the form is the schema's full JSON instead, which
/// names it as exactly.
pub fn canonical(schema: &Schema) -> String {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| schema.canonical_form()))
        .unwrap_or_else(|_| serde_json::to_string(schema).unwrap_or_default())
}

/// The walk over a reader and a writer schema, collecting reasons in `out`.
struct Checker<'a> {
    /// Named types of the reader and of the writer, by full name and alias.
    names: [HashMap<String, &'a Schema>; 2],
    /// (reader, writer) record full names being checked, so recursive schemas end.
    in_progress: Vec<(String, String)>,
    out: Vec<Incompatibility>,
}

const READER: usize = 0;
const WRITER: usize = 1;

impl<'a> Checker<'a> {
    fn push(&mut self, path: &str, kind: IncompatibilityKind, message: String) {
        self.out.push(Incompatibility::new(path, kind, message));
    }

    /// Adds every reason `reader` at `path` cannot read `writer`.
    fn visit(&mut self, reader: &'a Schema, writer: &'a Schema, path: &str) {
        let (Some(reader), Some(writer)) = (
            self.defined(reader, READER, path),
            self.defined(writer, WRITER, path),
        ) else {
            return;
        };
        match (reader, writer) {
            (_, Schema::Union(w)) => {
                for branch in w.variants() {
                    self.visit(reader, branch, path);
                }
            }
            (Schema::Union(r), _) => self.union_branch(r, writer, path),
            (Schema::Decimal(r), Schema::Decimal(w))
                if (r.precision, r.scale) != (w.precision, w.scale) =>
            {
                self.mismatch(path, reader, writer);
            }
            (Schema::Decimal(r), _) => self.visit(&r.inner, writer, path),
            (_, Schema::Decimal(w)) => self.visit(reader, &w.inner, path),
            (Schema::Record(_), Schema::Record(_))
            | (Schema::Enum(_), Schema::Enum(_))
            | (Schema::Fixed(_), Schema::Fixed(_)) => self.named(reader, writer, path),
            (Schema::Array(r), Schema::Array(w)) => {
                self.visit(&r.items, &w.items, &child(path, "items"));
            }
            (Schema::Map(r), Schema::Map(w)) => {
                self.visit(&r.types, &w.types, &child(path, "values"));
            }
            (Schema::Duration, Schema::Duration) => {}
            _ => match (primitive(reader), primitive(writer)) {
                (Some(r), Some(w)) if promotes(w, r) => {}
                _ => self.mismatch(path, reader, writer),
            },
        }
    }

    /// A reader union against a writer that is not a union: the first branch that reads it wins;
    /// if none does, the reasons of the branch of the same shape, else a missing branch.
    fn union_branch(&mut self, reader: &'a UnionSchema, writer: &'a Schema, path: &str) {
        let mut closest = None;
        for (index, branch) in reader.variants().iter().enumerate() {
            let outer = std::mem::take(&mut self.out);
            self.visit(branch, writer, &child(path, &index.to_string()));
            let reasons = std::mem::replace(&mut self.out, outer);
            if reasons.is_empty() {
                return;
            }
            let shaped = self
                .lookup(branch, READER)
                .is_some_and(|b| same_shape(b, writer));
            if closest.is_none() && shaped {
                closest = Some(reasons);
            }
        }
        match closest {
            Some(reasons) => self.out.extend(reasons),
            None => self.push(
                path,
                IncompatibilityKind::MissingUnionBranch,
                format!(
                    "reader union has no branch that reads writer type {}",
                    describe(writer)
                ),
            ),
        }
    }

    /// Two named types of the same kind: names first, then the kind's own rules.
    fn named(&mut self, reader: &'a Schema, writer: &'a Schema, path: &str) {
        match (reader, writer) {
            _ if !names_match(reader, writer) => {
                let (reader, writer) = (describe(reader), describe(writer));
                self.push(
                    path,
                    IncompatibilityKind::NameMismatch,
                    format!(
                        "reader {reader} does not match writer {writer} and has no alias for it"
                    ),
                );
            }
            (Schema::Record(r), Schema::Record(w)) => self.record(r, w, path),
            (Schema::Enum(r), Schema::Enum(w)) => self.enumeration(r, w, path),
            (Schema::Fixed(r), Schema::Fixed(w)) => self.fixed(r, w, path),
            _ => {}
        }
    }

    /// Two records of matching names: each reader field against its writer field.
    fn record(&mut self, r: &'a RecordSchema, w: &'a RecordSchema, path: &str) {
        let pair = (r.name.fullname(None), w.name.fullname(None));
        if self.in_progress.contains(&pair) {
            return;
        }
        self.in_progress.push(pair);
        for field in &r.fields {
            let field_path = child(path, &format!("fields/{}", field.name));
            match writer_field(w, field) {
                Some(written) => self.visit(&field.schema, &written.schema, &field_path),
                None if field.default.is_none() => self.push(
                    &field_path,
                    IncompatibilityKind::ReaderFieldMissingDefaultValue,
                    format!(
                        "reader field {} has no default and is missing in the writer",
                        field.name
                    ),
                ),
                None => {}
            }
        }
        self.in_progress.pop();
    }

    /// Two enums of matching names: writer symbols the reader lacks need a reader default.
    fn enumeration(&mut self, r: &EnumSchema, w: &EnumSchema, path: &str) {
        let missing: Vec<&str> = w
            .symbols
            .iter()
            .filter(|s| !r.symbols.contains(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() && r.default.is_none() {
            let (name, missing) = (r.name.fullname(None), missing.join(", "));
            self.push(
                path,
                IncompatibilityKind::MissingEnumSymbols,
                format!("reader enum {name} lacks writer symbols [{missing}] and has no default"),
            );
        }
    }

    /// Two fixed of matching names: sizes.
    fn fixed(&mut self, r: &FixedSchema, w: &FixedSchema, path: &str) {
        if r.size != w.size {
            let name = r.name.fullname(None);
            self.push(
                path,
                IncompatibilityKind::FixedSizeMismatch,
                format!(
                    "reader fixed {name} has size {} but the writer's has size {}",
                    r.size, w.size
                ),
            );
        }
    }

    fn mismatch(&mut self, path: &str, reader: &Schema, writer: &Schema) {
        let (reader, writer) = (describe(reader), describe(writer));
        self.push(
            path,
            IncompatibilityKind::TypeMismatch,
            format!("reader type {reader} cannot read writer type {writer}"),
        );
    }

    /// `schema` itself or the definition it references; `None` with a reason if undefined.
    fn defined(&mut self, schema: &'a Schema, side: usize, path: &str) -> Option<&'a Schema> {
        let found = self.lookup(schema, side);
        if found.is_none() {
            let which = if side == READER { "reader" } else { "writer" };
            let name = describe(schema);
            self.push(
                path,
                IncompatibilityKind::TypeMismatch,
                format!("named type {name} is not defined in the {which} schema"),
            );
        }
        found
    }

    /// `schema` itself, or the definition of the named type it references.
    fn lookup(&self, schema: &'a Schema, side: usize) -> Option<&'a Schema> {
        match schema {
            Schema::Ref { name } => self.names[side].get(&name.fullname(None)).copied(),
            _ => Some(schema),
        }
    }
}

/// The writer field a reader field reads: same name, else one of the reader field's aliases.
/// (`RecordSchema::lookup` also holds the writer's aliases, which resolution ignores.)
fn writer_field<'w>(writer: &'w RecordSchema, field: &RecordField) -> Option<&'w RecordField> {
    let named = |name: &str| writer.fields.iter().find(|f| f.name == name);
    named(&field.name).or_else(|| {
        field
            .aliases
            .iter()
            .flatten()
            .find_map(|alias| named(alias))
    })
}

/// Unqualified names equal, or a reader alias names the writer's type.
fn names_match(reader: &Schema, writer: &Schema) -> bool {
    let (Some(name), Some(written)) = (reader.name(), writer.name()) else {
        return false;
    };
    let alias = |a: &Alias| a.fullname(None) == written.fullname(None) || a.name() == written.name;
    name.name == written.name || reader.aliases().into_iter().flatten().any(alias)
}

/// Whether a reader union branch is the writer's counterpart, worth reporting when it fails.
fn same_shape(reader: &Schema, writer: &Schema) -> bool {
    match (reader, writer) {
        (Schema::Record(_), Schema::Record(_))
        | (Schema::Enum(_), Schema::Enum(_))
        | (Schema::Fixed(_), Schema::Fixed(_)) => names_match(reader, writer),
        (Schema::Array(_), Schema::Array(_))
        | (Schema::Map(_), Schema::Map(_))
        | (Schema::Decimal(_), Schema::Decimal(_)) => true,
        _ => false,
    }
}

/// Primitive types, logical types reduced to their underlying type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primitive {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
}

fn primitive(schema: &Schema) -> Option<Primitive> {
    Some(match schema {
        Schema::Null => Primitive::Null,
        Schema::Boolean => Primitive::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Primitive::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Primitive::Long,
        Schema::Float => Primitive::Float,
        Schema::Double => Primitive::Double,
        Schema::Bytes | Schema::BigDecimal => Primitive::Bytes,
        Schema::String | Schema::Uuid => Primitive::String,
        _ => return None,
    })
}

/// Whether data written as `writer` can be read as `reader`.
fn promotes(writer: Primitive, reader: Primitive) -> bool {
    use Primitive::{Bytes, Double, Float, Int, Long, String};
    writer == reader
        || matches!(
            (writer, reader),
            (Int, Long | Float | Double)
                | (Long, Float | Double)
                | (Float, Double)
                | (String, Bytes)
                | (Bytes, String)
        )
}

/// A short readable name of a schema's type, e.g. `record shop.Address` or `decimal(10, 2)`.
fn describe(schema: &Schema) -> String {
    let simple = match schema {
        Schema::Record(r) => return format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => return format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => return format!("fixed {} (size {})", f.name.fullname(None), f.size),
        Schema::Ref { name } => return name.fullname(None),
        Schema::Decimal(d) => return format!("decimal({}, {})", d.precision, d.scale),
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int => "int",
        Schema::Long => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes => "bytes",
        Schema::String => "string",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Union(_) => "union",
        Schema::BigDecimal => "big-decimal",
        Schema::Uuid => "uuid",
        Schema::Date => "date",
        Schema::TimeMillis => "time-millis",
        Schema::TimeMicros => "time-micros",
        Schema::TimestampMillis => "timestamp-millis",
        Schema::TimestampMicros => "timestamp-micros",
        Schema::TimestampNanos => "timestamp-nanos",
        Schema::LocalTimestampMillis => "local-timestamp-millis",
        Schema::LocalTimestampMicros => "local-timestamp-micros",
        Schema::LocalTimestampNanos => "local-timestamp-nanos",
        Schema::Duration => "duration",
    };
    simple.to_owned()
}

/// `path` one step down, e.g. `/fields/a` + `items`.
fn child(path: &str, step: &str) -> String {
    if path == ROOT {
        format!("/{step}")
    } else {
        format!("{path}/{step}")
    }
}

/// Every named type defined in `schema`, by full name and by alias.
fn names_of(schema: &Schema) -> HashMap<String, &Schema> {
    fn define<'a>(names: &mut HashMap<String, &'a Schema>, schema: &'a Schema) {
        if !matches!(schema, Schema::Ref { .. })
            && let Some(name) = schema.name()
        {
            names.insert(name.fullname(None), schema);
        }
        for alias in schema.aliases().into_iter().flatten() {
            names.entry(alias.fullname(None)).or_insert(schema);
        }
        match schema {
            Schema::Record(r) => r.fields.iter().for_each(|f| define(names, &f.schema)),
            Schema::Array(a) => define(names, &a.items),
            Schema::Map(m) => define(names, &m.types),
            Schema::Union(u) => u.variants().iter().for_each(|v| define(names, v)),
            Schema::Decimal(d) => define(names, &d.inner),
            _ => {}
        }
    }
    let mut names = HashMap::new();
    define(&mut names, schema);
    names
}
