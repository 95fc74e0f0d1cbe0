//! The online lookup API: `GET /v1/features/{view}/{entity}` over the views' latest values.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tributary_core::auth::{self, ApiKey};

use crate::view::{Online, View};

/// The lookup API over the views' online values.
pub(crate) fn lookup_api(views: &[View], keys: Vec<ApiKey>) -> axum::Router {
    let online: HashMap<String, Online> = views
        .iter()
        .map(|v| (v.name.clone(), v.online.clone()))
        .collect();
    axum::Router::new()
        .route("/v1/features/{view}/{entity}", get(lookup))
        .with_state(Arc::new(Lookup { online, keys }))
}

/// `GET /v1/features/{view}/{entity}`: the entity's latest window values from this replica's
/// state (404 when the view is unknown or the entity has none here). The caller's API key
/// must cover the view: 401 without a known key, 403 for another view.
async fn lookup(
    State(state): State<Arc<Lookup>>,
    Path((view, entity)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let refuse = |status: StatusCode, error: String| {
        (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
    };
    let key = match auth::authenticate_key(&state.keys, &headers) {
        Ok(key) => key,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    if !key.allows(&view) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("{} may not read the view {view}", key.name),
        );
    }
    let Some(values) = state.online.get(&view) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("no feature view {view}")})),
        )
            .into_response();
    };
    let found = values
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .lookup(&entity);
    match found {
        Some(v) => axum::Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("no values for {entity} in {view} on this replica")})),
        )
            .into_response(),
    }
}

/// What the lookup API serves, and to whom.
struct Lookup {
    online: HashMap<String, Online>,
    keys: Vec<ApiKey>,
}
