//! `POST /v1/chat/completions`.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use dynamo_core::{TokenLogProb, Usage};
use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};

use super::answer::{Answer, CallPiece};
use super::chat_chunk::ChunkHead;
use super::choices::{self, ChoiceStream, Choices};
use super::generate::TextEvent;
use super::openapi::GenerationErrors;
use super::{JsonBody, RequestId, Shared, logprobs, prepare, sse, structured};
use crate::ApiError;
use crate::preprocess::Tokenizer;
use crate::protocol::common::reject_unknown;
use crate::protocol::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, ChatLogProbs, ChatMessage, FunctionCall, FunctionCallDelta,
    MessageContent, Role, ToolCall, ToolCallDelta, UsageBody,
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
    if let Some(top) = body.prompt_logprobs {
        logprobs::check_prompt(&entry, top, body.stream)?;
    }
    request.sampling.prompt_logprobs = body.prompt_logprobs;
    request.format = structured.format;
    request.delivery = prepare::delivery(body.stream);
    let n = Choices::of(body.sampling.n, None, shared.config.max_choices)?.n;
    let slot = shared
        .in_flight
        .acquire(entry.metrics.in_flight(&entry.name))?;
    let text = choices::start(entry.clone(), request, n, slot, ENDPOINT).await?;
    let answers = (0..n)
        .map(|_| Answer::new(&entry, offers_tools, structured.forced.clone()))
        .collect();
    let header = Header {
        id,
        created: crate::unix_seconds(),
        model: entry.name.clone(),
        logprobs: wants_logprobs.then(|| entry.tokenizer.clone()),
        prompt_logprobs: body
            .prompt_logprobs
            .map(|top| (entry.tokenizer.clone(), top as usize)),
    };
    if body.stream {
        let include_usage = body
            .stream_options
            .is_some_and(|options| options.include_usage);
        return stream(header, text, answers, include_usage);
    }
    collect(header, text, answers).await
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
/// objects. It borrows from the request (a plain text message is not copied before the
/// template reads it). Templates see a map with the keys in sorted order, as they did when
/// messages reached them as JSON values.
#[derive(Serialize)]
struct TemplateMessage<'a> {
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<Value>>,
}

fn template_message(
    (index, message): (usize, &ChatMessage),
) -> Result<TemplateMessage<'_>, ApiError> {
    let content = match &message.content {
        None => None,
        Some(MessageContent::Text(text)) => Some(Cow::Borrowed(text.as_str())),
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
            Some(Cow::Owned(text))
        }
    };
    let tool_calls = message.tool_calls.as_ref().map(|calls| {
        calls
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
            .collect()
    });
    Ok(TemplateMessage {
        role: message.role.as_str(),
        content,
        name: message.name.as_deref(),
        tool_call_id: message.tool_call_id.as_deref(),
        tool_calls,
    })
}

/// The fields every response and chunk repeats.
#[derive(Debug, Clone)]
struct Header {
    id: String,
    created: u64,
    model: String,
    /// The tokenizer to write log-probabilities with, when the request asks for them.
    logprobs: Option<Arc<Tokenizer>>,
    /// The tokenizer and the alternatives of vLLM's `prompt_logprobs`, when asked for.
    prompt_logprobs: Option<(Arc<Tokenizer>, usize)>,
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

/// What one choice has said so far.
#[derive(Default)]
struct Said {
    content: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    log_probs: Vec<TokenLogProb>,
    finish: Option<String>,
}

/// Add `piece` to `calls`: a new call, or the next part of the arguments of call
/// `piece.index` (a piece without a head always follows its call's first piece).
fn join(calls: &mut Vec<ToolCall>, piece: CallPiece) {
    match (piece.head, calls.get_mut(piece.index as usize)) {
        (Some((id, name)), _) => calls.push(ToolCall {
            id,
            kind: "function".to_owned(),
            function: FunctionCall {
                name,
                arguments: piece.arguments,
            },
        }),
        (None, Some(call)) => call.function.arguments.push_str(&piece.arguments),
        (None, None) => {}
    }
}

/// The id tool calls of choice `index` are named after: the completion's, and the choice's
/// index after the first.
fn call_id(id: &str, index: u32) -> Cow<'_, str> {
    match index {
        0 => Cow::Borrowed(id),
        _ => Cow::Owned(format!("{id}-{index}")),
    }
}

async fn collect(
    header: Header,
    text: ChoiceStream,
    mut answers: Vec<Answer>,
) -> Result<Response, ApiError> {
    let events: Vec<(u32, TextEvent)> = text.try_collect().await?;
    let mut said: Vec<Said> = answers.iter().map(|_| Said::default()).collect();
    let mut total = Usage::default();
    let mut prompt_log_probs = None;
    for (index, event) in events {
        let (Some(answer), Some(said)) = (
            answers.get_mut(index as usize),
            said.get_mut(index as usize),
        ) else {
            continue;
        };
        let id = call_id(&header.id, index);
        let delta = match event {
            TextEvent::Delta { text, log_probs } => {
                said.log_probs.extend(log_probs);
                answer.push(text, &id)
            }
            // One prompt, one set: the first to come (each choice may send the same).
            TextEvent::Prompt { log_probs } => {
                prompt_log_probs.get_or_insert(log_probs);
                continue;
            }
            TextEvent::Done { reason, usage } => {
                choices::add_usage(&mut total, usage, index == 0);
                let delta = answer.finish(&id);
                let calls = !said.calls.is_empty() || !delta.calls.is_empty();
                said.finish = Some(match calls && !answer.cut_short(reason) {
                    true => "tool_calls".to_owned(),
                    false => reason.as_openai_str().to_owned(),
                });
                delta
            }
        };
        said.content.push_str(&delta.content);
        said.reasoning.push_str(&delta.reasoning);
        for piece in delta.calls {
            join(&mut said.calls, piece);
        }
    }
    let mut out = Vec::with_capacity(said.len());
    for (index, said) in (0..).zip(said) {
        let finish_reason = Some(said.finish.ok_or_else(|| {
            dynamo_core::Error::internal("the generation ended without a finish")
        })?);
        let message = AssistantMessage {
            role: Role::Assistant,
            content: (!said.content.is_empty() || said.calls.is_empty()).then_some(said.content),
            reasoning_content: (!said.reasoning.is_empty()).then_some(said.reasoning),
            tool_calls: (!said.calls.is_empty()).then_some(said.calls),
        };
        let logprobs = header.shape(&said.log_probs)?;
        out.push(ChatChoice {
            index,
            message,
            logprobs,
            finish_reason,
        });
    }
    let prompt_logprobs = match &header.prompt_logprobs {
        Some((tokenizer, top)) => {
            let computed = logprobs::sent(prompt_log_probs.as_deref())?;
            Some(logprobs::prompt(tokenizer, computed, *top)?)
        }
        None => None,
    };
    Ok(Json(ChatCompletion {
        id: header.id,
        object: "chat.completion".to_owned(),
        created: header.created,
        model: header.model,
        choices: out,
        usage: UsageBody::from(total),
        prompt_logprobs,
    })
    .into_response())
}

/// What one streamed choice holds between chunks.
struct Streaming {
    answer: Answer,
    made_calls: bool,
    /// Log-probabilities of tokens whose text the parsers still hold; they go with the next
    /// chunk that carries text, or with the last one.
    held: Vec<TokenLogProb>,
}

/// The chunks one step of a stream sends, in this order: new text, the choice's finish, and
/// the usage chunk after the last choice's finish.
#[derive(Default)]
struct Step {
    delta: Option<ChatChunkChoice>,
    finish: Option<ChatChunkChoice>,
    usage: Option<UsageBody>,
}

impl Step {
    fn write(&self, head: &ChunkHead, events: &mut sse::EventWriter<'_>) {
        for choice in [&self.delta, &self.finish].into_iter().flatten() {
            events.json_with(|out| head.write(Some(choice), None, out));
        }
        if let Some(usage) = &self.usage {
            events.json_with(|out| head.write(None, Some(usage), out));
        }
    }
}

fn stream(
    header: Header,
    text: ChoiceStream,
    answers: Vec<Answer>,
    include_usage: bool,
) -> Result<Response, ApiError> {
    let head = ChunkHead::new(&header.id, header.created, &header.model).map_err(|error| {
        dynamo_core::Error::internal(format!("cannot serialise a chunk: {error}"))
    })?;
    let shaper = header.clone();
    let id = header.id;
    let choice = |index: u32,
                  delta: ChatDelta,
                  logprobs: Option<ChatLogProbs>,
                  finish_reason: Option<String>| ChatChunkChoice {
        index,
        delta,
        logprobs,
        finish_reason,
    };
    let n = u32::try_from(answers.len()).unwrap_or(u32::MAX);
    let firsts: Vec<_> = (0..n)
        .map(|index| {
            let role = ChatDelta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                ..ChatDelta::default()
            };
            Ok(Step {
                delta: Some(choice(index, role, None, None)),
                ..Step::default()
            })
        })
        .collect();
    let mut choices: Vec<Streaming> = answers
        .into_iter()
        .map(|answer| Streaming {
            answer,
            made_calls: false,
            held: Vec::new(),
        })
        .collect();
    let (mut total, mut finished) = (Usage::default(), 0);
    let steps = text.map(move |item| {
        let (index, event) = item?;
        let mut step = Step::default();
        let Some(streaming) = choices.get_mut(index as usize) else {
            return Ok(step);
        };
        let id = call_id(&id, index);
        let (delta, done) = match event {
            TextEvent::Delta { text, log_probs } => {
                streaming.held.extend(log_probs);
                (streaming.answer.push(text, &id), None)
            }
            TextEvent::Done { reason, usage } => {
                (streaming.answer.finish(&id), Some((reason, usage)))
            }
            // Asked for only by a whole answer (`prompt_logprobs`).
            TextEvent::Prompt { .. } => return Ok(step),
        };
        let has_text =
            !delta.content.is_empty() || !delta.reasoning.is_empty() || !delta.calls.is_empty();
        if has_text || (done.is_some() && !streaming.held.is_empty()) {
            let logprobs = shaper.shape(&streaming.held)?;
            streaming.held.clear();
            streaming.made_calls |= !delta.calls.is_empty();
            let tool_calls = (!delta.calls.is_empty()).then(|| {
                delta
                    .calls
                    .into_iter()
                    .map(|piece| {
                        let (id, name) = piece.head.unzip();
                        ToolCallDelta {
                            index: piece.index,
                            kind: id.as_ref().map(|_| "function".to_owned()),
                            id,
                            function: FunctionCallDelta {
                                name,
                                arguments: piece.arguments,
                            },
                        }
                    })
                    .collect()
            });
            let delta = ChatDelta {
                role: None,
                content: (!delta.content.is_empty()).then_some(delta.content),
                reasoning_content: (!delta.reasoning.is_empty()).then_some(delta.reasoning),
                tool_calls,
            };
            step.delta = Some(choice(index, delta, logprobs, None));
        }
        if let Some((reason, usage)) = done {
            let reason = match streaming.made_calls && !streaming.answer.cut_short(reason) {
                true => "tool_calls".to_owned(),
                false => reason.as_openai_str().to_owned(),
            };
            step.finish = Some(choice(index, ChatDelta::default(), None, Some(reason)));
            choices::add_usage(&mut total, usage, index == 0);
            finished += 1;
            if include_usage && finished == n {
                step.usage = Some(UsageBody::from(total));
            }
        }
        Ok(step)
    });
    Ok(sse::respond_with(
        stream::iter(firsts).chain(steps),
        move |step: Result<Step, ApiError>, events| match step {
            Ok(step) => step.write(&head, events),
            Err(error) => events.error(&error),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChatTemplate;

    /// What a template that prints and inspects `messages` renders for one message given as `request`, and for the
    /// message as templates have always been given it (`given`, built as a JSON value).
    fn rendered(request: Value, given: Value) -> (String, String) {
        let message: ChatMessage = serde_json::from_value(request).expect("a chat message");
        let template = ChatTemplate::new(
            "{{ messages | tojson }}|{% for m in messages %}{{ m is mapping }} {{ m | length }} \
             {{ 'name' in m }} {% for k, v in m | items %}{{ k }}={{ v }};{% endfor %}\
             {{ m.get('name') }}{% endfor %}",
        )
        .expect("compiles");
        let messages = [template_message((0, &message)).expect("a text message")];
        let ours = template.render(&messages, None, false).expect("renders");
        let expected = template.render(&[given], None, false).expect("renders");
        (ours, expected)
    }

    #[test]
    fn a_template_sees_every_field_in_the_order_it_always_did() {
        let (ours, expected) = rendered(
            json!({
                "role": "assistant",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "name": "n",
                "tool_call_id": "t",
                "tool_calls": [{"id": "c", "type": "function",
                                "function": {"name": "f", "arguments": "{\"x\": 1}"}}],
            }),
            json!({
                "role": "assistant",
                "content": "ab",
                "name": "n",
                "tool_call_id": "t",
                "tool_calls": [{"id": "c", "type": "function",
                                "function": {"name": "f", "arguments": {"x": 1}}}],
            }),
        );
        assert_eq!(ours, expected);
        assert!(ours.starts_with(r#"[{"content": "ab", "name": "n", "role": "assistant""#));
    }

    #[test]
    fn a_message_without_content_shows_null_and_no_optional_fields() {
        let message = json!({"role": "user", "content": null});
        let (ours, expected) = rendered(message.clone(), message);
        assert_eq!(ours, expected);
        let shown =
            r#"[{"content": null, "role": "user"}]|True 2 False content=None;role=user;None"#;
        assert_eq!(ours, shown);
    }
}
