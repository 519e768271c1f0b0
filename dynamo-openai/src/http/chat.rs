//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use dynamo_core::TokenLogProb;
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use super::generate::{self, TextEvent};
use super::openapi::GenerationErrors;
use super::{JsonBody, RequestId, Shared, logprobs, prepare, sse, structured};
use crate::ApiError;
use crate::preprocess::{ReasoningSplitter, Tokenizer, ToolCallParser};
use crate::protocol::common::reject_unknown;
use crate::protocol::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, ChatLogProbs, ChatMessage, FunctionCall, MessageContent,
    Role, ToolCall, ToolCallDelta, UsageBody,
};
use crate::registry::ModelEntry;

/// The endpoint label of this route's metrics.
const ENDPOINT: &str = "chat_completions";

/// Chat completion
///
/// The model's chat template turns the conversation into a prompt. With `stream: true` the
/// answer comes as server-sent events, one chunk per `data:` line, ending with `data: [DONE]`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    operation_id = "createChatCompletion",
    tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true`, server-sent events of chunks ending with `data: [DONE]`", content(
            (ChatCompletion = "application/json"),
            (ChatCompletionChunk = "text/event-stream"),
        )),
        GenerationErrors,
    ),
)]
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    JsonBody(body): JsonBody<ChatCompletionRequest>,
) -> Response {
    let model = body.model.clone();
    let result = serve(shared.clone(), request_id, body).await;
    super::respond(&shared, &model, ENDPOINT, result)
}

async fn serve(
    shared: Arc<Shared>,
    request_id: String,
    body: ChatCompletionRequest,
) -> Result<Response, ApiError> {
    let entry = shared.model(&body.model)?;
    check(&body)?;
    let structured = structured::plan(&body)?;
    let offers_tools = body.tools.as_ref().is_some_and(|tools| !tools.is_empty())
        && body.tool_choice.as_ref().and_then(Value::as_str) != Some("none");
    let tools: Option<Vec<Value>> = body
        .tools
        .as_ref()
        .filter(|_| offers_tools)
        .map(|tools| tools.iter().map(|tool| json!(tool)).collect());
    let prompt = render(&entry, &body.messages, tools.as_deref(), true)?;
    let tokens = entry
        .tokenizer
        .encode(&prompt)
        .map_err(|error| ApiError::invalid_field("messages", error.to_string()))?;
    let (max_tokens, max_name) = match body.max_completion_tokens {
        Some(max) => (Some(max), "max_completion_tokens"),
        None => (body.max_tokens, "max_tokens"),
    };
    let id = format!("chatcmpl-{request_id}");
    let mut request = prepare::engine_request(
        &shared,
        &entry,
        request_id,
        tokens,
        &body.sampling,
        max_tokens,
        max_name,
    )?;
    let wants_logprobs = body.logprobs == Some(true);
    request.sampling.logprobs = wants_logprobs.then(|| body.top_logprobs.unwrap_or(0));
    request.format = structured.format;
    let slot = shared.in_flight.acquire(&entry.name)?;
    let text = generate::start(entry.clone(), request, slot, ENDPOINT).await?;
    let answer = Answer::new(&entry, offers_tools, structured.forced);
    let header = Header {
        id,
        created: crate::unix_seconds(),
        model: entry.name.clone(),
        logprobs: wants_logprobs.then(|| entry.tokenizer.clone()),
    };
    if body.stream {
        let include_usage = body
            .stream_options
            .is_some_and(|options| options.include_usage);
        return Ok(stream(header, text, answer, include_usage));
    }
    collect(header, text, answer).await
}

/// Reject what this gateway does not implement, naming the field.
fn check(body: &ChatCompletionRequest) -> Result<(), ApiError> {
    reject_unknown(&body.extra)?;
    if body.messages.is_empty() {
        return Err(ApiError::invalid_field(
            "messages",
            "messages must not be empty",
        ));
    }
    if let Some(top) = body.top_logprobs {
        if body.logprobs != Some(true) {
            return Err(ApiError::invalid_field(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            ));
        }
        if top > logprobs::MAX_TOP_LOGPROBS {
            return Err(ApiError::invalid_field(
                "top_logprobs",
                format!(
                    "top_logprobs must be at most {}, got {top}",
                    logprobs::MAX_TOP_LOGPROBS
                ),
            ));
        }
    }
    if let Some(tool) = body
        .tools
        .iter()
        .flatten()
        .find(|tool| tool.kind != "function")
    {
        return Err(ApiError::invalid_field(
            "tools",
            format!("tool type `{}` is not supported; use `function`", tool.kind),
        ));
    }
    Ok(())
}

/// The conversation `messages` as the model's chat template renders it, offering `tools`.
pub(crate) fn render(
    entry: &ModelEntry,
    messages: &[ChatMessage],
    tools: Option<&[Value]>,
    add_generation_prompt: bool,
) -> Result<String, ApiError> {
    let template = entry.template.as_ref().ok_or_else(|| {
        ApiError::invalid_field(
            "messages",
            format!(
                "the model `{}` has no chat template; use /v1/completions",
                entry.name
            ),
        )
    })?;
    let messages = messages
        .iter()
        .enumerate()
        .map(template_message)
        .collect::<Result<Vec<_>, _>>()?;
    template
        .render(&messages, tools, add_generation_prompt)
        .map_err(|error| ApiError::invalid_field("messages", error.to_string()))
}

/// A message as chat templates expect it: `content` as one string, tool-call arguments as
/// objects.
fn template_message((index, message): (usize, &ChatMessage)) -> Result<Value, ApiError> {
    let content = match &message.content {
        None => Value::Null,
        Some(MessageContent::Text(text)) => Value::String(text.clone()),
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.kind.as_str(), &part.text) {
                    ("text", Some(part_text)) => text.push_str(part_text),
                    (kind, _) => {
                        return Err(ApiError::invalid_field(
                            format!("messages[{index}].content"),
                            format!(
                                "content parts of type `{kind}` are not supported; send `text` parts"
                            ),
                        ));
                    }
                }
            }
            Value::String(text)
        }
    };
    let mut value = json!({ "role": message.role.as_str(), "content": content });
    if let Some(name) = &message.name {
        value["name"] = json!(name);
    }
    if let Some(id) = &message.tool_call_id {
        value["tool_call_id"] = json!(id);
    }
    if let Some(calls) = &message.tool_calls {
        value["tool_calls"] = calls
            .iter()
            .map(|call| {
                let arguments = serde_json::from_str::<Value>(&call.function.arguments)
                    .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
                json!({
                    "id": call.id,
                    "type": call.kind,
                    "function": { "name": call.function.name, "arguments": arguments },
                })
            })
            .collect();
    }
    Ok(value)
}

/// The fields every response and chunk repeats.
#[derive(Debug, Clone)]
struct Header {
    id: String,
    created: u64,
    model: String,
    /// The tokenizer to write log-probabilities with, when the request asks for them.
    logprobs: Option<Arc<Tokenizer>>,
}

impl Header {
    /// `logprobs` of these tokens, when the request asks for them.
    fn shape(&self, log_probs: &[TokenLogProb]) -> Result<Option<ChatLogProbs>, ApiError> {
        let Some(tokenizer) = &self.logprobs else {
            return Ok(None);
        };
        Ok(Some(ChatLogProbs {
            content: Some(logprobs::chat(tokenizer, log_probs)?),
            refusal: None,
        }))
    }
}

/// Reasoning and tool calls taken out of the answer text, as the model's parsers say.
struct Answer {
    reasoning: Option<ReasoningSplitter>,
    tools: Option<ToolCallParser>,
    calls: u32,
    /// A call `tool_choice` forced: the function's name and the arguments so far (the whole
    /// answer text is the arguments, which the output format held to the parameters' schema).
    forced: Option<(String, String)>,
}

/// What one step of the answer released.
#[derive(Default)]
struct AnswerDelta {
    content: String,
    reasoning: String,
    /// Calls with their position among the answer's calls.
    calls: Vec<(u32, ToolCall)>,
}

impl Answer {
    fn new(entry: &ModelEntry, offers_tools: bool, forced: Option<String>) -> Self {
        if let Some(name) = forced {
            return Answer {
                reasoning: None,
                tools: None,
                calls: 0,
                forced: Some((name, String::new())),
            };
        }
        Answer {
            forced: None,
            reasoning: entry.reasoning.map(ReasoningSplitter::new),
            tools: entry
                .tool_calls
                .filter(|_| offers_tools)
                .map(ToolCallParser::new),
            calls: 0,
        }
    }

    /// Whether a forced call's arguments were cut short by the length limit (its finish reason
    /// is then `length`, not `tool_calls`).
    fn cut_short(&self, reason: dynamo_core::FinishReason) -> bool {
        self.forced.is_some() && reason == dynamo_core::FinishReason::Length
    }

    fn push(&mut self, text: &str, id: &str) -> AnswerDelta {
        let split = match &mut self.reasoning {
            Some(splitter) => splitter.push(text),
            None => crate::preprocess::SplitText {
                content: text.to_owned(),
                reasoning: String::new(),
            },
        };
        self.parse_tools(split.content, split.reasoning, id, false)
    }

    fn finish(&mut self, id: &str) -> AnswerDelta {
        let split = self
            .reasoning
            .as_mut()
            .map(ReasoningSplitter::finish)
            .unwrap_or_default();
        self.parse_tools(split.content, split.reasoning, id, true)
    }

    fn parse_tools(
        &mut self,
        content: String,
        reasoning: String,
        id: &str,
        last: bool,
    ) -> AnswerDelta {
        if let Some((name, arguments)) = &mut self.forced {
            arguments.push_str(&content);
            let call = last.then(|| {
                let function = FunctionCall {
                    name: name.clone(),
                    arguments: std::mem::take(arguments),
                };
                let id = format!("call-{id}-0");
                let kind = "function".to_owned();
                (0, ToolCall { id, kind, function })
            });
            return AnswerDelta {
                content: String::new(),
                reasoning,
                calls: call.into_iter().collect(),
            };
        }
        let Some(parser) = &mut self.tools else {
            return AnswerDelta {
                content,
                reasoning,
                calls: Vec::new(),
            };
        };
        let mut output = parser.push(&content);
        if last {
            let tail = parser.finish();
            output.content.push_str(&tail.content);
            output.calls.extend(tail.calls);
        }
        let calls = output
            .calls
            .into_iter()
            .map(|call| {
                let index = self.calls;
                self.calls += 1;
                let call = ToolCall {
                    id: format!("call-{id}-{index}"),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: call.name,
                        arguments: call.arguments,
                    },
                };
                (index, call)
            })
            .collect();
        AnswerDelta {
            content: output.content,
            reasoning,
            calls,
        }
    }
}

async fn collect(
    header: Header,
    text: generate::TextStream,
    mut answer: Answer,
) -> Result<Response, ApiError> {
    let events: Vec<TextEvent> = text.try_collect().await?;
    let (mut content, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    let mut finish = None;
    let mut log_probs = Vec::new();
    for event in events {
        let delta = match event {
            TextEvent::Delta {
                text,
                log_probs: more,
            } => {
                log_probs.extend(more);
                answer.push(&text, &header.id)
            }
            TextEvent::Done { reason, usage } => {
                finish = Some((reason, usage));
                answer.finish(&header.id)
            }
        };
        content.push_str(&delta.content);
        reasoning.push_str(&delta.reasoning);
        calls.extend(delta.calls.into_iter().map(|(_, call)| call));
    }
    let (reason, usage) = finish
        .ok_or_else(|| dynamo_core::Error::internal("the generation ended without a finish"))?;
    let finish_reason = match calls.is_empty() || answer.cut_short(reason) {
        true => reason.as_openai_str().to_owned(),
        false => "tool_calls".to_owned(),
    };
    let message = AssistantMessage {
        role: Role::Assistant,
        content: (!content.is_empty() || calls.is_empty()).then_some(content),
        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls: (!calls.is_empty()).then_some(calls),
    };
    let logprobs = header.shape(&log_probs)?;
    Ok(Json(ChatCompletion {
        id: header.id,
        object: "chat.completion".to_owned(),
        created: header.created,
        model: header.model,
        choices: vec![ChatChoice {
            index: 0,
            message,
            logprobs,
            finish_reason: Some(finish_reason),
        }],
        usage: UsageBody::from(usage),
    })
    .into_response())
}

fn stream(
    header: Header,
    text: generate::TextStream,
    mut answer: Answer,
    include_usage: bool,
) -> Response {
    let shaper = header.clone();
    let chunk = move |delta: ChatDelta,
                      logprobs: Option<ChatLogProbs>,
                      finish_reason: Option<String>| ChatCompletionChunk {
        id: header.id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: header.created,
        model: header.model.clone(),
        choices: vec![ChatChunkChoice {
            index: 0,
            delta,
            logprobs,
            finish_reason,
        }],
        usage: None,
    };
    let first = chunk(
        ChatDelta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..ChatDelta::default()
        },
        None,
        None,
    );
    let mut made_calls = false;
    let id = first.id.clone();
    // Log-probabilities of tokens whose text the parsers still hold; they go with the next
    // chunk that carries text, or with the last one.
    let mut held: Vec<TokenLogProb> = Vec::new();
    let chunks = text.map_ok(move |event| {
        let (delta, done) = match event {
            TextEvent::Delta { text, log_probs } => {
                held.extend(log_probs);
                (answer.push(&text, &id), None)
            }
            TextEvent::Done { reason, usage } => (answer.finish(&id), Some((reason, usage))),
        };
        let mut out = Vec::new();
        let has_text =
            !delta.content.is_empty() || !delta.reasoning.is_empty() || !delta.calls.is_empty();
        if has_text || (done.is_some() && !held.is_empty()) {
            let logprobs = match shaper.shape(&held) {
                Ok(logprobs) => logprobs,
                Err(error) => return stream::iter(vec![Err(error)]),
            };
            held.clear();
            made_calls |= !delta.calls.is_empty();
            let tool_calls = (!delta.calls.is_empty()).then(|| {
                delta
                    .calls
                    .into_iter()
                    .map(|(index, call)| ToolCallDelta {
                        index,
                        id: Some(call.id),
                        kind: Some(call.kind),
                        function: call.function,
                    })
                    .collect()
            });
            out.push(chunk(
                ChatDelta {
                    role: None,
                    content: (!delta.content.is_empty()).then_some(delta.content),
                    reasoning_content: (!delta.reasoning.is_empty()).then_some(delta.reasoning),
                    tool_calls,
                },
                logprobs,
                None,
            ));
        }
        if let Some((reason, usage)) = done {
            let reason = match made_calls && !answer.cut_short(reason) {
                true => "tool_calls".to_owned(),
                false => reason.as_openai_str().to_owned(),
            };
            out.push(chunk(ChatDelta::default(), None, Some(reason)));
            if include_usage {
                let mut last = chunk(ChatDelta::default(), None, None);
                last.choices.clear();
                last.usage = Some(UsageBody::from(usage));
                out.push(last);
            }
        }
        stream::iter(out.into_iter().map(Ok).collect::<Vec<_>>())
    });
    let chunks = stream::once(async move { Ok(first) }).chain(chunks.try_flatten());
    sse::respond(chunks)
}
