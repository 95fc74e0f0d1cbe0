//! Bounds on what an Avro datum may claim before a decoder builds it.
//!
//! An Avro array or map is written as blocks, each starting with an item count. A decoder
//! trusts that count: `apache-avro` reserves room for it, `arrow-avro` appends that many items.
//! Items that take bytes cannot outnumber the bytes left, but items that take none (`null`, a
//! record of only such fields, a zero-size `fixed`) can be claimed by the billion in a few
//! bytes: one 16-byte record claiming 2,000,000,000 nulls made the archive panic in
//! `arrow-avro` (an `i32` offset overflow) on every restart, and ingest grow to 13.5 GB.
//! Recursive schemas can also nest a datum deeper than a decoder's stack.
//!
//! [`DatumBound`] walks a datum's bytes with its writer schema (read from its JSON: only the
//! encoding matters, so logical types are their underlying types, and schemas `apache-avro`
//! cannot resolve, such as a named `fixed` uuid, are read too), building nothing, and refuses
//! one whose blocks claim more items than its bytes can hold, more item-less items than
//! [`ITEMS_PER_BYTE`] per byte of the datum (plus [`FREE_ITEMS`]), or nesting deeper than
//! [`MAX_DEPTH`]. The walk's work is bounded by the same figures. Run it before a decoder
//! sees the datum; schemas that allow none of these (no item-less containers, no recursion)
//! need no walk ([`DatumBound::needed`]).

use std::collections::{HashMap, HashSet};

use serde_json::Value as Json;

/// Item-less items (e.g. nulls in an array) allowed per byte of the datum.
pub const ITEMS_PER_BYTE: u64 = 16;

/// Item-less items allowed whatever the datum's size.
pub const FREE_ITEMS: u64 = 1024;

/// Deepest nesting of records, arrays, maps and unions allowed.
pub const MAX_DEPTH: usize = 64;

/// Why a datum (or a schema) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    /// A block claims more items than the bytes left could hold.
    #[error("a block claims {claimed} items but {left} bytes are left")]
    ItemsBeyondBytes {
        /// Items the block claims.
        claimed: u64,
        /// Bytes left in the datum.
        left: usize,
    },
    /// The datum claims more items that take no bytes than its size allows.
    #[error(
        "claims over {limit} items that take no bytes ({ITEMS_PER_BYTE} per byte of a {len}-byte datum, plus {FREE_ITEMS})"
    )]
    TooManyEmptyItems {
        /// The limit for this datum.
        limit: u64,
        /// The datum's length.
        len: usize,
    },
    /// The datum nests deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A decimal's unscaled value has more digits than its precision.
    #[error("a decimal of {len} bytes beyond its precision of {precision} digits")]
    DecimalOutOfRange {
        /// The schema's precision.
        precision: u32,
        /// The value's length in bytes.
        len: usize,
    },
    /// The bytes end before the datum does, or a length or count is malformed.
    #[error("malformed or truncated avro: {0}")]
    Malformed(&'static str),
    /// The schema is not valid Avro schema JSON as far as its encoding goes.
    #[error("schema: {0}")]
    Schema(String),
}

/// How a value of a schema is encoded: all the walk needs (logical types are encoded as their
/// underlying type, so they are read as that).
#[derive(Debug, Clone)]
enum Ty {
    Null,
    Boolean,
    /// int, long, enum: a zig-zag varint.
    Varint,
    /// float (4), double (8), fixed (its size).
    Fixed(usize),
    /// bytes, string: a length, then that many bytes.
    Sized,
    /// A decimal of at most `precision` digits (up to 38): bytes (`size` none) or a fixed.
    Decimal {
        size: Option<usize>,
        precision: u32,
    },
    Array(Box<Ty>),
    Map(Box<Ty>),
    Union(Vec<Ty>),
    Record(Vec<Ty>),
    /// A named type, by full name.
    Ref(String),
}

/// A writer schema, ready to check datums written with it.
#[derive(Debug, Clone)]
pub struct DatumBound {
    root: Ty,
    names: HashMap<String, Ty>,
    /// Full names of the named types that can take no bytes.
    empty: HashSet<String>,
    needed: bool,
}

impl DatumBound {
    /// Prepares the checks of the datums of an Avro schema given as JSON text.
    pub fn from_json(schema: &str) -> Result<Self, BoundError> {
        let json: Json =
            serde_json::from_str(schema).map_err(|e| BoundError::Schema(e.to_string()))?;
        let mut names = HashMap::new();
        let root = ty(&json, "", &mut names, 0)?;
        let mut bound = Self {
            root,
            names,
            empty: HashSet::new(),
            needed: false,
        };
        let mut referred: Vec<String> = bound.names.values().flat_map(refs).collect();
        referred.extend(refs(&bound.root));
        for name in referred {
            if !bound.names.contains_key(&name) {
                return Err(BoundError::Schema(format!("unknown type {name}")));
            }
        }
        // A named type is item-less when all its parts are; a cycle goes through a union
        // (whose index takes a byte) or cannot be written at all, so iterate to a fixed point
        // starting from "takes bytes".
        loop {
            let found: Vec<String> = bound
                .names
                .iter()
                .filter(|(name, t)| !bound.empty.contains(*name) && bound.takes_no_bytes(t))
                .map(|(name, _)| name.clone())
                .collect();
            if found.is_empty() {
                break;
            }
            bound.empty.extend(found);
        }
        let recursive = bound
            .names
            .keys()
            .any(|name| bound.reaches(&Ty::Ref(name.clone()), name, &mut HashSet::new(), true));
        let decimals = has_decimal(&bound.root) || bound.names.values().any(has_decimal);
        bound.needed =
            recursive || decimals || bound.has_empty_items(&bound.root, &mut HashSet::new());
        Ok(bound)
    }

    /// Whether datums of this schema can claim more than their bytes hold, nest without bound,
    /// or hold decimals (whose range is checked); if not, [`Self::check`] never refuses a datum
    /// and need not run.
    pub fn needed(&self) -> bool {
        self.needed
    }

    /// Walks `body` (the Avro binary datum, without any prefix) and refuses it if it claims
    /// more than its bytes allow. Trailing bytes are not this check's business.
    pub fn check(&self, body: &[u8]) -> Result<(), BoundError> {
        let len = body.len();
        let limit = FREE_ITEMS.saturating_add(ITEMS_PER_BYTE.saturating_mul(len as u64));
        let mut walk = Walk {
            bound: self,
            bytes: body,
            pos: 0,
            empty_items: 0,
            limit,
        };
        walk.datum(&self.root, 0)
    }

    fn named(&self, name: &str) -> Result<&Ty, BoundError> {
        self.names
            .get(name)
            .ok_or_else(|| BoundError::Schema(format!("unknown type {name}")))
    }

    /// Whether a value can be written in zero bytes (named types per `self.empty`).
    fn takes_no_bytes(&self, t: &Ty) -> bool {
        match t {
            Ty::Null => true,
            Ty::Fixed(n) | Ty::Decimal { size: Some(n), .. } => *n == 0,
            Ty::Record(fields) => fields.iter().all(|f| self.takes_no_bytes(f)),
            Ty::Ref(name) => self.empty.contains(name),
            _ => false,
        }
    }

    /// Whether an array anywhere in `t` has items that can take no bytes (a map's keys are
    /// strings: at least one byte each).
    fn has_empty_items(&self, t: &Ty, seen: &mut HashSet<String>) -> bool {
        match t {
            Ty::Array(items) => self.takes_no_bytes(items) || self.has_empty_items(items, seen),
            Ty::Map(values) => self.has_empty_items(values, seen),
            Ty::Union(variants) => variants.iter().any(|v| self.has_empty_items(v, seen)),
            Ty::Record(fields) => fields.iter().any(|f| self.has_empty_items(f, seen)),
            Ty::Ref(name) => {
                seen.insert(name.clone())
                    && self
                        .names
                        .get(name)
                        .is_some_and(|t| self.has_empty_items(t, seen))
            }
            _ => false,
        }
    }

    /// Whether `t` leads to the named type `target` (`start`: `t` is `target` itself, which
    /// does not count until a step was taken).
    fn reaches(&self, t: &Ty, target: &str, seen: &mut HashSet<String>, start: bool) -> bool {
        match t {
            Ty::Ref(name) => {
                if !start && name == target {
                    return true;
                }
                seen.insert(name.clone())
                    && self
                        .names
                        .get(name)
                        .is_some_and(|t| self.reaches(t, target, seen, false))
            }
            Ty::Array(inner) | Ty::Map(inner) => self.reaches(inner, target, seen, false),
            Ty::Union(list) | Ty::Record(list) => {
                list.iter().any(|t| self.reaches(t, target, seen, false))
            }
            _ => false,
        }
    }
}

/// The named types a type refers to.
fn refs(t: &Ty) -> Vec<String> {
    match t {
        Ty::Ref(name) => vec![name.clone()],
        Ty::Array(inner) | Ty::Map(inner) => refs(inner),
        Ty::Union(list) | Ty::Record(list) => list.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}

/// A name made full: names with a dot are full already; others take the namespace.
fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// Whether a decimal is part of `t` (named types are looked at where they are defined).
fn has_decimal(t: &Ty) -> bool {
    match t {
        Ty::Decimal { .. } => true,
        Ty::Array(items) | Ty::Map(items) => has_decimal(items),
        Ty::Union(parts) | Ty::Record(parts) => parts.iter().any(has_decimal),
        _ => false,
    }
}

/// The digits of a decimal: its `precision` when it is a whole number from 1 to 38 (larger ones
/// are not checked: no Arrow decimal of up to 128 bits holds them anyway).
fn decimal_precision(o: &serde_json::Map<String, Json>) -> Option<u32> {
    if o.get("logicalType").and_then(Json::as_str) != Some("decimal") {
        return None;
    }
    o.get("precision")
        .and_then(Json::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| (1..=38).contains(p))
}

/// Whether a two's-complement big-endian integer has at most `precision` decimal digits.
fn decimal_fits(bytes: &[u8], precision: u32) -> bool {
    let mut b = bytes;
    // Leading bytes that only extend the sign change nothing.
    while b.len() > 1 && ((b[0] == 0x00 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0))
    {
        b = &b[1..];
    }
    if b.len() > 16 {
        return false;
    }
    let negative = b.first().is_some_and(|first| first & 0x80 != 0);
    let mut value: i128 = if negative { -1 } else { 0 };
    for &byte in b {
        value = (value << 8) | i128::from(byte);
    }
    value.unsigned_abs() < 10u128.pow(precision)
}

/// The encoding of a schema JSON value; named types are entered in `names` and referred to.
fn ty(
    json: &Json,
    namespace: &str,
    names: &mut HashMap<String, Ty>,
    depth: usize,
) -> Result<Ty, BoundError> {
    if depth > 256 {
        return Err(BoundError::Schema("nested deeper than 256 levels".into()));
    }
    match json {
        Json::String(name) => Ok(match name.as_str() {
            "null" => Ty::Null,
            "boolean" => Ty::Boolean,
            "int" | "long" => Ty::Varint,
            "float" => Ty::Fixed(4),
            "double" => Ty::Fixed(8),
            "bytes" | "string" => Ty::Sized,
            other => {
                // Within a namespace, a short name is looked up there first, then as is.
                let full = full_name(other, namespace);
                if names.contains_key(&full) || other.contains('.') || namespace.is_empty() {
                    Ty::Ref(full)
                } else if names.contains_key(other) {
                    Ty::Ref(other.to_string())
                } else {
                    Ty::Ref(full)
                }
            }
        }),
        Json::Array(variants) => Ok(Ty::Union(
            variants
                .iter()
                .map(|v| ty(v, namespace, names, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        Json::Object(o) => {
            let kind = o
                .get("type")
                .ok_or_else(|| BoundError::Schema("a schema object without \"type\"".into()))?;
            let text = |key: &str| o.get(key).and_then(Json::as_str);
            match kind.as_str() {
                Some("record" | "error") => {
                    let name = text("name")
                        .ok_or_else(|| BoundError::Schema("a record without a name".into()))?;
                    let namespace = match (name.rsplit_once('.'), text("namespace")) {
                        (Some((ns, _)), _) => ns.to_string(),
                        (None, Some(ns)) => ns.to_string(),
                        (None, None) => namespace.to_string(),
                    };
                    let full = full_name(name, &namespace);
                    // Entered first, so that the fields can refer to it.
                    names.insert(full.clone(), Ty::Record(Vec::new()));
                    let fields = o.get("fields").and_then(Json::as_array).ok_or_else(|| {
                        BoundError::Schema(format!("record {full} without fields"))
                    })?;
                    let mut types = Vec::with_capacity(fields.len());
                    for field in fields {
                        let t = field.get("type").ok_or_else(|| {
                            BoundError::Schema(format!("a field of {full} without a type"))
                        })?;
                        types.push(ty(t, &namespace, names, depth + 1)?);
                    }
                    names.insert(full.clone(), Ty::Record(types));
                    Ok(Ty::Ref(full))
                }
                Some(kind @ ("enum" | "fixed")) => {
                    let name = text("name")
                        .ok_or_else(|| BoundError::Schema(format!("a {kind} without a name")))?;
                    let namespace = text("namespace").unwrap_or(namespace);
                    let full = full_name(name, namespace);
                    let t = if kind == "enum" {
                        Ty::Varint
                    } else {
                        let size = o
                            .get("size")
                            .and_then(Json::as_u64)
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(|| {
                                BoundError::Schema(format!("fixed {full} without a size"))
                            })?;
                        match decimal_precision(o) {
                            Some(precision) => Ty::Decimal {
                                size: Some(size),
                                precision,
                            },
                            None => Ty::Fixed(size),
                        }
                    };
                    names.insert(full.clone(), t);
                    Ok(Ty::Ref(full))
                }
                Some("array") => {
                    let items = o
                        .get("items")
                        .ok_or_else(|| BoundError::Schema("an array without items".into()))?;
                    Ok(Ty::Array(Box::new(ty(items, namespace, names, depth + 1)?)))
                }
                Some("map") => {
                    let values = o
                        .get("values")
                        .ok_or_else(|| BoundError::Schema("a map without values".into()))?;
                    Ok(Ty::Map(Box::new(ty(values, namespace, names, depth + 1)?)))
                }
                Some("bytes") if decimal_precision(o).is_some() => Ok(Ty::Decimal {
                    size: None,
                    precision: decimal_precision(o).unwrap_or(38),
                }),
                // A primitive with attributes (a logical type): encoded as the primitive.
                Some(_) => ty(kind, namespace, names, depth + 1),
                // {"type": {...}} or {"type": [...]}.
                None => ty(kind, namespace, names, depth + 1),
            }
        }
        other => Err(BoundError::Schema(format!("not a schema: {other}"))),
    }
}

/// One datum's walk.
struct Walk<'a> {
    bound: &'a DatumBound,
    bytes: &'a [u8],
    pos: usize,
    empty_items: u64,
    limit: u64,
}

impl Walk<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn skip(&mut self, n: usize) -> Result<(), BoundError> {
        if n > self.left() {
            return Err(BoundError::Malformed("a value runs past the end"));
        }
        self.pos += n;
        Ok(())
    }

    /// A zig-zag varint long.
    fn long(&mut self) -> Result<i64, BoundError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(BoundError::Malformed("a number runs past the end"));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(BoundError::Malformed("a number longer than 10 bytes"))
    }

    fn deeper(&self, depth: usize) -> Result<usize, BoundError> {
        if depth >= MAX_DEPTH {
            return Err(BoundError::TooDeep);
        }
        Ok(depth + 1)
    }

    fn datum(&mut self, t: &Ty, depth: usize) -> Result<(), BoundError> {
        match t {
            Ty::Null => Ok(()),
            Ty::Boolean => self.skip(1),
            Ty::Varint => self.long().map(drop),
            Ty::Fixed(n) => self.skip(*n),
            Ty::Sized => {
                let n = usize::try_from(self.long()?)
                    .map_err(|_| BoundError::Malformed("a negative length"))?;
                self.skip(n)
            }
            Ty::Decimal { size, precision } => {
                let n = match size {
                    Some(n) => *n,
                    None => usize::try_from(self.long()?)
                        .map_err(|_| BoundError::Malformed("a negative length"))?,
                };
                let start = self.pos;
                self.skip(n)?;
                if decimal_fits(&self.bytes[start..self.pos], *precision) {
                    Ok(())
                } else {
                    Err(BoundError::DecimalOutOfRange {
                        precision: *precision,
                        len: n,
                    })
                }
            }
            Ty::Ref(name) => {
                let bound = self.bound;
                self.datum(bound.named(name)?, depth)
            }
            Ty::Record(fields) => {
                let depth = self.deeper(depth)?;
                fields.iter().try_for_each(|f| self.datum(f, depth))
            }
            Ty::Union(variants) => {
                let depth = self.deeper(depth)?;
                let index = self.long()?;
                let variant = usize::try_from(index)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or(BoundError::Malformed("a union index out of range"))?;
                self.datum(variant, depth)
            }
            Ty::Array(items) => self.blocks(items, false, depth),
            Ty::Map(values) => self.blocks(values, true, depth),
        }
    }

    /// The blocks of an array, or of a map (each item a string key, then the value).
    fn blocks(&mut self, items: &Ty, map: bool, depth: usize) -> Result<(), BoundError> {
        let depth = self.deeper(depth)?;
        let empty = !map && self.bound.takes_no_bytes(items);
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                self.long()?;
            }
            let claimed = count.unsigned_abs();
            if empty {
                self.empty_items = self.empty_items.saturating_add(claimed);
                if self.empty_items > self.limit {
                    return Err(BoundError::TooManyEmptyItems {
                        limit: self.limit,
                        len: self.bytes.len(),
                    });
                }
            } else if claimed > self.left() as u64 {
                return Err(BoundError::ItemsBeyondBytes {
                    claimed,
                    left: self.left(),
                });
            }
            for _ in 0..claimed {
                if map {
                    self.datum(&Ty::Sized, depth)?;
                }
                self.datum(items, depth)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use tributary_fuzz::zigzag;

    fn bound(json: &str) -> DatumBound {
        DatumBound::from_json(json).unwrap()
    }

    const NULLS: &str = r#"{"type":"record","name":"X","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#;

    #[test]
    fn billions_of_nulls_in_a_few_bytes_are_refused() {
        let b = bound(NULLS);
        assert!(b.needed());
        let mut body = zigzag(2_000_000_000);
        body.push(0);
        assert!(matches!(
            b.check(&body),
            Err(BoundError::TooManyEmptyItems { .. })
        ));
        // A negative count (with a block size) is counted the same.
        let mut body = zigzag(-2_000_000_000);
        body.extend(zigzag(0));
        body.push(0);
        assert!(b.check(&body).is_err());
        // A few are fine.
        let mut body = zigzag(100);
        body.push(0);
        assert_eq!(b.check(&body), Ok(()));
    }

    #[test]
    fn items_that_take_bytes_cannot_outnumber_them() {
        let b = bound(r#"{"type":"array","items":"long"}"#);
        assert!(!b.needed(), "bounded by its bytes already");
        let mut body = zigzag(400_000_000);
        body.extend([2, 4, 6, 0]);
        assert!(matches!(
            b.check(&body),
            Err(BoundError::ItemsBeyondBytes {
                claimed: 400_000_000,
                ..
            })
        ));
        let mut body = zigzag(3);
        body.extend([2, 4, 6, 0]);
        assert_eq!(b.check(&body), Ok(()));
        let maps = bound(r#"{"type":"map","values":"null"}"#);
        let mut body = zigzag(1 << 40);
        body.push(0);
        assert!(maps.check(&body).is_err());
    }

    #[test]
    fn empty_records_and_fixed_count_as_item_less_and_recursion_as_needed() {
        let b = bound(
            r#"{"type":"record","name":"R","fields":[
                {"name":"e","type":{"type":"array","items":{"type":"record","name":"E","fields":[
                    {"name":"z","type":{"type":"fixed","name":"Z","size":0}}]}}},
                {"name":"again","type":{"type":"array","items":"E"}}]}"#,
        );
        assert!(b.needed());
        let mut body = zigzag(1_000_000);
        body.push(0);
        body.push(0);
        assert!(b.check(&body).is_err());
        let mut body = zigzag(0);
        body.extend(zigzag(1_000_000));
        body.push(0);
        assert!(b.check(&body).is_err(), "by reference too");

        let list = bound(
            r#"{"type":"record","name":"Node","fields":[
                {"name":"v","type":"int"},{"name":"next","type":["null","Node"]}]}"#,
        );
        assert!(list.needed(), "recursive");
        // 1,000 nested nodes: v = 0, branch 1 (another node) ... then branch 0 (null).
        let mut body = Vec::new();
        for _ in 0..1_000 {
            body.extend([0, 2]);
        }
        body.extend([0, 0]);
        assert_eq!(list.check(&body), Err(BoundError::TooDeep));
        assert_eq!(list.check(&[0, 2, 0, 0]), Ok(()));
    }

    #[test]
    fn named_types_resolve_across_namespaces_and_unknown_ones_are_errors() {
        // A uuid on a named fixed, referred to later by its short name (apache-avro 0.20
        // cannot resolve this one), and a full name from another namespace.
        let b = bound(
            r#"{"type":"record","name":"R","namespace":"a","fields":[
                {"name":"u","type":{"type":"fixed","name":"U16","size":16,"logicalType":"uuid"}},
                {"name":"again","type":"U16"},
                {"name":"other","type":{"type":"record","name":"b.S","fields":[
                    {"name":"n","type":{"type":"enum","name":"E","symbols":["x"]}}]}},
                {"name":"e","type":"b.E"}]}"#,
        );
        assert!(!b.needed());
        let mut body = vec![7; 32];
        body.extend(zigzag(0));
        body.extend(zigzag(0));
        assert_eq!(b.check(&body), Ok(()));
        assert!(b.check(&body[..20]).is_err());
        assert!(DatumBound::from_json(r#"{"type":"array","items":"Nope"}"#).is_err());
        assert!(DatumBound::from_json("not json").is_err());
    }

    #[test]
    fn catalog_like_schemas_pass_good_data() {
        let b = bound(
            r#"{"type":"record","name":"W","namespace":"t","fields":[
                {"name":"id","type":{"type":"string","logicalType":"uuid"}},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"tags","type":{"type":"array","items":"string"}},
                {"name":"props","type":{"type":"map","values":"string"}},
                {"name":"amount","type":["null",{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}]},
                {"name":"kind","type":{"type":"enum","name":"K","symbols":["a","b"]}}]}"#,
        );
        // The decimal makes the walk needed (its range is checked).
        assert!(b.needed());
        let mut body = Vec::new();
        body.extend(zigzag(3));
        body.extend(b"abc");
        body.extend(zigzag(1_700_000_000_000));
        body.extend(zigzag(2));
        body.extend(zigzag(1));
        body.extend(b"x");
        body.extend(zigzag(1));
        body.extend(b"y");
        body.extend(zigzag(0));
        body.extend(zigzag(1));
        body.extend(zigzag(1));
        body.extend(b"k");
        body.extend(zigzag(1));
        body.extend(b"v");
        body.extend(zigzag(0));
        body.extend(zigzag(1));
        body.extend(zigzag(2));
        body.extend([0x01, 0x00]);
        body.extend(zigzag(1));
        assert_eq!(b.check(&body), Ok(()));
        assert!(b.check(&body[..body.len() - 3]).is_err());
    }

    #[test]
    fn schemas_without_decimals_claims_or_recursion_need_no_walk() {
        let b = bound(
            r#"{"type":"record","name":"W","fields":[
                {"name":"id","type":{"type":"string","logicalType":"uuid"}},
                {"name":"tags","type":{"type":"array","items":"string"}},
                {"name":"props","type":{"type":"map","values":"long"}}]}"#,
        );
        assert!(!b.needed());
    }

    #[test]
    fn decimals_beyond_their_precision_are_refused() {
        // decimal(12, 2) as bytes, and decimal(4, 0) as a fixed of 8 bytes.
        let b = bound(
            r#"{"type":"record","name":"D","fields":[
                {"name":"a","type":["null",{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}]},
                {"name":"f","type":{"type":"fixed","name":"F","size":8,"logicalType":"decimal","precision":4}}]}"#,
        );
        assert!(b.needed());
        let datum = |a: &[u8], f: [u8; 8]| {
            let mut body = zigzag(1);
            body.extend(zigzag(a.len() as i64));
            body.extend(a);
            body.extend(f);
            body
        };
        let small = [0u8, 0, 0, 0, 0, 0, 0x27, 0x0f]; // 9,999
        let max12 = 999_999_999_999i64.to_be_bytes();
        let over12 = 1_000_000_000_000i64.to_be_bytes();
        let min12 = (-999_999_999_999i64).to_be_bytes();
        assert_eq!(b.check(&datum(&max12, small)), Ok(()));
        assert_eq!(b.check(&datum(&min12, small)), Ok(()));
        // Sign-extending bytes change nothing, however many.
        let mut padded = vec![0xff; 30];
        padded.extend((-5i64).to_be_bytes());
        assert_eq!(b.check(&datum(&padded, small)), Ok(()));
        assert_eq!(b.check(&datum(&[], small)), Ok(()));
        assert_eq!(
            b.check(&datum(&over12, small)),
            Err(BoundError::DecimalOutOfRange {
                precision: 12,
                len: 8
            })
        );
        let mut huge = vec![0x7f];
        huge.extend([0xff; 39]);
        assert_eq!(
            b.check(&datum(&huge, small)),
            Err(BoundError::DecimalOutOfRange {
                precision: 12,
                len: 40
            })
        );
        let ten_thousand = 10_000i64.to_be_bytes();
        assert_eq!(
            b.check(&datum(&max12, ten_thousand)),
            Err(BoundError::DecimalOutOfRange {
                precision: 4,
                len: 8
            })
        );
    }
}
