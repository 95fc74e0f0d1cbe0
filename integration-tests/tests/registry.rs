//! The registry service through its REST API, on a real broker: Confluent's endpoints and
//! error codes, restart with kill -9, and two replicas registering at once.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde_json::{Value, json};
use tributary_integration_tests::{Broker, Registry, init_logs};

const CT: &str = "application/vnd.schemaregistry.v1+json";

fn user(fields: &str) -> String {
    format!(
        r#"{{"type":"record","name":"User","namespace":"t","fields":[{{"name":"id","type":"long"}}{fields}]}}"#
    )
}

struct Client {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Client {
    /// The admin user's client.
    fn new(registry: &Registry) -> Self {
        let (user, password) = registry.admin();
        Self::as_user(registry, Some((user, password)))
    }

    /// A client sending `auth` (user, password) by HTTP basic, or nothing.
    fn as_user(registry: &Registry, auth: Option<(&str, &str)>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: registry.url(),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request.header("content-type", CT).body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Result<(u16, Value)> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<(u16, Value)> {
        self.post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": schema }),
        )
        .await
    }
}

fn code(v: &Value) -> i64 {
    v["error_code"].as_i64().unwrap_or(0)
}

/// Who may do what (docs/security.md): no credentials or wrong ones are 401 with a Basic
/// challenge, a `write` user registers but may not delete or change levels (403, 40301), the
/// admin may; a refused request changes nothing.
#[tokio::test]
async fn access_rules_basic_auth_and_roles() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let registry = Registry::start(&broker)?;
    let admin = Client::new(&registry);
    let anonymous = Client::as_user(&registry, None);
    let (_, admin_password) = registry.admin();
    let wrong = Client::as_user(&registry, Some(("admin", "not-the-password")));
    let services = Client::as_user(&registry, Some(("services", registry.services_password())));
    let subject = format!("{}-value", tributary_integration_tests::unique("access"));

    for (who, client) in [("anonymous", &anonymous), ("wrong password", &wrong)] {
        for (status, body) in [
            client.get("/subjects").await?,
            client.register(&subject, &user("")).await?,
            client.delete(&format!("/subjects/{subject}")).await?,
        ] {
            assert_eq!((status, code(&body)), (401, 401), "{who}: {body}");
        }
    }
    let response = reqwest::get(format!("{}/subjects", registry.url())).await?;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"tributary-registry\"")
    );
    // A password is a user's own: the admin's password under another name is refused.
    let borrowed = Client::as_user(&registry, Some(("services", admin_password)));
    assert_eq!(borrowed.get("/subjects").await?.0, 401);

    let (status, body) = services.register(&subject, &user("")).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        services
            .get(&format!("/subjects/{subject}/versions"))
            .await?
            .1,
        json!([1])
    );
    for (status, body) in [
        services.delete(&format!("/subjects/{subject}")).await?,
        services
            .put(
                &format!("/config/{subject}"),
                json!({"compatibility": "NONE"}),
            )
            .await?,
        services
            .put("/config", json!({"compatibility": "NONE"}))
            .await?,
    ] {
        assert_eq!((status, code(&body)), (403, 40301), "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("services")),
            "{body}"
        );
    }
    // Nothing the refused requests asked for happened.
    assert_eq!(
        admin.get(&format!("/subjects/{subject}/versions")).await?.1,
        json!([1])
    );
    assert_eq!(admin.get(&format!("/config/{subject}")).await?.0, 404);
    assert_eq!(
        admin.get("/config").await?.1["compatibilityLevel"],
        "BACKWARD"
    );

    let (status, body) = admin.delete(&format!("/subjects/{subject}")).await?;
    assert_eq!((status, body), (200, json!([1])));

    // A schema the Avro library panics on (found by fuzzing, docs/security.md): 422, and the
    // registry goes on answering.
    let broken = r#"{"type":"record","name":"A","fields":[{"name":"x","type":
        {"type":"array","items":{"type":"record","name":"Dr[ft","fields":[]}}}]}"#;
    let (status, body) = admin.register(&subject, broken).await?;
    assert_eq!((status, code(&body)), (422, 42201), "{body}");
    assert_eq!(admin.get("/subjects").await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn confluent_api_and_error_codes() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let registry = Registry::start(&broker)?;
    let c = Client::new(&registry);

    let v1 = user("");
    let v2 = user(r#",{"name":"email","type":["null","string"],"default":null}"#);
    let (s, r) = c.register("users-value", &v1).await?;
    assert_eq!((s, r["id"].as_i64()), (200, Some(1)), "{r}");
    // Equal once parsed (whitespace, attribute order, "long" vs {"type":"long"}) -> the same id.
    let spaced = v1
        .replace(",", " , ")
        .replace(r#""type":"long""#, r#""type": {"type": "long"}"#);
    assert_eq!(c.register("users-value", &spaced).await?.1["id"], 1);
    assert_eq!(c.register("users-value", &v2).await?.1["id"], 2);
    // The same schema under another subject shares the id.
    assert_eq!(c.register("other-value", &v2).await?.1["id"], 2);

    assert_eq!(
        c.get("/subjects").await?.1,
        json!(["other-value", "users-value"])
    );
    assert_eq!(
        c.get("/subjects/users-value/versions").await?.1,
        json!([1, 2])
    );
    let (_, latest) = c.get("/subjects/users-value/versions/latest").await?;
    assert_eq!(
        (latest["version"].as_i64(), latest["id"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(latest["subject"], "users-value");
    let (_, raw) = c.get("/subjects/users-value/versions/1/schema").await?;
    assert_eq!(raw["name"], "User");
    assert_eq!(
        c.get("/schemas/ids/2").await?.1["schema"].as_str(),
        Some(v2.as_str())
    );
    assert_eq!(
        c.get("/schemas/ids/2/subjects").await?.1,
        json!(["other-value", "users-value"])
    );
    assert_eq!(
        c.get("/schemas/ids/2/versions").await?.1,
        json!([{"subject": "other-value", "version": 1}, {"subject": "users-value", "version": 2}])
    );
    assert_eq!(c.get("/schemas/types").await?.1, json!(["AVRO"]));
    assert_eq!(c.get("/mode").await?.1["mode"], "READWRITE");

    // Lookup.
    let (s, found) = c
        .post("/subjects/users-value", json!({ "schema": v1 }))
        .await?;
    assert_eq!(
        (s, found["version"].as_i64(), found["id"].as_i64()),
        (200, Some(1), Some(1))
    );
    let (s, e) = c
        .post(
            "/subjects/users-value",
            json!({ "schema": user(r#",{"name":"x","type":"int"}"#) }),
        )
        .await?;
    assert_eq!((s, code(&e)), (404, 40403));

    // Compatibility (BACKWARD by default): a new field without default cannot read old data.
    let breaking = user(
        r#",{"name":"email","type":["null","string"],"default":null},{"name":"age","type":"int"}"#,
    );
    let (s, r) = c
        .post(
            "/compatibility/subjects/users-value/versions/latest?verbose=true",
            json!({ "schema": breaking }),
        )
        .await?;
    assert_eq!((s, r["is_compatible"].as_bool()), (200, Some(false)), "{r}");
    assert!(
        r["messages"].to_string().contains("age"),
        "the reason names the field: {r}"
    );
    let (s, e) = c.register("users-value", &breaking).await?;
    assert_eq!((s, code(&e)), (409, 409));
    assert!(
        e["message"].as_str().unwrap_or_default().contains("age"),
        "{e}"
    );

    // Config.
    assert_eq!(c.get("/config").await?.1["compatibilityLevel"], "BACKWARD");
    let (s, e) = c.get("/config/users-value").await?;
    assert_eq!((s, code(&e)), (404, 40408));
    assert_eq!(
        c.put("/config/users-value", json!({"compatibility": "NONE"}))
            .await?
            .1["compatibility"],
        "NONE"
    );
    assert_eq!(
        c.get("/config/users-value").await?.1["compatibilityLevel"],
        "NONE"
    );
    assert_eq!(
        c.register("users-value", &breaking).await?.1["id"],
        3,
        "NONE accepts anything"
    );
    assert_eq!(
        c.delete("/config/users-value").await?.1["compatibilityLevel"],
        "NONE"
    );
    let (s, e) = c
        .put("/config", json!({"compatibility": "SIDEWAYS"}))
        .await?;
    assert_eq!((s, code(&e)), (422, 42203));
    assert_eq!(
        c.put("/config", json!({"compatibility": "full_transitive"}))
            .await?
            .1["compatibility"],
        "FULL_TRANSITIVE"
    );
    assert_eq!(
        c.get("/config/users-value?defaultToGlobal=true").await?.1["compatibilityLevel"],
        "FULL_TRANSITIVE"
    );

    // Errors.
    let (s, e) = c.get("/subjects/nope/versions").await?;
    assert_eq!((s, code(&e)), (404, 40401));
    let (s, e) = c.get("/subjects/users-value/versions/9").await?;
    assert_eq!((s, code(&e)), (404, 40402));
    let (s, e) = c.get("/subjects/users-value/versions/zero").await?;
    assert_eq!((s, code(&e)), (422, 42202));
    let (s, e) = c.get("/schemas/ids/999").await?;
    assert_eq!((s, code(&e)), (404, 40403));
    let (s, e) = c
        .register(
            "bad-value",
            r#"{"type":"record","name":"X","fields":[{"name":"a","type":"nope"}]}"#,
        )
        .await?;
    assert_eq!((s, code(&e)), (422, 42201));
    let (s, e) = c
        .post(
            "/subjects/bad-value/versions",
            json!({"schema": "{}", "schemaType": "PROTOBUF"}),
        )
        .await?;
    assert_eq!((s, code(&e)), (422, 42201));

    // Soft delete, then hard delete; ids are never reused.
    let (s, e) = c.delete("/subjects/other-value?permanent=true").await?;
    assert_eq!(
        (s, code(&e)),
        (404, 40405),
        "hard delete needs a soft delete first"
    );
    assert_eq!(c.delete("/subjects/other-value").await?.1, json!([1]));
    assert_eq!(c.get("/subjects").await?.1, json!(["users-value"]));
    assert_eq!(
        c.get("/subjects?deleted=true").await?.1,
        json!(["other-value", "users-value"])
    );
    assert_eq!(
        c.delete("/subjects/users-value/versions/3").await?.1,
        json!(3)
    );
    assert_eq!(
        c.get("/subjects/users-value/versions").await?.1,
        json!([1, 2])
    );
    assert_eq!(
        c.delete("/subjects/users-value/versions/3?permanent=true")
            .await?
            .1,
        json!(3)
    );
    let (s, e) = c.get("/schemas/ids/3").await?;
    assert_eq!(
        (s, code(&e)),
        (404, 40403),
        "a hard-deleted schema used nowhere else is gone"
    );
    c.put("/config", json!({"compatibility": "NONE"})).await?;
    let fresh = user(r#",{"name":"fresh","type":"string","default":""}"#);
    assert_eq!(
        c.register("users-value", &fresh).await?.1["id"],
        4,
        "id 3 is not reused"
    );
    // Like Confluent's, the number of a hard-deleted version is free again.
    assert_eq!(
        c.get("/subjects/users-value/versions").await?.1,
        json!([1, 2, 3])
    );
    assert_eq!(c.get("/subjects/users-value/versions/3").await?.1["id"], 4);
    // A schema that differs only by a default is a new version, not the old id.
    let with_default = fresh.replace(r#""default":"""#, r#""default":"n/a""#);
    assert_eq!(c.register("users-value", &with_default).await?.1["id"], 5);
    Ok(())
}

#[tokio::test]
async fn a_restart_after_kill_serves_the_same_ids_and_versions() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let mut registry = Registry::start(&broker)?;
    let c = Client::new(&registry);
    let mut expected = BTreeMap::new();
    for i in 0..20 {
        let subject = format!("s{}-value", i % 4);
        let schema = user(&format!(
            r#",{{"name":"f{i}","type":"string","default":"x"}}"#
        ));
        let (_, r) = c.register(&subject, &schema).await?;
        expected.insert(schema, (subject, r["id"].as_i64()));
    }
    let before = (
        c.get("/subjects").await?.1,
        c.get("/subjects/s1-value/versions").await?.1,
    );

    registry.restart()?; // SIGKILL, then start on the same topic
    let c = Client::new(&registry);
    assert_eq!(
        (
            c.get("/subjects").await?.1,
            c.get("/subjects/s1-value/versions").await?.1
        ),
        before
    );
    for (schema, (subject, id)) in &expected {
        let (_, r) = c
            .post(&format!("/subjects/{subject}"), json!({ "schema": schema }))
            .await?;
        assert_eq!(r["id"].as_i64(), *id, "{subject}: {r}");
        assert_eq!(
            c.get(&format!("/schemas/ids/{}", id.unwrap_or(0))).await?.1["schema"].as_str(),
            Some(schema.as_str())
        );
        // Registering again after the restart returns the same id.
        assert_eq!(c.register(subject, schema).await?.1["id"].as_i64(), *id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_give_one_id_to_two_schemas() -> Result<()> {
    init_logs();
    let broker = Broker::start()?;
    let a = Registry::start(&broker)?;
    let b = Registry::start_on(&broker, a.topic())?;
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    // Both replicas register 15 different schemas each, at the same time, some shared.
    let schemas: Vec<String> = (0..20)
        .map(|i| user(&format!(r#",{{"name":"g{i}","type":"long","default":0}}"#)))
        .collect();
    let on_a = async {
        let mut ids = Vec::new();
        for (i, s) in schemas.iter().enumerate().take(15) {
            ids.push((
                s.clone(),
                ca.register(&format!("a{}-value", i % 3), s).await?.1["id"].as_i64(),
            ));
        }
        anyhow::Ok(ids)
    };
    let on_b = async {
        let mut ids = Vec::new();
        for (i, s) in schemas.iter().enumerate().skip(5) {
            ids.push((
                s.clone(),
                cb.register(&format!("b{}-value", i % 3), s).await?.1["id"].as_i64(),
            ));
        }
        anyhow::Ok(ids)
    };
    let (ra, rb) = tokio::join!(on_a, on_b);
    let mut by_schema: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut by_id: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (schema, id) in ra?.into_iter().chain(rb?) {
        let id = id.ok_or_else(|| anyhow::anyhow!("a registration failed"))?;
        by_schema.entry(schema.clone()).or_default().insert(id);
        by_id.entry(id).or_default().insert(schema);
    }
    assert!(
        by_id.values().all(|s| s.len() == 1),
        "one id for two schemas: {by_id:?}"
    );
    assert!(
        by_schema.values().all(|ids| ids.len() == 1),
        "one schema, two ids: {by_schema:?}"
    );
    assert_eq!(by_schema.len(), 20);
    // Both replicas serve the same state.
    for id in by_id.keys() {
        assert_eq!(
            ca.get(&format!("/schemas/ids/{id}")).await?.1,
            cb.get(&format!("/schemas/ids/{id}")).await?.1
        );
    }
    assert_eq!(ca.get("/subjects").await?.1, cb.get("/subjects").await?.1);
    Ok(())
}
