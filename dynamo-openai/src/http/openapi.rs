//! The OpenAPI 3.1 document of the gateway, served at `/openapi.json`.
//!
//! Nothing here is written by hand but the list of routes: every schema is derived
//! (`utoipa::ToSchema`) from the protocol types the handlers parse and write, and every route's
//! description from the `#[utoipa::path]` attribute on its handler, so the document cannot drift
//! from the code. `tests/openapi_conformance.rs` validates real answers against it.

use std::collections::BTreeMap;

use axum::Json;
use serde_json::Value;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, OpenApi, ToResponse, ToSchema};

use super::{chat, completions, embeddings, models, responses, tokenize};
use crate::ErrorBody;

/// The routes and the components they share.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "dynamo OpenAI-compatible gateway",
        description = "OpenAI's chat completions, completions, embeddings and models list over dynamo engines, \
                       with the model's tokenizer (vLLM's /tokenize and /detokenize), \
                       with health probes and Prometheus metrics.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        chat::handle,
        completions::handle,
        embeddings::handle,
        responses::handle,
        responses::retrieve,
        responses::delete,
        responses::input_items::list,
        responses::background::cancel,
        models::list,
        tokenize::tokenize,
        tokenize::detokenize,
        models::health,
        models::live,
        models::ready,
        models::metrics,
        serve,
    ),
    components(schemas(ErrorBody), responses(ErrorResponse)),
    tags(
        (name = "openai", description = "The OpenAI API"),
        (name = "tokenizer", description = "The model's tokenizer, as vLLM serves it"),
        (name = "operations", description = "Probes, metrics and this document"),
    ),
)]
struct Document;

/// The OpenAPI 3.1 document describing every route, for clients, validators and fuzzers
/// (`dynamo-serve openapi` writes it without starting a server).
///
/// The schemas (`#/components/schemas/…`) are derived from the types of [`protocol`]
/// (`ChatCompletionRequest`, `ChatCompletion`, `ChatCompletionChunk`, `CompletionRequest`,
/// `Completion`, `CompletionChunk`, `ModelList`) and from [`ErrorBody`], each under its Rust
/// name, so they change with the types.
///
/// [`protocol`]: crate::protocol
///
/// ```
/// let document = dynamo_openai::openapi_document();
/// assert_eq!(document["openapi"], "3.1.0");
/// assert!(document["paths"]["/v1/chat/completions"]["post"].is_object());
/// assert!(document["components"]["schemas"]["ChatCompletion"].is_object());
/// ```
pub fn openapi_document() -> Value {
    // The document is made of strings, maps and numbers only: serialising it cannot fail.
    serde_json::to_value(Document::openapi()).unwrap_or_default()
}

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)),
)]
pub(crate) async fn serve() -> Json<Value> {
    Json(openapi_document())
}

/// The reusable response `#/components/responses/Error`: an OpenAI error body.
pub(crate) struct ErrorResponse;

impl<'r> ToResponse<'r> for ErrorResponse {
    fn response() -> (&'r str, RefOr<Response>) {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build();
        let response = ResponseBuilder::new()
            .description(
                "An OpenAI error: `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`",
            )
            .content("application/json", content)
            .build();
        ("Error", response.into())
    }
}

/// The error statuses of the generation routes (400 invalid, 404 unknown model, 413 body too
/// large, 503 overloaded or unavailable, 500 internal), each an [`ErrorResponse`].
pub(crate) struct GenerationErrors;

impl IntoResponses for GenerationErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        ["400", "404", "413", "503", "500"]
            .into_iter()
            .map(|status| (status.to_owned(), error_ref()))
            .collect()
    }
}

fn error_ref() -> RefOr<Response> {
    RefOr::Ref(Ref::from_response_name(ErrorResponse::response().0))
}
