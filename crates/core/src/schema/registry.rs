//! A client of the Confluent Schema Registry API (ours, Confluent's, Karapace, Apicurio's ccompat
//! API or Redpanda's), with a cache: schemas by id never change, so each is fetched once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// Content type of the registry API.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Registry settings (`[registry]` in a service's configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://localhost:8081`.
    pub url: String,
    /// User name for HTTP basic authentication (Confluent Cloud: the API key).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for HTTP basic authentication (Confluent Cloud: the API secret).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Timeout of one request, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl RegistryConfig {
    /// Settings for a registry at `url` without authentication.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            timeout_ms: default_timeout_ms(),
        }
    }

    /// The same settings, sending `user` and `password` by HTTP basic authentication.
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: Secret) -> Self {
        self.username = Some(user.into());
        self.password = Some(password);
        self
    }
}

/// A registry error.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error (Confluent error codes: 40401 subject not found,
    /// 40402 version not found, 40403 schema not found, 409 incompatible, 42201 invalid schema).
    #[error("registry answered {status} (error code {error_code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Confluent error code.
        error_code: i64,
        /// Message from the registry.
        message: String,
    },
    /// The registry could not be reached or the request failed.
    #[error("registry request to {url} failed: {source}")]
    Http {
        /// The URL requested.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The client could not be built.
    #[error("invalid registry client settings: {0}")]
    Config(String),
}

impl RegistryError {
    /// The Confluent error code, when the registry answered with one.
    pub fn error_code(&self) -> Option<i64> {
        match self {
            Self::Api { error_code, .. } => Some(*error_code),
            _ => None,
        }
    }
}

/// A version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The latest version.
    Latest,
    /// A version number.
    Number(u32),
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

/// A schema registered under a subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectSchema {
    /// Subject.
    pub subject: String,
    /// Version within the subject.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Schema text.
    pub schema: String,
}

/// Result of a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Compatibility {
    /// Whether the schema is compatible.
    pub is_compatible: bool,
    /// Why not, when the registry says (verbose mode).
    #[serde(default)]
    pub messages: Vec<String>,
}

#[derive(Serialize)]
struct SchemaBody<'a> {
    schema: &'a str,
    #[serde(rename = "schemaType")]
    schema_type: &'static str,
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    message: String,
}

/// The registry client. Cheap to clone; clones share the cache.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, Secret)>,
    by_id: Arc<RwLock<HashMap<u32, Arc<str>>>>,
    registered: Arc<RwLock<HashMap<(String, String), u32>>>,
}

impl RegistryClient {
    /// Creates a client.
    pub fn new(config: &RegistryConfig) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| RegistryError::Config(e.to_string()))?;
        let auth = match (&config.username, &config.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(RegistryError::Config(
                    "username and password must be given together".into(),
                ));
            }
        };
        Ok(Self {
            http,
            base: config.url.trim_end_matches('/').to_string(),
            auth,
            by_id: Arc::default(),
            registered: Arc::default(),
        })
    }

    /// The schema text of a global id; fetched once, then served from the cache.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<str>, RegistryError> {
        if let Some(schema) = read(&self.by_id).get(&id) {
            return Ok(schema.clone());
        }
        let body: SchemaById = self
            .call(
                reqwest::Method::GET,
                &format!("/schemas/ids/{id}"),
                None::<&()>,
            )
            .await?;
        let schema: Arc<str> = body.schema.into();
        write(&self.by_id).insert(id, schema.clone());
        Ok(schema)
    }

    /// Every subject (not soft-deleted ones).
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        self.call(reqwest::Method::GET, "/subjects", None::<&()>)
            .await
    }

    /// The subjects a global id is registered under (asked of the registry every time: a
    /// schema can be registered under another subject later).
    pub async fn subjects_by_id(&self, id: u32) -> Result<Vec<String>, RegistryError> {
        self.call(
            reqwest::Method::GET,
            &format!("/schemas/ids/{id}/subjects"),
            None::<&()>,
        )
        .await
    }

    /// A version of a subject (`Latest` is always asked of the registry; numbered versions also
    /// fill the id cache).
    pub async fn subject_version(
        &self,
        subject: &str,
        version: Version,
    ) -> Result<SubjectSchema, RegistryError> {
        let path = format!("/subjects/{}/versions/{version}", encode(subject));
        let s: SubjectSchema = self.call(reqwest::Method::GET, &path, None::<&()>).await?;
        write(&self.by_id)
            .entry(s.id)
            .or_insert_with(|| s.schema.as_str().into());
        Ok(s)
    }

    /// Registers an Avro schema under a subject and returns its global id (the existing id
    /// when the registry already has an equal schema).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(id) = read(&self.registered).get(&key) {
            return Ok(*id);
        }
        let path = format!("/subjects/{}/versions", encode(subject));
        let body = SchemaBody {
            schema,
            schema_type: "AVRO",
        };
        let IdBody { id } = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        write(&self.registered).insert(key, id);
        write(&self.by_id)
            .entry(id)
            .or_insert_with(|| schema.into());
        Ok(id)
    }

    /// Checks whether `schema` is compatible with a version of a subject, under the subject's
    /// compatibility level, asking for reasons.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        version: Version,
        schema: &str,
    ) -> Result<Compatibility, RegistryError> {
        let path = format!(
            "/compatibility/subjects/{}/versions/{version}?verbose=true",
            encode(subject)
        );
        let body = SchemaBody {
            schema,
            schema_type: "AVRO",
        };
        self.call(reqwest::Method::POST, &path, Some(&body)).await
    }

    /// The compatibility level set on a subject itself, or `None` when the subject follows the
    /// global level.
    pub async fn subject_level(&self, subject: &str) -> Result<Option<String>, RegistryError> {
        #[derive(Deserialize)]
        struct Level {
            #[serde(rename = "compatibilityLevel")]
            compatibility_level: String,
        }
        let path = format!("/config/{}", encode(subject));
        match self
            .call::<Level, ()>(reqwest::Method::GET, &path, None)
            .await
        {
            Ok(level) => Ok(Some(level.compatibility_level)),
            // 40408: no subject-level config; older registries answer 40401 for it.
            Err(e) if matches!(e.error_code(), Some(40408 | 40401)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the compatibility level of a subject (`BACKWARD`, `FULL_TRANSITIVE`, ...).
    pub async fn set_subject_level(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        #[derive(Serialize)]
        struct Body<'a> {
            compatibility: &'a str,
        }
        let path = format!("/config/{}", encode(subject));
        self.call::<serde_json::Value, _>(
            reqwest::Method::PUT,
            &path,
            Some(&Body {
                compatibility: level,
            }),
        )
        .await
        .map(|_| ())
    }

    async fn call<T: serde::de::DeserializeOwned, B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, RegistryError> {
        let url = format!("{}{path}", self.base);
        let http_err = |source| RegistryError::Http {
            url: url.clone(),
            source,
        };
        let mut request = self
            .http
            .request(method, &url)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        if let Some(body) = body {
            let bytes =
                serde_json::to_vec(body).map_err(|e| RegistryError::Config(e.to_string()))?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(bytes);
        }
        let response = request.send().await.map_err(http_err)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http_err)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| RegistryError::Api {
                status: status.as_u16(),
                error_code: 0,
                message: format!("unexpected response body: {e}"),
            });
        }
        let (error_code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => (e.error_code, e.message),
            Err(_) => (
                i64::from(status.as_u16()),
                String::from_utf8_lossy(&bytes).into_owned(),
            ),
        };
        Err(RegistryError::Api {
            status: status.as_u16(),
            error_code,
            message,
        })
    }
}

fn read<K, V>(lock: &RwLock<HashMap<K, V>>) -> std::sync::RwLockReadGuard<'_, HashMap<K, V>> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<K, V>(lock: &RwLock<HashMap<K, V>>) -> std::sync::RwLockWriteGuard<'_, HashMap<K, V>> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Percent-encodes a subject for a URL path (subjects may hold `/`, spaces, ...).
fn encode(subject: &str) -> String {
    url::form_urlencoded::byte_serialize(subject.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Makes the writer schema of every payload known to `decoder`, asking the registry for ids it
/// has not seen. While the registry is unreachable it retries with backoff (up to 30 s apart)
/// until `shutdown`, which returns [`ShuttingDown`]. An id the registry does not know (40403),
/// or a schema the decoder cannot take, is left for the decoder to report per record.
pub async fn learn_writer_schemas(
    registry: &RegistryClient,
    decoder: &mut crate::schema::arrow::AvroBatchDecoder,
    payloads: &[&[u8]],
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), ShuttingDown> {
    let mut backoff = Duration::from_millis(200);
    // Ids learned by a failed attempt stay learned: the next one asks only for the rest.
    while let Err(e) = try_learn_writer_schemas(registry, decoder, payloads).await {
        tracing::warn!(error = %e, "registry unavailable; retrying");
        tokio::select! {
            () = shutdown.cancelled() => return Err(ShuttingDown),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    Ok(())
}

/// One attempt of [`learn_writer_schemas`], for a caller that retries the whole unit of work
/// itself (a batch handler returning [`HandlerError::Unavailable`](crate::bus::HandlerError)):
/// the first failure of the registry is returned. An id the registry does not know (40403), or
/// a schema the decoder cannot take, is left for the decoder to report per record.
pub async fn try_learn_writer_schemas(
    registry: &RegistryClient,
    decoder: &mut crate::schema::arrow::AvroBatchDecoder,
    payloads: &[&[u8]],
) -> Result<(), RegistryError> {
    let mut tried = std::collections::HashSet::new();
    for payload in payloads {
        let Ok((id, _)) = crate::schema::wire::parse(payload) else {
            continue;
        };
        if decoder.is_registered(id) || !tried.insert(id) {
            continue;
        }
        match registry.schema_by_id(id).await {
            Ok(schema) => {
                let _ = decoder.register(id, &schema);
            }
            Err(e) if e.error_code() == Some(40403) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Returned when a shutdown interrupted waiting for the registry.
#[derive(Debug, thiserror::Error)]
#[error("shutting down while waiting for the schema registry")]
pub struct ShuttingDown;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::Json;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A registry double speaking the Confluent API for the client's requests, counting calls so
    /// that caching can be checked. (The real registry service is tested against this client.)
    #[derive(Default)]
    struct Fake {
        schemas: Mutex<Vec<(String, String)>>, // index = id - 1: (subject, schema)
        calls: AtomicUsize,
        auth_seen: Mutex<Option<String>>,
    }

    type S = State<Arc<Fake>>;

    fn not_found(code: i64, message: &str) -> (StatusCode, Json<serde_json::Value>) {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error_code": code, "message": message})),
        )
    }

    async fn by_id(
        State(f): S,
        Path(id): Path<usize>,
    ) -> Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)> {
        f.calls.fetch_add(1, Ordering::SeqCst);
        let schemas = f.schemas.lock().unwrap();
        let (_, schema) = schemas
            .get(id.wrapping_sub(1))
            .ok_or_else(|| not_found(40403, "Schema not found"))?;
        Ok(Json(serde_json::json!({"schema": schema})))
    }

    async fn version(
        State(f): S,
        Path((subject, version)): Path<(String, String)>,
    ) -> Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)> {
        f.calls.fetch_add(1, Ordering::SeqCst);
        let schemas = f.schemas.lock().unwrap();
        let versions: Vec<(usize, &String)> = schemas
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| *s == subject)
            .map(|(i, (_, sc))| (i + 1, sc))
            .collect();
        if versions.is_empty() {
            return Err(not_found(40401, "Subject not found"));
        }
        let n = if version == "latest" {
            versions.len()
        } else {
            version.parse().unwrap_or(0)
        };
        let (id, schema) = versions
            .get(n.wrapping_sub(1))
            .ok_or_else(|| not_found(40402, "Version not found"))?;
        Ok(Json(
            serde_json::json!({"subject": subject, "version": n, "id": id, "schema": schema}),
        ))
    }

    async fn register(
        State(f): S,
        Path(subject): Path<String>,
        headers: HeaderMap,
        Json(body): Json<serde_json::Value>,
    ) -> Json<serde_json::Value> {
        f.calls.fetch_add(1, Ordering::SeqCst);
        *f.auth_seen.lock().unwrap() = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(headers.get("content-type").unwrap(), CONTENT_TYPE);
        let schema = body["schema"].as_str().unwrap().to_string();
        let mut schemas = f.schemas.lock().unwrap();
        let id = match schemas
            .iter()
            .position(|(s, sc)| *s == subject && *sc == schema)
        {
            Some(i) => i + 1,
            None => {
                schemas.push((subject, schema));
                schemas.len()
            }
        };
        Json(serde_json::json!({"id": id}))
    }

    async fn compat(
        Path((_subject, _version)): Path<(String, String)>,
        Json(body): Json<serde_json::Value>,
    ) -> Json<serde_json::Value> {
        let ok = !body["schema"].as_str().unwrap().contains("breaking");
        let messages: Vec<&str> = if ok {
            vec![]
        } else {
            vec!["READER_FIELD_MISSING_DEFAULT_VALUE: x"]
        };
        Json(serde_json::json!({"is_compatible": ok, "messages": messages}))
    }

    async fn serve() -> (String, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        let app = axum::Router::new()
            .route("/schemas/ids/{id}", get(by_id))
            .route("/subjects/{subject}/versions/{version}", get(version))
            .route("/subjects/{subject}/versions", post(register))
            .route(
                "/compatibility/subjects/{subject}/versions/{version}",
                post(compat),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/"), fake)
    }

    const V1: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"}]}"#;

    #[tokio::test]
    async fn registers_fetches_and_caches() {
        let (url, fake) = serve().await;
        let client = RegistryClient::new(&RegistryConfig::new(url)).unwrap();
        let id = client.register("raw.a-value", V1).await.unwrap();
        assert_eq!(id, 1);
        assert_eq!(client.register("raw.a-value", V1).await.unwrap(), 1);
        // The second registration and the lookup by id came from the cache.
        assert_eq!(&*client.schema_by_id(1).await.unwrap(), V1);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);

        let fresh = RegistryClient::new(&RegistryConfig::new(client.base.clone())).unwrap();
        assert_eq!(&*fresh.schema_by_id(1).await.unwrap(), V1);
        assert_eq!(&*fresh.schema_by_id(1).await.unwrap(), V1);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);

        let latest = fresh
            .subject_version("raw.a-value", Version::Latest)
            .await
            .unwrap();
        assert_eq!(
            (latest.id, latest.version, latest.schema.as_str()),
            (1, 1, V1)
        );
    }

    #[tokio::test]
    async fn api_errors_carry_confluent_codes() {
        let (url, _fake) = serve().await;
        let client = RegistryClient::new(&RegistryConfig::new(url)).unwrap();
        let e = client.schema_by_id(99).await.unwrap_err();
        assert_eq!(e.error_code(), Some(40403), "{e}");
        let e = client
            .subject_version("nope-value", Version::Latest)
            .await
            .unwrap_err();
        assert_eq!(e.error_code(), Some(40401), "{e}");
        client.register("s", V1).await.unwrap();
        let e = client
            .subject_version("s", Version::Number(5))
            .await
            .unwrap_err();
        assert_eq!(e.error_code(), Some(40402), "{e}");
    }

    #[tokio::test]
    async fn compatibility_reasons_and_basic_auth() {
        let (url, fake) = serve().await;
        let mut config = RegistryConfig::new(url);
        config.username = Some("key".into());
        config.password = Some(Secret::new("secret"));
        let client = RegistryClient::new(&config).unwrap();
        let ok = client
            .check_compatibility("s", Version::Latest, V1)
            .await
            .unwrap();
        assert!(ok.is_compatible && ok.messages.is_empty());
        let bad = client
            .check_compatibility("s", Version::Latest, "breaking")
            .await
            .unwrap();
        assert!(!bad.is_compatible);
        assert_eq!(bad.messages.len(), 1);
        client.register("a/b c", V1).await.unwrap();
        // "key:secret" in base64.
        assert_eq!(
            fake.auth_seen.lock().unwrap().as_deref(),
            Some("Basic a2V5OnNlY3JldA==")
        );
        assert!(!format!("{client:?}").contains("secret\""));
    }

    #[tokio::test]
    async fn unreachable_registry_is_an_http_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client =
            RegistryClient::new(&RegistryConfig::new(format!("http://127.0.0.1:{port}"))).unwrap();
        assert!(matches!(
            client.schema_by_id(1).await,
            Err(RegistryError::Http { .. })
        ));
    }

    #[test]
    fn half_configured_auth_is_rejected() {
        let mut config = RegistryConfig::new("http://x");
        config.username = Some("only-user".into());
        assert!(matches!(
            RegistryClient::new(&config),
            Err(RegistryError::Config(_))
        ));
    }

    #[tokio::test]
    async fn writer_schemas_are_learned_once_unknown_ids_left_and_an_outage_retried() {
        use crate::schema::arrow::AvroBatchDecoder;
        use crate::schema::wire::frame;
        use tokio_util::sync::CancellationToken;
        let (url, fake) = serve().await;
        let client = RegistryClient::new(&RegistryConfig::new(url)).unwrap();
        client.register("raw.a-value", V1).await.unwrap();
        let mut decoder = AvroBatchDecoder::new(Some(V1.to_string()), 100);
        // Schema 1 is known to the registry, 9 is not, the third payload is not framed at all.
        let payloads = [
            frame(1, &[2]),
            frame(9, &[2]),
            b"x".to_vec(),
            frame(1, &[4]),
        ];
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        try_learn_writer_schemas(&client, &mut decoder, &refs)
            .await
            .unwrap();
        assert!(decoder.is_registered(1));
        assert!(!decoder.is_registered(9));
        // Known ids are not asked for again.
        let calls = fake.calls.load(Ordering::SeqCst);
        let shutdown = CancellationToken::new();
        learn_writer_schemas(&client, &mut decoder, &refs[..1], &shutdown)
            .await
            .unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), calls);

        // No registry: one attempt fails at once; the retrying form waits until the shutdown.
        let down = RegistryClient::new(&RegistryConfig::new("http://127.0.0.1:9")).unwrap();
        let mut fresh = AvroBatchDecoder::new(Some(V1.to_string()), 100);
        assert!(
            try_learn_writer_schemas(&down, &mut fresh, &refs)
                .await
                .is_err()
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.cancel();
        });
        let started = std::time::Instant::now();
        assert!(
            learn_writer_schemas(&down, &mut fresh, &refs, &shutdown)
                .await
                .is_err()
        );
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "it retried until the shutdown"
        );
    }
}
