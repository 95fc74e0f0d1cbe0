//! Unit tests of the catalog: loading, its errors, declarations, `pick` and durations.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::Path;

use super::duration::parse_retention;
use super::*;
use crate::schema::transforms::{self, TransformProblem};
use crate::schema::triggers;

const EVENT: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"id","type":"string"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"n","type":"double"}]}"#;

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn load_err(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), files);
    Catalog::load(dir.path()).unwrap_err().to_string()
}

#[test]
fn the_repository_catalog_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let catalog = Catalog::load(&dir).unwrap();
    assert!(!catalog.topics.is_empty());
    for topic in catalog.topics.values() {
        assert!(topic.partitions >= 1);
    }
}

#[test]
fn loads_topics_with_defaults_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "catalog.toml",
                "[defaults]\npartitions = 4\nretention = \"2d\"\n\n[[topic]]\nname = \"raw.a\"\nkey_field = \"id\"\nevent_time_field = \"at\"\n\n[[topic]]\nname = \"table.b\"\npartitions = 1\ncleanup_policy = \"compact\"\nretention = \"forever\"\ncompatibility = \"FULL\"\narchive = false\n",
            ),
            ("raw.a-value.avsc", EVENT),
            ("table.b-value.avsc", EVENT),
            ("table.b-key.avsc", "\"string\""),
        ],
    );
    let c = Catalog::load(dir.path()).unwrap();
    let a = c.topic("raw.a").unwrap();
    assert_eq!(
        (a.partitions, a.retention_ms, a.compatibility),
        (4, 2 * DAY_MS, Compatibility::Backward)
    );
    assert_eq!(a.key_field.as_deref(), Some("id"));
    assert!(a.archive && a.key_schema_json.is_none());
    let b = c.topic("table.b").unwrap();
    assert_eq!(
        (b.partitions, b.retention_ms, b.compatibility),
        (1, -1, Compatibility::Full)
    );
    assert_eq!(b.cleanup_policy, CleanupPolicy::Compact);
    assert!(!b.archive && b.key_schema_json.is_some());
    let specs = c.topic_specs(1);
    assert!(specs.iter().any(|s| s.name == "dlq.archive"));
    let b_spec = specs.iter().find(|s| s.name == "table.b").unwrap();
    assert!(
        b_spec
            .config
            .contains(&("cleanup.policy".into(), "compact".into()))
    );
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let e = load_err(&[("catalog.toml", "[[topic]]\nname = \"t\"\n")]);
    assert!(
        e.contains("t-value.avsc") && e.contains("cannot read"),
        "{e}"
    );

    let e = load_err(&[
        ("catalog.toml", "[[topic]]\nname = \"t\"\n"),
        ("t-value.avsc", "{\"type\":\"record\""),
    ]);
    assert!(
        e.contains("t-value.avsc") && e.contains("invalid avro schema"),
        "{e}"
    );

    let e = load_err(&[
        (
            "catalog.toml",
            "[[topic]]\nname = \"t\"\nkey_field = \"nope\"\n",
        ),
        ("t-value.avsc", EVENT),
    ]);
    assert!(
        e.contains("catalog.toml") && e.contains("\"nope\" is not a field"),
        "{e}"
    );

    let e = load_err(&[
        (
            "catalog.toml",
            "[[topic]]\nname = \"t\"\nevent_time_field = \"n\"\n",
        ),
        ("t-value.avsc", EVENT),
    ]);
    assert!(e.contains("must be a timestamp"), "{e}");

    let e = load_err(&[("catalog.toml", "[[topic]]\nname = \"bad/name\"\n")]);
    assert!(e.contains("invalid topic name"), "{e}");

    let e = load_err(&[
        (
            "catalog.toml",
            "[[topic]]\nname = \"t\"\nretention = \"7 weeks\"\n",
        ),
        ("t-value.avsc", EVENT),
    ]);
    assert!(e.contains("retention"), "{e}");

    let e = load_err(&[("catalog.toml", "[[topic]]\nname = \"t\"\npartitionz = 3\n")]);
    assert!(
        e.contains("catalog.toml") && e.contains("partitionz"),
        "{e}"
    );

    let e = load_err(&[
        ("catalog.toml", "[[topic]]\nname = \"t\"\n"),
        ("t-value.avsc", EVENT),
        ("orphan-value.avsc", EVENT),
    ]);
    assert!(
        e.contains("orphan-value.avsc") && e.contains("no topic"),
        "{e}"
    );

    let e = load_err(&[
        (
            "catalog.toml",
            "[[topic]]\nname = \"t\"\n\n[[topic]]\nname = \"t\"\n",
        ),
        ("t-value.avsc", EVENT),
    ]);
    assert!(e.contains("declared twice"), "{e}");

    let e = load_err(&[
        ("catalog.toml", "[[topic]]\nname = \"t\"\n"),
        ("t-value.avsc", "\"string\""),
    ]);
    assert!(e.contains("must be a record"), "{e}");
}

#[test]
fn a_nullable_key_field_may_list_null_last() {
    let schema = r#"{"type":"record","name":"E","fields":[{"name":"k","type":["string","null"]}]}"#;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "catalog.toml",
                "[[topic]]\nname = \"t\"\nkey_field = \"k\"\n",
            ),
            ("t-value.avsc", schema),
        ],
    );
    assert!(Catalog::load(dir.path()).is_ok());
}

#[test]
fn declaration_errors_name_the_declaration_and_the_key() {
    let topics = BTreeMap::new();
    let transform = |name: &str| -> TransformDecl {
        toml::from_str(&format!(
            "name = \"{name}\"\ninputs = [\"a\"]\noutput = \"b\"\nsql = \"SELECT 1\""
        ))
        .unwrap()
    };
    let e = transforms::validate(&[transform("t")], &topics).unwrap_err();
    assert_eq!(
        (e.kind, e.name.as_str(), e.key()),
        (DeclKind::Transform, "t", "inputs")
    );
    assert_eq!(
        e.problem,
        DeclProblem::Transform(TransformProblem::UnknownInput { topic: "a".into() })
    );
    assert_eq!(e.to_string(), "transform t: topic a is not in the catalog");

    let e = transforms::validate(&[transform("1t")], &topics).unwrap_err();
    assert_eq!((&e.problem, e.key()), (&DeclProblem::InvalidName, "name"));
    assert_eq!(
        e.to_string(),
        "transform 1t: the name must be letters, digits and _, not starting with a digit"
    );

    let trigger: TriggerDecl = toml::from_str(
        "name = \"r\"\nmodel = \"m\"\ninputs = []\ncooldown = \"1w\"\n\
         [[policy]]\ntype = \"volume\"\nname = \"v\"\nrows = 1\n",
    )
    .unwrap();
    assert_eq!(
        trigger.cooldown_ms().unwrap_err(),
        DurationKeyError {
            key: "cooldown",
            error: DurationError::Unit("1w".into()),
        }
    );
    let e = triggers::validate(&[trigger], &topics).unwrap_err();
    assert_eq!(e.to_string(), "trigger r: inputs is empty");
    assert_eq!(e.key(), "inputs");
}

#[test]
fn pick_names_what_is_missing() {
    let dir = Path::new("/schemas");
    let declared = ["a".to_string(), "b".to_string()];
    let name = |d: &String| d.clone();
    let picked = pick(
        &declared,
        |d| d.as_str(),
        &["b".to_string()],
        "transform",
        dir,
    );
    assert_eq!(
        picked.unwrap().into_iter().map(name).collect::<Vec<_>>(),
        ["b"]
    );
    let e = pick(
        &declared,
        |d| d.as_str(),
        &["c".to_string()],
        "transform",
        dir,
    )
    .unwrap_err();
    assert!(matches!(&e, PickError::NotDeclared { name, .. } if name == "c"));
    assert_eq!(
        e.to_string(),
        "transform c is not declared in /schemas/catalog.toml"
    );
    let e = pick(&[] as &[String], |d| d.as_str(), &[], "trigger", dir).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no trigger to run: /schemas/catalog.toml declares none"
    );
}

#[test]
fn retention_parses() {
    assert_eq!(parse_retention("500ms"), Ok(500));
    assert_eq!(parse_retention("90s"), Ok(90_000));
    assert_eq!(parse_retention("7d"), Ok(7 * DAY_MS));
    assert_eq!(parse_retention("forever"), Ok(-1));
    assert!(parse_retention("").is_err());
    assert!(parse_retention("0d").is_err());
    assert!(parse_retention("99999999999999999999d").is_err());
    assert_eq!(parse_retention("7w"), Err(DurationError::Unit("7w".into())));
    assert_eq!(
        parse_retention("0d").unwrap_err().to_string(),
        "invalid retention \"0d\": out of range"
    );
}
