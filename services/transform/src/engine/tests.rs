//! Unit tests of the engine: planning, and batches through rules, dedup, SQL and output.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use std::path::Path;
use tokio_util::sync::CancellationToken;
use tributary_core::bus::InboundRecord;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryConfig;

#[tokio::test]
async fn the_repository_transforms_plan() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let catalog = Catalog::load(&dir).unwrap();
    assert!(!catalog.transforms.is_empty());
    for decl in &catalog.transforms {
        if let Err(e) = Transform::plan(decl, &catalog).await {
            panic!("{e:#}");
        }
    }
}

const IN: &str = r#"{"type": "record", "name": "In", "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": ["null", "string"], "default": null},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "n", "type": "string"}]}"#;
const OUT: &str = r#"{"type": "record", "name": "Out", "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "n", "type": "int"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["small", "big"]}}]}"#;

fn catalog(sql: &str, extra: &str) -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.in-value.avsc"), IN).unwrap();
    std::fs::write(dir.path().join("t.out-value.avsc"), OUT).unwrap();
    let toml = format!(
        "[[topic]]\nname = \"t.in\"\nevent_time_field = \"at\"\n\n[[topic]]\nname = \"t.out\"\nkey_field = \"id\"\n\n[[transform]]\nname = \"t\"\ninputs = [\"t.in\"]\noutput = \"t.out\"\nsql = \"\"\"{sql}\"\"\"\n{extra}\n"
    );
    std::fs::write(dir.path().join("catalog.toml"), toml).unwrap();
    let catalog = Catalog::load(dir.path()).unwrap();
    (dir, catalog)
}

const SQL: &str = "SELECT id, upper(name) AS name, CAST(n AS INT) AS n, CASE WHEN CAST(n AS INT) > 9 THEN 'big' ELSE 'small' END AS kind FROM input WHERE id <> 0";

fn record(offset: i64, id: i64, name: Option<&str>, at: i64, n: &str) -> InboundRecord {
    let schema = apache_avro::Schema::parse_str(IN).unwrap();
    let value = apache_avro::types::Value::Record(vec![
        ("id".into(), apache_avro::types::Value::Long(id)),
        (
            "name".into(),
            match name {
                Some(s) => apache_avro::types::Value::Union(
                    1,
                    Box::new(apache_avro::types::Value::String(s.into())),
                ),
                None => {
                    apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null))
                }
            },
        ),
        ("at".into(), apache_avro::types::Value::TimestampMillis(at)),
        ("n".into(), apache_avro::types::Value::String(n.into())),
    ]);
    let body = apache_avro::to_avro_datum(&schema, value).unwrap();
    InboundRecord {
        topic: "t.in".into(),
        partition: 0,
        offset,
        key: None,
        payload: Some(tributary_core::schema::wire::frame(7, &body)),
        timestamp_ms: None,
        headers: Vec::new(),
    }
}

async fn planned(sql: &str, extra: &str) -> Transform {
    let (_dir, catalog) = catalog(sql, extra);
    let mut t = Transform::plan(&catalog.transforms[0], &catalog)
        .await
        .unwrap();
    t.inputs
        .get_mut("t.in")
        .unwrap()
        .decoder
        .register(7, IN)
        .unwrap();
    t
}

fn decode_out(payload: &[u8]) -> apache_avro::types::Value {
    let schema = apache_avro::Schema::parse_str(OUT).unwrap();
    let (_, mut body) = tributary_core::schema::wire::parse(payload).unwrap();
    apache_avro::from_avro_datum(&schema, &mut body, None).unwrap()
}

#[tokio::test]
async fn a_batch_goes_through_rules_dedup_sql_and_the_output_schema() {
    let rules = "dedup = { key = \"id\", window = \"1m\" }\n[[transform.rule]]\nname = \"n_is_digits\"\nfield = \"n\"\npattern = \"[0-9]+\"\n";
    let mut t = planned(SQL, rules).await;
    let registry = RegistryClient::new(&RegistryConfig::new("http://127.0.0.1:9")).unwrap();
    let shutdown = CancellationToken::new();
    let records = [
        record(0, 1, Some("ann"), 0, "3"),
        record(1, 2, Some("bob"), 0, "x"), // breaks n_is_digits
        record(2, 1, Some("ann"), 30_000, "3"), // duplicate of offset 0
        record(3, 0, Some("zed"), 0, "5"), // filtered out by the SQL
        record(4, 3, None, 0, "12"),       // name null: the output requires one
        record(5, 4, Some("dee"), 0, "99999999999"), // n does not fit an int
        record(6, 5, Some("eve"), 0, "10"),
    ];
    let refs: Vec<&InboundRecord> = records.iter().collect();
    let outcome = t
        .process("t.in", &refs, &registry, &shutdown)
        .await
        .unwrap();
    assert_eq!(outcome.duplicates, 1);
    let rejected: Vec<(usize, Rejection)> = outcome
        .rejected
        .iter()
        .map(|(i, why, _)| (*i, *why))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, Rejection::Validation),
            (4, Rejection::Output),
            (5, Rejection::Sql)
        ]
    );
    assert!(
        outcome.rejected[0].2.contains("rule n_is_digits failed"),
        "{:?}",
        outcome.rejected
    );
    assert!(
        outcome.rejected[1].2.contains("field name is null"),
        "{:?}",
        outcome.rejected
    );
    let keys: Vec<Option<Vec<u8>>> = outcome.outputs.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![Some(b"1".to_vec()), Some(b"5".to_vec())]);
    let last = decode_out(&outcome.outputs[1].1);
    assert_eq!(
        last,
        apache_avro::types::Value::Record(vec![
            ("id".into(), apache_avro::types::Value::Long(5)),
            (
                "name".into(),
                apache_avro::types::Value::String("EVE".into())
            ),
            ("n".into(), apache_avro::types::Value::Int(10)),
            (
                "kind".into(),
                apache_avro::types::Value::Enum(1, "big".into())
            ),
        ])
    );
}

/// A change record: `after` is null for a delete, `before` for an insert.
const CHANGE: &str = r#"{"type":"record","name":"Change","fields":[
        {"name":"id","type":"long"},
        {"name":"before","type":["null",{"type":"record","name":"Row","fields":[
            {"name":"status","type":"string"},{"name":"total","type":"long"}]}],"default":null},
        {"name":"after","type":["null","Row"],"default":null}]}"#;
const STATUS: &str = r#"{"type":"record","name":"Status","fields":[
        {"name":"id","type":"long"},{"name":"status","type":"string"},{"name":"total","type":"long"}]}"#;

#[tokio::test]
async fn fields_of_a_null_record_are_null_in_rules_and_sql() {
    use apache_avro::types::Value as V;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.in-value.avsc"), CHANGE).unwrap();
    std::fs::write(dir.path().join("c.out-value.avsc"), STATUS).unwrap();
    std::fs::write(
        dir.path().join("catalog.toml"),
        "[[topic]]\nname = \"c.in\"\n\n[[topic]]\nname = \"c.out\"\n\n[[transform]]\n\
         name = \"c\"\ninputs = [\"c.in\"]\noutput = \"c.out\"\nsql = \"\"\"SELECT id, \
         COALESCE(after['status'], before['status']) AS status, \
         COALESCE(after['total'], before['total']) AS total FROM input\"\"\"\n\
         [[transform.rule]]\nname = \"status_word\"\nfield = \"after.status\"\npattern = \"[a-z]+\"\n\
         [[transform.rule]]\nname = \"total_positive\"\nfield = \"after.total\"\nmin = 1\n",
    )
    .unwrap();
    let catalog = Catalog::load(dir.path()).unwrap();
    let mut t = Transform::plan(&catalog.transforms[0], &catalog)
        .await
        .unwrap();
    t.inputs
        .get_mut("c.in")
        .unwrap()
        .decoder
        .register(9, CHANGE)
        .unwrap();
    let schema = apache_avro::Schema::parse_str(CHANGE).unwrap();
    let row = |status: &str, total: i64| {
        V::Union(
            1,
            Box::new(V::Record(vec![
                ("status".into(), V::String(status.into())),
                ("total".into(), V::Long(total)),
            ])),
        )
    };
    let null = || V::Union(0, Box::new(V::Null));
    let change = |offset: i64, id: i64, before: V, after: V| {
        let value = V::Record(vec![
            ("id".into(), V::Long(id)),
            ("before".into(), before),
            ("after".into(), after),
        ]);
        InboundRecord {
            topic: "c.in".into(),
            partition: 0,
            offset,
            key: None,
            payload: Some(tributary_core::schema::wire::frame(
                9,
                &apache_avro::to_avro_datum(&schema, value).unwrap(),
            )),
            timestamp_ms: None,
            headers: Vec::new(),
        }
    };
    let records = [
        change(0, 1, null(), row("pending", 5)),
        change(1, 1, row("pending", 5), row("paid", 5)),
        // A delete: the rules see a null after.status and after.total, which pass.
        change(2, 1, row("paid", 5), null()),
        change(3, 2, null(), row("Bad Status", 5)),
    ];
    let refs: Vec<&InboundRecord> = records.iter().collect();
    let registry = RegistryClient::new(&RegistryConfig::new("http://127.0.0.1:9")).unwrap();
    let outcome = t
        .process("c.in", &refs, &registry, &CancellationToken::new())
        .await
        .unwrap();
    let rejected: Vec<usize> = outcome.rejected.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(rejected, vec![3], "{:?}", outcome.rejected);
    let out_schema = apache_avro::Schema::parse_str(STATUS).unwrap();
    let statuses: Vec<V> = outcome
        .outputs
        .iter()
        .map(|(_, payload)| {
            let (_, mut body) = tributary_core::schema::wire::parse(payload).unwrap();
            apache_avro::from_avro_datum(&out_schema, &mut body, None).unwrap()
        })
        .collect();
    let expected = |status: &str| {
        V::Record(vec![
            ("id".into(), V::Long(1)),
            ("status".into(), V::String(status.into())),
            ("total".into(), V::Long(5)),
        ])
    };
    assert_eq!(
        statuses,
        vec![expected("pending"), expected("paid"), expected("paid")]
    );
}

#[tokio::test]
async fn plans_that_are_not_row_wise_or_do_not_fit_are_refused() {
    let (_d, c) = catalog("SELECT id, max(name) AS name FROM input GROUP BY id", "");
    let e = Transform::plan(&c.transforms[0], &c).await.unwrap_err();
    assert!(format!("{e:#}").contains("an aggregate"), "{e:#}");
    let (_d, c) = catalog("SELECT id, name, n FROM input", "");
    let e = format!(
        "{:#}",
        Transform::plan(&c.transforms[0], &c).await.unwrap_err()
    );
    assert!(
        e.contains("does not fit the schema of t.out: no column kind"),
        "{e}"
    );
    let (_d, c) = catalog("SELECT id, nope FROM input", "");
    let e = format!(
        "{:#}",
        Transform::plan(&c.transforms[0], &c).await.unwrap_err()
    );
    assert!(
        e.contains("transform t: the SQL over t.in") && e.contains("nope"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unreachable_registry_fails_learning_at_once_and_known_schemas_need_none() {
    let mut t = planned(SQL, "").await;
    let registry = RegistryClient::new(&RegistryConfig::new("http://127.0.0.1:9")).unwrap();
    // Schema 7 is known to the decoder: nothing to ask.
    let known = [record(0, 1, Some("ann"), 0, "3")];
    let refs: Vec<&InboundRecord> = known.iter().collect();
    t.learn_schemas("t.in", &refs, &registry).await.unwrap();
    // Schema 8 is not: one attempt, and the registry's failure comes back for the loop to retry
    // (the handler maps it to HandlerError::Unavailable).
    let mut unknown = record(1, 2, Some("bob"), 0, "4");
    if let Some(payload) = unknown.payload.as_mut() {
        payload[4] = 8;
    }
    let refs = vec![&unknown];
    let started = std::time::Instant::now();
    let error = t.learn_schemas("t.in", &refs, &registry).await.unwrap_err();
    assert!(
        error.error_code().is_none(),
        "not an answer of a registry: {error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // A topic the transform does not read has nothing to learn.
    t.learn_schemas("other", &refs, &registry).await.unwrap();
}
