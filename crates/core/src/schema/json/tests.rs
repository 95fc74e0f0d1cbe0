#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use apache_avro::types::Value as Avro;
use apache_avro::{Decimal, Schema, Uuid};
use serde_json::Value as Json;

use super::*;
use serde_json::json;

fn schema(text: &str) -> Schema {
    Schema::parse_str(text).unwrap()
}

/// A record `R` with one field `f` of type `field_type`.
fn one(field_type: &str) -> Schema {
    let fields = format!(r#"[{{"name":"f","type":{field_type}}}]"#);
    schema(&format!(
        r#"{{"type":"record","name":"R","fields":{fields}}}"#
    ))
}

fn ok(schema: &Schema, value: Json) -> Avro {
    let avro = json_to_avro(&value, schema).unwrap();
    assert!(avro.validate(schema), "{avro:?} does not validate");
    avro
}

/// The converted field `f` of `one(...)`.
fn ok_f(schema: &Schema, value: Json) -> Avro {
    match ok(schema, json!({ "f": value })) {
        Avro::Record(mut fields) => fields.remove(0).1,
        other => panic!("not a record: {other:?}"),
    }
}

fn check_err(schema: &Schema, value: &Json, case: &str, expected: &str) {
    let e = json_to_avro(value, schema).unwrap_err();
    let (path, fragment) = expected.split_once(": ").unwrap();
    assert_eq!(e.path, path, "{case}: {e}");
    assert!(e.message.contains(fragment), "{case}: {e}");
}

/// Checks that each `<json> => <path>: <message fragment>` line of `cases` fails so.
fn errors(schema: &Schema, cases: &str) {
    for case in cases.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let (value, expected) = case.split_once(" => ").unwrap();
        check_err(
            schema,
            &serde_json::from_str(value).unwrap(),
            case,
            expected,
        );
    }
}

fn union(index: u32, value: Avro) -> Avro {
    Avro::Union(index, Box::new(value))
}

fn record(fields: Vec<(&str, Avro)>) -> Avro {
    Avro::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn text(s: &str) -> Avro {
    Avro::String(s.to_owned())
}

#[test]
fn null_and_boolean() {
    assert_eq!(ok(&Schema::Null, json!(null)), Avro::Null);
    assert_eq!(ok(&Schema::Boolean, json!(true)), Avro::Boolean(true));
    errors(&Schema::Null, "0 => $: expected null, got number");
    errors(
        &Schema::Boolean,
        r#""true" => $: expected boolean, got string"#,
    );
}

#[test]
fn int_is_integral_and_range_checked() {
    assert_eq!(ok(&Schema::Int, json!(-5)), Avro::Int(-5));
    assert_eq!(ok(&Schema::Int, json!(2.0)), Avro::Int(2));
    errors(
        &Schema::Int,
        r#"
        3000000000 => $: expected int, got out-of-range number 3000000000
        1.5 => $: expected int, got non-integral number 1.5
        "5" => $: expected int, got string"#,
    );
}

#[test]
fn long_is_integral_and_range_checked() {
    assert_eq!(ok(&Schema::Long, json!(i64::MIN)), Avro::Long(i64::MIN));
    assert_eq!(
        ok(&Schema::Long, json!(1.5e12)),
        Avro::Long(1_500_000_000_000)
    );
    assert_eq!(
        ok(&Schema::Long, json!(-9_007_199_254_740_992.0)),
        Avro::Long(-9_007_199_254_740_992)
    );
    // Below i64::MIN, serde_json reads a float that rounds to -2^63: refused, not changed
    // (found by the bad-input corpus, integration-tests/tests/hostile.rs).
    errors(
        &Schema::Long,
        r#"
        -9223372036854775809 => $: expected long, got out-of-range number
        -9007199254740994.0 => $: expected long, got out-of-range number
        18446744073709551615 => $: expected long, got out-of-range number 18446744073709551615
        1e19 => $: expected long, got out-of-range number
        0.5 => $: expected long, got non-integral number 0.5
        [1] => $: expected long, got array"#,
    );
}

#[test]
fn float_and_double_accept_ints() {
    assert_eq!(ok(&Schema::Float, json!(3)), Avro::Float(3.0));
    assert_eq!(ok(&Schema::Double, json!(7)), Avro::Double(7.0));
    assert_eq!(ok(&Schema::Double, json!(1.5)), Avro::Double(1.5));
    errors(
        &Schema::Float,
        "1e300 => $: expected float, got out-of-range number 1e+300",
    );
    errors(&Schema::Double, "{} => $: expected double, got object");
}

#[test]
fn bytes_and_fixed_take_code_point_strings() {
    assert_eq!(
        ok(&Schema::Bytes, json!("\u{ff}\u{0}A")),
        Avro::Bytes(vec![255, 0, 65])
    );
    errors(
        &Schema::Bytes,
        r#"
        "a\u20ac" => $: expected bytes as code points 0-255, got U+20AC
        [1] => $: expected bytes, got array"#,
    );
    let fixed = schema(r#"{"type":"fixed","name":"Md5","namespace":"com.acme","size":4}"#);
    assert_eq!(ok(&fixed, json!("abcd")), Avro::Fixed(4, b"abcd".to_vec()));
    errors(
        &fixed,
        r#""abc" => $: expected 4 bytes for com.acme.Md5, got 3"#,
    );
}

#[test]
fn string_and_enum() {
    assert_eq!(ok(&Schema::String, json!("hi")), text("hi"));
    errors(&Schema::String, "1 => $: expected string, got number");
    let e = schema(r#"{"type":"enum","name":"Color","symbols":["RED","GREEN"]}"#);
    assert_eq!(ok(&e, json!("GREEN")), Avro::Enum(1, "GREEN".into()));
    errors(
        &e,
        r#""PURPLE" => $: expected one of [RED, GREEN] for Color, got "PURPLE""#,
    );
}

#[test]
fn array_and_map_paths() {
    let a = schema(r#"{"type":"array","items":"long"}"#);
    assert_eq!(
        ok(&a, json!([1, 2])),
        Avro::Array(vec![Avro::Long(1), Avro::Long(2)])
    );
    errors(&a, r#"[1, "x"] => $[1]: expected long, got string"#);
    let m = schema(r#"{"type":"map","values":"int"}"#);
    let expected = Avro::Map(HashMap::from([("a".into(), Avro::Int(1))]));
    assert_eq!(ok(&m, json!({"a": 1})), expected);
    errors(
        &m,
        r#"
        {"a": true} => $.a: expected int, got boolean
        {"b c": true} => $["b c"]: expected int, got boolean
        [] => $: expected map, got array"#,
    );
}

#[test]
fn record_defaults_missing_and_unknown_fields() {
    let s = schema(
        r#"{"type":"record","name":"P","namespace":"com.acme","fields":[
            {"name":"name","type":"string"},{"name":"age","type":"int","default":7},
            {"name":"nick","type":["null","string"],"default":null}]}"#,
    );
    let nick = ("nick", union(0, Avro::Null));
    let expected = record(vec![("name", text("ann")), ("age", Avro::Int(7)), nick]);
    assert_eq!(ok(&s, json!({"name": "ann"})), expected);
    errors(
        &s,
        r#"
        {"age": 1} => $.name: missing required field
        {"name": "ann", "agee": 1} => $.agee: unknown field
        "ann" => $: expected com.acme.P, got string"#,
    );
}

#[test]
fn union_plain_value_first_matching_branch_wins() {
    let s = one(r#"["null","int","double","string"]"#);
    assert_eq!(ok_f(&s, json!(null)), union(0, Avro::Null));
    assert_eq!(ok_f(&s, json!(2)), union(1, Avro::Int(2)));
    assert_eq!(ok_f(&s, json!(2.5)), union(2, Avro::Double(2.5)));
    assert_eq!(ok_f(&s, json!("x")), union(3, text("x")));
    let s = one(r#"["null","string"]"#);
    errors(
        &s,
        r#"{"f": 5} => $.f: no union branch matches (null, string), got number"#,
    );
    let time = one(r#"["null",{"type":"long","logicalType":"timestamp-millis"}]"#);
    let second = union(1, Avro::TimestampMillis(1000));
    assert_eq!(ok_f(&time, json!("1970-01-01T00:00:01Z")), second);
    errors(
        &time,
        r#"{"f": "noon"} => $.f: expected timestamp-millis, got invalid"#,
    );
}

#[test]
fn union_avro_json_encoding_and_named_types() {
    let s = schema(
        r#"{"type":"record","name":"R","namespace":"com.acme","fields":[
            {"name":"a","type":{"type":"record","name":"Address",
                "fields":[{"name":"city","type":"string"}]}},
            {"name":"u","type":["null","string","Address"]}]}"#,
    );
    let oslo = record(vec![("city", text("Oslo"))]);
    let with_u = |u| record(vec![("a", oslo.clone()), ("u", u)]);
    let full = json!({"a": {"city": "Oslo"}, "u": {"com.acme.Address": {"city": "Oslo"}}});
    assert_eq!(ok(&s, full), with_u(union(2, oslo.clone())));
    let short = json!({"a": {"city": "Oslo"}, "u": {"Address": {"city": "Oslo"}}});
    assert_eq!(ok(&s, short), with_u(union(2, oslo.clone())));
    let string = json!({"a": {"city": "Oslo"}, "u": {"string": "x"}});
    assert_eq!(ok(&s, string), with_u(union(1, text("x"))));
    // Plain objects have one candidate branch, whose error is the useful one.
    errors(
        &s,
        r#"
        {"a": {"city": "x"}, "u": {"com.acme.Address": {"city": 1}}} => $.u["com.acme.Address"].city: expected string, got number
        {"a": {"city": "x"}, "u": {"city": 1}} => $.u.city: expected string, got number"#,
    );
}

#[test]
fn recursive_references_resolve() {
    let s = schema(
        r#"{"type":"record","name":"Node","namespace":"n","fields":[
            {"name":"v","type":"int"},{"name":"next","type":["null","Node"]}]}"#,
    );
    let tail = record(vec![("v", Avro::Int(2)), ("next", union(0, Avro::Null))]);
    let list = ok(&s, json!({"v": 1, "next": {"v": 2, "next": null}}));
    assert_eq!(
        list,
        record(vec![("v", Avro::Int(1)), ("next", union(1, tail))])
    );
    let deep = r#"{"v": 1, "next": {"v": 2, "next": {"v": "x", "next": null}}}"#;
    errors(
        &s,
        &format!("{deep} => $.next.next.v: expected int, got string"),
    );
}

#[test]
fn decimal_rescales_and_checks_precision() {
    let s = schema(r#"{"type":"bytes","logicalType":"decimal","precision":5,"scale":2}"#);
    let dec = |bytes: &[u8]| Avro::Decimal(Decimal::from(bytes));
    assert_eq!(ok(&s, json!("12.3")), dec(&[0x04, 0xce])); // 1230
    assert_eq!(ok(&s, json!(12.34)), dec(&[0x04, 0xd2])); // 1234
    assert_eq!(ok(&s, json!("-1.5e1")), dec(&[0xfa, 0x24])); // -1500
    assert_eq!(ok(&s, json!("1.500")), dec(&[0x00, 0x96])); // 150
    assert_eq!(ok(&s, json!(0)), dec(&[0]));
    errors(
        &s,
        r#"
        "1.234" => $: decimal 1.234 has more than 2 fractional digits
        1234 => $: decimal 1234 exceeds precision 5 at scale 2
        "1e999999999" => $: decimal 1e999999999 exceeds precision 5 at scale 2
        "12,3" => $: expected decimal, got invalid decimal "12,3"
        true => $: expected decimal (string or number), got boolean"#,
    );
    let fixed = r#"{"type":"fixed","name":"D","size":3,"logicalType":"decimal","precision":6}"#;
    assert_eq!(
        ok(&schema(fixed), json!(-999_999)),
        dec(&[0xf0, 0xbd, 0xc1])
    );
    let big = schema(r#"{"type":"bytes","logicalType":"big-decimal"}"#);
    assert_eq!(
        ok(&big, json!("3.14")),
        Avro::BigDecimal("3.14".parse().unwrap())
    );
    errors(
        &big,
        r#""pi" => $: expected big-decimal, got invalid decimal "pi""#,
    );
}

#[test]
fn uuid_is_parsed() {
    let s = schema(r#"{"type":"string","logicalType":"uuid"}"#);
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    assert_eq!(ok(&s, json!(id)), Avro::Uuid(Uuid::parse_str(id).unwrap()));
    errors(
        &s,
        r#"
        "not-a-uuid" => $: expected uuid, got invalid uuid "not-a-uuid"
        1 => $: expected uuid, got number"#,
    );
}

#[test]
fn date_takes_days_or_iso_date() {
    let s = schema(r#"{"type":"int","logicalType":"date"}"#);
    assert_eq!(ok(&s, json!(19_000)), Avro::Date(19_000));
    assert_eq!(ok(&s, json!("2024-03-01")), Avro::Date(19_783));
    assert_eq!(ok(&s, json!("1969-12-31")), Avro::Date(-1));
    errors(
        &s,
        r#"
        "2024-02-30" => $: expected date, got invalid date "2024-02-30"
        true => $: expected date (int days or YYYY-MM-DD), got boolean"#,
    );
}

#[test]
fn times_take_integers_or_clock_strings() {
    let ms = schema(r#"{"type":"int","logicalType":"time-millis"}"#);
    let us = schema(r#"{"type":"long","logicalType":"time-micros"}"#);
    assert_eq!(ok(&ms, json!(1000)), Avro::TimeMillis(1000));
    assert_eq!(ok(&ms, json!("01:00:00.5")), Avro::TimeMillis(3_600_500));
    assert_eq!(
        ok(&us, json!("00:00:01.000002")),
        Avro::TimeMicros(1_000_002)
    );
    errors(
        &ms,
        r#"
        86400000 => $: expected time-millis in 0..86400000, got 86400000
        "00:00:00.0001" => $: expected time-millis, got "00:00:00.0001" with a finer fraction"#,
    );
    errors(
        &us,
        r#""25:00:00" => $: expected time-micros, got invalid time-micros "25:00:00""#,
    );
}

#[test]
fn timestamps_take_epoch_or_rfc3339() {
    let ms = schema(r#"{"type":"long","logicalType":"timestamp-millis"}"#);
    let us = schema(r#"{"type":"long","logicalType":"timestamp-micros"}"#);
    let ns = schema(r#"{"type":"long","logicalType":"timestamp-nanos"}"#);
    assert_eq!(ok(&ms, json!(5)), Avro::TimestampMillis(5));
    let one_ms = Avro::TimestampMillis(1);
    assert_eq!(ok(&ms, json!("1970-01-01T01:00:00.001+01:00")), one_ms);
    let micros = Avro::TimestampMicros(1_704_067_200_000_001);
    assert_eq!(ok(&us, json!("2024-01-01T00:00:00.000001Z")), micros);
    let nanos = Avro::TimestampNanos(7);
    assert_eq!(ok(&ns, json!("1970-01-01T00:00:00.000000007Z")), nanos);
    errors(
        &ms,
        r#""2024-01-01 noon" => $: expected timestamp-millis, got invalid"#,
    );
    errors(
        &ns,
        r#""2500-01-01T00:00:00Z" => $: expected timestamp-nanos, got out-of-range"#,
    );
}

#[test]
fn local_timestamps_take_epoch_or_naive_datetime() {
    let ms = schema(r#"{"type":"long","logicalType":"local-timestamp-millis"}"#);
    let us = schema(r#"{"type":"long","logicalType":"local-timestamp-micros"}"#);
    assert_eq!(ok(&ms, json!(-3)), Avro::LocalTimestampMillis(-3));
    let one_and_half = Avro::LocalTimestampMillis(1500);
    assert_eq!(ok(&ms, json!("1970-01-01T00:00:01.5")), one_and_half);
    assert_eq!(
        ok(&us, json!("1970-01-01T00:00:00")),
        Avro::LocalTimestampMicros(0)
    );
    let zoned = r#""1970-01-01T00:00:00Z""#;
    errors(
        &us,
        &format!("{zoned} => $: expected local-timestamp-micros, got invalid"),
    );
}

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"com.acme","fields":[
    {"name":"id","type":{"type":"string","logicalType":"uuid"}},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
    {"name":"hash","type":{"type":"fixed","name":"Hash","size":4}},
    {"name":"blob","type":"bytes"},
    {"name":"total","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
    {"name":"tax","type":{"type":"fixed","name":"Tax","size":8,"logicalType":"decimal",
        "precision":12,"scale":3}},
    {"name":"day","type":{"type":"int","logicalType":"date"}},
    {"name":"t_ms","type":{"type":"int","logicalType":"time-millis"}},
    {"name":"t_us","type":{"type":"long","logicalType":"time-micros"}},
    {"name":"ts_ms","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"ts_us","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"lts_ms","type":{"type":"long","logicalType":"local-timestamp-millis"}},
    {"name":"lts_us","type":{"type":"long","logicalType":"local-timestamp-micros"}},
    {"name":"address","type":{"type":"record","name":"Address","fields":[
        {"name":"city","type":"string"},{"name":"zip","type":["null","string"],"default":null}]}},
    {"name":"billing","type":["null","string","Address"]},
    {"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
        {"name":"sku","type":"string"},{"name":"qty","type":"int"},
        {"name":"price","type":"double"}]}}},
    {"name":"tags","type":{"type":"map","values":"long"}},
    {"name":"flag","type":"boolean"},
    {"name":"ratio","type":"float"}]}"#;

fn order() -> Json {
    json!({
        "id": "67e55044-10b1-426f-9247-bb680e5fe0c8", "status": "PAID", "hash": "\u{1}\u{ff}ab",
        "blob": "hi", "total": "19.99", "tax": -1.5, "day": "1970-01-11", "t_ms": "00:00:01.25",
        "t_us": 7, "ts_ms": "1970-01-01T00:00:02Z", "ts_us": 3, "lts_ms": "1970-01-01T00:01:00",
        "lts_us": 4, "address": {"city": "Oslo"},
        "billing": {"city": "Bergen", "zip": {"string": "5003"}},
        "items": [{"sku": "a", "qty": 1, "price": 2.5}, {"sku": "b", "qty": 2, "price": 3}],
        "tags": {"x": 1}, "flag": true, "ratio": 0.5
    })
}

#[test]
fn round_trip_covers_every_type() {
    let s = schema(ORDER);
    let datum = json_to_avro_datum(&order(), &s).unwrap();
    let decoded = apache_avro::from_avro_datum(&s, &mut datum.as_slice(), None).unwrap();
    let item = |sku, qty, price| {
        let price = ("price", Avro::Double(price));
        record(vec![("sku", text(sku)), ("qty", Avro::Int(qty)), price])
    };
    let bergen = record(vec![
        ("city", text("Bergen")),
        ("zip", union(1, text("5003"))),
    ]);
    let oslo = record(vec![("city", text("Oslo")), ("zip", union(0, Avro::Null))]);
    let id = Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
    let expected = record(vec![
        ("id", Avro::Uuid(id)),
        ("status", Avro::Enum(1, "PAID".into())),
        ("hash", Avro::Fixed(4, vec![1, 255, b'a', b'b'])),
        ("blob", Avro::Bytes(b"hi".to_vec())),
        ("total", Avro::Decimal(Decimal::from([0x07, 0xcf]))), // 1999
        ("tax", Avro::Decimal(Decimal::from([0xfa, 0x24]))),   // -1500
        ("day", Avro::Date(10)),
        ("t_ms", Avro::TimeMillis(1250)),
        ("t_us", Avro::TimeMicros(7)),
        ("ts_ms", Avro::TimestampMillis(2000)),
        ("ts_us", Avro::TimestampMicros(3)),
        ("lts_ms", Avro::LocalTimestampMillis(60_000)),
        ("lts_us", Avro::LocalTimestampMicros(4)),
        ("address", oslo),
        ("billing", union(2, bergen)),
        (
            "items",
            Avro::Array(vec![item("a", 1, 2.5), item("b", 2, 3.0)]),
        ),
        (
            "tags",
            Avro::Map(HashMap::from([("x".to_owned(), Avro::Long(1))])),
        ),
        ("flag", Avro::Boolean(true)),
        ("ratio", Avro::Float(0.5)),
    ]);
    assert_eq!(decoded, expected);
    assert_eq!(ok(&s, order()), expected);
}

#[test]
fn malformed_records_report_nested_paths() {
    let s = schema(ORDER);
    // Each line: `<JSON pointer> = <replacement> => <path>: <message fragment>`.
    let cases = r#"
        /items/1/qty = "2" => $.items[1].qty: expected int, got string
        /items/0/qty = 3000000000 => $.items[0].qty: expected int, got out-of-range number
        /address = {} => $.address.city: missing required field
        /billing = {"city": "x", "country": "no"} => $.billing.country: unknown field
        /status = "SENT" => $.status: expected one of [NEW, PAID] for com.acme.Status
        /id = "1234" => $.id: expected uuid, got invalid uuid "1234"
        /day = "01/02/2024" => $.day: expected date, got invalid date "01/02/2024"
        /total = "1.999" => $.total: decimal 1.999 has more than 2 fractional digits
        /tags/x = null => $.tags.x: expected long, got null
        /billing = 3 => $.billing: no union branch matches (null, string, com.acme.Address)"#;
    for case in cases.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let (pointer, rest) = case.split_once(" = ").unwrap();
        let (value, expected) = rest.split_once(" => ").unwrap();
        let mut o = order();
        *o.pointer_mut(pointer).unwrap() = serde_json::from_str(value).unwrap();
        check_err(&s, &o, case, expected);
    }
}

#[test]
fn ambiguous_unions_do_not_backtrack_exponentially() {
    // Each level tries B first, which converts everything below before failing on `y`: without
    // memoizing, 2^60 steps.
    let s = schema(
        r#"{"type":"record","name":"A","fields":[
            {"name":"x","type":["null",{"type":"record","name":"B","fields":[
                {"name":"x","type":["null","B","A"]},{"name":"y","type":"string"}]},"A"]},
            {"name":"y","type":"int"}]}"#,
    );
    let mut value = json!({"x": null, "y": 1});
    for _ in 0..60 {
        value = json!({"x": value, "y": 1});
    }
    let Avro::Record(fields) = ok(&s, value) else {
        panic!("not a record")
    };
    assert!(matches!(fields[0].1, Avro::Union(2, _)), "{:?}", fields[0]);
}

#[test]
fn hostile_input_never_panics() {
    let tree = one(r#"{"type":"array","items":"R"}"#);
    let mut deep = json!({"f": []});
    for _ in 0..200 {
        deep = json!({"f": [deep]});
    }
    let path = format!("${}.f", ".f[0]".repeat(64));
    check_err(
        &tree,
        &deep,
        "deep",
        &format!("{path}: nesting deeper than 128 levels"),
    );
    let s = schema(ORDER);
    let junk = r#"[null, 1e308, -1, 18446744073709551615, "", [[]], {"": {}}, {"x": 1}]"#;
    let junk: Vec<Json> = serde_json::from_str(junk).unwrap();
    for key in order().as_object().unwrap().keys() {
        for value in &junk {
            let mut o = order();
            o[key] = value.clone();
            if let Err(e) = json_to_avro_datum(&o, &s) {
                assert!(e.path.starts_with(&format!("$.{key}")), "{e}");
            }
        }
    }
    for value in &junk {
        assert!(json_to_avro_datum(value, &s).is_err());
    }
    let e = json_to_avro_datum(&json!(1), &schema(r#"{"type":"array","items":"int"}"#));
    assert_eq!(e.unwrap_err().to_string(), "$: expected array, got number");
}

#[test]
fn decimal_text_errors_say_which_rule_failed() {
    assert_eq!(decimal128_from_text(" -1.5e1 ", 5, 2), Ok(-1500));
    let cases = [
        (
            "12,3",
            DecimalError::Invalid {
                text: "12,3".into(),
            },
            r#"invalid decimal "12,3""#,
        ),
        (
            "1.234",
            DecimalError::TooManyFractionalDigits {
                text: "1.234".into(),
                scale: 2,
            },
            "decimal 1.234 has more than 2 fractional digits",
        ),
        (
            "1e999999999",
            DecimalError::ExceedsPrecision {
                text: "1e999999999".into(),
                precision: 5,
                scale: 2,
            },
            "decimal 1e999999999 exceeds precision 5 at scale 2",
        ),
    ];
    for (text, error, message) in cases {
        let e = decimal128_from_text(text, 5, 2).unwrap_err();
        assert_eq!(e.to_string(), message);
        assert_eq!(e, error);
    }
    assert_eq!(
        decimal128_from_text("1", 5, -1),
        Err(DecimalError::NegativeScale { scale: -1 })
    );
}
