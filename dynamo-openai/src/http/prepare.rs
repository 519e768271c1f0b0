//! Turning a validated OpenAI request into the engine's [`GenerateRequest`].

use dynamo_core::{Delivery, GenerateRequest, OutputLimits, RoutingHints};

use super::Shared;
use crate::ApiError;
use crate::protocol::SamplingFields;
use crate::registry::ModelEntry;

/// The engine request for `tokens`, with the sampling fields checked, the model's sampling
/// defaults filled in where the request gave none, and the output limit fitted to the model's
/// context.
pub(crate) fn engine_request(
    shared: &Shared,
    entry: &ModelEntry,
    id: String,
    tokens: Vec<u32>,
    fields: &SamplingFields,
    max_tokens: Option<u32>,
    max_tokens_name: &str,
) -> Result<GenerateRequest, ApiError> {
    if tokens.is_empty() {
        return Err(ApiError::invalid_request("the prompt is empty"));
    }
    if let Some(&bad) = tokens
        .iter()
        .find(|&&t| t as usize >= entry.tokenizer.vocab_size())
    {
        return Err(ApiError::invalid_field(
            "prompt",
            format!(
                "token id {bad} is outside the vocabulary of {} ids",
                entry.tokenizer.vocab_size()
            ),
        ));
    }
    let (mut sampling, stop) = fields.to_options()?;
    entry.sampling_defaults.fill(fields, &mut sampling);
    let prompt = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    let room = entry
        .context_length
        .map(|context| context.saturating_sub(prompt));
    if room == Some(0) {
        return Err(ApiError::invalid_field(
            "messages",
            format!(
                "the prompt has {prompt} tokens, which fills the model's context of {} tokens",
                entry.context_length.unwrap_or_default()
            ),
        ));
    }
    let max_tokens = match (max_tokens, room) {
        (Some(0), _) => {
            return Err(ApiError::invalid_field(
                max_tokens_name,
                format!("{max_tokens_name} must be at least 1"),
            ));
        }
        (Some(asked), Some(room)) if asked > room => {
            return Err(ApiError::invalid_field(
                max_tokens_name,
                format!(
                    "{max_tokens_name} = {asked} with a prompt of {prompt} tokens exceeds the model's context of {} tokens",
                    entry.context_length.unwrap_or_default()
                ),
            ));
        }
        (Some(asked), _) => Some(asked),
        (None, room) => match (shared.config.default_max_tokens, room) {
            (Some(default), Some(room)) => Some(default.min(room)),
            (default, room) => default.or(room),
        },
    };
    let mut request = GenerateRequest::new(id, entry.name.clone(), tokens)
        .with_sampling(sampling)
        .with_routing(RoutingHints {
            session_id: fields.user.clone(),
            ..RoutingHints::default()
        });
    request.stop = stop;
    request.cache_salt = fields.cache_salt.clone();
    request.limits = OutputLimits {
        max_tokens,
        min_tokens: fields.min_tokens,
    };
    request.validate()?;
    Ok(request)
}

/// How the client reads the answer: an engine over another server asks it for the whole answer
/// in one response when the client does not stream.
pub(crate) fn delivery(stream: bool) -> Delivery {
    if stream {
        Delivery::Streamed
    } else {
        Delivery::Whole
    }
}
