//! The HTTP API: `POST /v1/topics/{topic}/records` and the OpenAPI document.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{debug, warn};
use tributary_core::auth::{self, ApiKey};
use tributary_core::bus::{BusError, OutboundRecord, Producer};
use tributary_core::schema::registry::{RegistryClient, RegistryError};
use tributary_core::schema::wire;

use crate::config::IngestSettings;
use crate::limits::{DecodeError, RateLimiter, decompress};
use crate::metrics::{IngestMetrics, StatusLabel};
use crate::records::{BodyKind, RecordError, TopicCodec, json_records};

/// The OpenAPI document of this API.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

pub(crate) struct AppState {
    pub(crate) topics: BTreeMap<String, TopicCodec>,
    pub(crate) credentials: Vec<ApiKey>,
    pub(crate) settings: IngestSettings,
    pub(crate) producer: Producer,
    pub(crate) registry: RegistryClient,
    pub(crate) limiter: RateLimiter,
    /// One permit per record in flight (see `max_in_flight_records`).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// Largest key plus value of one record the broker takes (librdkafka's `message.max.bytes`).
    pub(crate) max_record_bytes: usize,
    pub(crate) metrics: IngestMetrics,
}

type Shared = State<Arc<AppState>>;

/// An answer other than success: status, a short error name, and details.
#[derive(Debug)]
pub(crate) struct Reject {
    status: StatusCode,
    body: serde_json::Value,
    retry_after: Option<Duration>,
}

impl Reject {
    fn new(status: StatusCode, error: &str, message: impl std::fmt::Display) -> Self {
        Self {
            status,
            body: json!({"error": error, "message": message.to_string()}),
            retry_after: None,
        }
    }

    fn retry(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    fn invalid(e: &RecordError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({"error": "invalid_record", "record": e.record, "path": e.path, "message": e.message}),
            retry_after: None,
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up, at least one.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let cors = cors(&state.settings.cors_allowed_origins);
    Router::new()
        .route("/v1/topics/{topic}/records", post(produce))
        .route(
            "/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        // A known path asked with another method, and any other path: the same JSON error
        // shape as every refusal (axum adds the `Allow` header to the 405).
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            Reject::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{method} is not served at {}: records go to POST /v1/topics/{{topic}}/records",
                    uri.path()
                ),
            )
        })
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            Reject::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no endpoint {method} {}: records go to POST /v1/topics/{{topic}}/records",
                    uri.path()
                ),
            )
        })
        .layer(cors)
        .with_state(state)
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-api-key"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(3600))
}

async fn produce(
    State(state): Shared,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = handle(&state, &topic, &headers, body).await;
    let response = match result {
        Ok(response) => response,
        Err(reject) => {
            debug!(topic, status = reject.status.as_u16(), "request rejected");
            reject.into_response()
        }
    };
    state
        .metrics
        .requests
        .get_or_create(&StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    debug!(
        topic,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request answered"
    );
    response
}

async fn handle(
    state: &AppState,
    topic: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Reject> {
    let credential = authenticate(&state.credentials, headers)?;
    let codec = state.topics.get(topic).ok_or_else(|| {
        Reject::new(
            StatusCode::NOT_FOUND,
            "unknown_topic",
            format!("no topic {topic} in the catalog"),
        )
    })?;
    if !credential.allows(topic) {
        return Err(Reject::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} may not write to {topic}", credential.name),
        ));
    }
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(BodyKind::from_content_type)
        .ok_or_else(|| {
            Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "use application/json, application/x-ndjson or application/vnd.confluent.avro",
            )
        })?;

    // The size limit applies to the bytes as they arrive, with or without Content-Length.
    let max = state.settings.max_body_bytes;
    let raw = axum::body::to_bytes(body, max).await.map_err(|_| {
        Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {max} bytes"),
        )
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let bytes =
        decompress(encoding, raw, state.settings.max_decompressed_bytes).map_err(|e| match e {
            DecodeError::Unsupported(enc) => Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("content encoding {enc} is not supported: use gzip or zstd"),
            ),
            DecodeError::TooLarge(limit) => Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {limit} bytes once decompressed"),
            ),
            DecodeError::Corrupt(m) => Reject::new(
                StatusCode::BAD_REQUEST,
                "bad_encoding",
                format!("cannot decompress: {m}"),
            ),
        })?;

    let records = match kind {
        BodyKind::Json | BodyKind::NdJson => {
            let values = json_records(kind, &bytes).map_err(|e| Reject::invalid(&e))?;
            check_count(state, topic, values.len())?;
            rate_limit(state, &credential.name, topic, values.len())?;
            codec
                .encode_json(&values)
                .map_err(|e| rejected(state, topic, values.len(), &e))?
        }
        BodyKind::Avro => {
            rate_limit(state, &credential.name, topic, 1)?;
            vec![accept_avro(state, codec, &bytes).await?]
        }
    };
    send(state, codec, records).await
}

fn rejected(state: &AppState, topic: &str, n: usize, e: &RecordError) -> Reject {
    IngestMetrics::count(&state.metrics.rejected, topic, n);
    Reject::invalid(e)
}

fn check_count(state: &AppState, topic: &str, n: usize) -> Result<(), Reject> {
    let max = state.settings.max_records_per_request;
    if n == 0 {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "no_records",
            "the body holds no record",
        ));
    }
    if n > max {
        IngestMetrics::count(&state.metrics.rejected, topic, n);
        return Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!("{n} records in one request; at most {max}"),
        ));
    }
    Ok(())
}

fn rate_limit(state: &AppState, who: &str, topic: &str, n: usize) -> Result<(), Reject> {
    state.limiter.take(who, n).map_err(|wait| {
        IngestMetrics::count(&state.metrics.rejected, topic, n);
        Reject::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{who} is over its rate limit"),
        )
        .retry(wait)
    })
}

async fn accept_avro(
    state: &AppState,
    codec: &TopicCodec,
    bytes: &Bytes,
) -> Result<OutboundRecord, Reject> {
    let (id, _) = wire::parse(bytes).map_err(|e| {
        Reject::invalid(&RecordError {
            record: 0,
            path: "$".into(),
            message: e.to_string(),
        })
    })?;
    let writer = if id == codec.schema_id {
        codec.topic.value_schema.clone()
    } else {
        // Only the topic's own schemas (any version of its subject): an id registered under
        // another subject, or under none, is refused before its schema is fetched.
        let subject = codec.topic.value_subject();
        let unregistered = |detail: String| {
            Reject::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "schema_not_of_topic",
                format!("schema id {id} {detail}"),
            )
        };
        let registry_error = |e: RegistryError| match e.error_code() {
            Some(40403) => unregistered("is not in the registry".to_string()),
            _ => Reject::new(StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable", e)
                .retry(Duration::from_secs(1)),
        };
        let subjects = state
            .registry
            .subjects_by_id(id)
            .await
            .map_err(&registry_error)?;
        if !subjects.contains(&subject) {
            return Err(unregistered(format!(
                "is not registered under {subject} (the topic's subject)"
            )));
        }
        let text = state
            .registry
            .schema_by_id(id)
            .await
            .map_err(&registry_error)?;
        tributary_core::schema::parse_avro_schema(&text).map_err(|e| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                "unknown_schema",
                format!("schema id {id} does not parse: {e}"),
            )
        })?
    };
    codec
        .accept_avro(bytes, &writer)
        .map_err(|e| rejected(state, &codec.topic.name, 1, &e))
}

/// Produces the records and answers only once the broker acknowledged all of them.
async fn send(
    state: &AppState,
    codec: &TopicCodec,
    records: Vec<OutboundRecord>,
) -> Result<Response, Reject> {
    let timeout = Duration::from_millis(state.settings.request_timeout_ms);
    // Back-pressure before anything is handed to the producer, so a 503 here means nothing
    // of the request was produced.
    // A record the broker would refuse as too large is the client's error, found before
    // anything is sent.
    if let Some((index, size)) = records
        .iter()
        .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.payload.as_ref().map_or(0, Vec::len))
        .enumerate()
        .find(|(_, size)| *size > state.max_record_bytes)
    {
        IngestMetrics::count(&state.metrics.rejected, &codec.topic.name, records.len());
        return Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "record_too_large",
            format!(
                "record {index} is {size} bytes encoded; at most {}",
                state.max_record_bytes
            ),
        ));
    }
    let permits = u32::try_from(records.len()).unwrap_or(u32::MAX);
    let permits = state
        .in_flight
        .clone()
        .try_acquire_many_owned(permits)
        .map_err(|_| {
            Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "too many records in flight; retry later",
            )
            .retry(Duration::from_secs(1))
        })?;
    let started = Instant::now();
    // The permits go with the records until the broker settled them, even when this request
    // stops waiting: records still queued keep counting against the ceiling.
    let producer = state.producer.clone();
    let delivery = tokio::spawn(async move {
        let result = producer.send_all(&records).await;
        drop(permits);
        result
    });
    let result = match tokio::time::timeout(timeout, delivery).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(join)) => Ok(Err(BusError::Admin {
            topic: codec.topic.name.clone(),
            message: join.to_string(),
        })),
        Err(elapsed) => Err(elapsed),
    };
    state
        .metrics
        .produce_latency
        .observe(started.elapsed().as_secs_f64());
    let unavailable = |message: String| {
        Reject::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .retry(Duration::from_secs(1))
    };
    let delivered = match result {
        Ok(Ok(d)) => d,
        Ok(Err(BusError::QueueFull)) => {
            return Err(unavailable(
                "the producer queue is full; retry later".into(),
            ));
        }
        Ok(Err(e)) if e.is_record_too_large() => {
            return Err(Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "record_too_large",
                format!("the broker refused a record: {e}"),
            ));
        }
        Ok(Err(e)) => {
            warn!(topic = %codec.topic.name, error = %e, "produce failed");
            return Err(unavailable(format!(
                "the broker did not acknowledge the records: {e}"
            )));
        }
        Err(_) => {
            warn!(topic = %codec.topic.name, ?timeout, "produce timed out");
            return Err(unavailable(format!(
                "the broker did not acknowledge the records within {timeout:?}"
            )));
        }
    };
    IngestMetrics::count(&state.metrics.accepted, &codec.topic.name, delivered.len());
    let records: Vec<_> = delivered
        .iter()
        .map(|d| json!({"partition": d.partition, "offset": d.offset}))
        .collect();
    Ok(axum::Json(
        json!({"topic": codec.topic.name, "schema_id": codec.schema_id, "records": records}),
    )
    .into_response())
}

/// Finds the credential a request carries: `X-API-Key: <key>` or `Authorization: Bearer <token>`.
fn authenticate<'a>(credentials: &'a [ApiKey], headers: &HeaderMap) -> Result<&'a ApiKey, Reject> {
    auth::authenticate_key(credentials, headers)
        .map_err(|e| Reject::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_parses() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap_or_default();
        assert_eq!(
            doc["openapi"].as_str().map(|v| v.starts_with("3.")),
            Some(true)
        );
        assert!(doc["paths"]["/v1/topics/{topic}/records"]["post"].is_object());
    }
}
