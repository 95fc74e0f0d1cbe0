//! Avro <-> Arrow conversion in batches.
