//! Errors at the HTTP edge, mapped once from the core error classes to status codes and
//! OpenAI-style bodies.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dynamo_core::ErrorClass;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error as the client sees it: an HTTP status and an OpenAI error body
/// (`{"error": {"message", "type", "param", "code"}}`).
///
/// Every error the gateway returns goes through this type. Errors from engines and routers
/// arrive as [`dynamo_core::Error`] and are mapped by their [`ErrorClass`] alone, never by their
/// message text:
///
/// | class | status | `type` |
/// |---|---|---|
/// | `invalid_request` | 400 | `invalid_request_error` |
/// | `not_found` | 404 | `not_found_error` |
/// | `overloaded` | 503 with `Retry-After` | `overloaded_error` |
/// | `unavailable` | 503 | `service_unavailable_error` |
/// | `timeout` | 504 | `timeout_error` |
/// | `cancelled` | 499 | `cancelled_error` |
/// | `internal` | 500 | `server_error` |
///
/// The `code` field carries the class name. Internal errors show the client a generic message;
/// the detail goes to the log as a `tracing` error event.
///
/// ```
/// use dynamo_openai::ApiError;
///
/// let error = ApiError::invalid_field("top_k", "top_k must be at least 1");
/// assert_eq!(error.status().as_u16(), 400);
/// assert_eq!(error.body().error.param.as_deref(), Some("top_k"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<String>,
    code: Option<String>,
    retry_after: Option<Duration>,
}

/// The JSON body of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The fields of an OpenAI error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for a person.
    pub message: String,
    /// The error family, for example `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    #[schema(required)]
    pub param: Option<String>,
    /// A stable machine-readable code: the core error class name.
    #[schema(required)]
    pub code: Option<String>,
}

impl ApiError {
    /// A 400 that names the request field at fault.
    pub fn invalid_field(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.into()),
            ..ApiError::from_class(ErrorClass::InvalidRequest, message.into())
        }
    }

    /// A 400 about the request as a whole (for example a body that is not JSON).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::from_class(ErrorClass::InvalidRequest, message.into())
    }

    /// A 404 for a model the gateway does not serve.
    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            param: Some("model".to_owned()),
            code: Some("model_not_found".to_owned()),
            ..ApiError::from_class(
                ErrorClass::NotFound,
                format!("the model `{model}` does not exist; GET /v1/models lists the models"),
            )
        }
    }

    /// A 400 for a `previous_response_id` that names no stored response, as OpenAI's
    /// (`previous_response_not_found`).
    pub(crate) fn previous_response_not_found(id: &str) -> Self {
        ApiError {
            param: Some("previous_response_id".to_owned()),
            code: Some("previous_response_not_found".to_owned()),
            ..ApiError::from_class(
                ErrorClass::InvalidRequest,
                format!("previous response with id `{id}` not found"),
            )
        }
    }

    /// A 404 for a response that is not stored (never was, was deleted or dropped for room,
    /// or was stored with another API key).
    pub(crate) fn response_not_found(id: &str) -> Self {
        ApiError {
            code: Some("response_not_found".to_owned()),
            ..ApiError::from_class(
                ErrorClass::NotFound,
                format!("no stored response has the id `{id}`"),
            )
        }
    }

    /// A 413 for a body over the size limit.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            message: format!("the request body is larger than the limit of {limit} bytes"),
            param: None,
            code: Some("payload_too_large".to_owned()),
            retry_after: None,
        }
    }

    /// A 401 for a request without an `Authorization: Bearer` key, shaped as OpenAI's.
    pub fn missing_api_key() -> Self {
        ApiError::unauthorized(
            "no API key was given; send it in an Authorization header using Bearer auth \
             (Authorization: Bearer YOUR_KEY)",
        )
    }

    /// A 401 for a key the gateway does not know, shaped as OpenAI's. The key itself is not
    /// echoed, even masked.
    pub fn invalid_api_key() -> Self {
        ApiError::unauthorized("incorrect API key provided")
    }

    fn unauthorized(message: &str) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            message: message.to_owned(),
            param: None,
            code: Some("invalid_api_key".to_owned()),
            retry_after: None,
        }
    }

    fn from_class(class: ErrorClass, message: String) -> Self {
        let (status, kind) = match class {
            ErrorClass::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            ErrorClass::NotFound => (StatusCode::NOT_FOUND, "not_found_error"),
            ErrorClass::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded_error"),
            ErrorClass::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error")
            }
            ErrorClass::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
            ErrorClass::Cancelled => (client_closed_request(), "cancelled_error"),
            ErrorClass::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        ApiError {
            status,
            kind,
            message,
            param: None,
            code: Some(class.name().to_owned()),
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The seconds a client should wait before retrying, sent as `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_owned(),
                param: self.param.clone(),
                code: self.code.clone(),
            },
        }
    }
}

/// nginx's 499 "client closed request": the status a cancelled request is logged with.
fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

impl From<dynamo_core::Error> for ApiError {
    fn from(error: dynamo_core::Error) -> Self {
        let class = error.class();
        let message = match &error {
            dynamo_core::Error::InvalidRequest { message } => message.clone(),
            _ if class == ErrorClass::Internal => {
                log_internal(&error);
                "the server hit an internal error; the request was not completed".to_owned()
            }
            other => other.to_string(),
        };
        ApiError {
            retry_after: error.retry_after(),
            ..ApiError::from_class(class, message)
        }
    }
}

/// Internal details go to the log (a `tracing` event, inside the request's span, naming the
/// request while its handler runs), never to the client.
fn log_internal(error: &dynamo_core::Error) {
    let named = super::CURRENT_REQUEST.try_with(
        |request_id| tracing::error!(request_id = request_id.as_str(), %error, "internal error"),
    );
    if named.is_err() {
        tracing::error!(%error, "internal error");
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(after) = self.retry_after.or(match self.status {
            StatusCode::SERVICE_UNAVAILABLE => Some(Duration::from_secs(1)),
            _ => None,
        }) {
            let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
