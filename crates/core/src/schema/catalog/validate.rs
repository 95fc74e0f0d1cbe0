//! Checks of a topic declaration: its name, its key field and its event time field.

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;

/// Why a topic's `key_field` or `event_time_field` is refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum FieldError {
    /// The value schema has no such field.
    #[error("{field:?} is not a field of the value schema (fields: {})", fields.join(", "))]
    Missing {
        /// The field named.
        field: String,
        /// The value schema's fields.
        fields: Vec<String>,
    },
    /// An `event_time_field` that is neither a timestamp nor a long.
    #[error("{field:?} must be a timestamp or long, not {schema:?}")]
    NotTime {
        /// The field named.
        field: String,
        /// Its (non-null) schema.
        schema: Box<Schema>,
    },
    /// A `key_field` of a type keys cannot have.
    #[error("{field:?} must be a string, int, long, uuid or bytes, not {schema:?}")]
    NotKey {
        /// The field named.
        field: String,
        /// Its (non-null) schema.
        schema: Box<Schema>,
    },
}

/// A topic name Kafka refuses.
#[derive(Debug, thiserror::Error)]
#[error("invalid topic name {0:?}: use 1 to 249 characters of a-z A-Z 0-9 . _ -")]
pub(super) struct TopicNameError(String);

pub(super) fn check_field(
    record: &RecordSchema,
    field: &str,
    is_time: bool,
) -> Result<(), FieldError> {
    let Some(f) = record.fields.iter().find(|f| f.name == field) else {
        return Err(FieldError::Missing {
            field: field.to_string(),
            fields: record.fields.iter().map(|f| f.name.clone()).collect(),
        });
    };
    // A nullable field counts as its non-null type, whichever order the union lists them in.
    let schema = match &f.schema {
        Schema::Union(u) if u.is_nullable() && u.variants().len() == 2 => u
            .variants()
            .iter()
            .find(|v| !matches!(v, Schema::Null))
            .unwrap_or(&f.schema),
        other => other,
    };
    let ok = if is_time {
        matches!(
            schema,
            Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::Long
        )
    } else {
        matches!(
            schema,
            Schema::String | Schema::Int | Schema::Long | Schema::Uuid | Schema::Bytes
        )
    };
    let (field, schema) = (field.to_string(), Box::new(schema.clone()));
    if ok {
        Ok(())
    } else if is_time {
        Err(FieldError::NotTime { field, schema })
    } else {
        Err(FieldError::NotKey { field, schema })
    }
}

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub(super) fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    let legal = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 249 || !legal || name == "." || name == ".." {
        return Err(TopicNameError(name.to_string()));
    }
    Ok(())
}
