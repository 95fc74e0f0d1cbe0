//! JSON -> Avro validation.
