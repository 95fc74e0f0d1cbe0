//! Fuzz targets of the schema layer (see `tributary_fuzz`): the wire format, the Avro batch
//! decoder with the catalog's schemas, JSON to Avro, schema parsing and compatibility, and the
//! catalog. Each is a [`Harness`]: the tests below run it under the mutation fuzzer for
//! `TRIBUTARY_FUZZ_SECONDS` (1 s by default), and `crates/fuzz-afl` under AFL++ (built with the
//! `fuzzing` feature); docs/security.md has the long runs and their figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use apache_avro::Schema;
use serde_json::json;
use tributary_fuzz::{Harness, Target};

use super::arrow::{AvroBatchDecoder, CodecError};
use super::bounded::DatumBound;
use super::catalog::{Catalog, Compatibility};
use super::json::json_to_avro_datum;
use super::{compat, wire};

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// The catalog's schemas, as text.
fn catalog_schemas() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(schemas_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Every kind of Avro type in one schema: what the catalog's schemas do not have (fixed, arrays
/// of records, recursion, nested unions, decimals as fixed).
const EVERYTHING: &str = r#"{"type":"record","name":"E","namespace":"f","fields":[
  {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
  {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"s","type":"string"},
  {"name":"by","type":"bytes"},
  {"name":"fx","type":{"type":"fixed","name":"Fx","size":4}},
  {"name":"dec","type":{"type":"fixed","name":"Dec","size":8,"logicalType":"decimal","precision":10,"scale":3}},
  {"name":"e","type":{"type":"enum","name":"Kind","symbols":["a","b","c"]}},
  {"name":"arr","type":{"type":"array","items":{"type":"record","name":"Item","fields":[{"name":"n","type":["null","long"]}]}}},
  {"name":"m","type":{"type":"map","values":{"type":"array","items":"string"}}},
  {"name":"next","type":["null","E"],"default":null},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"day","type":{"type":"int","logicalType":"date"}}]}"#;

fn everything_json() -> serde_json::Value {
    json!({
        "b": true, "i": -7, "l": 1_764_000_000_000i64, "f": 1.5, "d": -2.25, "s": "text",
        "by": "\u{0001}\u{00ff}", "fx": "abcd", "dec": "1234567.125", "e": "b",
        "arr": [{"n": 5}, {"n": null}], "m": {"k": ["x", "y"]},
        "next": {"b": false, "i": 0, "l": 0, "f": 0.0, "d": 0.0, "s": "", "by": "", "fx": "wxyz",
                 "dec": "0", "e": "a", "arr": [], "m": {}, "next": null, "ts": 0, "day": 0},
        "ts": 1_764_000_000_000i64, "day": 20_000,
    })
}

fn web_event() -> serde_json::Value {
    json!({
        "event_id": "0b6f2d3c-7f1e-4d8a-9a53-1c2b3d4e5f60", "user_id": "17",
        "session_id": "s-1", "event_type": "purchase", "occurred_at": 1_764_000_000_000i64,
        "page": {"url": "https://shop.example/p/1", "referrer": "https://search.example/"},
        "user_agent": "Mozilla/5.0", "amount": "12.34", "properties": {"ab": "v1", "c": ""},
    })
}

/// Seeds: valid datums of the web events schema and of [`EVERYTHING`].
fn datums() -> Vec<(Schema, String, Vec<u8>)> {
    let web = catalog_schemas()
        .into_iter()
        .find(|(name, _)| name == "raw.web_events-value")
        .unwrap()
        .1;
    let mut out = Vec::new();
    for (text, value) in [
        (web, web_event()),
        (EVERYTHING.to_string(), everything_json()),
    ] {
        let schema = Schema::parse_str(&text).unwrap();
        let datum = json_to_avro_datum(&value, &schema).unwrap();
        out.push((schema, text, datum));
    }
    out
}

fn kind(e: &CodecError) -> String {
    // The variant and the first words of its message: different failures of arrow-avro are
    // different outcomes.
    let text = e.to_string();
    format!(
        "{} {}",
        variant(&format!("{e:?}")),
        text.chars().take(30).collect::<String>()
    )
}

/// Every target of this module.
pub fn harnesses() -> Vec<Harness> {
    vec![wire(), avro_batch(), json_to_avro(), schema(), catalog()]
}

/// `wire::parse`; framing is its inverse.
pub fn wire() -> Harness {
    let seeds = datums()
        .into_iter()
        .map(|(_, _, d)| wire::frame(7, &d))
        .chain([vec![0, 0, 0, 0, 1], vec![]]);
    Target::new("wire", env!("CARGO_MANIFEST_DIR"))
        .seeds(seeds)
        .harness(|input| match wire::parse(input) {
            Ok((id, body)) => {
                assert_eq!(
                    wire::frame(id, body),
                    input,
                    "framing is the inverse of parsing"
                );
                "ok".into()
            }
            Err(e) => variant(&format!("{e:?}")),
        })
}

/// The name of an error's variant, from its `Debug` text: the outcome of most targets.
fn variant(debug: &str) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `AvroBatchDecoder` with the catalog's web events and an every-type schema, the input between
/// two good records (which must decode), and `DatumBound`.
pub fn avro_batch() -> Harness {
    // The catalog's web events, and EVERYTHING without its recursive field (arrow-avro maps no
    // recursive type to Arrow: such a schema is refused when registered, tested elsewhere).
    let flat = EVERYTHING.replace(r#"{"name":"next","type":["null","E"],"default":null},"#, "");
    let mut flat_value = everything_json();
    flat_value.as_object_mut().unwrap().remove("next");
    let web = datums().swap_remove(0);
    let flat_schema = Schema::parse_str(&flat).unwrap();
    let flat_datum = json_to_avro_datum(&flat_value, &flat_schema).unwrap();
    let seeds_and_schemas = [(web.1, web.2), (flat, flat_datum)];
    let mut all = AvroBatchDecoder::new(None, 64);
    let mut bounds = Vec::new();
    for (i, (text, _)) in seeds_and_schemas.iter().enumerate() {
        all.register(i as u32 + 1, text).unwrap();
        bounds.push(DatumBound::from_json(text).unwrap());
    }
    // Each seed framed with its schema's id: mutations of the id byte reach the other schema.
    let seeds = seeds_and_schemas
        .iter()
        .enumerate()
        .map(|(i, (_, d))| wire::frame(i as u32 + 1, d));
    Target::new("avro-batch", env!("CARGO_MANIFEST_DIR"))
        .seeds(seeds)
        .dictionary([
            &[0u8, 0, 0, 0, 1][..],
            &[0, 0, 0, 0, 2],
            &[0x80, 0x80, 0x80, 0x80, 0x08],
        ])
        .harness(move |input| {
            // A batch of the input between two good records: the good ones decode whatever
            // the bad one is.
            let good = wire::frame(1, &seeds_and_schemas[0].1);
            let out = all.decode([good.as_slice(), input, good.as_slice()]);
            let rows: usize = out.batches.iter().map(|b| b.batch.num_rows()).sum();
            assert_eq!(
                rows + out.errors.len(),
                3,
                "every payload is a row or an error"
            );
            assert!(out.errors.iter().all(|(i, _)| *i == 1), "{:?}", out.errors);
            if let Ok((id, body)) = wire::parse(input)
                && let Some(bound) = bounds.get((id as usize).wrapping_sub(1))
            {
                let _ = bound.check(body);
            }
            match out.errors.first() {
                None => "ok".into(),
                Some((_, e)) => kind(e),
            }
        })
}

/// `json_to_avro_datum` for both schemas; an accepted value must decode whole.
pub fn json_to_avro() -> Harness {
    let schemas: Vec<Schema> = datums().into_iter().map(|(s, _, _)| s).collect();
    let seeds = [web_event(), everything_json()]
        .into_iter()
        .map(|v| serde_json::to_vec(&v).unwrap());
    Target::new("json-to-avro", env!("CARGO_MANIFEST_DIR"))
        .seeds(seeds)
        .dictionary([
            "null",
            "true",
            "1e308",
            "-0",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "[[[[",
            "{\"a\":",
            "9223372036854775808",
            "-9223372036854775809",
            "0.0000001",
            "\"99999999999.999\"",
        ])
        .harness(move |input| {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(input) else {
                return "not json".into();
            };
            let mut outcome = String::new();
            for schema in &schemas {
                match json_to_avro_datum(&value, schema) {
                    Ok(datum) => {
                        // What is accepted is a datum of the schema, whole.
                        let mut rest = datum.as_slice();
                        apache_avro::from_avro_datum(schema, &mut rest, None)
                            .expect("an accepted value decodes");
                        assert!(rest.is_empty(), "bytes left after an accepted value");
                        outcome.push_str("ok;");
                    }
                    Err(e) => {
                        let text = e.to_string();
                        let reason = text.split(": ").nth(1).unwrap_or(&text);
                        outcome.push_str(&reason.chars().take(24).collect::<String>());
                        outcome.push(';');
                    }
                }
            }
            outcome
        })
}

/// Schema parsing, canonical form, `DatumBound`, Arrow mapping, compatibility against every
/// catalog schema.
pub fn schema() -> Harness {
    let originals: Vec<Schema> = catalog_schemas()
        .iter()
        .map(|(_, text)| Schema::parse_str(text).unwrap())
        .collect();
    let seeds = catalog_schemas()
        .into_iter()
        .map(|(_, text)| text.into_bytes())
        .chain([EVERYTHING.as_bytes().to_vec()]);
    Target::new("schema", env!("CARGO_MANIFEST_DIR"))
        .seeds(seeds)
        .dictionary([
            "\"null\"",
            "\"long\"",
            "\"logicalType\":\"decimal\"",
            "\"precision\":40",
            "\"items\":",
            "\"values\":",
            "\"default\":",
            "\"type\":\"record\"",
            "\"fields\":[]",
            "\"aliases\":[\"x\"]",
            "\"namespace\":\"\"",
            "[\"null\",",
        ])
        .harness(move |input| {
            let Ok(text) = std::str::from_utf8(input) else {
                return "not utf-8".into();
            };
            let schema = match super::parse_avro_schema(text) {
                Ok(s) => s,
                Err(e) => {
                    return format!(
                        "parse: {}",
                        e.to_string().chars().take(20).collect::<String>()
                    );
                }
            };
            let bound = DatumBound::from_json(text).map(|b| b.needed());
            let arrow = super::arrow::arrow_schema_for(text).is_ok();
            // The canonical form (fingerprints only) is computed. It is not asserted to parse
            // or to be a fixed point: it drops logical types, so a union of a uuid and a string
            // (which apache-avro takes) becomes ["string", "string"], and a logical-typed long
            // is written {"type":"long"}, plain "long" once re-parsed (both found here,
            // docs/security.md).
            let _ = compat::canonical(&schema);
            let mut incompatible = 0;
            for original in &originals {
                incompatible +=
                    compat::check(Compatibility::Full, &schema, std::slice::from_ref(original))
                        .len()
                        .min(1);
                let _ = compat::reader_can_read(original, &schema);
            }
            format!(
                "ok bound {:?} arrow {arrow} incompatible {incompatible}",
                bound.is_ok()
            )
        })
}

/// `Catalog::load` of a mutated `catalog.toml`.
pub fn catalog() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in catalog_schemas() {
        std::fs::write(dir.path().join(format!("{name}.avsc")), text).unwrap();
    }
    let catalog = std::fs::read(schemas_dir().join("catalog.toml")).unwrap();
    Target::new("catalog", env!("CARGO_MANIFEST_DIR"))
        .seeds([catalog])
        .dictionary([
            "[[topic]]\n",
            "[[transform]]\n",
            "[[feature]]\n",
            "[[trigger]]\n",
            "[[source]]\n",
            "partitions = 0\n",
            "partitions = -1\n",
            "window = \"0s\"\n",
            "\"*\"",
            "'''",
            "size = \"1h\"",
            "\"\\u0000\"",
        ])
        .harness(move |input| {
            std::fs::write(dir.path().join("catalog.toml"), input).unwrap();
            match Catalog::load(dir.path()) {
                Ok(c) => format!("ok {} topics", c.topics.len().min(20)),
                Err(e) => {
                    // The message without the file's path (a temporary folder's, different
                    // every run): what the error says is the outcome.
                    let text = e.to_string();
                    let folder = dir.path().to_string_lossy();
                    text.replace(folder.as_ref(), "").chars().take(40).collect()
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_wire_format() {
        wire().fuzz();
    }

    #[test]
    fn fuzz_avro_batch_decoder() {
        avro_batch().fuzz();
    }

    #[test]
    fn fuzz_json_to_avro() {
        json_to_avro().fuzz();
    }

    #[test]
    fn fuzz_schema_parsing_and_compatibility() {
        schema().fuzz();
    }

    #[test]
    fn fuzz_catalog() {
        catalog().fuzz();
    }

    /// The first finding of `fuzz_schema_parsing_and_compatibility`: apache-avro 0.20 panics
    /// on a nested record with an invalid name; `parse_avro_schema` answers an error.
    #[test]
    fn a_nested_record_with_an_invalid_name_is_an_error_not_a_panic() {
        let text = r#"{"type":"record","name":"A","fields":[{"name":"x","type":
            {"type":"array","items":{"type":"record","name":"Dr[ft","fields":[]}}}]}"#;
        let err = crate::schema::parse_avro_schema(text).unwrap_err();
        assert!(
            matches!(err, crate::schema::SchemaParseError::Panicked(_)),
            "{err}"
        );
        assert!(err.to_string().contains("Dr[ft"), "{err}");
    }
}
