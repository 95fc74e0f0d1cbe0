//! Parquet written through the lake to `file://` and to `s3://` (moto on loopback) reads back equal.

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{
    ArrayRef, Decimal128Array, Float64Array, Int64Array, ListArray, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Fields, Int64Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use tributary_core::lake::{Created, Lake, LakeConfig};
use tributary_integration_tests::{S3, unique};

fn sample_batch(rows: usize) -> Result<RecordBatch> {
    let page = Fields::from(vec![
        Field::new("url", DataType::Utf8, false),
        Field::new("referrer", DataType::Utf8, true),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("offset", DataType::Int64, false),
        Field::new("user", DataType::Utf8, false),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        ),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("score", DataType::Float64, true),
        Field::new("page", DataType::Struct(page.clone()), false),
        Field::new("tags", DataType::new_list(DataType::Int64, true), true),
    ]));
    let n = rows as i64;
    let urls: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| format!("https://shop.test/p/{i}")),
    ));
    let referrers: ArrayRef = Arc::new(StringArray::from_iter(
        (0..n).map(|i| (i % 3 == 0).then(|| "search".to_string())),
    ));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n)),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("user-{}", i % 97)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n).map(|i| 1_700_000_000_000_000 + i))
                .with_timezone("+00:00"),
        ),
        Arc::new(
            Decimal128Array::from_iter((0..n).map(|i| (i % 5 != 0).then_some(i128::from(i) * 101)))
                .with_precision_and_scale(12, 2)?,
        ),
        Arc::new(Float64Array::from_iter(
            (0..n).map(|i| (i % 7 != 0).then_some(i as f64 / 3.0)),
        )),
        Arc::new(StructArray::new(page, vec![urls, referrers], None)),
        Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            (0..n).map(|i| (i % 4 != 0).then(|| (0..i % 5).map(Some).collect::<Vec<_>>())),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

async fn round_trip(lake: &Lake) -> Result<()> {
    let batch = sample_batch(50_000)?;
    let path = lake.path(&format!(
        "{}/dt=2026-11-28/hr=23/part+0+0.parquet",
        unique("topic")
    ));
    let mut sink = lake.parquet_writer(
        path.clone(),
        batch.schema(),
        WriterProperties::builder().build(),
    )?;
    for start in (0..batch.num_rows()).step_by(10_000) {
        sink.write(&batch.slice(start, 10_000)).await?;
    }
    let metadata = sink.close().await?;
    assert_eq!(metadata.file_metadata().num_rows(), 50_000);

    let bytes = lake.store().get(&path).await?.bytes().await?;
    let read = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .build()?
        .collect::<Result<Vec<_>, _>>()?;
    let read = arrow::compute::concat_batches(&batch.schema(), &read)?;
    assert_eq!(read, batch);
    Ok(())
}

#[tokio::test]
async fn parquet_round_trip_on_the_local_filesystem() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}/lake", dir.path().display());
    let lake = Lake::open(&LakeConfig::new(url))?;
    round_trip(&lake).await?;
    // The object is a real file under the root.
    let files: Vec<_> = walk(&dir.path().join("lake"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with("part+0+0.parquet"));
    Ok(())
}

#[tokio::test]
async fn parquet_round_trip_on_s3() -> Result<()> {
    let s3 = S3::start().await?;
    let lake = Lake::open(&s3.lake("archive"))?;
    round_trip(&lake).await
}

#[tokio::test]
async fn memory_lake_round_trip() -> Result<()> {
    round_trip(&Lake::open(&LakeConfig::new("memory://"))?).await
}

/// `create_parquet` writes a file once; a second file at the same key is refused and the first
/// stays as it was, byte for byte.
async fn create_never_replaces(lake: &Lake) -> Result<()> {
    let first = sample_batch(1_000)?;
    let second = sample_batch(10)?;
    let path = lake.path(&format!("{}/part+0+0.parquet", unique("topic")));
    let properties = WriterProperties::builder().build();
    let created = lake
        .create_parquet(
            &path,
            first.schema(),
            properties.clone(),
            std::slice::from_ref(&first),
        )
        .await?;
    let Created::Written(size) = created else {
        anyhow::bail!("the first file was not written: {created:?}");
    };
    let stored = lake.store().get(&path).await?.bytes().await?;
    assert_eq!(stored.len() as u64, size);
    let again = lake
        .create_parquet(&path, second.schema(), properties, &[second])
        .await?;
    assert_eq!(again, Created::AlreadyExists);
    let after = lake.store().get(&path).await?.bytes().await?;
    assert_eq!(after, stored, "the file at the key was replaced");
    let read = ParquetRecordBatchReaderBuilder::try_new(after)?
        .build()?
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(
        arrow::compute::concat_batches(&first.schema(), &read)?,
        first
    );
    Ok(())
}

#[tokio::test]
async fn a_created_file_is_never_replaced_on_the_local_filesystem() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}/lake", dir.path().display());
    create_never_replaces(&Lake::open(&LakeConfig::new(url))?).await
}

#[tokio::test]
async fn a_created_file_is_never_replaced_on_s3() -> Result<()> {
    let s3 = S3::start().await?;
    create_never_replaces(&Lake::open(&s3.lake("archive"))?).await
}

#[tokio::test]
async fn a_created_file_is_never_replaced_in_memory() -> Result<()> {
    create_never_replaces(&Lake::open(&LakeConfig::new("memory://"))?).await
}

#[test]
fn bad_lake_urls_are_clear_errors() {
    for url in ["not a url", "ftp://x/y", "file://relative"] {
        let err = Lake::open(&LakeConfig::new(url))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("invalid lake url"), "{url}: {err}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path))
        } else {
            out.push(path)
        }
    }
    out
}
