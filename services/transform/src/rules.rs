//! Validation rules as SQL: every rule of a transform becomes one boolean column of a single
//! `SELECT ... FROM input`, true where the record keeps the rule, so checking a batch is one
//! query whatever the number of rules.

use arrow::datatypes::{DataType, Schema};
use tributary_core::schema::transforms::RuleDecl;

/// A rule ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// The declared name.
    pub(crate) name: String,
    /// What the rule asks, for the dead letter's message.
    pub(crate) description: String,
}

/// The query checking every rule (`None` without rules), and the rules in its column order.
pub(crate) fn compile(
    rules: &[RuleDecl],
    input: &Schema,
) -> Result<(Option<String>, Vec<Rule>), String> {
    if rules.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut columns = Vec::new();
    let mut compiled = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let (expression, description) = match (&rule.field, &rule.check) {
            (Some(field), _) => field_rule(rule, field, input)?,
            (None, Some(check)) => (
                format!("COALESCE(({check}), true)"),
                format!("check {check}"),
            ),
            (None, None) => return Err(format!("rule {}: nothing to check", rule.name)),
        };
        columns.push(format!("{expression} AS \"r{i}\""));
        compiled.push(Rule {
            name: rule.name.clone(),
            description,
        });
    }
    Ok((
        Some(format!("SELECT {} FROM input", columns.join(", "))),
        compiled,
    ))
}

fn field_rule(rule: &RuleDecl, field: &str, input: &Schema) -> Result<(String, String), String> {
    let data_type = field_type(input, field).ok_or_else(|| {
        format!(
            "rule {}: {field} is not a column of the input (columns: {})",
            rule.name,
            input
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let column = column_expression(field);
    let text = format!("CAST({column} AS VARCHAR)");
    let mut constraints = Vec::new();
    let mut said = Vec::new();
    if let Some(min) = rule.min {
        constraints.push(format!("CAST({column} AS DOUBLE) >= {min:?}"));
        said.push(format!("at least {min}"));
    }
    if let Some(max) = rule.max {
        constraints.push(format!("CAST({column} AS DOUBLE) <= {max:?}"));
        said.push(format!("at most {max}"));
    }
    if let Some(pattern) = &rule.pattern {
        regex_syntax_check(pattern)
            .map_err(|e| format!("rule {}: pattern {pattern:?}: {e}", rule.name))?;
        constraints.push(format!(
            "regexp_like({text}, {})",
            literal(&format!("^(?:{pattern})$"))
        ));
        said.push(format!("matching {pattern:?}"));
    }
    if let Some(allowed) = &rule.allowed {
        if allowed.is_empty() {
            return Err(format!("rule {}: allowed is empty", rule.name));
        }
        let list: Vec<String> = allowed.iter().map(|v| literal(v)).collect();
        constraints.push(format!("{text} IN ({})", list.join(", ")));
        said.push(format!("one of {allowed:?}"));
    }
    let others = if constraints.is_empty() {
        None
    } else {
        Some(format!("COALESCE(({}), true)", constraints.join(" AND ")))
    };
    let expression = if rule.required {
        said.insert(0, "present".to_string());
        let present = if is_text(data_type) {
            format!("COALESCE({column} IS NOT NULL AND length(trim({text})) > 0, false)")
        } else {
            format!("({column} IS NOT NULL)")
        };
        match others {
            Some(o) => format!("({present} AND {o})"),
            None => present,
        }
    } else {
        others.unwrap_or_else(|| "true".to_string())
    };
    Ok((expression, format!("{field} {}", said.join(", "))))
}

/// DataFusion compiles patterns with the `regex` crate when a batch runs; compiling here gives
/// the error at start-up, with the rule's name.
fn regex_syntax_check(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `a.b.c` as SQL: the column `a`, then its fields.
pub(crate) fn column_expression(path: &str) -> String {
    let mut parts = path.split('.');
    let mut expression = format!(
        "\"{}\"",
        parts.next().unwrap_or_default().replace('"', "\"\"")
    );
    for part in parts {
        expression = format!("get_field({expression}, {})", literal(part));
    }
    expression
}

/// The type of a column or nested field of `schema`.
pub(crate) fn field_type<'a>(schema: &'a Schema, path: &str) -> Option<&'a DataType> {
    let mut parts = path.split('.');
    let mut data_type = schema.field_with_name(parts.next()?).ok()?.data_type();
    for part in parts {
        let DataType::Struct(fields) = data_type else {
            return None;
        };
        data_type = fields.iter().find(|f| f.name() == part)?.data_type();
    }
    Some(data_type)
}

fn is_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => is_text(value),
        _ => false,
    }
}

/// An SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use arrow::datatypes::{Field, Fields};

    fn rule(name: &str) -> RuleDecl {
        RuleDecl {
            name: name.to_string(),
            field: None,
            required: false,
            min: None,
            max: None,
            pattern: None,
            allowed: None,
            check: None,
        }
    }

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new(
                "page",
                DataType::Struct(Fields::from(vec![Field::new("url", DataType::Utf8, false)])),
                false,
            ),
        ])
    }

    #[test]
    fn rules_become_one_query_with_a_column_each() {
        let mut required = rule("has_user");
        required.field = Some("user_id".into());
        required.required = true;
        let mut range = rule("n_range");
        range.field = Some("n".into());
        range.min = Some(0.0);
        range.max = Some(10.0);
        let mut pattern = rule("https");
        pattern.field = Some("page.url".into());
        pattern.pattern = Some("https://.*".into());
        let mut check = rule("custom");
        check.check = Some("n <> 3".into());
        let (sql, rules) = compile(&[required, range, pattern, check], &schema()).unwrap();
        let sql = sql.unwrap();
        assert!(
            sql.contains("length(trim(CAST(\"user_id\" AS VARCHAR))) > 0"),
            "{sql}"
        );
        assert!(sql.contains("CAST(\"n\" AS DOUBLE) >= 0.0"), "{sql}");
        assert!(sql.contains("get_field(\"page\", 'url')"), "{sql}");
        assert!(sql.contains("'^(?:https://.*)$'"), "{sql}");
        assert!(sql.contains("COALESCE((n <> 3), true) AS \"r3\""), "{sql}");
        assert_eq!(rules[1].description, "n at least 0, at most 10");
    }

    #[test]
    fn a_rule_on_an_unknown_column_is_refused() {
        let mut r = rule("x");
        r.field = Some("page.nope".into());
        r.required = true;
        let error = compile(&[r], &schema()).unwrap_err();
        assert!(error.contains("page.nope is not a column"), "{error}");
    }
}
