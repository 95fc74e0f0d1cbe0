//! Errors in Confluent's shape: `{"error_code": 40401, "message": "..."}` with the HTTP status
//! taken from the code's first three digits.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::CONTENT_TYPE;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl ApiError {
    fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn subject_not_found(subject: &str) -> Self {
        Self::new(40401, format!("Subject '{subject}' not found."))
    }
    pub(crate) fn version_not_found(subject: &str, version: &str) -> Self {
        Self::new(
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        )
    }
    pub(crate) fn schema_not_found(what: &str) -> Self {
        Self::new(40403, format!("Schema {what} not found."))
    }
    pub(crate) fn not_soft_deleted(subject: &str, version: u32) -> Self {
        Self::new(
            40407,
            format!(
                "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
            ),
        )
    }
    pub(crate) fn subject_not_soft_deleted(subject: &str) -> Self {
        Self::new(
            40405,
            format!("Subject '{subject}' was not deleted first before being permanently deleted"),
        )
    }
    pub(crate) fn subject_level_not_found(subject: &str) -> Self {
        Self::new(
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }
    pub(crate) fn incompatible(reasons: &[String]) -> Self {
        Self::new(
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema: {}",
                reasons.join("; ")
            ),
        )
    }
    pub(crate) fn invalid_schema(message: impl std::fmt::Display) -> Self {
        Self::new(42201, format!("Invalid schema: {message}"))
    }
    pub(crate) fn invalid_version(version: &str) -> Self {
        Self::new(
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }
    pub(crate) fn invalid_level(level: &str) -> Self {
        Self::new(
            42203,
            format!(
                "Invalid compatibility level {level:?}. Valid values are none, backward, forward, full, backward_transitive, forward_transitive and full_transitive"
            ),
        )
    }
    pub(crate) fn bad_request(message: impl std::fmt::Display) -> Self {
        Self::new(42200, format!("Unprocessable entity: {message}"))
    }
    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(40301, message)
    }
    pub(crate) fn store(message: impl std::fmt::Display) -> Self {
        Self::new(
            50002,
            format!("Error while reading or writing the schemas topic: {message}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(u16::try_from(http_status(self.code)).unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"error_code": self.code, "message": self.message});
        (
            status,
            [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
            Json(body),
        )
            .into_response()
    }
}

/// Confluent's codes start with their HTTP status (40401 -> 404, 409 -> 409).
fn http_status(code: u32) -> u32 {
    let mut c = code;
    while c >= 1000 {
        c /= 10;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_come_from_the_codes() {
        assert_eq!(http_status(40401), 404);
        assert_eq!(http_status(409), 409);
        assert_eq!(http_status(401), 401);
        assert_eq!(http_status(40301), 403);
        assert_eq!(http_status(42201), 422);
        assert_eq!(http_status(50002), 500);
    }
}
