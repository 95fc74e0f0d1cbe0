//! File sources of ingest through a real broker: a 100,000-row CSV and a 100,000-row Parquet
//! file dropped in a landing folder produce exactly 100,000 records each; the same file written
//! again produces none; a changed file is ingested again; rows that cannot be read go to
//! dlq.ingest naming the file and line, and so do what the source's limits refuse (a line too
//! long, rows past the row limit, an object too large).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use arrow::array::{
    BooleanArray, Decimal128Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tributary_integration_tests::{
    ReadRecord, Service, Stack, key_of, read_all, read_to_end, unique,
};

const ROWS: usize = 100_000;

/// The catalog with the source `products` reading `landing`; `settings` are added to the
/// source's declaration.
fn write_catalog(dir: &Path, landing: &Path, settings: &str) -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    std::fs::copy(
        repo.join("files.products-value.avsc"),
        dir.join("files.products-value.avsc"),
    )?;
    std::fs::write(
        dir.join("catalog.toml"),
        format!(
            "[[topic]]\nname = \"files.products\"\npartitions = 2\nkey_field = \"product_id\"\nevent_time_field = \"updated_at\"\n\n[[source]]\ntype = \"files\"\nname = \"products\"\nurl = \"file://{}/\"\ntopic = \"files.products\"\npoll_seconds = 1\n{settings}",
            landing.display()
        ),
    )?;
    Ok(())
}

fn csv_row(i: usize) -> String {
    format!(
        "p-{i},SKU{i:06},Product {i},cat-{},{}.{:02},EUR,{},2026-11-28T10:{:02}:00Z\n",
        i % 7,
        i % 500,
        i % 100,
        i.is_multiple_of(2),
        i % 60
    )
}

const HEADER: &str = "product_id,sku,name,category,price,currency,in_stock,updated_at\n";

fn write_parquet(path: &Path, from: usize, n: usize) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        // Columns in another order than the schema's: matched by name.
        Field::new(
            "updated_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            false,
        ),
        Field::new("product_id", DataType::Utf8, false),
        Field::new("sku", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("price", DataType::Decimal128(10, 2), false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("in_stock", DataType::Boolean, false),
    ]));
    let ids: Vec<usize> = (from..from + n).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(
                TimestampMillisecondArray::from(
                    ids.iter()
                        .map(|i| 1_795_000_000_000 + *i as i64)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("+00:00"),
            ),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("p-{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("SKU{i:06}")).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| format!("Product {i}"))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| format!("cat-{}", i % 7))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(
                Decimal128Array::from(
                    ids.iter()
                        .map(|i| (*i % 50_000) as i128)
                        .collect::<Vec<_>>(),
                )
                .with_precision_and_scale(10, 2)?,
            ),
            Arc::new(StringArray::from(vec!["EUR"; n])),
            Arc::new(BooleanArray::from(
                ids.iter().map(|i| i % 3 == 0).collect::<Vec<_>>(),
            )),
        ],
    )?;
    let file = std::fs::File::create(path)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// Waits until `topic` holds at least `n` records, then reads all of them (Tansu answers the
/// first fetch of a partition of 100,000 records only after several seconds: long waits).
async fn wait_records(
    stack: &Stack,
    topic: &str,
    n: usize,
    service: &Service,
) -> Result<Vec<ReadRecord>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let records = read_to_end(&stack.broker, topic, Duration::from_secs(120))?;
        if records.len() >= n {
            return Ok(records);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{topic}: {} of {n} records\n{}",
            records.len(),
            service.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_ingested_once_and_bad_rows_are_dead_lettered() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let landing = tempfile::tempdir()?;
    write_catalog(dir.path(), landing.path(), "")?;
    let stack = Stack::start(dir.path()).await?;
    let config = format!(
        "[ingest]\nlisten = \"127.0.0.1:0\"\nschemas = \"{}\"\nsources = [\"products\"]\nfiles_progress_topic = \"{}\"\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}",
        dir.path().display(),
        unique("_files"),
        stack.broker.bootstrap(),
        stack.registry.section()
    );
    let mut csv = String::from(HEADER);
    for i in 0..ROWS {
        csv.push_str(&csv_row(i));
    }
    std::fs::write(landing.path().join("products-1.csv"), &csv)?;
    write_parquet(&landing.path().join("products-2.parquet"), ROWS, ROWS)?;
    let mut service = Service::start("tributary-ingest", &config)?;

    let all = wait_records(&stack, "files.products", 2 * ROWS, &service).await?;
    assert_eq!(all.len(), 2 * ROWS, "exactly one record per row");
    let keys: BTreeSet<String> = all.iter().map(key_of).collect();
    assert_eq!(keys.len(), 2 * ROWS);
    let first = all
        .iter()
        .find(|r| key_of(r) == "p-42")
        .map(|r| r.payload.clone());
    let value = stack.decode(&first.unwrap_or_default()).await?;
    assert_eq!(value["sku"], "SKU000042");
    assert_eq!(value["price"], 4242, "42.42 as the unscaled decimal");
    assert_eq!(value["in_stock"], true);
    // 2026-11-28T10:42:00Z
    assert_eq!(value["updated_at"], 1_795_862_520_000_i64);
    let parquet_row = all
        .iter()
        .find(|r| key_of(r) == "p-100007")
        .map(|r| r.payload.clone());
    let value = stack.decode(&parquet_row.unwrap_or_default()).await?;
    assert_eq!(value["updated_at"], 1_795_000_100_007_i64);
    assert_eq!(value["price"], 50_007 % 50_000);

    // The same content written again (a new modification time): nothing more.
    std::fs::write(landing.path().join("products-1.csv"), &csv)?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        read_to_end(&stack.broker, "files.products", Duration::from_secs(120))?.len(),
        2 * ROWS
    );
    assert!(
        service
            .log()
            .contains("file unchanged (same content); skipped"),
        "{}",
        service.log()
    );

    // Bad rows: lines 3, 6 and 9 (a price that is no number, a boolean that is none, a row
    // short of columns); the other seven go on.
    let mut bad = String::from(HEADER);
    for i in 0..10 {
        let line = i + 2;
        bad.push_str(&match line {
            3 => format!("b-{i},S,N,c,abc,EUR,true,2026-11-28T10:00:00Z\n"),
            6 => format!("b-{i},S,N,c,1.00,EUR,maybe,2026-11-28T10:00:00Z\n"),
            9 => format!("b-{i},S,N\n"),
            _ => format!("b-{i},S,N,c,1.00,EUR,false,2026-11-28T10:00:00Z\n"),
        });
    }
    std::fs::write(landing.path().join("products-3.csv"), &bad)?;
    let n = wait_records(&stack, "files.products", 2 * ROWS + 7, &service)
        .await?
        .len();
    assert_eq!(n, 2 * ROWS + 7);
    let dlq = read_all(&stack.broker, "dlq.ingest", 3, Duration::from_secs(30))?;
    let mut lines: Vec<String> = dlq
        .iter()
        .map(|r| r.headers["tributary.error.message"].clone())
        .collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (message, line) in lines.iter().zip([3, 6, 9]) {
        assert!(
            message.contains("products-3.csv line ")
                && message.contains(&format!(" line {line}: ")),
            "{message}"
        );
    }

    // A changed file is ingested again.
    std::fs::write(
        landing.path().join("products-4.csv"),
        format!("{HEADER}{}{}", csv_row(1), csv_row(2)),
    )?;
    wait_records(&stack, "files.products", 2 * ROWS + 9, &service).await?;
    std::fs::write(
        landing.path().join("products-4.csv"),
        format!("{HEADER}{}{}", csv_row(1), csv_row(3)),
    )?;
    let n = wait_records(&stack, "files.products", 2 * ROWS + 11, &service)
        .await?
        .len();
    assert_eq!(n, 2 * ROWS + 11);
    // The source's records and dead letters are counted like a PostgreSQL source's.
    let metrics = reqwest::get(format!("{}/metrics", service.admin_url()?))
        .await?
        .text()
        .await?;
    let counter = |name: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(&format!(
                "tributary_ingest_{name}_total{{source=\"products\",table=\"\"}} "
            ))
            .and_then(|v| v.trim().parse::<u64>().ok())
        })
    };
    assert_eq!(
        counter("source_records"),
        Some(2 * ROWS as u64 + 11),
        "{metrics}"
    );
    assert_eq!(counter("source_dead_letters"), Some(3), "{metrics}");
    assert!(service.stop()?, "{}", service.log());
    Ok(())
}

/// The same source on S3 (moto): a CSV uploaded under the prefix is ingested once; uploaded
/// again with the same content, it produces nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_s3_are_ingested_once() -> Result<()> {
    use object_store::ObjectStoreExt;
    let s3 = tributary_integration_tests::S3::start().await?;
    let dir = tempfile::tempdir()?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    std::fs::copy(
        repo.join("files.products-value.avsc"),
        dir.path().join("files.products-value.avsc"),
    )?;
    std::fs::write(
        dir.path().join("catalog.toml"),
        format!(
            "[[topic]]\nname = \"files.products\"\npartitions = 1\nkey_field = \"product_id\"\n\n[[source]]\ntype = \"files\"\nname = \"products\"\nurl = \"s3://{}/landing/\"\ntopic = \"files.products\"\npoll_seconds = 1\n",
            s3.bucket
        ),
    )?;
    let stack = Stack::start(dir.path()).await?;
    let config = format!(
        "[ingest]\nlisten = \"127.0.0.1:0\"\nschemas = \"{}\"\nfiles_progress_topic = \"{}\"\n\n[ingest.object_store]\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_access_key_id = \"test\"\ns3_secret_access_key = \"test\"\nallow_http = true\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}",
        dir.path().display(),
        unique("_files"),
        s3.endpoint(),
        stack.broker.bootstrap(),
        stack.registry.section()
    );
    let lake = tributary_core::lake::Lake::open(&s3.lake("landing"))?;
    let body = format!("{HEADER}{}{}{}", csv_row(7), csv_row(8), csv_row(9));
    lake.store()
        .put(&lake.path("products.csv"), body.clone().into_bytes().into())
        .await?;
    let mut service = Service::start("tributary-ingest", &config)?;
    let records = wait_records(&stack, "files.products", 3, &service).await?;
    let keys: BTreeSet<String> = records.iter().map(key_of).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["p-7".into(), "p-8".into(), "p-9".into()])
    );
    // Uploaded again: the same bytes, so the same MD5 e-tag; nothing more.
    lake.store()
        .put(&lake.path("products.csv"), body.into_bytes().into())
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        read_to_end(&stack.broker, "files.products", Duration::from_secs(30))?.len(),
        3
    );
    assert!(service.stop()?, "{}", service.log());
    Ok(())
}

/// Small limits: a line over `max_line_bytes` is dead-lettered and the lines after it go on; a
/// file of more rows than `max_rows_per_file` stops at the first row past it; a file over
/// `max_object_bytes` is not read. Each refusal is one dead letter naming the file, the line and
/// the reason; none is repeated at later polls, and the service goes on ingesting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_rows_past_the_limit_and_large_files_are_refused_naming_file_and_line()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let landing = tempfile::tempdir()?;
    write_catalog(
        dir.path(),
        landing.path(),
        "max_object_bytes = 4096\nmax_line_bytes = 200\nmax_rows_per_file = 5\n",
    )?;
    let stack = Stack::start(dir.path()).await?;
    let config = format!(
        "[ingest]\nlisten = \"127.0.0.1:0\"\nschemas = \"{}\"\nsources = [\"products\"]\nfiles_progress_topic = \"{}\"\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}",
        dir.path().display(),
        unique("_files"),
        stack.broker.bootstrap(),
        stack.registry.section()
    );
    // Line 5, a row that fits the topic but for its 300-byte name, between good lines.
    let long = format!(
        "l-0,S,{},c,1.00,EUR,true,2026-11-28T10:00:00Z\n",
        "n".repeat(300)
    );
    let a = format!(
        "{HEADER}{}{}{}{long}{}",
        csv_row(1),
        csv_row(2),
        csv_row(3),
        csv_row(4)
    );
    // Eight rows on lines 2 to 9: five go on, line 7 is the first refused.
    let b: String = std::iter::once(HEADER.to_string())
        .chain((10..18).map(csv_row))
        .collect();
    // Over 4096 bytes: not read at all.
    let c: String = std::iter::once(HEADER.to_string())
        .chain((100..170).map(csv_row))
        .collect();
    ensure!(c.len() > 4096, "{} bytes", c.len());
    std::fs::write(landing.path().join("products-a.csv"), &a)?;
    std::fs::write(landing.path().join("products-b.csv"), &b)?;
    std::fs::write(landing.path().join("products-c.csv"), &c)?;
    let mut service = Service::start("tributary-ingest", &config)?;

    let records = wait_records(&stack, "files.products", 9, &service).await?;
    let keys: BTreeSet<String> = records.iter().map(key_of).collect();
    let expected: BTreeSet<String> = [1, 2, 3, 4, 10, 11, 12, 13, 14]
        .iter()
        .map(|i| format!("p-{i}"))
        .collect();
    assert_eq!(keys, expected, "{}", service.log());
    assert_eq!(records.len(), 9);

    let dlq = read_all(&stack.broker, "dlq.ingest", 3, Duration::from_secs(60))?;
    assert_eq!(dlq.len(), 3, "{dlq:?}\n{}", service.log());
    let letter = |file: &str| {
        dlq.iter()
            .find(|r| r.headers["tributary.source.topic"].ends_with(file))
            .map(|r| {
                assert_eq!(r.headers["tributary.error.class"], "file_limit", "{r:?}");
                (
                    r.headers["tributary.source.offset"].clone(),
                    r.headers["tributary.error.message"].clone(),
                )
            })
            .unwrap_or_default()
    };
    let (line, message) = letter("products-a.csv");
    assert_eq!(line, "5", "{message}");
    assert!(
        message.contains("products-a.csv line 5: line of ")
            && message.contains("is over max_line_bytes (200); skipped"),
        "{message}"
    );
    let (line, message) = letter("products-b.csv");
    assert_eq!(line, "7", "{message}");
    assert!(
        message.contains("products-b.csv line 7: over max_rows_per_file (5)"),
        "{message}"
    );
    let (line, message) = letter("products-c.csv");
    assert_eq!(line, "-1", "the whole file: {message}");
    assert!(
        message.contains(&format!(
            "products-c.csv: object of {} bytes is over max_object_bytes (4096)",
            c.len()
        )),
        "{message}"
    );
    let log = service.log();
    for warning in ["file line refused", "rest of file refused", "file refused"] {
        assert!(log.contains(warning), "{warning}: {log}");
    }

    // Recorded as done: later polls refuse nothing again. The service goes on.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        read_to_end(&stack.broker, "dlq.ingest", Duration::from_secs(30))?.len(),
        3
    );
    assert!(service.is_running(), "{}", service.log());
    std::fs::write(
        landing.path().join("products-d.csv"),
        format!("{HEADER}{}{}", csv_row(20), csv_row(21)),
    )?;
    let n = wait_records(&stack, "files.products", 11, &service)
        .await?
        .len();
    assert_eq!(n, 11);
    assert!(service.stop()?, "{}", service.log());
    Ok(())
}
