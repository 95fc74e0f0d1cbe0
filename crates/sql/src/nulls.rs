//! A field of a null record is null.
//!
//! Arrow keeps a struct's children with their own validity: where a record is null (the
//! `after` of a deleted row, a lookup that found nothing), its fields hold placeholder values,
//! `0` and `""`. DataFusion's field access (`after['status']`, `get_field`) returns the child as
//! it is (apache/datafusion#25120), so SQL would read `""` where the record is null. The batches
//! of [`crate::InputTable`] therefore get their struct nulls pushed down into the fields before
//! any SQL runs, and every field below a nullable struct is declared nullable.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StructArray, make_array};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields};

/// `field` with every field below a nullable struct nullable.
pub fn relax(field: &Field) -> Field {
    relax_below(field, false)
}

fn relax_below(field: &Field, parent_nullable: bool) -> Field {
    let nullable = field.is_nullable() || parent_nullable;
    let data_type = match field.data_type() {
        DataType::Struct(children) => DataType::Struct(relax_fields(children, nullable)),
        other => other.clone(),
    };
    field
        .clone()
        .with_nullable(nullable)
        .with_data_type(data_type)
}

fn relax_fields(children: &Fields, parent_nullable: bool) -> Fields {
    children
        .iter()
        .map(|c| Arc::new(relax_below(c, parent_nullable)))
        .collect()
}

/// `array` (of `field`, before [`relax`]) with the nulls of each struct pushed into its
/// fields, typed as [`relax`] says.
pub fn push_down(array: &ArrayRef, field: &Field) -> Result<ArrayRef, arrow::error::ArrowError> {
    push(array, &relax(field), None)
}

fn push(
    array: &ArrayRef,
    relaxed: &Field,
    inherited: Option<&NullBuffer>,
) -> Result<ArrayRef, arrow::error::ArrowError> {
    let inherited = inherited.filter(|n| n.null_count() > 0);
    match (array.data_type(), relaxed.data_type()) {
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let s = array.as_struct();
            let nulls = NullBuffer::union(inherited, s.nulls());
            let children = s
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(c, f)| push(c, f, nulls.as_ref()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                nulls,
            )?))
        }
        // These types have no validity buffer of their own.
        (DataType::Null | DataType::Union(..) | DataType::RunEndEncoded(..), _) => {
            Ok(array.clone())
        }
        _ => match inherited {
            None => Ok(array.clone()),
            Some(parent) => {
                let nulls = NullBuffer::union(Some(parent), array.nulls());
                Ok(make_array(
                    array.to_data().into_builder().nulls(nulls).build()?,
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn fields_of_a_null_record_are_null() {
        let inner_fields = Fields::from(vec![
            Field::new("status", DataType::Utf8, false),
            Field::new("total", DataType::Int64, false),
        ]);
        let inner = StructArray::try_new(
            inner_fields.clone(),
            vec![
                Arc::new(StringArray::from(vec!["paid", ""])),
                Arc::new(Int64Array::from(vec![5, 0])),
            ],
            Some(NullBuffer::from(vec![true, false])),
        )
        .unwrap();
        let field = Field::new("after", DataType::Struct(inner_fields), true);
        let pushed = push_down(&(Arc::new(inner) as ArrayRef), &field).unwrap();
        assert_eq!(pushed.data_type(), relax(&field).data_type());
        let s = pushed.as_struct();
        assert!(s.is_null(1));
        for child in s.columns() {
            assert!(child.is_valid(0) && child.is_null(1), "{child:?}");
        }
        let DataType::Struct(relaxed) = relax(&field).data_type().clone() else {
            panic!("not a struct")
        };
        assert!(relaxed.iter().all(|f| f.is_nullable()));
    }

    #[test]
    fn a_struct_without_nulls_is_kept_as_it_is() {
        let fields = Fields::from(vec![Field::new("id", DataType::Int64, false)]);
        let array: ArrayRef = Arc::new(
            StructArray::try_new(
                fields.clone(),
                vec![Arc::new(Int64Array::from(vec![1, 2]))],
                None,
            )
            .unwrap(),
        );
        let field = Field::new("row", DataType::Struct(fields), false);
        let pushed = push_down(&array, &field).unwrap();
        assert_eq!(pushed.data_type(), field.data_type());
        assert_eq!(pushed.as_struct().column(0).null_count(), 0);
    }
}
