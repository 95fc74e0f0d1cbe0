//! The output: an emitted window encoded in the output topic's Avro schema.

use anyhow::{Context, bail};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use tributary_core::bus::OutboundRecord;
use tributary_core::schema::wire;

use super::View;
use super::state::WindowState;
use crate::agg::Scalar;

impl View {
    /// The output record of the window of `entity` that starts at `start`.
    pub(super) fn output_record(
        &self,
        entity: &str,
        start: i64,
        w: &WindowState,
    ) -> anyhow::Result<OutboundRecord> {
        let Schema::Record(record) = &self.output_schema else {
            bail!("the output schema is not a record");
        };
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            let scalar = match field.name.as_str() {
                "window_start" => Scalar::Number(start as f64),
                "window_end" => Scalar::Number(w.end as f64),
                n if n == self.key_field => Scalar::Text(entity.to_string()),
                n => {
                    let i = self
                        .aggs
                        .iter()
                        .position(|a| a.name == n)
                        .with_context(|| format!("no aggregation for field {n}"))?;
                    w.aggs[i].result(self.aggs[i].quantile)
                }
            };
            fields.push((field.name.clone(), to_avro(&field.schema, &scalar)?));
        }
        let body = apache_avro::to_avro_datum(&self.output_schema, Avro::Record(fields))?;
        Ok(OutboundRecord::new(
            self.output_topic.clone(),
            Some(entity.as_bytes().to_vec()),
            wire::frame(self.output_id, &body),
        ))
    }
}

/// A result as the Avro type of its output field. A text that is no number, in a number
/// field, counts as a null; a null where the field takes none becomes 0 (or "").
fn to_avro(schema: &Schema, value: &Scalar) -> anyhow::Result<Avro> {
    if let Schema::Union(union) = schema {
        let null = union
            .variants()
            .iter()
            .position(|v| matches!(v, Schema::Null));
        let other = union
            .variants()
            .iter()
            .position(|v| !matches!(v, Schema::Null));
        let absent = match other {
            Some(o) => lacks_value(&union.variants()[o], value),
            None => *value == Scalar::Null,
        };
        return match (absent, null, other) {
            (true, Some(n), _) => Ok(Avro::Union(u32::try_from(n)?, Box::new(Avro::Null))),
            (_, _, Some(o)) => Ok(Avro::Union(
                u32::try_from(o)?,
                Box::new(to_avro(&union.variants()[o], value)?),
            )),
            _ => bail!("unsupported union {schema:?}"),
        };
    }
    let number = match value {
        Scalar::Number(x) => *x,
        Scalar::Null => 0.0,
        Scalar::Text(t) => t.parse().unwrap_or(0.0),
    };
    // NaN and infinities have no integer: written as a null is (0 where the field takes none),
    // never as the saturated i64::MAX that a cast would give.
    let number = match schema {
        Schema::Long | Schema::Int | Schema::TimestampMillis | Schema::TimestampMicros
            if !number.is_finite() =>
        {
            0.0
        }
        _ => number,
    };
    Ok(match schema {
        Schema::Long => Avro::Long(number.round() as i64),
        Schema::Int => Avro::Int(number.round() as i32),
        Schema::Double => Avro::Double(number),
        Schema::Float => Avro::Float(number as f32),
        Schema::TimestampMillis => Avro::TimestampMillis(number as i64),
        Schema::TimestampMicros => Avro::TimestampMicros((number as i64).saturating_mul(1000)),
        Schema::String => Avro::String(match value {
            Scalar::Text(t) => t.clone(),
            Scalar::Number(x) => format!("{x}"),
            Scalar::Null => String::new(),
        }),
        Schema::Boolean => Avro::Boolean(number != 0.0),
        other => bail!("output fields of type {other:?} are not supported"),
    })
}

/// Whether `value` has no value for a field of type `schema`: it is null, a text that is no
/// number where [`to_avro`] writes a number, or a number that is not finite (NaN, infinite)
/// where it writes an integer or a time.
fn lacks_value(schema: &Schema, value: &Scalar) -> bool {
    let integral = matches!(
        schema,
        Schema::Long | Schema::Int | Schema::TimestampMillis | Schema::TimestampMicros
    );
    match value {
        Scalar::Null => true,
        Scalar::Number(x) => integral && !x.is_finite(),
        Scalar::Text(t) => {
            (integral || matches!(schema, Schema::Double | Schema::Float | Schema::Boolean))
                && t.parse::<f64>().is_err()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use apache_avro::Schema;
    use apache_avro::types::Value as Avro;

    use super::to_avro;
    use crate::agg::Scalar;

    /// A `last` over a text expression written to a nullable number field: a text that is no
    /// number was written as 0, a value no record had; it is null, as a null result is.
    #[test]
    fn text_that_is_no_number_is_null_in_a_nullable_number_field() {
        let text = |t: &str| Scalar::Text(t.to_string());
        let null = Avro::Union(0, Box::new(Avro::Null));
        for schema in [r#"["null", "long"]"#, r#"["null", "double"]"#] {
            let schema = Schema::parse_str(schema).unwrap();
            assert_eq!(to_avro(&schema, &text("buy")).unwrap(), null, "{schema:?}");
            assert_eq!(to_avro(&schema, &text("")).unwrap(), null, "{schema:?}");
            assert_eq!(to_avro(&schema, &Scalar::Null).unwrap(), null, "{schema:?}");
        }
        // Text that is a number, numbers, and text in a text field are written as before.
        let long = Schema::parse_str(r#"["null", "long"]"#).unwrap();
        assert_eq!(
            to_avro(&long, &text("42")).unwrap(),
            Avro::Union(1, Box::new(Avro::Long(42)))
        );
        assert_eq!(
            to_avro(&long, &Scalar::Number(2.6)).unwrap(),
            Avro::Union(1, Box::new(Avro::Long(3)))
        );
        let string = Schema::parse_str(r#"["null", "string"]"#).unwrap();
        assert_eq!(
            to_avro(&string, &text("buy")).unwrap(),
            Avro::Union(1, Box::new(Avro::String("buy".into())))
        );
        // A field that takes no null keeps the documented rule (docs/feature.md): 0.
        let plain = Schema::parse_str(r#""long""#).unwrap();
        assert_eq!(to_avro(&plain, &text("buy")).unwrap(), Avro::Long(0));
        assert_eq!(to_avro(&plain, &Scalar::Null).unwrap(), Avro::Long(0));
    }

    /// An average over no number, or a sum that overflowed to infinity: NaN and infinities
    /// were cast to 0 and i64::MAX in integer fields; they are null, as a null result is.
    #[test]
    fn numbers_that_are_not_finite_are_null_in_integer_fields_and_kept_in_doubles() {
        let null = Avro::Union(0, Box::new(Avro::Null));
        for schema in [r#"["null", "long"]"#, r#"["null", "int"]"#] {
            let schema = Schema::parse_str(schema).unwrap();
            for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                assert_eq!(to_avro(&schema, &Scalar::Number(x)).unwrap(), null, "{x}");
            }
        }
        let plain = Schema::parse_str(r#""long""#).unwrap();
        assert_eq!(
            to_avro(&plain, &Scalar::Number(f64::INFINITY)).unwrap(),
            Avro::Long(0)
        );
        let double = Schema::parse_str(r#"["null", "double"]"#).unwrap();
        assert_eq!(
            to_avro(&double, &Scalar::Number(f64::INFINITY)).unwrap(),
            Avro::Union(1, Box::new(Avro::Double(f64::INFINITY)))
        );
    }
}
