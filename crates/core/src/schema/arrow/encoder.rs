//! The batch encoder: a Confluent-framed Avro payload per row of a record batch.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow_avro::schema::{FingerprintStrategy, SCHEMA_METADATA_KEY};
use arrow_avro::writer::format::AvroSoeFormat;
use arrow_avro::writer::{Encoder, WriterBuilder};
use bytes::Bytes;

use super::error::CodecError;

/// Arrow field metadata key carrying an Avro logical type.
const LOGICAL_TYPE_KEY: &str = "logicalType";

/// Arrow field metadata key carrying the name of a named Avro type (record, enum, fixed).
const AVRO_NAME_KEY: &str = "avro.name";

/// Encodes Arrow record batches to Confluent-framed Avro payloads, one per row.
///
/// The registered Avro schema is written verbatim (`arrow-avro` takes it from the
/// `avro.schema` metadata of the Arrow schema), so the bytes match what other Avro writers
/// produce for that schema. Batches must have the Arrow schema given to [`Self::new`] (e.g. from
/// [`arrow_schema_for`], or the schema of batches decoded with the same writer schema); field
/// metadata and nested field names may differ.
///
/// Workaround: `arrow-avro` 59.3 writes any `FixedSizeBinary(16)` field with
/// `logicalType=uuid` metadata as a uuid string. For Avro `fixed(16)` uuids (recognised by the
/// `avro.name` metadata only named types carry) the metadata is dropped from the encoder's
/// schema, so they are written as 16 raw bytes as the schema says.
///
/// [`arrow_schema_for`]: super::arrow_schema_for
#[derive(Debug)]
pub struct AvroBatchEncoder {
    schema_id: u32,
    schema: SchemaRef,
    encoder: Encoder,
}

impl AvroBatchEncoder {
    /// `schema_json` is the registered Avro schema for `schema_id`; it is attached to the Arrow
    /// schema (`avro.schema` metadata) so the encoder writes exactly that schema.
    pub fn new(
        schema_id: u32,
        schema_json: &str,
        arrow_schema: SchemaRef,
    ) -> Result<Self, CodecError> {
        let mut metadata = arrow_schema.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_owned(), schema_json.to_owned());
        let fields: Fields = arrow_schema
            .fields()
            .iter()
            .map(|f| Arc::new(without_fixed_uuid_marker(f)))
            .collect();
        let schema = Schema::new_with_metadata(fields, metadata);
        let encoder = WriterBuilder::new(schema)
            .with_fingerprint_strategy(FingerprintStrategy::Id(schema_id))
            .build_encoder::<AvroSoeFormat>()
            .map_err(|e| CodecError::Schema(e.to_string()))?;
        Ok(Self {
            schema_id,
            schema: encoder.schema(),
            encoder,
        })
    }

    /// The registry id written in front of every payload.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// Encodes every row of `batch` to one Confluent-framed payload, in row order.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Bytes>, CodecError> {
        let rebound;
        let batch = if batch.schema().fields() == self.schema.fields() {
            batch
        } else {
            rebound = self.rebind(batch)?;
            &rebound
        };
        if let Err(error) = self.encoder.encode(batch) {
            // Drop whatever part of the batch was written.
            let _ = self.encoder.flush();
            return Err(CodecError::Avro(error.to_string()));
        }
        let rows = self.encoder.flush();
        if rows.len() != batch.num_rows() {
            return Err(CodecError::Avro(format!(
                "encoded {} payloads for {} rows",
                rows.len(),
                batch.num_rows()
            )));
        }
        Ok(rows.iter().collect())
    }

    /// Gives a batch whose fields differ from the encoder's only in metadata or nested field
    /// names the encoder's schema.
    fn rebind(&self, batch: &RecordBatch) -> Result<RecordBatch, CodecError> {
        let expected = self.schema.fields();
        let found = batch.schema();
        let compatible = expected.len() == found.fields().len()
            && expected.iter().zip(found.fields()).all(|(e, f)| {
                e.name() == f.name()
                    && e.is_nullable() == f.is_nullable()
                    && e.data_type().equals_datatype(f.data_type())
            });
        if !compatible {
            return Err(CodecError::Arrow(format!(
                "batch schema {found} does not match the encoder schema {}",
                self.schema
            )));
        }
        let options = RecordBatchOptions::new()
            .with_match_field_names(false)
            .with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(self.schema.clone(), batch.columns().to_vec(), &options)
            .map_err(|e| CodecError::Arrow(e.to_string()))
    }
}

/// Drops `logicalType=uuid` from `FixedSizeBinary(16)` fields that are Avro `fixed` types
/// (which carry `avro.name`), recursively (see [`AvroBatchEncoder`]).
fn without_fixed_uuid_marker(field: &Field) -> Field {
    let data_type = match field.data_type() {
        DataType::FixedSizeBinary(16) => {
            let metadata = field.metadata();
            if metadata.get(LOGICAL_TYPE_KEY).map(String::as_str) == Some("uuid")
                && metadata.contains_key(AVRO_NAME_KEY)
            {
                let mut metadata = metadata.clone();
                metadata.remove(LOGICAL_TYPE_KEY);
                return field.clone().with_metadata(metadata);
            }
            return field.clone();
        }
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Arc::new(without_fixed_uuid_marker(f)))
                .collect(),
        ),
        DataType::List(item) => DataType::List(Arc::new(without_fixed_uuid_marker(item))),
        DataType::LargeList(item) => DataType::LargeList(Arc::new(without_fixed_uuid_marker(item))),
        DataType::Map(entries, sorted) => {
            DataType::Map(Arc::new(without_fixed_uuid_marker(entries)), *sorted)
        }
        DataType::Union(fields, mode) => DataType::Union(
            fields
                .iter()
                .map(|(id, f)| (id, Arc::new(without_fixed_uuid_marker(f))))
                .collect(),
            *mode,
        ),
        _ => return field.clone(),
    };
    field.clone().with_data_type(data_type)
}
