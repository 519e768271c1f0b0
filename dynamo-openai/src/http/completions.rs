//! `POST /v1/completions`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use dynamo_core::{TokenLogProb, Usage};
use futures::{StreamExt, TryStreamExt, stream};

use super::choices::{self, ChoiceStream, Choices};
use super::generate::TextEvent;
use super::logprobs::{self, CompletionShaper};
use super::openapi::GenerationErrors;
use super::{JsonBody, RequestId, Shared, prepare, sse, structured};
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
        if body.echo && !entry.computes_prompt_logprobs() {
            return Err(ApiError::invalid_field(
                "echo",
                format!(
                    "echo with logprobs needs the log-probabilities of the prompt, which the \
                     engine of `{}` does not compute",
                    entry.name
                ),
            ));
        }
        if body.echo && body.stream && !entry.streams_prompt_logprobs() {
            return Err(ApiError::invalid_field(
                "stream",
                format!(
                    "echo with logprobs is served whole by the engine of `{}`; it does not \
                     work with stream: true",
                    entry.name
                ),
            ));
        }
    }
    if let Some(top) = body.prompt_logprobs {
        logprobs::check_prompt(&entry, top, body.stream)?;
    }
    // The prompt's log-probabilities, for the echo or in vLLM's shape: enough alternatives for
    // both.
    let echo_logprobs = body.logprobs.filter(|_| body.echo);
    let prompt_logprobs = echo_logprobs.max(body.prompt_logprobs);
    let choices = Choices::of(body.sampling.n, body.best_of, shared.config.max_choices)?;
    if choices.ranks() && body.stream {
        return Err(ApiError::invalid_field(
            "best_of",
            "best_of above n needs the whole answer; it does not work with stream: true",
        ));
    }
    let format = structured::requested_format(
        body.response_format.as_ref(),
        body.structured_outputs.as_ref(),
    )?;
    let prompts = prompt_tokens(&entry, &body.prompt)?;
    let mut streams = Vec::with_capacity(prompts.len());
    for (index, tokens) in prompts.into_iter().enumerate() {
        let echo = Echo {
            text: match body.echo {
                true => entry
                    .tokenizer
                    .decode(&tokens, false)
                    .map_err(|error| ApiError::invalid_field("prompt", error.to_string()))?,
                false => String::new(),
            },
            first_token: tokens.first().copied().filter(|_| echo_logprobs.is_some()),
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
        // Ranking candidates needs each token's log-probability.
        request.sampling.logprobs = body.logprobs.or(choices.ranks().then_some(0));
        request.sampling.prompt_logprobs = prompt_logprobs;
        request.format = format.clone();
        request.delivery = prepare::delivery(body.stream);
        let slot = shared
            .in_flight
            .acquire(entry.metrics.in_flight(&entry.name))?;
        let text =
            choices::start(entry.clone(), request, choices.generated, slot, ENDPOINT).await?;
        streams.push((echo, text));
    }
    let header = Header {
        id: format!("cmpl-{request_id}"),
        created: crate::unix_seconds(),
        model: entry.name.clone(),
        logprobs: body.logprobs.map(|_| entry.tokenizer.clone()),
        echo_top: echo_logprobs.unwrap_or(0) as usize,
        prompt_logprobs: body
            .prompt_logprobs
            .map(|top| (entry.tokenizer.clone(), top as usize)),
    };
    if body.stream {
        let include_usage = body
            .stream_options
            .is_some_and(|options| options.include_usage);
        return Ok(stream(header, streams, choices.n, include_usage));
    }
    collect(header, streams, choices).await
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

/// What a choice's text starts with: the prompt, echoed (empty without `echo`), and with
/// `echo` and `logprobs` the prompt's first token, whose log-probabilities open the choice's.
struct Echo {
    text: String,
    first_token: Option<u32>,
}

struct Header {
    id: String,
    created: u64,
    model: String,
    /// The tokenizer to write log-probabilities with, when the request asks for them.
    logprobs: Option<Arc<Tokenizer>>,
    /// The alternatives of an echoed prompt's tokens (`logprobs` with `echo`).
    echo_top: usize,
    /// The tokenizer and the alternatives of vLLM's `prompt_logprobs`, when asked for.
    prompt_logprobs: Option<(Arc<Tokenizer>, usize)>,
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

/// One choice of a prompt, collected.
struct Collected {
    text: String,
    log_probs: Vec<TokenLogProb>,
    finish_reason: Option<String>,
}

async fn collect(
    header: Header,
    streams: Vec<(Echo, ChoiceStream)>,
    choices: Choices,
) -> Result<Response, ApiError> {
    let generated = choices.generated as usize;
    let mut total = Usage::default();
    let results = futures::future::join_all(
        streams
            .into_iter()
            .map(|(echo, text)| async move { (echo, text.try_collect::<Vec<_>>().await) }),
    )
    .await;
    let mut out = Vec::with_capacity(results.len() * choices.n as usize);
    for (prompt, (echo, events)) in (0u32..).zip(results) {
        let mut candidates: Vec<Collected> = (0..generated)
            .map(|_| Collected {
                text: echo.text.clone(),
                log_probs: Vec::new(),
                finish_reason: None,
            })
            .collect();
        let mut prompt_log_probs = None;
        for (index, event) in events? {
            let Some(candidate) = candidates.get_mut(index as usize) else {
                continue;
            };
            match event {
                TextEvent::Delta { text, log_probs } => {
                    candidate.text.push_str(&text);
                    candidate.log_probs.extend(log_probs);
                }
                TextEvent::Done { reason, usage } => {
                    candidate.finish_reason = Some(reason.as_openai_str().to_owned());
                    choices::add_usage(&mut total, usage, index == 0);
                }
                // One prompt, one set: the first to come (each choice's engine request may
                // send the same).
                TextEvent::Prompt { log_probs } => {
                    prompt_log_probs.get_or_insert(log_probs);
                }
            }
        }
        let kept = match choices.ranks() {
            true => choices::best(
                candidates
                    .into_iter()
                    .map(|c| (choices::cumulative(&c.log_probs), c))
                    .collect(),
                choices.n,
            ),
            false => candidates,
        };
        let computed = || logprobs::sent(prompt_log_probs.as_deref());
        let vllm_shaped = match &header.prompt_logprobs {
            Some((tokenizer, top)) => Some(logprobs::prompt(tokenizer, computed()?, *top)?),
            None => None,
        };
        for (choice, candidate) in (0..).zip(kept) {
            let mut shaper = CompletionShaper::default();
            let echoed = match (echo.first_token, &header.logprobs) {
                (Some(first), Some(tokenizer)) => {
                    Some(shaper.push_prompt(tokenizer, first, computed()?, header.echo_top)?)
                }
                _ => None,
            };
            let generated = header.shape(&mut shaper, &candidate.log_probs)?;
            let logprobs = match (echoed, generated) {
                (Some(mut echoed), Some(generated)) => {
                    echoed.append(generated);
                    Some(echoed)
                }
                (echoed, generated) => echoed.or(generated),
            };
            out.push(CompletionChoice {
                index: prompt * choices.n + choice,
                text: candidate.text,
                logprobs,
                finish_reason: candidate.finish_reason,
                prompt_logprobs: vllm_shaped.clone(),
            });
        }
    }
    Ok(Json(Completion {
        id: header.id,
        object: "text_completion".to_owned(),
        created: header.created,
        model: header.model,
        choices: out,
        usage: UsageBody::from(total),
    })
    .into_response())
}

fn stream(
    header: Header,
    streams: Vec<(Echo, ChoiceStream)>,
    n: u32,
    include_usage: bool,
) -> Response {
    let choices = streams.len() * n as usize;
    let mut echoes = Vec::new();
    // With `logprobs`, a prompt's echo waits for the prompt's log-probabilities, which the
    // engine sends before the first token; without, it goes first.
    let mut scored_echoes: Vec<Option<Echo>> = Vec::with_capacity(streams.len());
    let tagged: Vec<_> = streams
        .into_iter()
        .zip(0u32..)
        .map(|((echo, text), prompt)| {
            if echo.first_token.is_some() {
                scored_echoes.push(Some(echo));
            } else {
                scored_echoes.push(None);
                if !echo.text.is_empty() {
                    echoes.extend((0..n).map(|choice| {
                        let delta = TextEvent::Delta {
                            text: echo.text.clone(),
                            log_probs: Vec::new(),
                        };
                        Ok((prompt * n + choice, delta))
                    }));
                }
            }
            text.map_ok(move |(choice, event)| (prompt * n + choice, event))
                .boxed()
        })
        .collect();
    let merged = stream::select_all(tagged);
    let events = stream::iter(echoes).chain(merged);
    let (mut total, mut finished) = (Usage::default(), 0);
    let mut shapers: Vec<CompletionShaper> =
        (0..choices).map(|_| CompletionShaper::default()).collect();
    let chunks = events.map_ok(move |(index, event)| {
        let mut out = Vec::new();
        let choice = |text: String, logprobs, finish_reason: Option<String>| CompletionChoice {
            index,
            text,
            logprobs,
            finish_reason,
            prompt_logprobs: None,
        };
        let prompt = (index / n) as usize;
        if let TextEvent::Prompt { log_probs } = &event {
            // The first of the prompt's choices to send them opens every choice's echo.
            let echoed = scored_echoes.get_mut(prompt).and_then(Option::take);
            if let (Some(echo), Some(tokenizer)) = (echoed, &header.logprobs) {
                let first = echo.first_token.unwrap_or_default();
                for choice in 0..n {
                    let index = prompt as u32 * n + choice;
                    let Some(shaper) = shapers.get_mut(index as usize) else {
                        continue;
                    };
                    let shaped = shaper.push_prompt(tokenizer, first, log_probs, header.echo_top);
                    match shaped {
                        Ok(logprobs) => out.push(header.chunk(
                            vec![CompletionChoice {
                                index,
                                text: echo.text.clone(),
                                logprobs: Some(logprobs),
                                finish_reason: None,
                                prompt_logprobs: None,
                            }],
                            None,
                        )),
                        Err(error) => return stream::iter(vec![Err(error)]),
                    }
                }
            }
            return stream::iter(out.into_iter().map(Ok).collect::<Vec<_>>());
        }
        // A choice's tokens before its prompt's scores: the engine sent none though asked.
        if scored_echoes.get(prompt).is_some_and(Option::is_some) {
            return stream::iter(vec![Err(logprobs::none_sent())]);
        }
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
                choices::add_usage(&mut total, usage, index % n == 0);
                finished += 1;
                if include_usage && finished == choices {
                    out.push(header.chunk(Vec::new(), Some(UsageBody::from(total))));
                }
            }
            TextEvent::Prompt { .. } => {}
        }
        stream::iter(out.into_iter().map(Ok).collect::<Vec<_>>())
    });
    sse::respond(chunks.try_flatten())
}
