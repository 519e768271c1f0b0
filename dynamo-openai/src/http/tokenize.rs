//! `POST /tokenize` and `POST /detokenize`: the model's tokenizer, without generating.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::openapi::ErrorResponse;
use super::{JsonBody, Shared, chat};
use crate::ApiError;
use crate::protocol::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};

/// Tokenize a text or a conversation
///
/// Give `prompt` for a text, tokenized as `/v1/completions` does, or `messages` for a
/// conversation, rendered with the model's chat template and tokenized as
/// `/v1/chat/completions` does; exactly one of them.
#[utoipa::path(
    post,
    path = "/tokenize",
    operation_id = "tokenize",
    tag = "tokenizer",
    request_body = TokenizeRequest,
    responses(
        (status = 200, description = "The token ids", body = TokenizeResponse),
        (status = 400, response = ErrorResponse),
        (status = 404, response = ErrorResponse),
    ),
)]
pub(crate) async fn tokenize(
    State(shared): State<Arc<Shared>>,
    JsonBody(body): JsonBody<TokenizeRequest>,
) -> Response {
    let result = tokens(&shared, &body).map(|tokens| {
        let max_model_len = shared
            .model(&body.model)
            .ok()
            .and_then(|e| e.context_length);
        Json(TokenizeResponse {
            count: tokens.len(),
            max_model_len,
            tokens,
        })
        .into_response()
    });
    super::respond(&shared, &body.model, "tokenize", result)
}

fn tokens(shared: &Shared, body: &TokenizeRequest) -> Result<Vec<u32>, ApiError> {
    let entry = shared.model(&body.model)?;
    let (text, field) = match (&body.prompt, &body.messages) {
        (Some(prompt), None) => (prompt.clone(), "prompt"),
        (None, Some(messages)) => (
            chat::render(&entry, messages, None, body.add_generation_prompt)?,
            "messages",
        ),
        _ => {
            return Err(ApiError::invalid_request(
                "give exactly one of `prompt` and `messages`",
            ));
        }
    };
    entry
        .tokenizer
        .encode(&text)
        .map_err(|error| ApiError::invalid_field(field, error.to_string()))
}

/// Turn token ids back into text
#[utoipa::path(
    post,
    path = "/detokenize",
    operation_id = "detokenize",
    tag = "tokenizer",
    request_body = DetokenizeRequest,
    responses(
        (status = 200, description = "The text, special tokens included", body = DetokenizeResponse),
        (status = 400, response = ErrorResponse),
        (status = 404, response = ErrorResponse),
    ),
)]
pub(crate) async fn detokenize(
    State(shared): State<Arc<Shared>>,
    JsonBody(body): JsonBody<DetokenizeRequest>,
) -> Response {
    let result =
        text(&shared, &body).map(|prompt| Json(DetokenizeResponse { prompt }).into_response());
    super::respond(&shared, &body.model, "detokenize", result)
}

fn text(shared: &Shared, body: &DetokenizeRequest) -> Result<String, ApiError> {
    let entry = shared.model(&body.model)?;
    let vocabulary = entry.tokenizer.vocab_size();
    if let Some(&bad) = body.tokens.iter().find(|&&t| t as usize >= vocabulary) {
        return Err(ApiError::invalid_field(
            "tokens",
            format!("token id {bad} is outside the vocabulary of {vocabulary} ids"),
        ));
    }
    entry
        .tokenizer
        .decode(&body.tokens, false)
        .map_err(|error| ApiError::invalid_field("tokens", error.to_string()))
}
