#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::{Days, Decimal, Duration, Millis, Months, Uuid};
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use arrow::datatypes::{
    Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, IntervalUnit, Time32MillisecondType, Time64MicrosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, UnionMode, i256,
};
use arrow::record_batch::RecordBatch;

use super::*;

const ID: u32 = 7;

fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![MAGIC];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
}

fn null_or(value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

/// Avro bodies written by apache-avro, framed.
fn payloads(schema_json: &str, id: u32, values: Vec<Value>) -> Vec<Vec<u8>> {
    let schema = apache_avro::Schema::parse_str(schema_json).unwrap();
    values
        .into_iter()
        .map(|v| frame(id, &apache_avro::to_avro_datum(&schema, v).unwrap()))
        .collect()
}

fn decode_all(decoder: &mut AvroBatchDecoder, payloads: &[Vec<u8>]) -> DecodeOutput {
    decoder.decode(payloads.iter().map(Vec::as_slice))
}

fn decoder_with(id: u32, schema_json: &str) -> AvroBatchDecoder {
    let mut decoder = AvroBatchDecoder::new(None, 1024);
    decoder.register(id, schema_json).unwrap();
    decoder
}

/// Decodes the payloads into one batch, re-encodes it and checks the bytes are identical.
fn round_trip_payloads(schema_json: &str, payloads: &[Vec<u8>]) -> RecordBatch {
    let mut decoder = decoder_with(ID, schema_json);
    let out = decode_all(&mut decoder, payloads);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.batches.len(), 1);
    let decoded = &out.batches[0];
    assert_eq!(decoded.schema_id, ID);
    assert_eq!(decoded.rows, (0..payloads.len()).collect::<Vec<_>>());
    assert_eq!(decoded.batch.num_rows(), payloads.len());
    assert_eq!(
        arrow_schema_for(schema_json).unwrap(),
        decoded.batch.schema()
    );

    let mut encoder = AvroBatchEncoder::new(ID, schema_json, decoded.batch.schema()).unwrap();
    let encoded = encoder.encode(&decoded.batch).unwrap();
    assert_eq!(encoded.len(), payloads.len());
    for (row, (encoded, original)) in encoded.iter().zip(payloads).enumerate() {
        assert_eq!(encoded.as_ref(), original.as_slice(), "row {row}");
    }
    decoded.batch.clone()
}

/// Avro (apache-avro) -> Arrow -> Avro, byte-identical; returns the Arrow batch.
fn round_trip(schema_json: &str, values: Vec<Value>) -> RecordBatch {
    let payloads = payloads(schema_json, ID, values.clone());
    let batch = round_trip_payloads(schema_json, &payloads);
    // Independent check: apache-avro reads the original values back.
    let schema = apache_avro::Schema::parse_str(schema_json).unwrap();
    for (payload, value) in payloads.iter().zip(values) {
        let read =
            apache_avro::from_avro_datum(&schema, &mut &payload[PREFIX_LEN..], None).unwrap();
        assert_eq!(read, value);
    }
    batch
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> &'b ArrayRef {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn data_type(batch: &RecordBatch, name: &str) -> DataType {
    batch
        .schema()
        .field_with_name(name)
        .unwrap()
        .data_type()
        .clone()
}

fn utc() -> Option<Arc<str>> {
    Some("+00:00".into())
}

/// Minimal big-endian two's complement, as Avro writers put decimals in `bytes`.
fn minimal_be(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let sign = if v < 0 { 0xFF } else { 0x00 };
    let mut start = 0;
    while start < 15 && bytes[start] == sign && (bytes[start + 1] & 0x80) == (sign & 0x80) {
        start += 1;
    }
    bytes[start..].to_vec()
}

fn decimal(v: i128) -> Value {
    Value::Decimal(Decimal::from(minimal_be(v)))
}

const PRIMITIVES: &str = r#"{"type":"record","name":"Prims","namespace":"t","fields":[
    {"name":"n","type":"null"},
    {"name":"b","type":"boolean"},
    {"name":"i","type":"int"},
    {"name":"l","type":"long"},
    {"name":"f","type":"float"},
    {"name":"d","type":"double"},
    {"name":"by","type":"bytes"},
    {"name":"s","type":"string"}]}"#;

fn primitive_row(b: bool, i: i32, l: i64, f: f32, d: f64, by: &[u8], s: &str) -> Value {
    record(vec![
        ("n", Value::Null),
        ("b", Value::Boolean(b)),
        ("i", Value::Int(i)),
        ("l", Value::Long(l)),
        ("f", Value::Float(f)),
        ("d", Value::Double(d)),
        ("by", Value::Bytes(by.to_vec())),
        ("s", Value::String(s.to_owned())),
    ])
}

#[test]
fn primitives_round_trip() {
    let batch = round_trip(
        PRIMITIVES,
        vec![
            primitive_row(true, i32::MIN, i64::MAX, 1.5, -0.0, &[0, 255, 7], "héllo ✓"),
            primitive_row(false, i32::MAX, i64::MIN, f32::INFINITY, 1e-300, &[], ""),
            primitive_row(true, 0, -1, -3.25, 2.5e10, &[1], "x"),
        ],
    );
    assert_eq!(data_type(&batch, "n"), DataType::Null);
    assert_eq!(data_type(&batch, "b"), DataType::Boolean);
    assert_eq!(data_type(&batch, "i"), DataType::Int32);
    assert_eq!(data_type(&batch, "l"), DataType::Int64);
    assert_eq!(data_type(&batch, "f"), DataType::Float32);
    assert_eq!(data_type(&batch, "d"), DataType::Float64);
    assert_eq!(data_type(&batch, "by"), DataType::Binary);
    assert_eq!(data_type(&batch, "s"), DataType::Utf8);

    assert_eq!(column(&batch, "n").len(), 3);
    let b = column(&batch, "b").as_boolean();
    assert_eq!((b.value(0), b.value(1), b.value(2)), (true, false, true));
    let i = column(&batch, "i").as_primitive::<Int32Type>();
    assert_eq!(i.values().to_vec(), vec![i32::MIN, i32::MAX, 0]);
    let l = column(&batch, "l").as_primitive::<Int64Type>();
    assert_eq!(l.values().to_vec(), vec![i64::MAX, i64::MIN, -1]);
    let f = column(&batch, "f").as_primitive::<Float32Type>();
    assert_eq!(f.values().to_vec(), vec![1.5, f32::INFINITY, -3.25]);
    let d = column(&batch, "d").as_primitive::<Float64Type>();
    assert!(d.value(0) == 0.0 && d.value(0).is_sign_negative());
    assert_eq!((d.value(1), d.value(2)), (1e-300, 2.5e10));
    let by = column(&batch, "by").as_binary::<i32>();
    assert_eq!(
        (by.value(0), by.value(1), by.value(2)),
        (&[0u8, 255, 7][..], &[][..], &[1u8][..])
    );
    let s = column(&batch, "s").as_string::<i32>();
    assert_eq!((s.value(0), s.value(1), s.value(2)), ("héllo ✓", "", "x"));
}

#[test]
fn nan_round_trips_bit_exact() {
    let payloads = payloads(
        PRIMITIVES,
        ID,
        vec![primitive_row(
            false,
            1,
            2,
            f32::NAN,
            f64::NEG_INFINITY,
            b"a",
            "b",
        )],
    );
    let batch = round_trip_payloads(PRIMITIVES, &payloads);
    assert!(
        column(&batch, "f")
            .as_primitive::<Float32Type>()
            .value(0)
            .is_nan()
    );
}

const NESTED: &str = r#"{"type":"record","name":"Outer","namespace":"t","fields":[
    {"name":"id","type":"long"},
    {"name":"inner","type":{"type":"record","name":"Inner","fields":[
        {"name":"x","type":"int"},
        {"name":"deep","type":{"type":"record","name":"Deep","fields":[
            {"name":"s","type":"string"}]}}]}},
    {"name":"again","type":"Inner"},
    {"name":"maybe","type":["null","Inner"],"default":null}]}"#;

fn inner(x: i32, s: &str) -> Value {
    record(vec![
        ("x", Value::Int(x)),
        ("deep", record(vec![("s", Value::String(s.to_owned()))])),
    ])
}

#[test]
fn nested_records_round_trip() {
    let batch = round_trip(
        NESTED,
        vec![
            record(vec![
                ("id", Value::Long(1)),
                ("inner", inner(10, "a")),
                ("again", inner(11, "b")),
                ("maybe", null_or(None)),
            ]),
            record(vec![
                ("id", Value::Long(2)),
                ("inner", inner(20, "c")),
                ("again", inner(21, "d")),
                ("maybe", null_or(Some(inner(22, "e")))),
            ]),
        ],
    );
    let DataType::Struct(fields) = data_type(&batch, "inner") else {
        panic!("inner is not a struct");
    };
    assert_eq!(fields.len(), 2);
    assert_eq!(fields[0].data_type(), &DataType::Int32);
    assert!(matches!(fields[1].data_type(), DataType::Struct(f) if f.len() == 1));
    assert!(matches!(data_type(&batch, "again"), DataType::Struct(_)));
    let schema = batch.schema();
    let maybe = schema.field_with_name("maybe").unwrap();
    assert!(maybe.is_nullable());
    assert!(matches!(maybe.data_type(), DataType::Struct(_)));

    let inner_col = column(&batch, "inner").as_struct();
    let x = inner_col.column(0).as_primitive::<Int32Type>();
    assert_eq!(x.values().to_vec(), vec![10, 20]);
    let deep = inner_col.column(1).as_struct();
    let s = deep.column(0).as_string::<i32>();
    assert_eq!((s.value(0), s.value(1)), ("a", "c"));
    let maybe = column(&batch, "maybe").as_struct();
    assert!(maybe.is_null(0));
    assert!(maybe.is_valid(1));
    let mx = maybe.column(0).as_primitive::<Int32Type>();
    assert_eq!(mx.value(1), 22);
}

const ARRAYS: &str = r#"{"type":"record","name":"Arrays","fields":[
    {"name":"ints","type":{"type":"array","items":"int"}},
    {"name":"strs","type":{"type":"array","items":"string"}},
    {"name":"recs","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
        {"name":"k","type":"string"},{"name":"v","type":"double"}]}}},
    {"name":"opt_items","type":{"type":"array","items":["null","long"]}},
    {"name":"nested","type":{"type":"array","items":{"type":"array","items":"int"}}},
    {"name":"maybe","type":["null",{"type":"array","items":"long"}]}]}"#;

fn item(k: &str, v: f64) -> Value {
    record(vec![
        ("k", Value::String(k.to_owned())),
        ("v", Value::Double(v)),
    ])
}

fn arrays_rows() -> Vec<Value> {
    vec![
        record(vec![
            (
                "ints",
                Value::Array(vec![Value::Int(1), Value::Int(-2), Value::Int(3)]),
            ),
            ("strs", Value::Array(vec![Value::String("a".into())])),
            ("recs", Value::Array(vec![item("x", 1.0), item("y", 2.0)])),
            (
                "opt_items",
                Value::Array(vec![null_or(Some(Value::Long(5))), null_or(None)]),
            ),
            (
                "nested",
                Value::Array(vec![
                    Value::Array(vec![Value::Int(1)]),
                    Value::Array(vec![]),
                ]),
            ),
            ("maybe", null_or(Some(Value::Array(vec![Value::Long(9)])))),
        ]),
        record(vec![
            ("ints", Value::Array(vec![])),
            ("strs", Value::Array(vec![])),
            ("recs", Value::Array(vec![])),
            ("opt_items", Value::Array(vec![])),
            ("nested", Value::Array(vec![])),
            ("maybe", null_or(None)),
        ]),
    ]
}

#[test]
fn arrays_round_trip() {
    let batch = round_trip(ARRAYS, arrays_rows());
    let DataType::List(item_field) = data_type(&batch, "ints") else {
        panic!("ints is not a list");
    };
    assert_eq!(item_field.data_type(), &DataType::Int32);
    assert!(!item_field.is_nullable());
    let DataType::List(recs_item) = data_type(&batch, "recs") else {
        panic!("recs is not a list");
    };
    assert!(matches!(recs_item.data_type(), DataType::Struct(f) if f.len() == 2));
    let DataType::List(opt_item) = data_type(&batch, "opt_items") else {
        panic!("opt_items is not a list");
    };
    assert!(opt_item.is_nullable());
    assert_eq!(opt_item.data_type(), &DataType::Int64);

    let ints = column(&batch, "ints").as_list::<i32>();
    assert_eq!(
        ints.value(0).as_primitive::<Int32Type>().values().to_vec(),
        vec![1, -2, 3]
    );
    assert_eq!(ints.value(1).len(), 0);
    let recs = column(&batch, "recs").as_list::<i32>();
    let first = recs.value(0);
    let first = first.as_struct();
    let k = first.column(0).as_string::<i32>();
    assert_eq!((k.value(0), k.value(1)), ("x", "y"));
    let opt = column(&batch, "opt_items").as_list::<i32>().value(0);
    let opt = opt.as_primitive::<Int64Type>();
    assert_eq!((opt.value(0), opt.is_null(1)), (5, true));
    let nested = column(&batch, "nested").as_list::<i32>().value(0);
    let nested = nested.as_list::<i32>();
    assert_eq!(nested.value(0).as_primitive::<Int32Type>().value(0), 1);
    assert_eq!(nested.value(1).len(), 0);
    let maybe = column(&batch, "maybe").as_list::<i32>();
    assert!(maybe.is_valid(0) && maybe.is_null(1));
}

const MAPS: &str = r#"{"type":"record","name":"Maps","fields":[
    {"name":"m_long","type":{"type":"map","values":"long"}},
    {"name":"m_rec","type":{"type":"map","values":{"type":"record","name":"V","fields":[
        {"name":"a","type":"int"}]}}},
    {"name":"m_opt","type":{"type":"map","values":["null","string"]}},
    {"name":"m_arr","type":{"type":"map","values":{"type":"array","items":"string"}}}]}"#;

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<HashMap<_, _>>(),
    )
}

#[test]
fn maps_round_trip() {
    let batch = round_trip(
        MAPS,
        vec![
            record(vec![
                (
                    "m_long",
                    map(vec![("a", Value::Long(1)), ("b", Value::Long(-2))]),
                ),
                (
                    "m_rec",
                    map(vec![("r", record(vec![("a", Value::Int(3))]))]),
                ),
                (
                    "m_opt",
                    map(vec![
                        ("x", null_or(None)),
                        ("y", null_or(Some(Value::String("z".into())))),
                    ]),
                ),
                (
                    "m_arr",
                    map(vec![("q", Value::Array(vec![Value::String("w".into())]))]),
                ),
            ]),
            record(vec![
                ("m_long", map(vec![])),
                ("m_rec", map(vec![])),
                ("m_opt", map(vec![])),
                ("m_arr", map(vec![])),
            ]),
        ],
    );
    let DataType::Map(entries, sorted) = data_type(&batch, "m_long") else {
        panic!("m_long is not a map");
    };
    assert!(!sorted);
    let DataType::Struct(kv) = entries.data_type() else {
        panic!("map entries are not a struct");
    };
    assert_eq!(kv[0].data_type(), &DataType::Utf8);
    assert_eq!(kv[1].data_type(), &DataType::Int64);

    let m = column(&batch, "m_long").as_map();
    let row = m.value(0);
    let keys = row.column(0).as_string::<i32>();
    let values = row.column(1).as_primitive::<Int64Type>();
    let mut got: Vec<(String, i64)> = (0..row.len())
        .map(|i| (keys.value(i).to_owned(), values.value(i)))
        .collect();
    got.sort();
    assert_eq!(got, vec![("a".to_owned(), 1), ("b".to_owned(), -2)]);
    assert_eq!(m.value(1).len(), 0);

    let opt = column(&batch, "m_opt").as_map().value(0);
    let keys = opt.column(0).as_string::<i32>();
    let values = opt.column(1).as_string::<i32>();
    for i in 0..opt.len() {
        match keys.value(i) {
            "x" => assert!(values.is_null(i)),
            "y" => assert_eq!(values.value(i), "z"),
            other => panic!("unexpected key {other}"),
        }
    }
}

const UNIONS: &str = r#"{"type":"record","name":"Unions","fields":[
    {"name":"opt_s","type":["null","string"]},
    {"name":"s_opt","type":["string","null"]},
    {"name":"opt_l","type":["null","long"]},
    {"name":"opt_rec","type":["null",{"type":"record","name":"P","fields":[
        {"name":"z","type":"boolean"}]}]},
    {"name":"general","type":["null","string","long"]},
    {"name":"no_null","type":["int","string","P"]}]}"#;

fn union_row(
    opt_s: Option<&str>,
    s_opt: Option<&str>,
    opt_l: Option<i64>,
    opt_rec: Option<bool>,
    general: (u32, Value),
    no_null: (u32, Value),
) -> Value {
    record(vec![
        ("opt_s", null_or(opt_s.map(|s| Value::String(s.into())))),
        (
            "s_opt",
            match s_opt {
                Some(s) => Value::Union(0, Box::new(Value::String(s.into()))),
                None => Value::Union(1, Box::new(Value::Null)),
            },
        ),
        ("opt_l", null_or(opt_l.map(Value::Long))),
        (
            "opt_rec",
            null_or(opt_rec.map(|z| record(vec![("z", Value::Boolean(z))]))),
        ),
        ("general", Value::Union(general.0, Box::new(general.1))),
        ("no_null", Value::Union(no_null.0, Box::new(no_null.1))),
    ])
}

#[test]
fn unions_round_trip() {
    let batch = round_trip(
        UNIONS,
        vec![
            union_row(
                Some("a"),
                None,
                Some(1),
                Some(true),
                (0, Value::Null),
                (0, Value::Int(5)),
            ),
            union_row(
                None,
                Some("b"),
                None,
                None,
                (1, Value::String("s".into())),
                (1, Value::String("t".into())),
            ),
            union_row(
                Some(""),
                Some(""),
                Some(-7),
                Some(false),
                (2, Value::Long(42)),
                (2, record(vec![("z", Value::Boolean(true))])),
            ),
        ],
    );
    // ["null", T] and [T, "null"] are T, nullable.
    let schema = batch.schema();
    for (name, dt) in [
        ("opt_s", DataType::Utf8),
        ("s_opt", DataType::Utf8),
        ("opt_l", DataType::Int64),
    ] {
        let field = schema.field_with_name(name).unwrap();
        assert!(field.is_nullable(), "{name}");
        assert_eq!(field.data_type(), &dt, "{name}");
    }
    let opt_s = column(&batch, "opt_s").as_string::<i32>();
    assert_eq!(
        (opt_s.value(0), opt_s.is_null(1), opt_s.value(2)),
        ("a", true, "")
    );
    let s_opt = column(&batch, "s_opt").as_string::<i32>();
    assert_eq!(
        (s_opt.is_null(0), s_opt.value(1), s_opt.value(2)),
        (true, "b", "")
    );

    // Other unions are dense Arrow unions, type ids = branch positions.
    let DataType::Union(fields, mode) = data_type(&batch, "general") else {
        panic!("general is not a union");
    };
    assert_eq!(mode, UnionMode::Dense);
    let branches: Vec<(i8, String, DataType)> = fields
        .iter()
        .map(|(id, f)| (id, f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        branches,
        vec![
            (0, "null".to_owned(), DataType::Null),
            (1, "string".to_owned(), DataType::Utf8),
            (2, "long".to_owned(), DataType::Int64),
        ]
    );
    let general = column(&batch, "general").as_union();
    assert_eq!(general.type_ids().to_vec(), vec![0, 1, 2]);
    assert_eq!(general.value(1).as_string::<i32>().value(0), "s");
    assert_eq!(general.value(2).as_primitive::<Int64Type>().value(0), 42);

    let DataType::Union(fields, _) = data_type(&batch, "no_null") else {
        panic!("no_null is not a union");
    };
    let kinds: Vec<String> = fields.iter().map(|(_, f)| f.name().clone()).collect();
    // A named branch is named after its type.
    assert_eq!(kinds, vec!["int", "string", "P"]);
    let no_null = column(&batch, "no_null").as_union();
    assert_eq!(no_null.type_ids().to_vec(), vec![0, 1, 2]);
    assert_eq!(no_null.value(0).as_primitive::<Int32Type>().value(0), 5);
}

const ENUMS: &str = r#"{"type":"record","name":"Enums","fields":[
    {"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}},
    {"name":"maybe","type":["null","Color"]}]}"#;

fn enum_row(color: u32, maybe: Option<u32>) -> Value {
    let symbol = |i: u32| Value::Enum(i, ["RED", "GREEN", "BLUE"][i as usize].to_owned());
    record(vec![
        ("color", symbol(color)),
        ("maybe", null_or(maybe.map(symbol))),
    ])
}

#[test]
fn enums_round_trip() {
    let batch = round_trip(
        ENUMS,
        vec![
            enum_row(0, None),
            enum_row(2, Some(1)),
            enum_row(1, Some(0)),
        ],
    );
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    assert_eq!(data_type(&batch, "color"), dictionary);
    assert_eq!(data_type(&batch, "maybe"), dictionary);
    let color = column(&batch, "color").as_dictionary::<Int32Type>();
    assert_eq!(color.keys().values().to_vec(), vec![0, 2, 1]);
    let symbols = color.values().as_string::<i32>();
    assert_eq!(
        (0..symbols.len())
            .map(|i| symbols.value(i))
            .collect::<Vec<_>>(),
        vec!["RED", "GREEN", "BLUE"]
    );
    let maybe = column(&batch, "maybe").as_dictionary::<Int32Type>();
    assert!(maybe.is_null(0));
    assert_eq!((maybe.keys().value(1), maybe.keys().value(2)), (1, 0));
}

const FIXED: &str = r#"{"type":"record","name":"Fixed","fields":[
    {"name":"f4","type":{"type":"fixed","name":"F4","size":4}},
    {"name":"maybe","type":["null","F4"]},
    {"name":"f1","type":{"type":"fixed","name":"F1","size":1}}]}"#;

#[test]
fn fixed_round_trip() {
    let batch = round_trip(
        FIXED,
        vec![
            record(vec![
                ("f4", Value::Fixed(4, vec![1, 2, 3, 4])),
                ("maybe", null_or(None)),
                ("f1", Value::Fixed(1, vec![0xFF])),
            ]),
            record(vec![
                ("f4", Value::Fixed(4, vec![0, 0, 0, 0])),
                ("maybe", null_or(Some(Value::Fixed(4, vec![9, 8, 7, 6])))),
                ("f1", Value::Fixed(1, vec![0])),
            ]),
        ],
    );
    assert_eq!(data_type(&batch, "f4"), DataType::FixedSizeBinary(4));
    assert_eq!(data_type(&batch, "f1"), DataType::FixedSizeBinary(1));
    let f4 = column(&batch, "f4").as_fixed_size_binary();
    assert_eq!(
        (f4.value(0), f4.value(1)),
        (&[1u8, 2, 3, 4][..], &[0u8; 4][..])
    );
    let maybe = column(&batch, "maybe").as_fixed_size_binary();
    assert!(maybe.is_null(0));
    assert_eq!(maybe.value(1), &[9, 8, 7, 6]);
}

const DECIMALS: &str = r#"{"type":"record","name":"Decimals","fields":[
    {"name":"db","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
    {"name":"df","type":{"type":"fixed","name":"D16","size":16,"logicalType":"decimal",
        "precision":38,"scale":4}},
    {"name":"df5","type":{"type":"fixed","name":"D5","size":5,"logicalType":"decimal",
        "precision":11,"scale":0}},
    {"name":"big","type":{"type":"bytes","logicalType":"decimal","precision":50,"scale":10}},
    {"name":"maybe","type":["null",{"type":"bytes","logicalType":"decimal",
        "precision":10,"scale":2}]}]}"#;

fn decimal_row(db: i128, df: i128, df5: i128, big: i128, maybe: Option<i128>) -> Value {
    record(vec![
        ("db", decimal(db)),
        ("df", decimal(df)),
        ("df5", decimal(df5)),
        ("big", decimal(big)),
        ("maybe", null_or(maybe.map(decimal))),
    ])
}

#[test]
fn decimals_round_trip() {
    let rows = [
        (12345, 10_i128.pow(37), 99_999_999_999, i128::MAX, None),
        (-1, -(10_i128.pow(37)), -99_999_999_999, -5, Some(-12_800)),
        (0, 0, 0, 0, Some(127)),
        (128, -129, 255, 1 << 100, Some(-128)),
    ];
    let batch = round_trip(
        DECIMALS,
        rows.iter()
            .map(|&(a, b, c, d, e)| decimal_row(a, b, c, d, e))
            .collect(),
    );
    assert_eq!(data_type(&batch, "db"), DataType::Decimal128(10, 2));
    assert_eq!(data_type(&batch, "df"), DataType::Decimal128(38, 4));
    assert_eq!(data_type(&batch, "df5"), DataType::Decimal128(11, 0));
    assert_eq!(data_type(&batch, "big"), DataType::Decimal256(50, 10));
    assert_eq!(data_type(&batch, "maybe"), DataType::Decimal128(10, 2));
    let db = column(&batch, "db").as_primitive::<Decimal128Type>();
    let df = column(&batch, "df").as_primitive::<Decimal128Type>();
    let df5 = column(&batch, "df5").as_primitive::<Decimal128Type>();
    let big = column(&batch, "big").as_primitive::<Decimal256Type>();
    let maybe = column(&batch, "maybe").as_primitive::<Decimal128Type>();
    for (i, &(a, b, c, d, e)) in rows.iter().enumerate() {
        assert_eq!(db.value(i), a);
        assert_eq!(df.value(i), b);
        assert_eq!(df5.value(i), c);
        assert_eq!(big.value(i), i256::from_i128(d));
        assert_eq!(maybe.is_valid(i).then(|| maybe.value(i)), e);
    }
    assert_eq!(db.value_as_string(0), "123.45");
}

const UUIDS: &str = r#"{"type":"record","name":"Uuids","fields":[
    {"name":"u","type":{"type":"string","logicalType":"uuid"}},
    {"name":"maybe","type":["null",{"type":"string","logicalType":"uuid"}]}]}"#;

#[test]
fn uuid_round_trip() {
    let a = Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap();
    let b = Uuid::parse_str("00000000-0000-0000-0000-0000000000ff").unwrap();
    let batch = round_trip(
        UUIDS,
        vec![
            record(vec![("u", Value::Uuid(a)), ("maybe", null_or(None))]),
            record(vec![
                ("u", Value::Uuid(b)),
                ("maybe", null_or(Some(Value::Uuid(a)))),
            ]),
        ],
    );
    let schema = batch.schema();
    let u = schema.field_with_name("u").unwrap();
    assert_eq!(u.data_type(), &DataType::FixedSizeBinary(16));
    assert_eq!(
        u.metadata().get("logicalType").map(String::as_str),
        Some("uuid")
    );
    let col = column(&batch, "u").as_fixed_size_binary();
    assert_eq!(
        (col.value(0), col.value(1)),
        (&a.as_bytes()[..], &b.as_bytes()[..])
    );
    let maybe = column(&batch, "maybe").as_fixed_size_binary();
    assert!(maybe.is_null(0));
    assert_eq!(maybe.value(1), a.as_bytes());
}

#[test]
fn uuid_text_is_reencoded_canonically() {
    // Upper-case text decodes to the same uuid and comes back lower-case.
    let upper = "550E8400-E29B-41D4-A716-446655440000";
    let mut body = vec![(upper.len() as u8) << 1];
    body.extend_from_slice(upper.as_bytes());
    body.push(0); // maybe: null
    let mut decoder = decoder_with(ID, UUIDS);
    let out = decoder.decode([frame(ID, &body).as_slice()]);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let batch = &out.batches[0].batch;
    let mut encoder = AvroBatchEncoder::new(ID, UUIDS, batch.schema()).unwrap();
    let encoded = encoder.encode(batch).unwrap();
    let schema = apache_avro::Schema::parse_str(UUIDS).unwrap();
    let read = apache_avro::from_avro_datum(&schema, &mut &encoded[0][PREFIX_LEN..], None).unwrap();
    let expected = Uuid::parse_str(upper).unwrap();
    assert_eq!(
        read,
        record(vec![("u", Value::Uuid(expected)), ("maybe", null_or(None))])
    );
    assert_ne!(encoded[0].as_ref(), frame(ID, &body).as_slice());
}

const FIXED_UUID: &str = r#"{"type":"record","name":"FixedUuid","fields":[
    {"name":"fu","type":{"type":"fixed","name":"U16","size":16,"logicalType":"uuid"}},
    {"name":"s","type":"string"},
    {"name":"nested","type":{"type":"record","name":"N","fields":[{"name":"fu2","type":"U16"}]}},
    {"name":"list","type":{"type":"array","items":"U16"}},
    {"name":"maybe","type":["null","U16"]},
    {"name":"text","type":{"type":"string","logicalType":"uuid"}}]}"#;

#[test]
fn fixed_uuid_round_trip() {
    // apache-avro 0.20 writes a uuid on fixed(16) as a string, so the bodies are built by
    // hand: a uuid on fixed(16) is 16 raw bytes, a uuid on string is its text.
    let a = Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap();
    let text = a.hyphenated().to_string();
    let mut body = a.as_bytes().to_vec(); // fu
    body.extend_from_slice(&[2, b'k']); // s
    body.extend_from_slice(a.as_bytes()); // nested.fu2
    body.push(2); // list: one item
    body.extend_from_slice(a.as_bytes());
    body.push(0); // end of list
    body.push(2); // maybe: branch 1
    body.extend_from_slice(a.as_bytes());
    body.push(72); // text: 36 bytes
    body.extend_from_slice(text.as_bytes());
    let payloads = vec![frame(ID, &body)];
    let batch = round_trip_payloads(FIXED_UUID, &payloads);
    let schema = batch.schema();
    let fu = schema.field_with_name("fu").unwrap();
    assert_eq!(fu.data_type(), &DataType::FixedSizeBinary(16));
    assert_eq!(
        fu.metadata().get("logicalType").map(String::as_str),
        Some("uuid")
    );
    assert_eq!(
        column(&batch, "fu").as_fixed_size_binary().value(0),
        a.as_bytes()
    );
}

const TIMES: &str = r#"{"type":"record","name":"Times","fields":[
    {"name":"date","type":{"type":"int","logicalType":"date"}},
    {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
    {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
    {"name":"tsm","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"tsu","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"tsn","type":{"type":"long","logicalType":"timestamp-nanos"}},
    {"name":"ltm","type":{"type":"long","logicalType":"local-timestamp-millis"}},
    {"name":"ltu","type":{"type":"long","logicalType":"local-timestamp-micros"}},
    {"name":"ltn","type":{"type":"long","logicalType":"local-timestamp-nanos"}},
    {"name":"maybe","type":["null",{"type":"long","logicalType":"timestamp-micros"}]}]}"#;

fn times_row(base: i64, maybe: Option<i64>) -> Value {
    record(vec![
        ("date", Value::Date(base as i32)),
        ("tm", Value::TimeMillis(base as i32 * 1000)),
        ("tu", Value::TimeMicros(base * 1_000_000)),
        ("tsm", Value::TimestampMillis(base * 1000 + 1)),
        ("tsu", Value::TimestampMicros(base * 1_000_000 + 2)),
        ("tsn", Value::TimestampNanos(base * 1_000_000_000 + 3)),
        ("ltm", Value::LocalTimestampMillis(base * 1000 + 4)),
        ("ltu", Value::LocalTimestampMicros(base * 1_000_000 + 5)),
        ("ltn", Value::LocalTimestampNanos(base * 1_000_000_000 + 6)),
        ("maybe", null_or(maybe.map(Value::TimestampMicros))),
    ])
}

#[test]
fn dates_and_times_round_trip() {
    let batch = round_trip(
        TIMES,
        vec![
            times_row(19_000, Some(1_700_000_000_000_000)),
            times_row(-3, None),
            times_row(0, Some(-1)),
        ],
    );
    assert_eq!(data_type(&batch, "date"), DataType::Date32);
    assert_eq!(
        data_type(&batch, "tm"),
        DataType::Time32(TimeUnit::Millisecond)
    );
    assert_eq!(
        data_type(&batch, "tu"),
        DataType::Time64(TimeUnit::Microsecond)
    );
    assert_eq!(
        data_type(&batch, "tsm"),
        DataType::Timestamp(TimeUnit::Millisecond, utc())
    );
    assert_eq!(
        data_type(&batch, "tsu"),
        DataType::Timestamp(TimeUnit::Microsecond, utc())
    );
    assert_eq!(
        data_type(&batch, "tsn"),
        DataType::Timestamp(TimeUnit::Nanosecond, utc())
    );
    assert_eq!(
        data_type(&batch, "ltm"),
        DataType::Timestamp(TimeUnit::Millisecond, None)
    );
    assert_eq!(
        data_type(&batch, "ltu"),
        DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(
        data_type(&batch, "ltn"),
        DataType::Timestamp(TimeUnit::Nanosecond, None)
    );
    assert_eq!(
        data_type(&batch, "maybe"),
        DataType::Timestamp(TimeUnit::Microsecond, utc())
    );

    let base = 19_000_i64;
    assert_eq!(
        column(&batch, "date").as_primitive::<Date32Type>().value(0),
        19_000
    );
    assert_eq!(
        column(&batch, "tm")
            .as_primitive::<Time32MillisecondType>()
            .value(0),
        19_000_000
    );
    assert_eq!(
        column(&batch, "tu")
            .as_primitive::<Time64MicrosecondType>()
            .value(0),
        base * 1_000_000
    );
    assert_eq!(
        column(&batch, "tsm")
            .as_primitive::<TimestampMillisecondType>()
            .value(0),
        base * 1000 + 1
    );
    assert_eq!(
        column(&batch, "tsu")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        base * 1_000_000 + 2
    );
    assert_eq!(
        column(&batch, "tsn")
            .as_primitive::<TimestampNanosecondType>()
            .value(0),
        base * 1_000_000_000 + 3
    );
    assert_eq!(
        column(&batch, "ltm")
            .as_primitive::<TimestampMillisecondType>()
            .value(1),
        -3 * 1000 + 4
    );
    let maybe = column(&batch, "maybe").as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        (maybe.value(0), maybe.is_null(1), maybe.value(2)),
        (1_700_000_000_000_000, true, -1)
    );
}

const DURATION: &str = r#"{"type":"record","name":"Durations","fields":[
    {"name":"d","type":{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}}]}"#;

#[test]
fn duration_beyond_i32_cannot_be_written_back() {
    // Avro months/days are u32, Arrow's are i32: u32::MAX months decodes as -1.
    let value = record(vec![(
        "d",
        Value::Duration(Duration::new(
            Months::new(u32::MAX),
            Days::new(0),
            Millis::new(0),
        )),
    )]);
    let mut decoder = decoder_with(ID, DURATION);
    let out = decode_all(&mut decoder, &payloads(DURATION, ID, vec![value]));
    let batch = &out.batches[0].batch;
    let d = batch.column(0).as_primitive::<IntervalMonthDayNanoType>();
    assert_eq!(d.value(0).months, -1);
    let mut encoder = AvroBatchEncoder::new(ID, DURATION, batch.schema()).unwrap();
    assert!(matches!(encoder.encode(batch), Err(CodecError::Avro(_))));
}

#[test]
fn duration_round_trip() {
    let duration = |m, d, ms| {
        record(vec![(
            "d",
            Value::Duration(Duration::new(Months::new(m), Days::new(d), Millis::new(ms))),
        )])
    };
    let batch = round_trip(
        DURATION,
        vec![
            duration(1, 2, 3),
            duration(0, 0, 0),
            duration(14, 400, 86_399_999),
        ],
    );
    assert_eq!(
        data_type(&batch, "d"),
        DataType::Interval(IntervalUnit::MonthDayNano)
    );
    let d = column(&batch, "d").as_primitive::<IntervalMonthDayNanoType>();
    let v = d.value(0);
    assert_eq!((v.months, v.days, v.nanoseconds), (1, 2, 3_000_000));
}

const USER_V1: &str = r#"{"type":"record","name":"User","namespace":"t","fields":[
    {"name":"id","type":"int"},
    {"name":"name","type":"string"}]}"#;
const USER_V2: &str = r#"{"type":"record","name":"User","namespace":"t","fields":[
    {"name":"id","type":"long"},
    {"name":"name","type":"string"},
    {"name":"email","type":["null","string"],"default":null},
    {"name":"legacy","type":"int"}]}"#;
const USER_READER: &str = r#"{"type":"record","name":"User","namespace":"t","fields":[
    {"name":"id","type":"long"},
    {"name":"name","type":"string"},
    {"name":"email","type":["null","string"],"default":null},
    {"name":"score","type":"double","default":1.5},
    {"name":"tier","type":{"type":"enum","name":"Tier","symbols":["FREE","PRO"]},
        "default":"FREE"}]}"#;

fn user_v1(id: i32, name: &str) -> Vec<u8> {
    payloads(
        USER_V1,
        1,
        vec![record(vec![
            ("id", Value::Int(id)),
            ("name", Value::String(name.into())),
        ])],
    )
    .remove(0)
}

fn user_v2(id: i64, name: &str, email: Option<&str>) -> Vec<u8> {
    payloads(
        USER_V2,
        2,
        vec![record(vec![
            ("id", Value::Long(id)),
            ("name", Value::String(name.into())),
            ("email", null_or(email.map(|e| Value::String(e.into())))),
            ("legacy", Value::Int(99)),
        ])],
    )
    .remove(0)
}

#[test]
fn schema_evolution_resolves_every_writer_to_the_reader_schema() {
    let mut decoder = AvroBatchDecoder::new(Some(USER_READER.to_owned()), 100);
    decoder.register(1, USER_V1).unwrap();
    decoder.register(2, USER_V2).unwrap();
    let input = vec![
        user_v1(1, "ann"),
        user_v1(2, "bob"),
        user_v2(3_000_000_000, "cy", Some("cy@x")),
        user_v2(4, "di", None),
        user_v1(5, "ed"),
    ];
    let out = decode_all(&mut decoder, &input);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let ids: Vec<(u32, Vec<usize>)> = out
        .batches
        .iter()
        .map(|b| (b.schema_id, b.rows.clone()))
        .collect();
    assert_eq!(ids, vec![(1, vec![0, 1]), (2, vec![2, 3]), (1, vec![4])]);

    let reader_arrow = out.batches[0].batch.schema();
    // Same names, types and nullability for every writer; only the field metadata differs
    // (`avro.field.default` is set on the fields a writer lacked).
    let shape = |schema: &Schema| -> Vec<(String, DataType, bool)> {
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect()
    };
    for batch in &out.batches {
        assert_eq!(shape(&batch.batch.schema()), shape(&reader_arrow));
    }
    let names: Vec<&str> = reader_arrow
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, vec!["id", "name", "email", "score", "tier"]);

    let batches: Vec<&RecordBatch> = out.batches.iter().map(|b| &b.batch).collect();
    let all = arrow::compute::concat_batches(&reader_arrow, batches).unwrap();
    let id = column(&all, "id").as_primitive::<Int64Type>();
    assert_eq!(id.values().to_vec(), vec![1, 2, 3_000_000_000, 4, 5]);
    let name = column(&all, "name").as_string::<i32>();
    assert_eq!(name.value(2), "cy");
    let email = column(&all, "email").as_string::<i32>();
    assert_eq!(
        (0..5)
            .map(|i| email.is_valid(i).then(|| email.value(i)))
            .collect::<Vec<_>>(),
        vec![None, None, Some("cy@x"), None, None]
    );
    let score = column(&all, "score").as_primitive::<Float64Type>();
    assert_eq!(score.values().to_vec(), vec![1.5; 5]);
    let tier = column(&all, "tier").as_dictionary::<Int32Type>();
    assert_eq!(tier.keys().values().to_vec(), vec![0; 5]);
    assert_eq!(tier.values().as_string::<i32>().value(0), "FREE");
}

#[test]
fn incompatible_writer_schema_is_rejected_at_registration() {
    let mut decoder = AvroBatchDecoder::new(Some(USER_READER.to_owned()), 100);
    let no_name = r#"{"type":"record","name":"User","namespace":"t","fields":[
        {"name":"id","type":"long"}]}"#;
    assert!(matches!(
        decoder.register(3, no_name),
        Err(CodecError::Schema(_))
    ));
    assert!(!decoder.is_registered(3));
}

const A: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"}]}"#;
const B: &str = r#"{"type":"record","name":"B","fields":[{"name":"s","type":"string"}]}"#;

fn a(x: i64) -> Vec<u8> {
    payloads(A, 10, vec![record(vec![("x", Value::Long(x))])]).remove(0)
}

fn b(s: &str) -> Vec<u8> {
    payloads(B, 20, vec![record(vec![("s", Value::String(s.into()))])]).remove(0)
}

#[test]
fn writer_ids_without_reader_schema_give_one_batch_per_run() {
    let mut decoder = AvroBatchDecoder::new(None, 100);
    decoder.register(10, A).unwrap();
    decoder.register(20, B).unwrap();
    assert!(decoder.is_registered(10) && decoder.is_registered(20));
    assert!(!decoder.is_registered(30));
    let input = vec![
        a(1),
        a(2),
        b("x"),
        b("y"),
        a(3),
        frame(30, &[2]),
        a(4),
        b("z"),
    ];
    let out = decode_all(&mut decoder, &input);
    assert_eq!(out.errors, vec![(5, CodecError::UnknownSchemaId(30))]);
    let runs: Vec<(u32, Vec<usize>)> = out
        .batches
        .iter()
        .map(|b| (b.schema_id, b.rows.clone()))
        .collect();
    assert_eq!(
        runs,
        vec![
            (10, vec![0, 1]),
            (20, vec![2, 3]),
            (10, vec![4, 6]),
            (20, vec![7])
        ]
    );
    assert_eq!(
        out.batches[0].batch.schema().field(0).data_type(),
        &DataType::Int64
    );
    assert_eq!(
        out.batches[1].batch.schema().field(0).data_type(),
        &DataType::Utf8
    );
    let x = out.batches[2].batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(x.values().to_vec(), vec![3, 4]);
    let s = out.batches[3].batch.column(0).as_string::<i32>();
    assert_eq!(s.value(0), "z");
}

#[test]
fn schema_registered_between_calls_is_used() {
    let mut decoder = decoder_with(10, A);
    let out = decode_all(&mut decoder, &[a(1), b("early")]);
    assert_eq!(out.errors, vec![(1, CodecError::UnknownSchemaId(20))]);
    assert_eq!(out.batches.len(), 1);

    decoder.register(20, B).unwrap();
    let out = decode_all(&mut decoder, &[a(2), b("late"), a(3)]);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let runs: Vec<(u32, Vec<usize>)> = out
        .batches
        .iter()
        .map(|b| (b.schema_id, b.rows.clone()))
        .collect();
    assert_eq!(runs, vec![(10, vec![0]), (20, vec![1]), (10, vec![2])]);
    assert_eq!(
        out.batches[1].batch.column(0).as_string::<i32>().value(0),
        "late"
    );
}

#[test]
fn batches_are_cut_at_batch_size() {
    let mut decoder = AvroBatchDecoder::new(None, 2);
    decoder.register(10, A).unwrap();
    let input: Vec<Vec<u8>> = (0..5).map(a).collect();
    let out = decode_all(&mut decoder, &input);
    assert!(out.errors.is_empty());
    let rows: Vec<Vec<usize>> = out.batches.iter().map(|b| b.rows.clone()).collect();
    assert_eq!(rows, vec![vec![0, 1], vec![2, 3], vec![4]]);
    assert!(out.batches.iter().all(|b| b.schema_id == 10));
}

const R: &str = r#"{"type":"record","name":"R","fields":[
    {"name":"id","type":"long"},
    {"name":"name","type":"string"}]}"#;

fn r(id: i64, name: &str) -> Vec<u8> {
    payloads(
        R,
        ID,
        vec![record(vec![
            ("id", Value::Long(id)),
            ("name", Value::String(name.into())),
        ])],
    )
    .remove(0)
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn malformed_payloads_are_reported_and_good_ones_decoded() {
    let good = r(1, "hello");
    let input: Vec<Vec<u8>> = vec![
        r(0, "first"),                         // 0 good
        vec![],                                // 1 empty
        vec![0],                               // 2 one byte
        vec![0, 0, 0, 7],                      // 3 four bytes
        r(4, "four"),                          // 4 good
        concat(&[&[1], &good[1..]]),           // 5 wrong magic
        frame(99, &good[PREFIX_LEN..]),        // 6 unknown id
        good[..good.len() - 2].to_vec(),       // 7 string cut short
        frame(ID, &[0x80]),                    // 8 varint cut short
        frame(ID, &[]),                        // 9 no body
        concat(&[&good, &[0x01]]),             // 10 one trailing byte
        concat(&[&good, &good[..PREFIX_LEN]]), // 11 trailing own prefix
        concat(&[&good, &good]),               // 12 a second record
        concat(&[&good, &[0x00]]),             // 13 trailing partial prefix
        concat(&[&good, &frame(99, &[2])]),    // 14 trailing foreign prefix
        frame(ID, &[0x02, 0x01]),              // 15 negative string length
        frame(ID, &[0xFF; 12]),                // 16 garbage: overlong varint
        r(17, "seventeen"),                    // 17 good
        frame(ID, &[0x02, 0x04, 0xFF, 0xFE]),  // 18 string not utf-8
        r(19, "last"),                         // 19 good
        concat(&[&[0x00, 0, 0], &[0x07]]),     // 20 four bytes again
        frame(ID, &[0x02, 0x0A, b'a', b'b']),  // 21 string shorter than its length
    ];
    let mut decoder = decoder_with(ID, R);
    let out = decode_all(&mut decoder, &input);

    let errors: Vec<(usize, CodecError)> = out.errors.clone();
    assert_eq!(
        errors
            .iter()
            .filter(|(i, _)| ![5, 15, 16, 18].contains(i))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            (1, CodecError::TooShort { len: 0 }),
            (2, CodecError::TooShort { len: 1 }),
            (3, CodecError::TooShort { len: 4 }),
            (6, CodecError::UnknownSchemaId(99)),
            (7, CodecError::Truncated),
            (8, CodecError::Truncated),
            (9, CodecError::Truncated),
            (10, CodecError::TrailingBytes),
            (11, CodecError::TrailingBytes),
            (12, CodecError::TrailingBytes),
            (13, CodecError::TrailingBytes),
            (14, CodecError::TrailingBytes),
            (20, CodecError::TooShort { len: 4 }),
            (21, CodecError::Truncated),
        ]
    );
    let error_of = |index: usize| {
        errors
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, e)| e.clone())
            .unwrap()
    };
    assert_eq!(
        error_of(5),
        CodecError::BadMagic {
            found: 1,
            len: good.len()
        }
    );
    assert!(
        matches!(error_of(15), CodecError::Avro(_)),
        "{:?}",
        error_of(15)
    );
    assert!(
        matches!(error_of(16), CodecError::Avro(_)),
        "{:?}",
        error_of(16)
    );
    assert!(
        matches!(error_of(18), CodecError::Arrow(_)),
        "{:?}",
        error_of(18)
    );
    assert_eq!(errors.len(), 18);

    // The good records around the bad ones make one intact batch.
    assert_eq!(out.batches.len(), 1);
    let decoded = &out.batches[0];
    assert_eq!(decoded.rows, vec![0, 4, 17, 19]);
    let id = decoded.batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(id.values().to_vec(), vec![0, 4, 17, 19]);
    let name = decoded.batch.column(1).as_string::<i32>();
    assert_eq!(
        (0..4).map(|i| name.value(i)).collect::<Vec<_>>(),
        vec!["first", "four", "seventeen", "last"]
    );
    let mut encoder = AvroBatchEncoder::new(ID, R, decoded.batch.schema()).unwrap();
    let encoded = encoder.encode(&decoded.batch).unwrap();
    for (payload, index) in encoded.iter().zip(&decoded.rows) {
        assert_eq!(payload.as_ref(), input[*index].as_slice());
    }

    // The decoder is left clean for the next call.
    let out = decode_all(&mut decoder, &[r(100, "again")]);
    assert!(out.errors.is_empty());
    assert_eq!(out.batches[0].rows, vec![0]);
    assert_eq!(
        out.batches[0].batch.column(1).as_string::<i32>().value(0),
        "again"
    );
}

#[test]
fn error_messages_are_lowercase_and_informative() {
    assert_eq!(
        CodecError::TooShort { len: 3 }.to_string(),
        "payload too short: 3 bytes, the confluent prefix alone needs 5"
    );
    assert_eq!(
        CodecError::BadMagic { found: 1, len: 9 }.to_string(),
        "wrong magic byte 0x01 in a 9-byte payload, expected 0x00"
    );
    assert_eq!(
        CodecError::UnknownSchemaId(5).to_string(),
        "unknown schema id 5"
    );
}

const FIVE_INTS: &str = r#"{"type":"record","name":"Five","fields":[
    {"name":"a","type":"int"},{"name":"b","type":"int"},{"name":"c","type":"int"},
    {"name":"d","type":"int"},{"name":"e","type":"int"}]}"#;

#[test]
fn body_that_ends_like_its_prefix_is_not_trailing_bytes() {
    // id 1 -> prefix 00 00 00 00 01; the body (0, 0, 0, 0, -1) is the same five bytes.
    let legit = frame(1, &[0, 0, 0, 0, 1]);
    assert_eq!(legit[..PREFIX_LEN], legit[PREFIX_LEN..]);
    let trailing = concat(&[&legit, &legit[..PREFIX_LEN]]);
    let mut decoder = AvroBatchDecoder::new(None, 100);
    decoder.register(1, FIVE_INTS).unwrap();
    let out = decode_all(&mut decoder, &[legit.clone(), trailing, legit.clone()]);
    assert_eq!(out.errors, vec![(1, CodecError::TrailingBytes)]);
    assert_eq!(out.batches[0].rows, vec![0, 2]);
    let e = out.batches[0].batch.column(4).as_primitive::<Int32Type>();
    assert_eq!(e.values().to_vec(), vec![-1, -1]);
}

#[test]
fn record_with_an_empty_body_decodes() {
    let schema = r#"{"type":"record","name":"Nothing","fields":[{"name":"n","type":"null"}]}"#;
    let mut decoder = AvroBatchDecoder::new(None, 2);
    decoder.register(ID, schema).unwrap();
    let empty = frame(ID, &[]);
    let out = decode_all(
        &mut decoder,
        &[
            empty.clone(),
            empty.clone(),
            empty.clone(),
            concat(&[&empty, &empty]),
        ],
    );
    assert_eq!(out.errors, vec![(3, CodecError::TrailingBytes)]);
    let rows: Vec<Vec<usize>> = out.batches.iter().map(|b| b.rows.clone()).collect();
    assert_eq!(rows, vec![vec![0, 1], vec![2]]);
    let payloads = vec![empty.clone(), empty];
    round_trip_payloads(schema, &payloads);
}

#[test]
fn enum_index_out_of_range_is_isolated() {
    let good = |i: u32, m: Option<u32>| payloads(ENUMS, ID, vec![enum_row(i, m)]).remove(0);
    let input = vec![
        good(0, None),
        frame(ID, &[0x0A, 0x00]), // color index 5 of 3 symbols
        good(2, Some(1)),
        frame(ID, &[0x01, 0x00]), // color index -1
        good(1, Some(2)),
    ];
    let mut decoder = decoder_with(ID, ENUMS);
    let out = decode_all(&mut decoder, &input);
    let bad: Vec<usize> = out.errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(bad, vec![1, 3]);
    assert!(
        out.errors
            .iter()
            .all(|(_, e)| matches!(e, CodecError::Arrow(_)))
    );
    assert_eq!(out.batches.len(), 1);
    assert_eq!(out.batches[0].rows, vec![0, 2, 4]);
    let color = out.batches[0].batch.column(0).as_dictionary::<Int32Type>();
    assert_eq!(color.keys().values().to_vec(), vec![0, 2, 1]);
}

#[test]
fn many_errors_in_one_batch_stay_bounded_and_correct() {
    let mut decoder = AvroBatchDecoder::new(None, 8);
    decoder.register(ID, R).unwrap();
    let input: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                r(i, "ok")
            } else {
                frame(ID, &[0x02, 0x01])
            }
        })
        .collect();
    let out = decode_all(&mut decoder, &input);
    assert_eq!(out.errors.len(), 20);
    let rows: Vec<usize> = out.batches.iter().flat_map(|b| b.rows.clone()).collect();
    assert_eq!(rows, (0..40).step_by(2).collect::<Vec<_>>());
    assert!(out.batches.iter().all(|b| b.batch.num_rows() <= 8));
    for batch in &out.batches {
        let id = batch.batch.column(0).as_primitive::<Int64Type>();
        let expected: Vec<i64> = batch.rows.iter().map(|&i| i as i64).collect();
        assert_eq!(id.values().to_vec(), expected);
    }
}

/// xorshift64*: deterministic pseudo-random bytes for the fuzz test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_corruption_never_panics_and_accounts_for_every_payload() {
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            PRIMITIVES,
            payloads(
                PRIMITIVES,
                ID,
                vec![
                    primitive_row(true, 1, 2, 3.0, 4.0, b"xy", "zw"),
                    primitive_row(false, -1, -2, -3.0, -4.0, b"", "ü"),
                ],
            ),
        ),
        (ARRAYS, payloads(ARRAYS, ID, arrays_rows())),
        (
            UNIONS,
            payloads(
                UNIONS,
                ID,
                vec![union_row(
                    Some("a"),
                    None,
                    Some(1),
                    Some(true),
                    (2, Value::Long(3)),
                    (1, Value::String("q".into())),
                )],
            ),
        ),
        (
            ENUMS,
            payloads(ENUMS, ID, vec![enum_row(1, Some(2)), enum_row(0, None)]),
        ),
        (
            DECIMALS,
            payloads(DECIMALS, ID, vec![decimal_row(1, -2, 3, -4, Some(5))]),
        ),
        (
            UUIDS,
            payloads(
                UUIDS,
                ID,
                vec![record(vec![
                    ("u", Value::Uuid(Uuid::from_u128(7))),
                    ("maybe", null_or(Some(Value::Uuid(Uuid::from_u128(8))))),
                ])],
            ),
        ),
        (TIMES, payloads(TIMES, ID, vec![times_row(5, Some(6))])),
        (
            NESTED,
            payloads(
                NESTED,
                ID,
                vec![record(vec![
                    ("id", Value::Long(1)),
                    ("inner", inner(1, "a")),
                    ("again", inner(2, "b")),
                    ("maybe", null_or(Some(inner(3, "c")))),
                ])],
            ),
        ),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut kinds: HashMap<&'static str, usize> = HashMap::new();
    for (schema, good) in cases {
        let mut decoder = AvroBatchDecoder::new(None, 16);
        decoder.register(ID, schema).unwrap();
        for _round in 0..20 {
            let mut input: Vec<Vec<u8>> = Vec::new();
            let mut pristine: Vec<bool> = Vec::new();
            for _ in 0..60 {
                let mut payload = good[rng.below(good.len())].clone();
                let intact = rng.below(3) == 0;
                if !intact {
                    match rng.below(5) {
                        0 => {
                            let at = rng.below(payload.len() - PREFIX_LEN) + PREFIX_LEN;
                            payload[at] = rng.next() as u8;
                        }
                        1 => payload.truncate(rng.below(payload.len())),
                        2 => payload.extend((0..rng.below(8) + 1).map(|_| rng.next() as u8)),
                        3 => {
                            let len = rng.below(40);
                            payload.truncate(PREFIX_LEN);
                            payload.extend((0..len).map(|_| rng.next() as u8));
                        }
                        _ => {
                            for _ in 0..3 {
                                let at = rng.below(payload.len());
                                payload[at] ^= 1 << rng.below(8);
                            }
                        }
                    }
                }
                pristine.push(intact);
                input.push(payload);
            }
            let out = decode_all(&mut decoder, &input);
            let mut seen = vec![0usize; input.len()];
            for (index, error) in &out.errors {
                seen[*index] += 1;
                let kind = match error {
                    CodecError::Truncated => "truncated",
                    CodecError::TrailingBytes => "trailing",
                    CodecError::Avro(_) => "avro",
                    CodecError::Arrow(_) => "arrow",
                    _ => "framing",
                };
                *kinds.entry(kind).or_default() += 1;
            }
            *kinds.entry("decoded").or_default() +=
                out.batches.iter().map(|b| b.rows.len()).sum::<usize>();
            for batch in &out.batches {
                assert_eq!(batch.batch.num_rows(), batch.rows.len());
                for &index in &batch.rows {
                    seen[index] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
            for (index, intact) in pristine.iter().enumerate() {
                if *intact {
                    assert!(
                        out.errors.iter().all(|(i, _)| *i != index),
                        "intact payload {index} failed"
                    );
                }
            }
            // The intact records re-encode to their original bytes (a batch can fail to
            // encode when a corrupted record decoded to a value Avro cannot hold).
            for batch in &out.batches {
                let mut encoder = AvroBatchEncoder::new(ID, schema, batch.batch.schema()).unwrap();
                if let Ok(encoded) = encoder.encode(&batch.batch) {
                    for (payload, &index) in encoded.iter().zip(&batch.rows) {
                        if pristine[index] {
                            assert_eq!(payload.as_ref(), input[index].as_slice());
                        }
                    }
                }
            }
        }
    }
    for kind in [
        "truncated",
        "trailing",
        "avro",
        "arrow",
        "framing",
        "decoded",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in {kinds:?}"
        );
    }
}

const EVENT: &str = r#"{"type":"record","name":"Event","namespace":"t","fields":[
    {"name":"id","type":"long"},
    {"name":"name","type":"string"},
    {"name":"score","type":["null","double"],"default":null}]}"#;

#[test]
fn encoder_writes_hand_built_batches() {
    let schema = arrow_schema_for(EVENT).unwrap();
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert!(schema.field(2).is_nullable());
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, -2])),
            Arc::new(StringArray::from(vec!["a", "bé"])),
            Arc::new(Float64Array::from(vec![Some(0.5), None])),
        ],
    )
    .unwrap();
    let mut encoder = AvroBatchEncoder::new(42, EVENT, schema).unwrap();
    assert_eq!(encoder.schema_id(), 42);
    let encoded = encoder.encode(&batch).unwrap();
    assert_eq!(encoded.len(), 2);
    let avro = apache_avro::Schema::parse_str(EVENT).unwrap();
    let expected = [
        record(vec![
            ("id", Value::Long(1)),
            ("name", Value::String("a".into())),
            ("score", null_or(Some(Value::Double(0.5)))),
        ]),
        record(vec![
            ("id", Value::Long(-2)),
            ("name", Value::String("bé".into())),
            ("score", null_or(None)),
        ]),
    ];
    for (payload, value) in encoded.iter().zip(expected) {
        assert_eq!(payload[..PREFIX_LEN], [0, 0, 0, 0, 42]);
        let read = apache_avro::from_avro_datum(&avro, &mut &payload[PREFIX_LEN..], None).unwrap();
        assert_eq!(read, value.clone());
        assert_eq!(
            payload.as_ref(),
            frame(42, &apache_avro::to_avro_datum(&avro, value).unwrap()).as_slice()
        );
    }
    // An empty batch gives no payloads, and the encoder keeps working.
    assert!(encoder.encode(&batch.slice(0, 0)).unwrap().is_empty());
    assert_eq!(encoder.encode(&batch.slice(1, 1)).unwrap()[0], encoded[1]);
}

#[test]
fn encoder_accepts_fields_without_metadata() {
    // The enum field of `arrow_schema_for` carries the symbols as metadata; a batch built
    // with a plain field of the same type is accepted.
    let schema = arrow_schema_for(ENUMS).unwrap();
    let plain: Fields = schema
        .fields()
        .iter()
        .map(|f| Arc::new(f.as_ref().clone().with_metadata(HashMap::new())))
        .collect();
    let plain = Arc::new(Schema::new(plain));
    assert_ne!(plain.fields(), schema.fields());
    let mut decoder = decoder_with(ID, ENUMS);
    let input = payloads(ENUMS, ID, vec![enum_row(2, Some(0))]);
    let out = decode_all(&mut decoder, &input);
    let batch = RecordBatch::try_new(plain, out.batches[0].batch.columns().to_vec()).unwrap();
    let mut encoder = AvroBatchEncoder::new(ID, ENUMS, schema).unwrap();
    assert_eq!(
        encoder.encode(&batch).unwrap()[0].as_ref(),
        input[0].as_slice()
    );
}

#[test]
fn encoder_rejects_mismatched_batches_and_schemas() {
    let schema = arrow_schema_for(EVENT).unwrap();
    let mut encoder = AvroBatchEncoder::new(1, EVENT, schema.clone()).unwrap();
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["x"]))],
    )
    .unwrap();
    assert!(matches!(encoder.encode(&wrong), Err(CodecError::Arrow(_))));

    // Avro schema and Arrow schema that do not fit together.
    assert!(matches!(
        AvroBatchEncoder::new(1, A, schema),
        Err(CodecError::Schema(_))
    ));
    // Not Avro at all.
    assert!(matches!(
        AvroBatchEncoder::new(1, "{nope", arrow_schema_for(A).unwrap()),
        Err(CodecError::Schema(_))
    ));
}

#[test]
fn invalid_schemas_are_rejected() {
    let mut decoder = AvroBatchDecoder::new(None, 10);
    assert!(matches!(
        decoder.register(1, "{not json"),
        Err(CodecError::Schema(_))
    ));
    assert!(matches!(
        decoder.register(1, r#""string""#),
        Err(CodecError::Schema(_))
    ));
    assert!(!decoder.is_registered(1));
    assert!(matches!(
        arrow_schema_for(r#"{"type":"array","items":"int"}"#),
        Err(CodecError::Schema(_))
    ));
    let mut bad_reader = AvroBatchDecoder::new(Some("{oops".to_owned()), 10);
    assert!(bad_reader.register(1, A).is_err());
}

#[test]
fn codecs_can_move_between_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<AvroBatchDecoder>();
    assert_send::<AvroBatchEncoder>();
    assert_send::<DecodeOutput>();
    assert_send::<CodecError>();
}

#[test]
fn re_registering_an_id_replaces_its_schema() {
    let mut decoder = decoder_with(10, A);
    decoder.register(10, B).unwrap();
    let out = decode_all(&mut decoder, &[frame(10, &b("s")[PREFIX_LEN..])]);
    assert!(out.errors.is_empty());
    assert_eq!(
        out.batches[0].batch.column(0).as_string::<i32>().value(0),
        "s"
    );
}

/// A Confluent-framed record of one array field claiming `count` items, then the end block.
fn claiming(count: i64) -> Vec<u8> {
    let mut v = ((count << 1) ^ (count >> 63)) as u64;
    let mut body = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            body.push(byte);
            break;
        }
        body.push(byte | 0x80);
    }
    body.push(0);
    frame(ID, &body)
}

/// The measured attack (#18): a 16-byte record claiming 2,000,000,000 nulls made `arrow-avro`
/// panic when building the batch (an i32 offset overflow), killing the archive on every
/// restart. It is refused before decoding; its neighbours decode.
#[test]
fn a_record_claiming_billions_of_nulls_is_refused_not_a_panic() {
    let schema = r#"{"type":"record","name":"X","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#;
    let mut decoder = decoder_with(ID, schema);
    let other = r#"{"type":"record","name":"Y","fields":[{"name":"n","type":"long"}]}"#;
    decoder.register(ID + 1, other).unwrap();
    let good = payloads(other, ID + 1, vec![record(vec![("n", Value::Long(5))])]).remove(0);
    let attack = claiming(2_000_000_000);
    assert_eq!(attack.len(), 11);
    let out = decode_all(&mut decoder, &[good.clone(), attack, good]);
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(out.errors[0].0, 1);
    assert!(
        matches!(&out.errors[0].1, CodecError::Bound(m) if m.contains("take no bytes")),
        "{:?}",
        out.errors
    );
    let rows: usize = out.batches.iter().map(|b| b.batch.num_rows()).sum();
    assert_eq!(rows, 2);
}

/// Items that take bytes: a count beyond the bytes is a truncated record for `arrow-avro`,
/// found without reserving room for the count.
#[test]
fn a_record_claiming_billions_of_longs_is_an_error() {
    let schema = r#"{"type":"record","name":"X","fields":[{"name":"a","type":{"type":"array","items":"long"}}]}"#;
    let mut decoder = decoder_with(ID, schema);
    let started = std::time::Instant::now();
    let out = decode_all(&mut decoder, &[claiming(2_000_000_000), claiming(1 << 62)]);
    assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
    assert!(out.batches.is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
