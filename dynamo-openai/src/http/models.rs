//! `/v1/models`, the health probes, `/metrics`, and the 404 for everything else.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use crate::ApiError;
use crate::protocol::{ModelCard, ModelList};

pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Json<ModelList> {
    let data = shared
        .registry
        .entries()
        .iter()
        .map(|entry| ModelCard {
            id: entry.name.clone(),
            object: "model".to_owned(),
            created: entry.created,
            owned_by: entry.owned_by.clone(),
        })
        .collect();
    Json(ModelList {
        object: "list".to_owned(),
        data,
    })
}

/// Healthy when at least one model is served.
pub(crate) async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let models = shared.registry.names();
    let status = match models.is_empty() {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::OK,
    };
    let word = if models.is_empty() {
        "unhealthy"
    } else {
        "healthy"
    };
    (status, Json(json!({ "status": word, "models": models }))).into_response()
}

/// The process answers.
pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// Ready to take requests: at least one model is served.
pub(crate) async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    match shared.registry.names().is_empty() {
        true => ApiError::from(dynamo_core::Error::unavailable(
            "no model is registered yet",
        ))
        .into_response(),
        false => Json(json!({ "status": "ready" })).into_response(),
    }
}

pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match &shared.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => ApiError::from(dynamo_core::Error::not_found("a metrics recorder")).into_response(),
    }
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::from(dynamo_core::Error::not_found(format!(
        "the route {}",
        uri.path()
    )))
}
