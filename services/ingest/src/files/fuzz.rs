//! The fuzz target of file sources' CSV and NDJSON rows.

use tributary_core::schema::arrow::{AvroBatchEncoder, arrow_schema_for};
use tributary_core::schema::conform::Conformer;
use tributary_core::schema::sources::FileFormat;

use super::produce::fit_rows;
use super::rows::{RowLimits, Rows};

/// Fuzz target (see `tributary_fuzz`): a CSV or NDJSON file (the input's first byte chooses:
/// odd is NDJSON) read under small limits as a file source reads it into the catalog's
/// `files.products`: every line is a row, a refusal or an error, never more rows than the limit,
/// and every row that fits encodes to a datum of the topic's schema that decodes whole.
pub(crate) fn fuzz_target() -> tributary_fuzz::Harness {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use tributary_core::schema::catalog::Catalog;
    let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let catalog = Catalog::load(&schemas).unwrap();
    let topic = catalog.topic("files.products").unwrap().clone();
    let target = arrow_schema_for(&topic.value_schema_json).unwrap();
    let avro = apache_avro::Schema::parse_str(&topic.value_schema_json).unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("input");
    let limits = RowLimits {
        max_line_bytes: 300,
        max_rows: 40,
    };
    let header = "product_id,sku,name,category,price,currency,in_stock,updated_at\n";
    let csv = format!(
        "\u{0}{header}p-1,SKU000001,Product 1,cat-1,1.01,EUR,false,2026-11-28T10:01:00Z\n\
         p-2,SKU000002,\"Product, 2\",cat-2,-0.5,EUR,true,2026-11-28T10:02:00.123+02:00\n\n\
         p-3,,P,c,12345678.99,USD,TRUE,1764000000000\n"
    );
    let ndjson = concat!(
        "\u{1}",
        r#"{"product_id":"p-1","sku":"S","name":"N","category":"c","price":"9.99","currency":"EUR","in_stock":true,"updated_at":"2026-11-28T10:01:00Z"}"#,
        "\n",
        r#"{"product_id":"p-2","sku":"S2","name":"N\u00e9","category":"c","price":0.5,"currency":"EUR","in_stock":false,"updated_at":1764000000000,"extra":[1]}"#,
        "\n\r\n"
    );
    tributary_fuzz::Target::new("file-rows", env!("CARGO_MANIFEST_DIR"))
        .seeds([csv.into_bytes(), ndjson.as_bytes().to_vec()])
        .dictionary([
            ",",
            "\"",
            "\n",
            "\r\n",
            ":",
            "{}",
            "null",
            "true",
            "1e400",
            "-0.001",
            "99999999999999999999",
            "\"price\":",
            "1970-01-01T00:00:00Z",
            "+99999-12-31",
        ])
        .harness(move |input| {
            let (format, body) = match input.split_first() {
                Some((b, rest)) if b % 2 == 1 => (FileFormat::Ndjson, rest),
                Some((_, rest)) => (FileFormat::Csv, rest),
                None => (FileFormat::Csv, input),
            };
            std::fs::write(&file, body).unwrap();
            let _folder = &work;
            let mut rows = Rows::open(&file, format, ',', &target, limits).unwrap();
            let mut encoder =
                AvroBatchEncoder::new(1, &topic.value_schema_json, target.clone()).unwrap();
            let (mut good, mut bad, mut stopped) = (0u64, 0u64, false);
            let mut first_error = String::new();
            while let Some(chunk) = rows.next_chunk().unwrap() {
                bad += (chunk.errors.len() + chunk.too_long.len()) as u64;
                if let Some((_, e)) = chunk.errors.first()
                    && first_error.is_empty()
                {
                    first_error = e.chars().take(24).collect();
                }
                stopped |= chunk.stop.is_some();
                for (batch, lines) in chunk.batches {
                    assert_eq!(batch.num_rows(), lines.len(), "a line for every row");
                    let Ok(conformer) = Conformer::new(&batch.schema(), target.clone()) else {
                        return format!("{format:?} columns do not fit");
                    };
                    let (fitted, errors) =
                        fit_rows(&conformer, &batch).expect("the rows that fit fit together");
                    let n = fitted.as_ref().map_or(0, |f| f.num_rows());
                    assert_eq!(
                        n + errors.len(),
                        batch.num_rows(),
                        "a row fits or has a reason"
                    );
                    bad += errors.len() as u64;
                    let Some(fitted) = fitted else { continue };
                    for payload in encoder.encode(&fitted).expect("fitted rows encode") {
                        let (_, mut datum) = tributary_core::schema::wire::parse(&payload).unwrap();
                        apache_avro::from_avro_datum(&avro, &mut datum, None)
                            .expect("an encoded row decodes");
                        assert!(datum.is_empty(), "bytes left after a row");
                        good += 1;
                    }
                }
            }
            assert!(
                good + bad <= limits.max_rows,
                "{good} + {bad} rows over the limit"
            );
            // Words, not counts: the fuzzer drops digits from outcomes.
            let some = |n: u64| if n > 0 { "some" } else { "none" };
            format!(
                "{format:?} good {} bad {} stopped {stopped} {first_error}",
                some(good),
                some(bad)
            )
        })
}
