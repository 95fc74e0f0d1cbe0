#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const ALL: [Compatibility; 7] = LEVELS;

fn schema(text: &str) -> Schema {
    Schema::parse_str(text).unwrap()
}

/// A record `shop.Customer` with the given JSON fields.
fn customer(fields: &str) -> Schema {
    schema(&format!(
        r#"{{"type":"record","name":"Customer","namespace":"shop","fields":[{fields}]}}"#
    ))
}

const ID: &str = r#"{"name":"id","type":"long"}"#;

/// `customer` with `id` and one more field.
fn with(field: &str) -> Schema {
    customer(&format!("{ID},{field}"))
}

/// Asserts that `new` passes `level` against `existing`.
fn accepted(level: Compatibility, new: &Schema, existing: &[Schema]) {
    let reasons = check(level, new, existing);
    assert!(
        reasons.is_empty(),
        "{} should accept, got {reasons:#?}",
        level.as_str()
    );
}

/// Asserts that `new` fails `level` against `existing`; returns the reasons joined by newlines.
fn rejected(level: Compatibility, new: &Schema, existing: &[Schema]) -> String {
    let reasons = check(level, new, existing);
    assert!(!reasons.is_empty(), "{} should reject", level.as_str());
    reasons.join("\n")
}

/// The single reason `reader` cannot read `writer`.
fn only_reason(reader: &Schema, writer: &Schema) -> Incompatibility {
    let mut reasons = reader_can_read(reader, writer);
    assert_eq!(reasons.len(), 1, "expected one reason, got {reasons:#?}");
    reasons.remove(0)
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
}

// ---- levels -------------------------------------------------------------------------------

#[test]
fn none_accepts_anything() {
    let old = customer(ID);
    let new = schema(r#"["int","string"]"#);
    accepted(Compatibility::None, &new, std::slice::from_ref(&old));
    accepted(
        Compatibility::None,
        &schema(r#""int""#),
        &[old, schema(r#""string""#)],
    );
}

#[test]
fn no_existing_version_is_always_compatible() {
    for level in ALL {
        accepted(level, &customer(ID), &[]);
    }
}

#[test]
fn identical_schema_passes_every_level() {
    let text = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"id","type":"string"},
        {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
        {"name":"hash","type":{"type":"fixed","name":"Md5","size":16}},
        {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
            {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
        {"name":"tags","type":{"type":"map","values":"string"}},
        {"name":"billing","type":["null",{"type":"record","name":"Address","fields":[
            {"name":"city","type":"string"}]}],"default":null},
        {"name":"shipping","type":["null","Address"],"default":null},
        {"name":"total","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}
    ]}"#;
    let (new, old) = (schema(text), schema(text));
    for level in ALL {
        accepted(level, &new, std::slice::from_ref(&old));
    }
}

#[test]
fn added_field_with_default_passes_every_level() {
    let old = customer(ID);
    let new = with(r#"{"name":"email","type":"string","default":""}"#);
    for level in ALL {
        accepted(level, &new, std::slice::from_ref(&old));
    }
}

#[test]
fn added_field_without_default_breaks_backward_only() {
    let old = customer(ID);
    let new = with(r#"{"name":"email","type":"string"}"#);
    let expected = "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/email: \
                    reader field email has no default and is missing in the writer";
    assert_eq!(
        rejected(Compatibility::Backward, &new, std::slice::from_ref(&old)),
        expected
    );
    accepted(Compatibility::Forward, &new, std::slice::from_ref(&old));
    accepted(
        Compatibility::ForwardTransitive,
        &new,
        std::slice::from_ref(&old),
    );
    let full = rejected(Compatibility::Full, &new, std::slice::from_ref(&old));
    assert_eq!(full, format!("backward: {expected}"));
    let full = rejected(
        Compatibility::FullTransitive,
        &new,
        std::slice::from_ref(&old),
    );
    assert_eq!(full, format!("against version 1 (backward): {expected}"));
}

#[test]
fn removed_field_with_default_in_old_passes_every_level() {
    let old = with(r#"{"name":"email","type":"string","default":""}"#);
    let new = customer(ID);
    for level in ALL {
        accepted(level, &new, std::slice::from_ref(&old));
    }
}

#[test]
fn removed_field_without_default_in_old_breaks_forward() {
    let old = with(r#"{"name":"email","type":"string"}"#);
    let new = customer(ID);
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    accepted(
        Compatibility::BackwardTransitive,
        &new,
        std::slice::from_ref(&old),
    );
    for level in [
        Compatibility::Forward,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ] {
        let reasons = rejected(level, &new, std::slice::from_ref(&old));
        assert_contains(
            &reasons,
            &[
                "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/email",
                "field email",
            ],
        );
    }
    assert_contains(
        &rejected(Compatibility::Full, &new, std::slice::from_ref(&old)),
        &["forward: "],
    );
}

#[test]
fn int_to_long_is_backward_not_forward() {
    let old = with(r#"{"name":"age","type":"int"}"#);
    let new = with(r#"{"name":"age","type":"long"}"#);
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    accepted(
        Compatibility::BackwardTransitive,
        &new,
        std::slice::from_ref(&old),
    );
    for level in [
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
    ] {
        let reasons = rejected(level, &new, std::slice::from_ref(&old));
        assert_contains(
            &reasons,
            &["TYPE_MISMATCH at /fields/age: reader type int cannot read writer type long"],
        );
    }
}

#[test]
fn promotions_follow_the_spec() {
    let readable = [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
        ("null", "null"),
        ("boolean", "boolean"),
    ];
    for (writer, reader) in readable {
        let (w, r) = (
            schema(&format!("\"{writer}\"")),
            schema(&format!("\"{reader}\"")),
        );
        assert!(
            reader_can_read(&r, &w).is_empty(),
            "{reader} should read {writer}"
        );
    }
    let unreadable = [
        ("long", "int"),
        ("double", "float"),
        ("float", "long"),
        ("int", "string"),
        ("boolean", "int"),
        ("null", "string"),
    ];
    for (writer, reader) in unreadable {
        let (w, r) = (
            schema(&format!("\"{writer}\"")),
            schema(&format!("\"{reader}\"")),
        );
        let reason = only_reason(&r, &w);
        assert_eq!(reason.kind, IncompatibilityKind::TypeMismatch);
        assert_eq!(reason.path, "/");
        assert_eq!(
            reason.message,
            format!("reader type {reader} cannot read writer type {writer}")
        );
    }
}

// ---- enums ---------------------------------------------------------------------------------

fn status(symbols: &str, default: Option<&str>) -> Schema {
    let default = default
        .map(|d| format!(r#","default":"{d}""#))
        .unwrap_or_default();
    with(&format!(
        r#"{{"name":"status","type":{{"type":"enum","name":"Status","symbols":[{symbols}]{default}}}}}"#
    ))
}

#[test]
fn enum_symbol_added_breaks_forward_unless_old_has_default() {
    let old = status(r#""NEW","PAID""#, None);
    let new = status(r#""NEW","PAID","REFUNDED""#, None);
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    let reasons = rejected(Compatibility::Forward, &new, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "MISSING_ENUM_SYMBOLS at /fields/status: \
         reader enum shop.Status lacks writer symbols [REFUNDED] and has no default"
    );
    rejected(Compatibility::Full, &new, std::slice::from_ref(&old));

    let old = status(r#""NEW","PAID","UNKNOWN""#, Some("UNKNOWN"));
    let new = status(r#""NEW","PAID","UNKNOWN","REFUNDED""#, Some("UNKNOWN"));
    for level in ALL {
        accepted(level, &new, std::slice::from_ref(&old));
    }
}

#[test]
fn enum_symbol_removed_breaks_backward_unless_new_has_default() {
    let old = status(r#""NEW","PAID","CANCELLED""#, None);
    let new = status(r#""NEW","PAID""#, None);
    accepted(Compatibility::Forward, &new, std::slice::from_ref(&old));
    let reasons = rejected(Compatibility::Backward, &new, std::slice::from_ref(&old));
    assert_contains(
        &reasons,
        &["MISSING_ENUM_SYMBOLS at /fields/status", "[CANCELLED]"],
    );

    let new = status(r#""NEW","PAID""#, Some("NEW"));
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    accepted(Compatibility::Full, &new, std::slice::from_ref(&old));
}

#[test]
fn enum_rename_is_a_name_mismatch() {
    let old = status(r#""NEW""#, None);
    let new = with(r#"{"name":"status","type":{"type":"enum","name":"State","symbols":["NEW"]}}"#);
    let reason = rejected(Compatibility::Backward, &new, std::slice::from_ref(&old));
    assert_contains(
        &reason,
        &[
            "NAME_MISMATCH at /fields/status",
            "shop.State",
            "shop.Status",
        ],
    );
}

// ---- unions --------------------------------------------------------------------------------

fn note(types: &str) -> Schema {
    with(&format!(
        r#"{{"name":"note","type":[{types}],"default":null}}"#
    ))
}

#[test]
fn union_branch_added_breaks_forward() {
    let old = note(r#""null","string""#);
    let new = note(r#""null","string","int""#);
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    accepted(
        Compatibility::BackwardTransitive,
        &new,
        std::slice::from_ref(&old),
    );
    for level in [
        Compatibility::Forward,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ] {
        let reasons = rejected(level, &new, std::slice::from_ref(&old));
        assert_contains(
            &reasons,
            &[
                "MISSING_UNION_BRANCH at /fields/note: reader union has no branch that reads writer type int",
            ],
        );
    }
}

#[test]
fn union_branch_removed_breaks_backward() {
    let old = note(r#""null","string","int""#);
    let new = note(r#""null","string""#);
    accepted(Compatibility::Forward, &new, std::slice::from_ref(&old));
    let reasons = rejected(Compatibility::Backward, &new, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "MISSING_UNION_BRANCH at /fields/note: reader union has no branch that reads writer type int"
    );
}

#[test]
fn union_branch_may_be_read_by_a_promotion() {
    let old = note(r#""null","int""#);
    let new = note(r#""null","long""#);
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    rejected(Compatibility::Forward, &new, std::slice::from_ref(&old));
}

#[test]
fn making_a_field_optional_breaks_forward() {
    let old = with(r#"{"name":"note","type":"string"}"#);
    let new = note(r#""null","string""#);
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    let reasons = rejected(Compatibility::Forward, &new, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "TYPE_MISMATCH at /fields/note: reader type string cannot read writer type null"
    );
}

fn with_address(address_fields: &str) -> Schema {
    with(&format!(
        r#"{{"name":"address","default":null,"type":["null",
            {{"type":"record","name":"Address","fields":[{address_fields}]}}]}}"#
    ))
}

#[test]
fn record_in_union_is_checked_inside() {
    let old = with_address(r#"{"name":"city","type":"string"}"#);
    let added = with_address(r#"{"name":"city","type":"string"},{"name":"zip","type":"string"}"#);
    let reasons = rejected(Compatibility::Backward, &added, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/address/1/fields/zip: \
         reader field zip has no default and is missing in the writer"
    );
    accepted(Compatibility::Forward, &added, std::slice::from_ref(&old));

    let retyped = with_address(r#"{"name":"city","type":"int"}"#);
    let reasons = rejected(Compatibility::Forward, &retyped, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "TYPE_MISMATCH at /fields/address/1/fields/city: reader type string cannot read writer type int"
    );

    let defaulted = with_address(
        r#"{"name":"city","type":"string"},{"name":"zip","type":"string","default":""}"#,
    );
    for level in ALL {
        accepted(level, &defaulted, std::slice::from_ref(&old));
    }
}

#[test]
fn record_in_union_replaced_by_another_record_is_a_missing_branch() {
    let old = with_address(r#"{"name":"city","type":"string"}"#);
    let new = with(
        r#"{"name":"address","default":null,"type":["null",
            {"type":"record","name":"Location","fields":[{"name":"city","type":"string"}]}]}"#,
    );
    let reasons = rejected(Compatibility::Backward, &new, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "MISSING_UNION_BRANCH at /fields/address: \
         reader union has no branch that reads writer type record shop.Address"
    );
}

fn with_lines(qty: &str) -> Schema {
    with(&format!(
        r#"{{"name":"lines","type":{{"type":"array","items":{{"type":"record","name":"Line",
            "fields":[{{"name":"sku","type":"string"}},{{"name":"qty","type":"{qty}"}}]}}}}}}"#
    ))
}

#[test]
fn record_in_array_is_checked_inside() {
    let old = with_lines("int");
    let new = with_lines("string");
    for level in [Compatibility::Backward, Compatibility::Forward] {
        let reasons = rejected(level, &new, std::slice::from_ref(&old));
        assert_contains(
            &reasons,
            &["TYPE_MISMATCH at /fields/lines/items/fields/qty"],
        );
    }
    let promoted = with_lines("long");
    accepted(
        Compatibility::Backward,
        &promoted,
        std::slice::from_ref(&old),
    );
    let reasons = rejected(
        Compatibility::Forward,
        &promoted,
        std::slice::from_ref(&old),
    );
    assert_contains(&reasons, &["at /fields/lines/items/fields/qty"]);
}

#[test]
fn map_values_are_checked() {
    let old = with(r#"{"name":"counts","type":{"type":"map","values":"int"}}"#);
    let new = with(r#"{"name":"counts","type":{"type":"map","values":"long"}}"#);
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    let reasons = rejected(Compatibility::Forward, &new, std::slice::from_ref(&old));
    assert_contains(&reasons, &["TYPE_MISMATCH at /fields/counts/values"]);
    let array = with(r#"{"name":"counts","type":{"type":"array","items":"int"}}"#);
    let reasons = rejected(Compatibility::Backward, &array, std::slice::from_ref(&old));
    assert_contains(&reasons, &["reader type array cannot read writer type map"]);
}

#[test]
fn array_inside_union_is_checked_inside() {
    let old = with(r#"{"name":"tags","type":["null",{"type":"array","items":"string"}]}"#);
    let new = with(r#"{"name":"tags","type":["null",{"type":"array","items":"int"}]}"#);
    let reasons = rejected(Compatibility::Backward, &new, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "TYPE_MISMATCH at /fields/tags/1/items: reader type int cannot read writer type string"
    );
}

// ---- fixed and names -----------------------------------------------------------------------

fn hash(name: &str, size: usize) -> Schema {
    with(&format!(
        r#"{{"name":"hash","type":{{"type":"fixed","name":"{name}","size":{size}}}}}"#
    ))
}

#[test]
fn fixed_size_change_breaks_both_ways() {
    let (old, new) = (hash("Digest", 16), hash("Digest", 32));
    for level in [Compatibility::Backward, Compatibility::Forward] {
        let reasons = rejected(level, &new, std::slice::from_ref(&old));
        assert_contains(
            &reasons,
            &["FIXED_SIZE_MISMATCH at /fields/hash", "shop.Digest"],
        );
    }
    let reason = only_reason(&new, &old);
    assert_eq!(
        reason.message,
        "reader fixed shop.Digest has size 32 but the writer's has size 16"
    );
    accepted(Compatibility::Full, &hash("Digest", 16), &[old]);
}

#[test]
fn fixed_rename_is_a_name_mismatch() {
    let reason = only_reason(&hash("Sha", 16), &hash("Digest", 16));
    assert_eq!(reason.kind, IncompatibilityKind::NameMismatch);
    assert_eq!(reason.path, "/fields/hash");
}

fn named(name: &str, extra: &str) -> Schema {
    schema(&format!(
        r#"{{"type":"record","name":"{name}","namespace":"shop"{extra},"fields":[{ID}]}}"#
    ))
}

#[test]
fn record_rename_needs_an_alias() {
    let old = named("Customer", "");
    let renamed = named("Client", "");
    let reasons = rejected(
        Compatibility::Backward,
        &renamed,
        std::slice::from_ref(&old),
    );
    assert_eq!(
        reasons,
        "NAME_MISMATCH at /: reader record shop.Client does not match writer record \
         shop.Customer and has no alias for it"
    );
    let aliased = named("Client", r#","aliases":["Customer"]"#);
    accepted(
        Compatibility::Backward,
        &aliased,
        std::slice::from_ref(&old),
    );
    // The old reader knows no alias for the new name.
    let reasons = rejected(Compatibility::Forward, &aliased, std::slice::from_ref(&old));
    assert_contains(&reasons, &["NAME_MISMATCH at /"]);
    let qualified = named("Client", r#","aliases":["shop.Customer"]"#);
    accepted(Compatibility::Backward, &qualified, &[old]);
}

#[test]
fn namespace_change_is_accepted_as_the_spec_says() {
    let old = named("Customer", "");
    let moved = schema(&format!(
        r#"{{"type":"record","name":"Customer","namespace":"crm","fields":[{ID}]}}"#
    ));
    for level in ALL {
        accepted(level, &moved, std::slice::from_ref(&old));
    }
}

#[test]
fn field_rename_needs_a_reader_alias() {
    let old = with(r#"{"name":"email","type":"string"}"#);
    let renamed = with(r#"{"name":"mail","type":"string"}"#);
    let reasons = rejected(
        Compatibility::Backward,
        &renamed,
        std::slice::from_ref(&old),
    );
    assert_contains(&reasons, &["/fields/mail", "reader field mail"]);
    let aliased = with(r#"{"name":"mail","type":"string","aliases":["email"]}"#);
    accepted(
        Compatibility::Backward,
        &aliased,
        std::slice::from_ref(&old),
    );
    // Writer aliases do not count: the old reader's email is missing from the new writer.
    let reasons = rejected(Compatibility::Forward, &aliased, std::slice::from_ref(&old));
    assert_contains(
        &reasons,
        &["READER_FIELD_MISSING_DEFAULT_VALUE at /fields/email"],
    );
    // An aliased field is still type-checked.
    let retyped = with(r#"{"name":"mail","type":"int","aliases":["email"]}"#);
    let reasons = rejected(Compatibility::Backward, &retyped, &[old]);
    assert_contains(&reasons, &["TYPE_MISMATCH at /fields/mail"]);
}

// ---- transitive ----------------------------------------------------------------------------

#[test]
fn backward_transitive_checks_every_version() {
    let v1 = customer(ID);
    let v2 = with(r#"{"name":"email","type":"string","default":""}"#);
    let v3 = with(r#"{"name":"email","type":"string"}"#);
    let versions = [v1, v2];
    accepted(Compatibility::Backward, &v3, &versions);
    accepted(Compatibility::Full, &v3, &versions);
    let reasons = rejected(Compatibility::BackwardTransitive, &v3, &versions);
    assert_eq!(
        reasons,
        "against version 1: READER_FIELD_MISSING_DEFAULT_VALUE at /fields/email: \
         reader field email has no default and is missing in the writer"
    );
    assert!(!reasons.contains("version 2"));
    let reasons = rejected(Compatibility::FullTransitive, &v3, &versions);
    assert_contains(
        &reasons,
        &["against version 1 (backward): ", "/fields/email"],
    );
}

#[test]
fn forward_transitive_checks_every_version() {
    let v1 = with(r#"{"name":"email","type":"string"}"#);
    let v2 = with(r#"{"name":"email","type":"string","default":""}"#);
    let v3 = customer(ID);
    let versions = [v1, v2];
    accepted(Compatibility::Forward, &v3, &versions);
    accepted(Compatibility::Full, &v3, &versions);
    accepted(Compatibility::BackwardTransitive, &v3, &versions);
    let reasons = rejected(Compatibility::ForwardTransitive, &v3, &versions);
    assert_contains(
        &reasons,
        &["against version 1: ", "/fields/email", "field email"],
    );
    assert!(!reasons.contains("version 2"));
    let reasons = rejected(Compatibility::FullTransitive, &v3, &versions);
    assert_eq!(
        reasons,
        "against version 1 (forward): READER_FIELD_MISSING_DEFAULT_VALUE at /fields/email: \
         reader field email has no default and is missing in the writer"
    );
}

#[test]
fn non_transitive_levels_check_only_the_latest() {
    let v1 = with(r#"{"name":"age","type":"string"}"#);
    let v2 = with(r#"{"name":"age","type":"int"}"#);
    let v3 = with(r#"{"name":"age","type":"int"}"#);
    let versions = [v1, v2];
    for level in [
        Compatibility::Backward,
        Compatibility::Forward,
        Compatibility::Full,
    ] {
        accepted(level, &v3, &versions);
    }
    for level in [
        Compatibility::BackwardTransitive,
        Compatibility::ForwardTransitive,
        Compatibility::FullTransitive,
    ] {
        assert_contains(
            &rejected(level, &v3, &versions),
            &["against version 1", "/fields/age"],
        );
    }
}

// ---- recursion and references --------------------------------------------------------------

fn linked_list(value: &str) -> Schema {
    schema(&format!(
        r#"{{"type":"record","name":"Node","fields":[
            {{"name":"value","type":"{value}"}},
            {{"name":"next","type":["null","Node"],"default":null}}]}}"#
    ))
}

#[test]
fn recursive_schema_terminates() {
    let old = linked_list("int");
    for level in ALL {
        accepted(level, &linked_list("int"), std::slice::from_ref(&old));
    }
    let new = linked_list("long");
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    let reasons = rejected(Compatibility::Forward, &new, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "TYPE_MISMATCH at /fields/value: reader type int cannot read writer type long"
    );
}

#[test]
fn mutually_recursive_schemas_terminate() {
    let tree = |extra: &str| {
        schema(&format!(
            r#"{{"type":"record","name":"Tree","fields":[
                {{"name":"children","type":{{"type":"array","items":{{"type":"record","name":"Branch",
                  "fields":[{{"name":"tree","type":"Tree"}}{extra}]}}}}}}]}}"#
        ))
    };
    let old = tree("");
    accepted(
        Compatibility::FullTransitive,
        &tree(""),
        std::slice::from_ref(&old),
    );
    let new = tree(r#",{"name":"weight","type":"int"}"#);
    let reasons = rejected(Compatibility::Backward, &new, std::slice::from_ref(&old));
    assert_contains(&reasons, &["at /fields/children/items/fields/weight"]);
}

#[test]
fn references_resolve_in_their_own_schema() {
    // The writer defines Address inline and then references it; the reader the other way round.
    let old = schema(
        r#"{"type":"record","name":"Order","fields":[
            {"name":"billing","type":{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}},
            {"name":"shipping","type":"Address"}]}"#,
    );
    let new = schema(
        r#"{"type":"record","name":"Order","fields":[
            {"name":"shipping","type":{"type":"record","name":"Address","fields":[{"name":"city","type":"bytes"}]}},
            {"name":"billing","type":"Address"}]}"#,
    );
    for level in ALL {
        accepted(level, &new, std::slice::from_ref(&old));
    }
    let broken = schema(
        r#"{"type":"record","name":"Order","fields":[
            {"name":"shipping","type":{"type":"record","name":"Address","fields":[{"name":"city","type":"int"}]}},
            {"name":"billing","type":"Address"}]}"#,
    );
    let reasons = reader_can_read(&broken, &old);
    let paths: Vec<&str> = reasons.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/fields/shipping/fields/city",
            "/fields/billing/fields/city"
        ]
    );
}

// ---- logical types -------------------------------------------------------------------------

fn with_type(name: &str, field_type: &str) -> Schema {
    with(&format!(r#"{{"name":"{name}","type":{field_type}}}"#))
}

#[test]
fn logical_types_are_checked_as_their_underlying_type() {
    let pairs = [
        (
            r#""long""#,
            r#"{"type":"long","logicalType":"timestamp-millis"}"#,
        ),
        (r#""int""#, r#"{"type":"int","logicalType":"date"}"#),
        (r#""string""#, r#"{"type":"string","logicalType":"uuid"}"#),
        (
            r#"{"type":"long","logicalType":"timestamp-micros"}"#,
            r#"{"type":"long","logicalType":"timestamp-millis"}"#,
        ),
        (
            r#""bytes""#,
            r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#,
        ),
    ];
    for (plain, logical) in pairs {
        let (old, new) = (with_type("v", plain), with_type("v", logical));
        for level in ALL {
            accepted(level, &new, std::slice::from_ref(&old));
        }
    }
    // date (int) promotes to a timestamp (long) but not back.
    let (old, new) = (
        with_type("v", r#"{"type":"int","logicalType":"date"}"#),
        with_type("v", r#"{"type":"long","logicalType":"timestamp-millis"}"#),
    );
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    let reasons = rejected(Compatibility::Forward, &new, std::slice::from_ref(&old));
    assert_contains(
        &reasons,
        &["TYPE_MISMATCH at /fields/v: reader type date cannot read writer type timestamp-millis"],
    );
}

#[test]
fn decimal_precision_or_scale_change_is_a_type_mismatch() {
    let decimal = |precision: u32, scale: u32| {
        with_type(
            "total",
            &format!(
                r#"{{"type":"bytes","logicalType":"decimal","precision":{precision},"scale":{scale}}}"#
            ),
        )
    };
    let old = decimal(10, 2);
    for new in [decimal(12, 2), decimal(10, 3)] {
        for level in [Compatibility::Backward, Compatibility::Forward] {
            let reasons = rejected(level, &new, std::slice::from_ref(&old));
            assert_contains(
                &reasons,
                &["TYPE_MISMATCH at /fields/total", "decimal(10, 2)"],
            );
        }
    }
    accepted(Compatibility::FullTransitive, &decimal(10, 2), &[old]);
}

#[test]
fn decimal_on_fixed_checks_the_fixed() {
    let decimal = |size: usize| {
        with_type(
            "total",
            &format!(
                r#"{{"type":"fixed","name":"Money","size":{size},"logicalType":"decimal","precision":10,"scale":2}}"#
            ),
        )
    };
    accepted(Compatibility::Full, &decimal(8), &[decimal(8)]);
    let reasons = rejected(Compatibility::Backward, &decimal(16), &[decimal(8)]);
    assert_contains(&reasons, &["FIXED_SIZE_MISMATCH at /fields/total"]);
}

// ---- reader_can_read, kinds, levels --------------------------------------------------------

#[test]
fn reasons_are_structured() {
    let reader = with(r#"{"name":"email","type":"string"}"#);
    let reason = only_reason(&reader, &customer(ID));
    assert_eq!(
        reason,
        Incompatibility {
            path: "/fields/email".to_owned(),
            kind: IncompatibilityKind::ReaderFieldMissingDefaultValue,
            message: "reader field email has no default and is missing in the writer".to_owned(),
        }
    );
    assert_eq!(
        reason.to_string(),
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/email: \
         reader field email has no default and is missing in the writer"
    );
}

#[test]
fn every_reason_is_reported() {
    let old = customer(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
    let new = customer(
        r#"{"name":"a","type":"string"},{"name":"b","type":"int"},{"name":"c","type":"int"}"#,
    );
    let paths: Vec<String> = reader_can_read(&new, &old)
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(paths, ["/fields/a", "/fields/b", "/fields/c"]);
}

#[test]
fn kind_names_are_confluents() {
    let kinds = [
        (
            IncompatibilityKind::ReaderFieldMissingDefaultValue,
            "READER_FIELD_MISSING_DEFAULT_VALUE",
        ),
        (IncompatibilityKind::TypeMismatch, "TYPE_MISMATCH"),
        (
            IncompatibilityKind::MissingUnionBranch,
            "MISSING_UNION_BRANCH",
        ),
        (
            IncompatibilityKind::MissingEnumSymbols,
            "MISSING_ENUM_SYMBOLS",
        ),
        (IncompatibilityKind::NameMismatch, "NAME_MISMATCH"),
        (
            IncompatibilityKind::FixedSizeMismatch,
            "FIXED_SIZE_MISMATCH",
        ),
    ];
    for (kind, name) in kinds {
        assert_eq!(kind.as_str(), name);
        assert_eq!(kind.to_string(), name);
    }
}

#[test]
fn parse_level_takes_confluent_names_in_any_case() {
    for level in ALL {
        assert_eq!(parse_level(level.as_str()), Some(level));
        assert_eq!(parse_level(&level.as_str().to_lowercase()), Some(level));
    }
    assert_eq!(
        parse_level("Full_Transitive"),
        Some(Compatibility::FullTransitive)
    );
    assert_eq!(parse_level(" backward "), Some(Compatibility::Backward));
    assert_eq!(parse_level("FULLTRANSITIVE"), None);
    assert_eq!(parse_level(""), None);
}

// ---- canonical -----------------------------------------------------------------------------

#[test]
fn canonical_ignores_docs_layout_and_attribute_order() {
    let a = schema(
        r#"{"type":"record","name":"Customer","namespace":"shop","doc":"a customer",
            "fields":[{"name":"id","type":"long","doc":"the id"},
                      {"name":"tags","type":{"type":"array","items":"string"}}]}"#,
    );
    let b = schema(
        r#"{ "name" : "Customer", "type" : "record", "namespace" : "shop",
             "fields" : [ { "type" : "long", "name" : "id" },
                          { "type" : {"items":"string","type":"array"}, "name" : "tags" } ] }"#,
    );
    assert_eq!(canonical(&a), canonical(&b));
    assert_eq!(
        canonical(&a),
        r#"{"name":"shop.Customer","type":"record","fields":[{"name":"id","type":"long"},{"name":"tags","type":{"type":"array","items":"string"}}]}"#
    );
}

#[test]
fn canonical_differs_for_different_schemas() {
    let base = customer(r#"{"name":"id","type":"long"},{"name":"tags","type":"string"}"#);
    let others = [
        customer(r#"{"name":"id","type":"int"},{"name":"tags","type":"string"}"#),
        customer(r#"{"name":"tags","type":"string"},{"name":"id","type":"long"}"#),
        customer(r#"{"name":"id","type":"long"}"#),
        named("Client", ""),
        schema(
            r#"{"type":"record","name":"Customer","namespace":"crm","fields":[{"name":"id","type":"long"},{"name":"tags","type":"string"}]}"#,
        ),
    ];
    for other in &others {
        assert_ne!(canonical(&base), canonical(other), "{}", canonical(other));
    }
}

#[test]
fn canonical_drops_defaults_aliases_and_logical_type_names() {
    // Parsing Canonical Form keeps only what decoding needs: schemas differing in defaults,
    // aliases or the logical type over the same type share it, though the registry may not
    // want to call them the same schema.
    let plain = with(r#"{"name":"note","type":"string"}"#);
    let rich = with(r#"{"name":"note","type":"string","default":"","aliases":["memo"]}"#);
    assert_eq!(canonical(&plain), canonical(&rich));
    let millis = with_type("at", r#"{"type":"long","logicalType":"timestamp-millis"}"#);
    let micros = with_type("at", r#"{"type":"long","logicalType":"timestamp-micros"}"#);
    assert_eq!(canonical(&millis), canonical(&micros));
}

#[test]
fn writer_union_is_read_branch_by_branch() {
    let old = with_type("n", r#"["int","long"]"#);
    let new = with_type("n", r#""double""#);
    accepted(Compatibility::Backward, &new, std::slice::from_ref(&old));
    let reasons = rejected(Compatibility::Forward, &new, std::slice::from_ref(&old));
    assert_eq!(
        reasons,
        "MISSING_UNION_BRANCH at /fields/n: reader union has no branch that reads writer type double"
    );
}

#[test]
fn reference_to_another_schema_is_reported_not_followed() {
    // `parse_list` leaves `shop.Address` as a reference into the other schema of the list.
    let list = Schema::parse_list([
        r#"{"type":"record","name":"Address","namespace":"shop","fields":[{"name":"city","type":"string"}]}"#,
        r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"to","type":"Address"}]}"#,
    ])
    .unwrap();
    let order = &list[1];
    let reasons = reader_can_read(order, order);
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    assert_eq!(reasons[0].path, "/fields/to");
    assert_eq!(
        reasons[0].message,
        "named type shop.Address is not defined in the reader schema"
    );
    assert_eq!(
        reasons[1].message,
        "named type shop.Address is not defined in the writer schema"
    );
}
