//! `POST /v1/completions`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use dynamo_core::{TokenLogProb, Usage};
use futures::{StreamExt, TryStreamExt, stream};

use super::generate::{self, TextEvent, TextStream};
use super::logprobs::{self, CompletionShaper};
use super::openapi::GenerationErrors;
use super::{JsonBody, RequestId, Shared, prepare, sse};
use crate::ApiError;
use crate::preprocess::Tokenizer;
use crate::protocol::common::reject_unknown;
use crate::protocol::{
    Completion, CompletionChoice, CompletionChunk, CompletionLogProbs, CompletionRequest, Prompt,
    UsageBody,
};
use crate::registry::ModelEntry;

/// OpenAI's default `max_tokens` for text completions.
const DEFAULT_MAX_TOKENS: u32 = 16;

/// The endpoint label of this route's metrics.
const ENDPOINT: &str = "completions";

/// Text completion
///
/// `prompt` may be a text, several texts, token ids or several lists of token ids; several
/// prompts give one choice each. With `stream: true` the answer comes as server-sent events,
/// one chunk per `data:` line, ending with `data: [DONE]`.
#[utoipa::path(
    post,
    path = "/v1/completions",
    operation_id = "createCompletion",
    tag = "openai",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true`, server-sent events of chunks ending with `data: [DONE]`", content(
            (Completion = "application/json"),
            (CompletionChunk = "text/event-stream"),
        )),
        GenerationErrors,
    ),
)]
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    JsonBody(body): JsonBody<CompletionRequest>,
) -> Response {
    let model = body.model.clone();
    let result = serve(shared.clone(), request_id, body).await;
    super::respond(&shared, &model, ENDPOINT, result)
}

async fn serve(
    shared: Arc<Shared>,
    request_id: String,
    body: CompletionRequest,
) -> Result<Response, ApiError> {
    let entry = shared.model(&body.model)?;
    reject_unknown(&body.extra)?;
    if let Some(top) = body.logprobs {
        if top > logprobs::MAX_COMPLETION_LOGPROBS {
            return Err(ApiError::invalid_field(
                "logprobs",
                format!(
                    "logprobs must be at most {}, got {top}",
                    logprobs::MAX_COMPLETION_LOGPROBS
                ),
            ));
        }
        if body.echo {
            return Err(ApiError::invalid_field(
                "echo",
                "echo with logprobs (log-probabilities of the prompt) is not supported",
            ));
        }
    }
    let prompts = prompt_tokens(&entry, &body.prompt)?;
    let mut streams = Vec::with_capacity(prompts.len());
    for (index, tokens) in prompts.into_iter().enumerate() {
        let echo = match body.echo {
            true => entry
                .tokenizer
                .decode(&tokens, false)
                .map_err(|error| ApiError::invalid_field("prompt", error.to_string()))?,
            false => String::new(),
        };
        let mut request = prepare::engine_request(
            &shared,
            &entry,
            format!("{request_id}-{index}"),
            tokens,
            &body.sampling,
            Some(body.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            "max_tokens",
        )?;
        request.sampling.logprobs = body.logprobs;
        let slot = shared.in_flight.acquire(&entry.name)?;
        let text = generate::start(entry.clone(), request, slot, ENDPOINT).await?;
        streams.push((echo, text));
    }
    let header = Header {
        id: format!("cmpl-{request_id}"),
        created: crate::unix_seconds(),
        model: entry.name.clone(),
        logprobs: body.logprobs.map(|_| entry.tokenizer.clone()),
    };
    if body.stream {
        let include_usage = body
            .stream_options
            .is_some_and(|options| options.include_usage);
        return Ok(stream(header, streams, include_usage));
    }
    collect(header, streams).await
}

/// Every prompt of the request as token ids.
fn prompt_tokens(entry: &ModelEntry, prompt: &Prompt) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |text: &str| {
        entry
            .tokenizer
            .encode(text)
            .map_err(|error| ApiError::invalid_field("prompt", error.to_string()))
    };
    let prompts = match prompt {
        Prompt::Text(text) => vec![encode(text)?],
        Prompt::Texts(texts) => texts
            .iter()
            .map(|text| encode(text))
            .collect::<Result<_, _>>()?,
        Prompt::Tokens(tokens) => vec![tokens.clone()],
        Prompt::TokenLists(lists) => lists.clone(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid_field(
            "prompt",
            "the prompt list is empty",
        ));
    }
    Ok(prompts)
}

struct Header {
    id: String,
    created: u64,
    model: String,
    /// The tokenizer to write log-probabilities with, when the request asks for them.
    logprobs: Option<Arc<Tokenizer>>,
}

impl Header {
    /// `logprobs` of a choice's next tokens, when the request asks for them.
    fn shape(
        &self,
        shaper: &mut CompletionShaper,
        log_probs: &[TokenLogProb],
    ) -> Result<Option<CompletionLogProbs>, ApiError> {
        self.logprobs
            .as_ref()
            .map(|tokenizer| shaper.push(tokenizer, log_probs))
            .transpose()
    }

    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<UsageBody>) -> CompletionChunk {
        CompletionChunk {
            id: self.id.clone(),
            object: "text_completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }
}

fn add(total: &mut Usage, usage: Usage) {
    total.prompt_tokens += usage.prompt_tokens;
    total.completion_tokens += usage.completion_tokens;
    total.cached_tokens += usage.cached_tokens;
}

async fn collect(header: Header, streams: Vec<(String, TextStream)>) -> Result<Response, ApiError> {
    let mut choices = Vec::with_capacity(streams.len());
    let mut total = Usage::default();
    let results = futures::future::join_all(
        streams
            .into_iter()
            .map(|(echo, text)| async move { (echo, text.try_collect::<Vec<_>>().await) }),
    )
    .await;
    for (index, (mut text, events)) in (0u32..).zip(results) {
        let mut finish_reason = None;
        let mut log_probs = Vec::new();
        for event in events? {
            match event {
                TextEvent::Delta {
                    text: delta,
                    log_probs: more,
                } => {
                    text.push_str(&delta);
                    log_probs.extend(more);
                }
                TextEvent::Done { reason, usage } => {
                    finish_reason = Some(reason.as_openai_str().to_owned());
                    add(&mut total, usage);
                }
            }
        }
        let logprobs = header.shape(&mut CompletionShaper::default(), &log_probs)?;
        choices.push(CompletionChoice {
            index,
            text,
            logprobs,
            finish_reason,
        });
    }
    Ok(Json(Completion {
        id: header.id,
        object: "text_completion".to_owned(),
        created: header.created,
        model: header.model,
        choices,
        usage: UsageBody::from(total),
    })
    .into_response())
}

fn stream(header: Header, streams: Vec<(String, TextStream)>, include_usage: bool) -> Response {
    let prompts = streams.len();
    let mut echoes = Vec::new();
    let tagged = streams
        .into_iter()
        .zip(0u32..)
        .map(|((echo, text), index)| {
            if !echo.is_empty() {
                echoes.push(Ok((
                    index,
                    TextEvent::Delta {
                        text: echo,
                        log_probs: Vec::new(),
                    },
                )));
            }
            text.map_ok(move |event| (index, event)).boxed()
        });
    let merged = stream::select_all(tagged.collect::<Vec<_>>());
    let events = stream::iter(echoes).chain(merged);
    let (mut total, mut finished) = (Usage::default(), 0);
    let mut shapers: Vec<CompletionShaper> =
        (0..prompts).map(|_| CompletionShaper::default()).collect();
    let chunks = events.map_ok(move |(index, event)| {
        let mut out = Vec::new();
        let choice = |text: String, logprobs, finish_reason: Option<String>| CompletionChoice {
            index,
            text,
            logprobs,
            finish_reason,
        };
        match event {
            TextEvent::Delta { text, log_probs } => {
                let shaper = shapers.get_mut(index as usize);
                let logprobs = match shaper.map(|shaper| header.shape(shaper, &log_probs)) {
                    Some(Err(error)) => return stream::iter(vec![Err(error)]),
                    Some(Ok(logprobs)) => logprobs,
                    None => None,
                };
                out.push(header.chunk(vec![choice(text, logprobs, None)], None));
            }
            TextEvent::Done { reason, usage } => {
                out.push(header.chunk(
                    vec![choice(
                        String::new(),
                        None,
                        Some(reason.as_openai_str().to_owned()),
                    )],
                    None,
                ));
                add(&mut total, usage);
                finished += 1;
                if include_usage && finished == prompts {
                    out.push(header.chunk(Vec::new(), Some(UsageBody::from(total))));
                }
            }
        }
        stream::iter(out.into_iter().map(Ok).collect::<Vec<_>>())
    });
    sse::respond(chunks.try_flatten())
}
