//! Fits Arrow batches (what a transform's SQL produced, the rows of a file) to a topic's Arrow
//! schema: columns by name, in the schema's order, cast where the types differ, strings mapped
//! onto enum symbols. Values that do not fit (a null in a required field, a string that is no
//! symbol of the enum, a cast that fails) are reported per row, so exactly those records can be
//! dead-lettered.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Decimal128Array, DictionaryArray, Int32Array, RecordBatch, StringArray,
};
use arrow::compute::{CastOptions, can_cast_types, cast, cast_with_options};
use arrow::datatypes::{DataType, Field, Int32Type, SchemaRef};

/// Field metadata arrow-avro gives an enum: its symbols as a JSON array.
const ENUM_SYMBOLS_KEY: &str = "avro.enum.symbols";

/// How one output field is made from the SQL's columns.
#[derive(Debug, Clone)]
enum Plan {
    /// The column as it is.
    Same(usize),
    /// The column cast to the field's type.
    Cast(usize),
    /// The column as text, mapped onto the enum's symbols.
    Enum(usize, Arc<Vec<String>>),
    /// Text parsed as a decimal the way JSON events are (`json::decimal128_from_text`): never
    /// rounded, any exponent checked. Arrow's own text-to-decimal parsers round or truncate
    /// extra digits, and one overflows on large exponents (docs/security.md#fuzzing).
    Decimal(usize),
}

/// The mapping from the SQL's output to the output schema, checked once at start-up.
#[derive(Debug, Clone)]
pub struct Conformer {
    target: SchemaRef,
    plans: Vec<Plan>,
}

/// Rows of a batch that do not fit the output schema, with why.
pub type RowErrors = Vec<(usize, String)>;

/// Why a produced schema cannot become the output schema ([`Conformer::new`]): every problem
/// found, displayed joined by `; `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join(.problems))]
pub struct ConformError {
    /// The problems, the target's fields first (in its order), then the extra columns.
    pub problems: Vec<ConformProblem>,
}

fn join(problems: &[ConformProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One reason a produced schema cannot become the output schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConformProblem {
    /// No column for a field of the output schema.
    #[error("no column {field} ({data_type})")]
    NoColumn {
        /// The field.
        field: String,
        /// Its type.
        data_type: DataType,
    },
    /// A column that cannot become the enum of its field (it does not cast to text).
    #[error("column {column} is {produced}, which cannot become the enum {target}")]
    NotEnum {
        /// The column.
        column: String,
        /// Its type.
        produced: DataType,
        /// The field's (dictionary) type.
        target: DataType,
    },
    /// A column whose type does not cast to its field's.
    #[error("column {column} is {produced}, which cannot be cast to {target}")]
    NoCast {
        /// The column.
        column: String,
        /// Its type.
        produced: DataType,
        /// The field's type.
        target: DataType,
    },
    /// A column the output schema has no field for.
    #[error("column {column} is not a field of the output schema")]
    Extra {
        /// The column.
        column: String,
    },
}

/// Why a key column cannot be written as message keys ([`key_text`]).
#[derive(Debug, thiserror::Error)]
pub enum KeyTextError {
    /// The column does not cast to text.
    #[error(transparent)]
    Cast(#[from] arrow::error::ArrowError),
    /// The cast gave something other than a string array.
    #[error("key cast to text")]
    NotText,
}

impl Conformer {
    /// Checks that `produced` (the SQL's output schema) can become `target`: every field
    /// present by name, of a type that casts, and no column the target has no field for. The
    /// error lists every problem.
    pub fn new(
        produced: &arrow::datatypes::Schema,
        target: SchemaRef,
    ) -> Result<Self, ConformError> {
        let mut problems = Vec::new();
        let mut plans = Vec::new();
        for field in target.fields() {
            let Ok(index) = produced.index_of(field.name()) else {
                problems.push(ConformProblem::NoColumn {
                    field: field.name().clone(),
                    data_type: field.data_type().clone(),
                });
                continue;
            };
            let source = produced.field(index).data_type();
            if let Some(symbols) = enum_symbols(field) {
                if can_cast_types(source, &DataType::Utf8) {
                    plans.push(Plan::Enum(index, Arc::new(symbols)));
                } else {
                    problems.push(ConformProblem::NotEnum {
                        column: field.name().clone(),
                        produced: source.clone(),
                        target: field.data_type().clone(),
                    });
                }
            } else if source.equals_datatype(field.data_type()) {
                plans.push(Plan::Same(index));
            } else if matches!(field.data_type(), DataType::Decimal128(_, _))
                && matches!(
                    source,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            {
                plans.push(Plan::Decimal(index));
            } else if can_cast_types(source, field.data_type()) {
                plans.push(Plan::Cast(index));
            } else {
                problems.push(ConformProblem::NoCast {
                    column: field.name().clone(),
                    produced: source.clone(),
                    target: field.data_type().clone(),
                });
            }
        }
        for field in produced.fields() {
            if target.field_with_name(field.name()).is_err() {
                problems.push(ConformProblem::Extra {
                    column: field.name().clone(),
                });
            }
        }
        if problems.is_empty() {
            Ok(Self { target, plans })
        } else {
            Err(ConformError { problems })
        }
    }

    /// The batch in the output schema, or the rows that cannot be in it.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, RowErrors> {
        let rows = batch.num_rows();
        let mut errors: HashMap<usize, String> = HashMap::new();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.plans.len());
        for (field, plan) in self.target.fields().iter().zip(&self.plans) {
            let column = match plan {
                Plan::Same(i) => batch.column(*i).clone(),
                Plan::Cast(i) => cast_column(batch.column(*i), field, &mut errors),
                Plan::Enum(i, symbols) => {
                    enum_column(batch.column(*i), field, symbols, &mut errors)
                }
                Plan::Decimal(i) => decimal_column(batch.column(*i), field, &mut errors),
            };
            if !field.is_nullable() && column.null_count() > 0 {
                for row in 0..rows {
                    if column.is_null(row) {
                        errors.entry(row).or_insert_with(|| {
                            format!(
                                "field {} is null but the output schema requires a value",
                                field.name()
                            )
                        });
                    }
                }
            }
            columns.push(column);
        }
        if !errors.is_empty() {
            let mut errors: RowErrors = errors.into_iter().collect();
            errors.sort_by_key(|(row, _)| *row);
            return Err(errors);
        }
        RecordBatch::try_new(self.target.clone(), columns).map_err(|e| vec![(0, e.to_string())])
    }
}

/// A key column as text bytes, as message keys are written (null stays no key). Binary uuids
/// (`FixedSizeBinary(16)`) are written in their canonical text form, as the Avro uuid string.
pub fn key_text(column: &ArrayRef) -> Result<Vec<Option<Vec<u8>>>, KeyTextError> {
    if let Some(uuids) = column
        .as_any()
        .downcast_ref::<arrow::array::FixedSizeBinaryArray>()
        .filter(|a| a.value_length() == 16)
    {
        return Ok(uuids
            .iter()
            .map(|v| v.map(|b| format_uuid(b).into_bytes()))
            .collect());
    }
    let text = cast(column, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or(KeyTextError::NotText)?;
    Ok(text
        .iter()
        .map(|v| v.map(|s| s.as_bytes().to_vec()))
        .collect())
}

fn format_uuid(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn enum_symbols(field: &Field) -> Option<Vec<String>> {
    let is_dictionary = matches!(field.data_type(), DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8);
    let symbols = field.metadata().get(ENUM_SYMBOLS_KEY)?;
    if !is_dictionary {
        return None;
    }
    serde_json::from_str(symbols).ok()
}

/// Every row's error when a whole column cannot become the field (`e` says why): a column of
/// nulls in its place.
fn column_fails(
    column: &ArrayRef,
    field: &Field,
    e: &dyn std::fmt::Display,
    errors: &mut HashMap<usize, String>,
) -> ArrayRef {
    for row in 0..column.len() {
        errors
            .entry(row)
            .or_insert_with(|| format!("field {}: {e}", field.name()));
    }
    arrow::array::new_null_array(field.data_type(), column.len())
}

/// Casts; a non-null value that became null did not fit.
fn cast_column(column: &ArrayRef, field: &Field, errors: &mut HashMap<usize, String>) -> ArrayRef {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    match cast_with_options(column, field.data_type(), &options) {
        Ok(cast) => {
            for row in 0..column.len() {
                if column.is_valid(row) && cast.is_null(row) {
                    errors.entry(row).or_insert_with(|| {
                        format!(
                            "field {}: the value does not fit {}",
                            field.name(),
                            field.data_type()
                        )
                    });
                }
            }
            cast
        }
        Err(e) => column_fails(column, field, &e, errors),
    }
}

/// Text parsed as decimals of the field's precision and scale; text that is no such decimal is
/// an error of its row.
fn decimal_column(
    column: &ArrayRef,
    field: &Field,
    errors: &mut HashMap<usize, String>,
) -> ArrayRef {
    let DataType::Decimal128(precision, scale) = *field.data_type() else {
        return arrow::array::new_null_array(field.data_type(), column.len());
    };
    let text = match cast(column, &DataType::Utf8) {
        Ok(text) => text,
        Err(e) => {
            return column_fails(column, field, &e, errors);
        }
    };
    let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
        return arrow::array::new_null_array(field.data_type(), column.len());
    };
    let values: Decimal128Array = text
        .iter()
        .enumerate()
        .map(|(row, value)| {
            let value = value?;
            match super::json::decimal128_from_text(value, precision, scale) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors
                        .entry(row)
                        .or_insert_with(|| format!("field {}: {e}", field.name()));
                    None
                }
            }
        })
        .collect();
    match values.with_precision_and_scale(precision, scale) {
        Ok(values) => Arc::new(values),
        Err(e) => column_fails(column, field, &e, errors),
    }
}

/// Text mapped onto the symbols; text that is no symbol is an error of its row.
fn enum_column(
    column: &ArrayRef,
    field: &Field,
    symbols: &Arc<Vec<String>>,
    errors: &mut HashMap<usize, String>,
) -> ArrayRef {
    let index: HashMap<&str, i32> = symbols
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((s.as_str(), i32::try_from(i).ok()?)))
        .collect();
    let text = match cast(column, &DataType::Utf8) {
        Ok(t) => t,
        Err(e) => {
            return column_fails(column, field, &e, errors);
        }
    };
    let keys: Int32Array = match text.as_any().downcast_ref::<StringArray>() {
        Some(strings) => strings
            .iter()
            .enumerate()
            .map(|(row, s)| {
                let s = s?;
                let key = index.get(s).copied();
                if key.is_none() {
                    errors.entry(row).or_insert_with(|| {
                        format!(
                            "field {}: {s:?} is not one of the enum's symbols {symbols:?}",
                            field.name()
                        )
                    });
                }
                key
            })
            .collect(),
        None => Int32Array::new_null(column.len()),
    };
    let values: ArrayRef = Arc::new(StringArray::from_iter_values(symbols.iter()));
    match DictionaryArray::<Int32Type>::try_new(keys, values) {
        Ok(d) => Arc::new(d),
        Err(e) => column_fails(column, field, &e, errors),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Schema;
    use std::collections::HashMap as Map;

    fn enum_field(name: &str, symbols: &[&str]) -> Field {
        let metadata = Map::from([(
            ENUM_SYMBOLS_KEY.to_string(),
            serde_json::to_string(symbols).unwrap(),
        )]);
        Field::new(
            name,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        )
        .with_metadata(metadata)
    }

    fn target() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            enum_field("status", &["paid", "other"]),
            Field::new("note", DataType::Utf8, true),
        ]))
    }

    fn produced(ids: Vec<Option<&str>>, statuses: Vec<&str>) -> RecordBatch {
        let n = ids.len();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("note", DataType::Utf8, true),
                Field::new("status", DataType::Utf8, false),
                Field::new("id", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some("x"); n])),
                Arc::new(StringArray::from(statuses)),
                Arc::new(StringArray::from(ids)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn columns_are_reordered_cast_and_mapped_onto_enum_symbols() {
        let batch = produced(vec![Some("1"), Some("2")], vec!["other", "paid"]);
        let conformer = Conformer::new(&batch.schema(), target()).unwrap();
        let out = conformer.apply(&batch).unwrap();
        assert_eq!(out.schema(), target());
        let ids = out.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values(), &[1, 2]);
        let status = out
            .column(1)
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .unwrap();
        assert_eq!(status.keys().values(), &[1, 0]);
    }

    #[test]
    fn rows_that_do_not_fit_are_named_with_the_field() {
        let batch = produced(
            vec![Some("1"), Some("x"), None],
            vec!["paid", "paid", "lost"],
        );
        let conformer = Conformer::new(&batch.schema(), target()).unwrap();
        let errors = conformer.apply(&batch).unwrap_err();
        let rows: Vec<usize> = errors.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![1, 2]);
        assert!(errors[0].1.contains("field id"), "{errors:?}");
        assert!(
            errors[1].1.contains("field id") || errors[1].1.contains("lost"),
            "{errors:?}"
        );
        assert!(conformer.apply(&batch.slice(0, 1)).is_ok());
    }

    /// Decimal text is parsed as JSON events' decimals are: exactly, or refused. Arrow's parser
    /// overflows on `1e40000` (a panic in debug builds, a wrapped value in release: found by
    /// AFL++ on the file-rows target) and rounds or truncates extra fractional digits.
    #[test]
    fn decimal_text_is_exact_or_a_row_error_never_rounded_or_wrapped() {
        let target = Arc::new(Schema::new(vec![Field::new(
            "price",
            DataType::Decimal128(10, 2),
            true,
        )]));
        let text = [
            Some("12.34"),
            Some(" -0.5 "),
            Some("1e3"),
            Some("1234E-2"),
            None,
            Some("12341e40099"),
            Some("1e40000"),
            Some("1.005"),
            Some("123456789.00"),
            Some("12,5"),
            Some(""),
            Some("1e-99999999999"),
        ];
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("price", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(text.to_vec()))],
        )
        .unwrap();
        let conformer = Conformer::new(&batch.schema(), target).unwrap();
        let errors = conformer.apply(&batch).unwrap_err();
        let rows: Vec<usize> = errors.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![5, 6, 7, 8, 9, 10, 11], "{errors:?}");
        assert!(
            errors.iter().all(|(_, e)| e.starts_with("field price: ")),
            "{errors:?}"
        );
        assert!(
            errors[2].1.contains("more than 2 fractional digits"),
            "{errors:?}"
        );
        let good = conformer.apply(&batch.slice(0, 5)).unwrap();
        let prices = good
            .column(0)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        let values: Vec<Option<i128>> = prices.iter().collect();
        assert_eq!(
            values,
            vec![Some(1234), Some(-50), Some(100_000), Some(1234), None]
        );
    }

    #[test]
    fn a_schema_mismatch_lists_every_problem() {
        let produced = Schema::new(vec![
            Field::new("id", DataType::Binary, false),
            Field::new("extra", DataType::Utf8, true),
        ]);
        let error = Conformer::new(&produced, target()).unwrap_err();
        assert_eq!(error.problems.len(), 4, "{error}");
        assert!(
            matches!(&error.problems[3], ConformProblem::Extra { column } if column == "extra")
        );
        let error = error.to_string();
        assert!(error.contains("no column status"), "{error}");
        assert!(error.contains("column id is Binary"), "{error}");
        assert!(error.contains("column extra is not a field"), "{error}");
        assert_eq!(error.matches("; ").count(), 3, "{error}");
    }
}
