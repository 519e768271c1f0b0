//! `/v1/models`, the health probes, `/metrics`, and the 404 for everything else.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::Shared;
use super::openapi::ErrorResponse;
use crate::ApiError;
use crate::protocol::{ModelCard, ModelList};

/// The answer of the health probes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProbeStatus {
    /// `healthy` or `unhealthy` (`/health`), `live` (`/live`), `ready` (`/ready`).
    status: &'static str,
    /// The served models, in name order (`/health` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Vec<String>>,
}

impl ProbeStatus {
    fn new(status: &'static str) -> Self {
        ProbeStatus {
            status,
            models: None,
        }
    }
}

/// The served models
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "listModels",
    tag = "openai",
    responses((status = 200, description = "The models, in name order", body = ModelList)),
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Json<ModelList> {
    let card = |id: &str, created, owned_by: &str| ModelCard {
        id: id.to_owned(),
        object: "model".to_owned(),
        created,
        owned_by: owned_by.to_owned(),
    };
    let mut data: Vec<ModelCard> = shared
        .registry
        .entries()
        .iter()
        .map(|entry| card(&entry.name, entry.created, &entry.owned_by))
        .collect();
    for model in shared.registry.embedding_models() {
        if !data.iter().any(|listed| listed.id == model.name) {
            data.push(card(&model.name, model.created, &model.owned_by));
        }
    }
    data.sort_by(|a, b| a.id.cmp(&b.id));
    Json(ModelList {
        object: "list".to_owned(),
        data,
    })
}

/// Healthy when at least one model is served
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "operations",
    responses(
        (status = 200, description = "`healthy`, with the served models", body = ProbeStatus),
        (status = 503, description = "`unhealthy`: no model is served", body = ProbeStatus),
    ),
)]
pub(crate) async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let models = shared.registry.names();
    let (status, word) = match models.is_empty() {
        true => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        false => (StatusCode::OK, "healthy"),
    };
    let body = ProbeStatus {
        status: word,
        models: Some(models),
    };
    (status, Json(body)).into_response()
}

/// The process answers
#[utoipa::path(
    get,
    path = "/live",
    operation_id = "live",
    tag = "operations",
    responses((status = 200, description = "`live`", body = ProbeStatus)),
)]
pub(crate) async fn live() -> Json<ProbeStatus> {
    Json(ProbeStatus::new("live"))
}

/// Ready for requests: at least one model is served
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    tag = "operations",
    responses(
        (status = 200, description = "`ready`", body = ProbeStatus),
        (status = 503, response = ErrorResponse),
    ),
)]
pub(crate) async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    match shared.registry.names().is_empty() {
        true => ApiError::from(dynamo_core::Error::unavailable(
            "no model is registered yet",
        ))
        .into_response(),
        false => Json(ProbeStatus::new("ready")).into_response(),
    }
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 404, response = ErrorResponse),
    ),
)]
pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match &shared.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            super::metrics::render(handle),
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
