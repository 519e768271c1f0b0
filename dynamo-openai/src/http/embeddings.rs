//! `POST /v1/embeddings`: one vector per input, from a registered embedding model.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use dynamo_core::{EmbedRequest, Tokens};
use tower::ServiceExt;

use super::openapi::GenerationErrors;
use super::{JsonBody, RequestId, Shared};
use crate::ApiError;
use crate::EmbeddingModel;
use crate::protocol::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage,
    EmbeddingVector, EncodingFormat,
};

/// The most inputs one request may hold, as OpenAI allows.
const MAX_INPUTS: usize = 2048;

/// Embed texts or token ids
///
/// One vector per input, in the inputs' order. Texts are tokenized with the embedding model's
/// tokenizer (special tokens added); an input longer than the model accepts is refused with a
/// 400 naming it, never truncated. `dimensions` other than the model's own is refused.
/// Embedding requests count against the gateway's `max_in_flight` with the generations.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    operation_id = "createEmbedding",
    tag = "openai",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "The vectors", body = EmbeddingResponse),
        GenerationErrors,
    ),
)]
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(id): Extension<RequestId>,
    JsonBody(body): JsonBody<EmbeddingRequest>,
) -> Response {
    let started = std::time::Instant::now();
    let result = embed(&shared, id, &body).await.map(|answer| {
        super::metrics::request_done(&body.model, "embeddings", axum::http::StatusCode::OK);
        tracing::debug!(elapsed = ?started.elapsed(), "embedded");
        Json(answer).into_response()
    });
    respond(&shared, &body.model, result)
}

/// As [`super::respond`], with the embedding models' names as the known labels.
fn respond(shared: &Shared, model: &str, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|error| {
        let label = match shared.registry.embedding(model) {
            Some(entry) => entry.name.clone(),
            None => "unknown".to_owned(),
        };
        super::metrics::request_done(&label, "embeddings", error.status());
        error.into_response()
    })
}

async fn embed(
    shared: &Shared,
    id: RequestId,
    body: &EmbeddingRequest,
) -> Result<EmbeddingResponse, ApiError> {
    let model = shared
        .registry
        .embedding(&body.model)
        .ok_or_else(|| ApiError::model_not_found(&body.model))?;
    if let Some(dimensions) = body.dimensions
        && dimensions as usize != model.dimensions
    {
        return Err(ApiError::invalid_field(
            "dimensions",
            format!(
                "`{}` makes vectors of {} dimensions only; {dimensions} was asked for",
                model.name, model.dimensions
            ),
        ));
    }
    // Counted with the generations against `max_in_flight`: past it, a 503.
    let _slot = shared
        .in_flight
        .acquire(super::metrics::in_flight(&model.name))?;
    let inputs = tokenize(&model, &body.input)?;
    let request = EmbedRequest::new(id.0, model.name.clone(), inputs);
    let prompt_tokens = u32::try_from(request.token_count()).unwrap_or(u32::MAX);
    let embeddings = model.embedder.clone().oneshot(request).await?;
    let format = body.encoding_format.unwrap_or_default();
    let data = embeddings
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| Embedding {
            object: "embedding".to_owned(),
            index,
            embedding: encode(vector, format),
        })
        .collect();
    Ok(EmbeddingResponse {
        object: "list".to_owned(),
        data,
        model: model.name.clone(),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

/// The token ids of every input, each checked against the model's limits.
fn tokenize(model: &EmbeddingModel, input: &EmbeddingInput) -> Result<Vec<Tokens>, ApiError> {
    let ids: Vec<Vec<u32>> = match input {
        EmbeddingInput::Text(text) => vec![text_ids(model, 0, text)?],
        EmbeddingInput::Texts(texts) => {
            check_count(texts.len())?;
            texts
                .iter()
                .enumerate()
                .map(|(index, text)| text_ids(model, index, text))
                .collect::<Result<_, _>>()?
        }
        EmbeddingInput::Tokens(ids) => vec![ids.clone()],
        EmbeddingInput::TokenLists(lists) => {
            check_count(lists.len())?;
            lists.clone()
        }
    };
    let vocabulary = model.vocab_size();
    for (index, input) in ids.iter().enumerate() {
        if input.is_empty() {
            return Err(bad_input(index, "is empty"));
        }
        if input.len() > model.max_input_tokens {
            return Err(bad_input(
                index,
                &format!(
                    "has {} tokens, more than the {} that `{}` reads",
                    input.len(),
                    model.max_input_tokens,
                    model.name
                ),
            ));
        }
        if let Some(bad) = input.iter().find(|&&id| id as usize >= vocabulary) {
            return Err(bad_input(
                index,
                &format!("holds token id {bad}, outside the vocabulary of {vocabulary} ids"),
            ));
        }
    }
    Ok(ids.into_iter().map(Tokens::from).collect())
}

fn text_ids(model: &EmbeddingModel, index: usize, text: &str) -> Result<Vec<u32>, ApiError> {
    if text.is_empty() {
        return Err(bad_input(index, "is empty"));
    }
    model
        .encode(text)
        .map_err(|error| bad_input(index, &format!("cannot be tokenized: {error}")))
}

fn check_count(count: usize) -> Result<(), ApiError> {
    match count {
        0 => Err(ApiError::invalid_field("input", "`input` holds no inputs")),
        n if n > MAX_INPUTS => Err(ApiError::invalid_field(
            "input",
            format!("`input` holds {n} inputs, more than the {MAX_INPUTS} allowed"),
        )),
        _ => Ok(()),
    }
}

fn bad_input(index: usize, what: &str) -> ApiError {
    ApiError::invalid_field("input", format!("input {index} {what}"))
}

/// The vector as numbers, or as the base64 of its little-endian floats.
fn encode(vector: Vec<f32>, format: EncodingFormat) -> EmbeddingVector {
    match format {
        EncodingFormat::Float => EmbeddingVector::Float(vector),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}
