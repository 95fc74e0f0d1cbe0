//! The Confluent Schema Registry REST API.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tributary_core::schema::catalog::Compatibility;
use tributary_core::schema::compat;
use tributary_core::schema::parse_avro_schema;

use crate::error::ApiError;
use crate::store::Store;

/// Content type of every answer.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Api = State<Arc<Store>>;
type Params = Query<HashMap<String, String>>;
type Answer = Result<Response, ApiError>;

/// The API's routes.
pub(crate) fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(|| async { ok(json!({"mode": "READWRITE"})) }))
        .with_state(store)
}

fn ok(body: Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Value>>,
}

fn parse_request(body: &Bytes) -> Result<SchemaRequest, ApiError> {
    let request: SchemaRequest = serde_json::from_slice(body).map_err(ApiError::bad_request)?;
    match request.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => {
            return Err(ApiError::invalid_schema(format!(
                "schema type {other} is not supported, only AVRO"
            )));
        }
    }
    if request.references.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::invalid_schema(
            "schema references are not supported",
        ));
    }
    Ok(request)
}

/// A version path segment: a number from 1, or `latest`.
enum VersionRef {
    Latest,
    Number(u32),
}

fn parse_version(v: &str) -> Result<VersionRef, ApiError> {
    if v == "latest" || v == "-1" {
        return Ok(VersionRef::Latest);
    }
    match v.parse::<u32>() {
        Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionRef::Number(n)),
        _ => Err(ApiError::invalid_version(v)),
    }
}

/// Resolves a live (or, with `deleted`, any) version of a subject to (version, id).
fn resolve(
    store: &Store,
    subject: &str,
    version: &str,
    deleted: bool,
) -> Result<(u32, u32), ApiError> {
    let v = parse_version(version)?;
    let state = store.read();
    let versions = state
        .subjects
        .get(subject)
        .ok_or_else(|| ApiError::subject_not_found(subject))?;
    let visible: Vec<(u32, u32)> = versions
        .iter()
        .filter(|(_, sv)| deleted || !sv.deleted)
        .map(|(n, sv)| (*n, sv.id))
        .collect();
    if visible.is_empty() {
        return Err(ApiError::subject_not_found(subject));
    }
    match v {
        VersionRef::Latest => visible
            .last()
            .copied()
            .ok_or_else(|| ApiError::subject_not_found(subject)),
        VersionRef::Number(n) => visible
            .iter()
            .find(|(version, _)| *version == n)
            .copied()
            .ok_or_else(|| ApiError::version_not_found(subject, version)),
    }
}

fn schema_text(store: &Store, id: u32) -> Result<String, ApiError> {
    store
        .read()
        .schemas
        .get(&id)
        .map(|s| s.schema.clone())
        .ok_or_else(|| ApiError::schema_not_found(&id.to_string()))
}

async fn list_subjects(State(store): Api, Query(params): Params) -> Answer {
    store.catch_up().await?;
    let deleted = flag(&params, "deleted");
    let state = store.read();
    let subjects: Vec<&String> = state
        .subjects
        .iter()
        .filter(|(_, vs)| vs.values().any(|sv| deleted || !sv.deleted))
        .map(|(s, _)| s)
        .collect();
    Ok(ok(json!(subjects)))
}

async fn list_versions(
    State(store): Api,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Answer {
    store.catch_up().await?;
    let deleted = flag(&params, "deleted");
    let state = store.read();
    let versions: Vec<u32> = state
        .subjects
        .get(&subject)
        .map(|vs| {
            vs.iter()
                .filter(|(_, sv)| deleted || !sv.deleted)
                .map(|(n, _)| *n)
                .collect()
        })
        .unwrap_or_default();
    if versions.is_empty() {
        return Err(ApiError::subject_not_found(&subject));
    }
    Ok(ok(json!(versions)))
}

async fn get_version(
    State(store): Api,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Answer {
    store.catch_up().await?;
    let (version, id) = resolve(&store, &subject, &version, flag(&params, "deleted"))?;
    let schema = schema_text(&store, id)?;
    Ok(ok(
        json!({"subject": subject, "version": version, "id": id, "schema": schema}),
    ))
}

async fn get_version_schema(
    State(store): Api,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    store.catch_up().await?;
    let (_, id) = resolve(&store, &subject, &version, false)?;
    Ok(ok_raw(schema_text(&store, id)?))
}

fn ok_raw(schema: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], schema).into_response()
}

async fn register(State(store): Api, Path(subject): Path<String>, body: Bytes) -> Answer {
    let request = parse_request(&body)?;
    let registered = store.register(&subject, &request.schema).await?;
    Ok(ok(json!({"id": registered.id})))
}

async fn lookup(State(store): Api, Path(subject): Path<String>, body: Bytes) -> Answer {
    let request = parse_request(&body)?;
    let schema = parse_avro_schema(&request.schema).map_err(ApiError::invalid_schema)?;
    let normalized = crate::store::normalize(&schema)?;
    store.catch_up().await?;
    let state = store.read();
    let live = state.live_versions(&subject);
    if live.is_empty() {
        return Err(ApiError::subject_not_found(&subject));
    }
    let id = state
        .id_of(&normalized)
        .ok_or_else(|| ApiError::schema_not_found("in this subject"))?;
    let (version, _) = live
        .iter()
        .find(|(_, v_id)| *v_id == id)
        .ok_or_else(|| ApiError::schema_not_found("in this subject"))?;
    let schema = state
        .schemas
        .get(&id)
        .map(|s| s.schema.clone())
        .unwrap_or_default();
    Ok(ok(
        json!({"subject": subject, "version": version, "id": id, "schema": schema}),
    ))
}

async fn delete_subject(
    State(store): Api,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Answer {
    let permanent = flag(&params, "permanent");
    store.catch_up().await?;
    let versions: Vec<(u32, bool)> = store
        .read()
        .subjects
        .get(&subject)
        .map(|vs| vs.iter().map(|(n, sv)| (*n, sv.deleted)).collect())
        .unwrap_or_default();
    let targets: Vec<u32> = if permanent {
        if versions.iter().any(|(_, deleted)| !deleted) {
            return Err(ApiError::subject_not_soft_deleted(&subject));
        }
        versions.iter().map(|(n, _)| *n).collect()
    } else {
        versions
            .iter()
            .filter(|(_, deleted)| !deleted)
            .map(|(n, _)| *n)
            .collect()
    };
    if targets.is_empty() {
        return Err(ApiError::subject_not_found(&subject));
    }
    for v in &targets {
        store.delete_version(&subject, *v, permanent).await?;
    }
    Ok(ok(json!(targets)))
}

async fn delete_version(
    State(store): Api,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Answer {
    let permanent = flag(&params, "permanent");
    store.catch_up().await?;
    let (version, _) = resolve(&store, &subject, &version, permanent)?;
    store.delete_version(&subject, version, permanent).await?;
    Ok(ok(json!(version)))
}

async fn schema_by_id(State(store): Api, Path(id): Path<String>) -> Answer {
    let id = parse_id(&id)?;
    store.catch_up().await?;
    Ok(ok(json!({"schema": schema_text(&store, id)?})))
}

async fn raw_schema_by_id(State(store): Api, Path(id): Path<String>) -> Answer {
    let id = parse_id(&id)?;
    store.catch_up().await?;
    Ok(ok_raw(schema_text(&store, id)?))
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse().map_err(|_| ApiError::schema_not_found(id))
}

/// (subject, version) pairs using a schema id, live ones only unless `deleted`.
fn uses_of(store: &Store, id: u32, deleted: bool) -> Result<Vec<(String, u32)>, ApiError> {
    let state = store.read();
    if !state.schemas.contains_key(&id) {
        return Err(ApiError::schema_not_found(&id.to_string()));
    }
    Ok(state
        .subjects
        .iter()
        .flat_map(|(s, vs)| {
            vs.iter()
                .filter(|(_, sv)| sv.id == id && (deleted || !sv.deleted))
                .map(move |(n, _)| (s.clone(), *n))
        })
        .collect())
}

async fn subjects_by_id(
    State(store): Api,
    Path(id): Path<String>,
    Query(params): Params,
) -> Answer {
    let id = parse_id(&id)?;
    store.catch_up().await?;
    let mut subjects: Vec<String> = uses_of(&store, id, flag(&params, "deleted"))?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    Ok(ok(json!(subjects)))
}

async fn versions_by_id(
    State(store): Api,
    Path(id): Path<String>,
    Query(params): Params,
) -> Answer {
    let id = parse_id(&id)?;
    store.catch_up().await?;
    let uses: Vec<Value> = uses_of(&store, id, flag(&params, "deleted"))?
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    Ok(ok(json!(uses)))
}

async fn compatibility(
    State(store): Api,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Answer {
    let request = parse_request(&body)?;
    let new = parse_avro_schema(&request.schema).map_err(ApiError::invalid_schema)?;
    let reference = parse_version(&version)?;
    store.catch_up().await?;
    let (level, against) = {
        let state = store.read();
        let level = state.level_for(&subject, store.default_level());
        let live = state.live_versions(&subject);
        if live.is_empty() {
            return Err(ApiError::subject_not_found(&subject));
        }
        // "latest" checks as a registration would (all versions for transitive levels); a
        // numbered version checks against that version alone.
        let chosen: Vec<(u32, u32)> = match reference {
            VersionRef::Latest => live,
            VersionRef::Number(n) => {
                vec![
                    live.into_iter()
                        .find(|(v, _)| *v == n)
                        .ok_or_else(|| ApiError::version_not_found(&subject, &version))?,
                ]
            }
        };
        let schemas: Vec<Schema> = chosen
            .iter()
            .filter_map(|(_, id)| state.schemas.get(id))
            .filter_map(|s| parse_avro_schema(&s.schema).ok())
            .collect();
        (level, schemas)
    };
    let reasons = compat::check(level, &new, &against);
    let mut body = json!({"is_compatible": reasons.is_empty()});
    if flag(&params, "verbose") {
        body["messages"] = json!(reasons);
    }
    Ok(ok(body))
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

fn parse_level_request(body: &Bytes) -> Result<Compatibility, ApiError> {
    let request: ConfigRequest = serde_json::from_slice(body).map_err(ApiError::bad_request)?;
    let text = request
        .compatibility
        .or(request.compatibility_level)
        .unwrap_or_default();
    compat::parse_level(&text).ok_or_else(|| ApiError::invalid_level(&text))
}

async fn get_global_config(State(store): Api) -> Answer {
    store.catch_up().await?;
    let level = store.read().global_level.unwrap_or(store.default_level());
    Ok(ok(json!({"compatibilityLevel": level.as_str()})))
}

async fn put_global_config(State(store): Api, body: Bytes) -> Answer {
    let level = parse_level_request(&body)?;
    store.set_level(None, Some(level)).await?;
    Ok(ok(json!({"compatibility": level.as_str()})))
}

async fn delete_global_config(State(store): Api) -> Answer {
    store.catch_up().await?;
    let previous = store.read().global_level.unwrap_or(store.default_level());
    store.set_level(None, None).await?;
    Ok(ok(json!({"compatibilityLevel": previous.as_str()})))
}

async fn get_subject_config(
    State(store): Api,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Answer {
    store.catch_up().await?;
    let state = store.read();
    let level = match state.subject_levels.get(&subject) {
        Some(l) => *l,
        None if flag(&params, "defaultToGlobal") => {
            state.level_for(&subject, store.default_level())
        }
        None => return Err(ApiError::subject_level_not_found(&subject)),
    };
    Ok(ok(json!({"compatibilityLevel": level.as_str()})))
}

async fn put_subject_config(State(store): Api, Path(subject): Path<String>, body: Bytes) -> Answer {
    let level = parse_level_request(&body)?;
    store.set_level(Some(&subject), Some(level)).await?;
    Ok(ok(json!({"compatibility": level.as_str()})))
}

async fn delete_subject_config(State(store): Api, Path(subject): Path<String>) -> Answer {
    store.catch_up().await?;
    let previous = store
        .read()
        .subject_levels
        .get(&subject)
        .copied()
        .ok_or_else(|| ApiError::subject_level_not_found(&subject))?;
    store.set_level(Some(&subject), None).await?;
    Ok(ok(json!({"compatibilityLevel": previous.as_str()})))
}
