//! `POST /v1/responses`: OpenAI's Responses API over the chat pipeline.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use dynamo_core::{FinishReason, OutputFormat, Usage};
use futures::TryStreamExt;
use futures::{Stream, StreamExt, stream};
use serde_json::json;

use super::generate::{self, TextEvent};
use super::openapi::GenerationErrors;
use super::{JsonBody, RequestId, Shared, chat, prepare, sse, structured};
use crate::ApiError;
use crate::protocol::common::{reject_unknown, reject_unknown_in};
use crate::protocol::{
    ChatMessage, IncompleteDetails, InputContent, InputItem, InputTokensDetails, MessageContent,
    OutputMessage, OutputText, OutputTokensDetails, ResponseObject, ResponseStreamEvent,
    ResponseUsage, ResponsesInput, ResponsesRequest, Role, SamplingFields,
};

/// The endpoint label of this route's metrics.
const ENDPOINT: &str = "responses";

/// Response (OpenAI's Responses API)
///
/// The input (text, or messages) goes through the model's chat template, with `instructions`
/// as a system message first; the answer is one assistant message. With `stream: true` it comes
/// as server-sent events named by their `type`, from `response.created` to
/// `response.completed`. Responses are not stored.
#[utoipa::path(
    post,
    path = "/v1/responses",
    operation_id = "createResponse",
    tag = "openai",
    request_body = ResponsesRequest,
    responses(
        (status = 200, description = "The response; with `stream: true`, server-sent events from `response.created` to `response.completed`", content(
            (ResponseObject = "application/json"),
            (ResponseStreamEvent = "text/event-stream"),
        )),
        GenerationErrors,
    ),
)]
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    JsonBody(body): JsonBody<ResponsesRequest>,
) -> Response {
    let model = body.model.clone();
    let result = serve(shared.clone(), request_id, body).await;
    super::respond(&shared, &model, ENDPOINT, result)
}

async fn serve(
    shared: Arc<Shared>,
    request_id: String,
    body: ResponsesRequest,
) -> Result<Response, ApiError> {
    let entry = shared.model(&body.model)?;
    check(&body)?;
    let format = output_format(&body)?;
    let prompt = chat::render(&entry, &messages(&body)?, None, true)?;
    let tokens = entry
        .tokenizer
        .encode(&prompt)
        .map_err(|error| ApiError::invalid_field("input", error.to_string()))?;
    let fields = SamplingFields {
        temperature: body.temperature,
        top_p: body.top_p,
        user: body.user.clone(),
        cache_salt: body.cache_salt.clone(),
        ..SamplingFields::default()
    };
    let mut request = prepare::engine_request(
        &shared,
        &entry,
        request_id.clone(),
        tokens,
        &fields,
        body.max_output_tokens,
        "max_output_tokens",
    )?;
    request.format = format;
    request.delivery = prepare::delivery(body.stream);
    let slot = shared
        .in_flight
        .acquire(entry.metrics.in_flight(&entry.name))?;
    let text = generate::start(entry.clone(), request, Some(slot), ENDPOINT)
        .await?
        .map_ok(|(_, event)| event);
    let response = skeleton(&body, &entry.name, &request_id);
    if body.stream {
        return Ok(stream_events(response, text));
    }
    collect(response, text).await
}

/// Refuse what this gateway does not implement, naming the field.
fn check(body: &ResponsesRequest) -> Result<(), ApiError> {
    reject_unknown(&body.extra)?;
    let refuse = |field: &str, why: &str| Err(ApiError::invalid_field(field, why));
    if body.store == Some(true) {
        return refuse("store", "responses are not stored here; send store: false");
    }
    if body.tools.as_ref().is_some_and(|tools| !tools.is_empty()) {
        return refuse("tools", "tools are not supported on /v1/responses here");
    }
    if let Some(choice) = &body.tool_choice
        && !matches!(choice.as_str(), Some("auto" | "none"))
    {
        return refuse("tool_choice", "only \"auto\" or \"none\", with no tools");
    }
    if let Some(truncation) = &body.truncation
        && truncation != "disabled"
    {
        return refuse("truncation", "only \"disabled\": a long prompt is refused");
    }
    Ok(())
}

/// The format `text.format` asks for; `None` for text.
fn output_format(body: &ResponsesRequest) -> Result<Option<OutputFormat>, ApiError> {
    let Some(text) = &body.text else {
        return Ok(None);
    };
    reject_unknown_in("text", &text.extra)?;
    match &text.format {
        Some(format) => structured::text_format(format),
        None => Ok(None),
    }
}

/// The conversation the chat template renders: the instructions, then the input.
fn messages(body: &ResponsesRequest) -> Result<Vec<ChatMessage>, ApiError> {
    let message = |role, text: String| ChatMessage {
        role,
        content: Some(MessageContent::Text(text)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
    };
    let mut messages: Vec<ChatMessage> = body
        .instructions
        .iter()
        .map(|text| message(Role::System, text.clone()))
        .collect();
    match &body.input {
        ResponsesInput::Text(text) => messages.push(message(Role::User, text.clone())),
        ResponsesInput::Items(items) => {
            for (index, item) in items.iter().enumerate() {
                messages.push(message(item.role, item_text(index, item)?));
            }
        }
    }
    if messages.iter().all(|message| message.role == Role::System) {
        return Err(ApiError::invalid_field("input", "input must not be empty"));
    }
    Ok(messages)
}

/// The text of input item `index`.
fn item_text(index: usize, item: &InputItem) -> Result<String, ApiError> {
    if let Some(kind) = item.kind.as_deref().filter(|kind| *kind != "message") {
        return Err(ApiError::invalid_field(
            format!("input[{index}].type"),
            format!("input items of type `{kind}` are not supported; send messages"),
        ));
    }
    match &item.content {
        InputContent::Text(text) => Ok(text.clone()),
        InputContent::Parts(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.kind.as_str(), &part.text) {
                    ("input_text" | "output_text", Some(part_text)) => text.push_str(part_text),
                    (kind, _) => {
                        return Err(ApiError::invalid_field(
                            format!("input[{index}].content"),
                            format!(
                                "content parts of type `{kind}` are not supported; send `input_text`"
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

/// The response as it stands before any text: in progress, no output.
fn skeleton(body: &ResponsesRequest, model: &str, request_id: &str) -> ResponseObject {
    ResponseObject {
        id: format!("resp_{request_id}"),
        object: "response".to_owned(),
        created_at: crate::unix_seconds(),
        status: "in_progress".to_owned(),
        error: None,
        incomplete_details: None,
        instructions: body.instructions.clone(),
        max_output_tokens: body.max_output_tokens,
        model: model.to_owned(),
        output: Vec::new(),
        parallel_tool_calls: body.parallel_tool_calls.unwrap_or(true),
        previous_response_id: None,
        temperature: body.temperature,
        top_p: body.top_p,
        tool_choice: body.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        tools: Vec::new(),
        text: match body.text.as_ref().and_then(|text| text.format.as_ref()) {
            Some(format) => json!({ "format": format }),
            None => json!({ "format": { "type": "text" } }),
        },
        truncation: "disabled".to_owned(),
        usage: None,
        metadata: body.metadata.clone().unwrap_or_else(|| json!({})),
        store: false,
        user: body.user.clone(),
    }
}

/// The assistant message of `response` with `text` so far, in `status`.
fn message(response: &ResponseObject, status: &str, text: Option<&str>) -> OutputMessage {
    OutputMessage {
        kind: "message".to_owned(),
        id: response.id.replacen("resp_", "msg_", 1),
        status: status.to_owned(),
        role: "assistant".to_owned(),
        content: text.map(output_text).into_iter().collect(),
    }
}

fn output_text(text: &str) -> OutputText {
    OutputText {
        kind: "output_text".to_owned(),
        text: text.to_owned(),
        annotations: Vec::new(),
    }
}

/// `response` finished with `text`: completed, or incomplete at the output limit.
fn finish(
    mut response: ResponseObject,
    text: &str,
    reason: FinishReason,
    usage: Usage,
) -> ResponseObject {
    let status = if reason == FinishReason::Length {
        response.incomplete_details = Some(IncompleteDetails {
            reason: "max_output_tokens".to_owned(),
        });
        "incomplete"
    } else {
        "completed"
    };
    response.status = status.to_owned();
    response.output = vec![message(&response, status, Some(text))];
    response.usage = Some(ResponseUsage {
        input_tokens: usage.prompt_tokens,
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.cached_tokens,
        },
        output_tokens: usage.completion_tokens,
        output_tokens_details: OutputTokensDetails::default(),
        total_tokens: usage.total_tokens(),
    });
    response
}

async fn collect(
    response: ResponseObject,
    text: impl Stream<Item = Result<TextEvent, ApiError>>,
) -> Result<Response, ApiError> {
    let mut text = std::pin::pin!(text);
    let mut answer = String::new();
    while let Some(event) = text.next().await {
        match event? {
            TextEvent::Delta { text, .. } => answer.push_str(&text),
            TextEvent::Done { reason, usage } => {
                return Ok(Json(finish(response, &answer, reason, usage)).into_response());
            }
        }
    }
    Err(dynamo_core::Error::internal("the generation ended without a finish").into())
}

/// What a stream has said so far.
struct Streamed {
    response: ResponseObject,
    text: String,
    sequence: u64,
    ended: bool,
}

impl Streamed {
    fn next_number(&mut self) -> u64 {
        let number = self.sequence;
        self.sequence += 1;
        number
    }

    /// The events that open the stream.
    fn opening(&mut self) -> Vec<ResponseStreamEvent> {
        let item_id = message(&self.response, "in_progress", None).id;
        vec![
            ResponseStreamEvent::Created {
                sequence_number: self.next_number(),
                response: Box::new(self.response.clone()),
            },
            ResponseStreamEvent::InProgress {
                sequence_number: self.next_number(),
                response: Box::new(self.response.clone()),
            },
            ResponseStreamEvent::OutputItemAdded {
                sequence_number: self.next_number(),
                output_index: 0,
                item: message(&self.response, "in_progress", None),
            },
            ResponseStreamEvent::ContentPartAdded {
                sequence_number: self.next_number(),
                item_id,
                output_index: 0,
                content_index: 0,
                part: output_text(""),
            },
        ]
    }

    /// The events of one step of the answer.
    fn step(&mut self, event: Result<TextEvent, ApiError>) -> Vec<ResponseStreamEvent> {
        let item_id = message(&self.response, "in_progress", None).id;
        match event {
            Ok(TextEvent::Delta { text, .. }) if text.is_empty() => Vec::new(),
            Ok(TextEvent::Delta { text, .. }) => {
                self.text.push_str(&text);
                vec![ResponseStreamEvent::OutputTextDelta {
                    sequence_number: self.next_number(),
                    item_id,
                    output_index: 0,
                    content_index: 0,
                    delta: text,
                    logprobs: Vec::new(),
                }]
            }
            Ok(TextEvent::Done { reason, usage }) => {
                self.ended = true;
                let done = finish(self.response.clone(), &self.text, reason, usage);
                let item = done
                    .output
                    .first()
                    .cloned()
                    .unwrap_or_else(|| message(&done, "completed", Some("")));
                let incomplete = done.status == "incomplete";
                let response = Box::new(done);
                vec![
                    ResponseStreamEvent::OutputTextDone {
                        sequence_number: self.next_number(),
                        item_id: item_id.clone(),
                        output_index: 0,
                        content_index: 0,
                        text: self.text.clone(),
                        logprobs: Vec::new(),
                    },
                    ResponseStreamEvent::ContentPartDone {
                        sequence_number: self.next_number(),
                        item_id,
                        output_index: 0,
                        content_index: 0,
                        part: output_text(&self.text),
                    },
                    ResponseStreamEvent::OutputItemDone {
                        sequence_number: self.next_number(),
                        output_index: 0,
                        item,
                    },
                    if incomplete {
                        ResponseStreamEvent::Incomplete {
                            sequence_number: self.next_number(),
                            response,
                        }
                    } else {
                        ResponseStreamEvent::Completed {
                            sequence_number: self.next_number(),
                            response,
                        }
                    },
                ]
            }
            Err(error) => {
                self.ended = true;
                let body = error.body().error;
                vec![ResponseStreamEvent::Error {
                    sequence_number: self.next_number(),
                    code: body.code,
                    message: body.message,
                    param: body.param,
                }]
            }
        }
    }
}

/// The SSE response of a streamed answer: each event named by its type, no `[DONE]`.
fn stream_events(
    response: ResponseObject,
    text: impl Stream<Item = Result<TextEvent, ApiError>> + Send + 'static,
) -> Response {
    let mut streamed = Streamed {
        response,
        text: String::new(),
        sequence: 0,
        ended: false,
    };
    let opening = streamed.opening();
    let steps = text.scan(streamed, |streamed, event| {
        let events = (!streamed.ended).then(|| streamed.step(event));
        futures::future::ready(events)
    });
    sse::respond_unmarked(
        stream::iter([opening]).chain(steps),
        |events: Vec<ResponseStreamEvent>, out| {
            for event in &events {
                out.named(event.kind(), event, |error| {
                    json!({ "type": "error", "message": format!("cannot serialise an event: {error}") })
                        .to_string()
                });
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn request(input: Value) -> ResponsesRequest {
        serde_json::from_value(json!({ "model": "m", "input": input })).expect("a request")
    }

    #[test]
    fn instructions_come_first_and_parts_are_joined() {
        let mut body = request(json!([
            { "role": "user", "content": [{ "type": "input_text", "text": "Hel" }, { "type": "input_text", "text": "lo" }] },
            { "type": "message", "role": "assistant", "content": "Hi" },
        ]));
        body.instructions = Some("Be brief.".to_owned());
        let messages = messages(&body).expect("messages");
        let roles: Vec<Role> = messages.iter().map(|message| message.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
        assert_eq!(
            messages[1].content,
            Some(MessageContent::Text("Hello".to_owned()))
        );
    }

    #[test]
    fn what_is_not_supported_is_refused_by_name() {
        let image = request(
            json!([{ "role": "user", "content": [{ "type": "input_image", "image_url": "x" }] }]),
        );
        let error = messages(&image).expect_err("an image");
        assert_eq!(
            error.body().error.param.as_deref(),
            Some("input[0].content")
        );
        let call =
            request(json!([{ "type": "function_call_output", "role": "user", "content": "x" }]));
        let error = messages(&call).expect_err("a function call output");
        assert_eq!(error.body().error.param.as_deref(), Some("input[0].type"));
        for (field, value) in [
            ("store", json!(true)),
            ("tools", json!([{ "type": "web_search" }])),
            ("tool_choice", json!("required")),
            ("truncation", json!("auto")),
            ("previous_response_id", json!("resp_1")),
            ("reasoning", json!({ "effort": "low" })),
        ] {
            let body: ResponsesRequest =
                serde_json::from_value(json!({ "model": "m", "input": "x", field: value }))
                    .expect("a request");
            let error = check(&body).expect_err(field);
            assert_eq!(error.body().error.param.as_deref(), Some(field));
        }
    }
}
