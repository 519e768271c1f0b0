//! `POST /v1/responses`: OpenAI's Responses API over the chat pipeline.

pub(crate) mod background;
mod event_log;
mod input;
pub(crate) mod input_items;
mod output;
mod relay;
mod store;

pub(crate) use store::ResponseStore;

use std::ops::Range;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use dynamo_core::{FinishReason, Usage};
use futures::TryStreamExt;
use futures::{Stream, StreamExt, stream};
use serde_json::{Value, json};

use self::output::{Events, Items};
use self::store::Stored;
use super::answer::Answer;
use super::auth::Caller;
use super::generate::{self, TextEvent};
use super::openapi::{ErrorResponse, GenerationErrors};
use super::structured::{self, Structured, ToolFields};
use super::{JsonBody, RequestId, Shared, chat, prepare, sse};
use crate::ApiError;
use crate::protocol::common::{reject_unknown, reject_unknown_in};
use crate::protocol::{
    IncompleteDetails, InputItem, InputTokensDetails, OutputTokensDetails, ResponseObject,
    ResponseStreamEvent, ResponseUsage, ResponsesRequest, SamplingFields, Tool,
};

/// The endpoint label of this route's metrics.
const ENDPOINT: &str = "responses";

/// Response (OpenAI's Responses API)
///
/// The input (text, or items: messages, function calls and their outputs) goes through the
/// model's chat template, with `instructions` as a system message first and the function tools
/// offered; the output is an assistant message, the calls the model made, or both. With
/// `stream: true` it comes as server-sent events named by their `type`, from
/// `response.created` to `response.completed`. Unless `store` is false the response is kept (in
/// the gateway's memory, or in a store it shares with other gateways), for
/// `GET /v1/responses/{id}` and for a later request's `previous_response_id` to continue from.
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
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ResponsesRequest>,
) -> Response {
    let model = body.model.clone();
    let result = serve(shared.clone(), request_id, caller, body).await;
    super::respond(&shared, &model, ENDPOINT, result)
}

async fn serve(
    shared: Arc<Shared>,
    request_id: String,
    caller: Caller,
    body: ResponsesRequest,
) -> Result<Response, ApiError> {
    let entry = shared.model(&body.model)?;
    check(&body, shared.responses.is_on())?;
    let earlier = match &body.previous_response_id {
        Some(id) => {
            let previous = shared
                .responses
                .get(caller, id)
                .await?
                .ok_or_else(|| ApiError::previous_response_not_found(id))?;
            if previous.response.status == "in_progress" {
                let why = format!("the response `{id}` is still in progress");
                return Err(ApiError::invalid_field("previous_response_id", why));
            }
            previous.conversation
        }
        None => Vec::new(),
    };
    let input = input::items(&body.input);
    let tools = input::function_tools(body.tools.as_deref().unwrap_or_default())?;
    let structured = plan(&body, &tools)?;
    let offers_tools =
        !tools.is_empty() && body.tool_choice.as_ref().and_then(Value::as_str) != Some("none");
    let offered: Vec<Value> = tools.iter().map(|tool| json!(tool)).collect();
    let offered = offers_tools.then_some(offered.as_slice());
    let messages = input::messages(body.instructions.as_deref(), &earlier, &input)?;
    let prompt = chat::render(&entry, &messages, offered, true)?;
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
    request.format = structured.format;
    request.delivery = prepare::delivery(body.stream);
    let slot = shared
        .in_flight
        .acquire(entry.metrics.in_flight(&entry.name))?;
    let text = generate::start(entry.clone(), request, Some(slot), ENDPOINT)
        .await?
        .map_ok(|(_, event)| event);
    let answer = Answer::new(&entry, offers_tools, structured.forced);
    let storing = shared.responses.is_on() && body.store != Some(false);
    let keep = storing.then(|| Keep {
        shared: shared.clone(),
        caller,
        input: earlier.len()..earlier.len() + input.len(),
        conversation: earlier.into_iter().chain(input).collect(),
    });
    let responder = Responder {
        response: skeleton(&body, &entry.name, &request_id, storing),
        keep,
        request_id: request_id.clone(),
        answer,
        items: Items::new(&request_id),
        events: Events::default(),
        ended: false,
    };
    if body.background == Some(true) {
        return background::start(responder, text, body.stream).await;
    }
    if body.stream {
        return Ok(stream_events(responder, text));
    }
    collect(responder, text).await
}

/// Refuse what this gateway does not implement, naming the field; `store_on` says whether its
/// response store is on.
fn check(body: &ResponsesRequest, store_on: bool) -> Result<(), ApiError> {
    reject_unknown(&body.extra)?;
    let refuse = |field: &str, why: &str| Err(ApiError::invalid_field(field, why));
    let off = "this gateway stores no responses (its store is off)";
    if !store_on && body.store == Some(true) {
        return refuse("store", &format!("{off}; send store: false"));
    }
    if !store_on && body.previous_response_id.is_some() {
        return refuse("previous_response_id", off);
    }
    if body.background == Some(true) && (!store_on || body.store == Some(false)) {
        return refuse(
            "background",
            "a background response is stored: it needs the store",
        );
    }
    if let Some(truncation) = &body.truncation
        && truncation != "disabled"
    {
        return refuse("truncation", "only \"disabled\": a long prompt is refused");
    }
    Ok(())
}

/// What `text.format` and `tool_choice` ask of the answer's shape, checked.
fn plan(body: &ResponsesRequest, tools: &[Tool]) -> Result<Structured, ApiError> {
    let forced = structured::forced_calls(
        body.tool_choice.as_ref(),
        tools,
        body.parallel_tool_calls,
        ToolFields::Responses,
    )?;
    let format = match &body.text {
        Some(text) => {
            reject_unknown_in("text", &text.extra)?;
            match &text.format {
                Some(format) => structured::text_format(format)?,
                None => None,
            }
        }
        None => None,
    };
    structured::combined(forced, format, "text.format")
}

/// The response as it stands before any output: in progress.
fn skeleton(body: &ResponsesRequest, model: &str, request_id: &str, store: bool) -> ResponseObject {
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
        previous_response_id: body.previous_response_id.clone(),
        temperature: body.temperature,
        top_p: body.top_p,
        tool_choice: body.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        tools: body.tools.clone().unwrap_or_default(),
        text: match body.text.as_ref().and_then(|text| text.format.as_ref()) {
            Some(format) => json!({ "format": format }),
            None => json!({ "format": { "type": "text" } }),
        },
        truncation: "disabled".to_owned(),
        usage: None,
        metadata: body.metadata.clone().unwrap_or_else(|| json!({})),
        store,
        background: body.background,
        user: body.user.clone(),
    }
}

/// Where a finished response is kept, with the conversation it ends.
struct Keep {
    shared: Arc<Shared>,
    caller: Caller,
    /// The conversation's items up to the request's input; the output's go after them.
    conversation: Vec<InputItem>,
    /// Where the request's input is in `conversation`.
    input: Range<usize>,
}

impl Keep {
    /// Store `response`, ending the conversation (`running_at`: a background response still
    /// generated, said at that time); whether it was stored.
    async fn store(&self, response: &ResponseObject, running_at: Option<u64>) -> bool {
        let mut conversation = self.conversation.clone();
        conversation.extend(response.output.iter().map(input::sent_back));
        let stored = Stored {
            response: response.clone(),
            conversation,
            input: self.input.clone(),
            running_at,
        };
        self.shared.responses.insert(self.caller, stored).await
    }
}

/// A response on its way: the answer's parsers, the output items, the events so far, and
/// where it is kept once done.
struct Responder {
    response: ResponseObject,
    keep: Option<Keep>,
    /// What the ids of the output items and calls are made of.
    request_id: String,
    answer: Answer,
    items: Items,
    events: Events,
    ended: bool,
}

impl Responder {
    /// The events that open the stream.
    fn opening(&mut self) -> Vec<ResponseStreamEvent> {
        let response = &self.response;
        self.events
            .push(|sequence_number| ResponseStreamEvent::Created {
                sequence_number,
                response: Box::new(response.clone()),
            });
        self.events
            .push(|sequence_number| ResponseStreamEvent::InProgress {
                sequence_number,
                response: Box::new(response.clone()),
            });
        self.events.take()
    }

    /// Take in one step of the answer; the events it makes. At the answer's end the response
    /// is whole: completed, or incomplete at the output limit; it is stored before its last
    /// event is made (so a client that has it may continue from it through any gateway that
    /// shares the store), and says `store: false` if storing it failed.
    async fn step(&mut self, event: Result<TextEvent, ApiError>) -> Vec<ResponseStreamEvent> {
        match event {
            Ok(TextEvent::Delta { text, .. }) => {
                let delta = self.answer.push(text, &self.request_id);
                self.items.push(delta, &mut self.events);
            }
            // The Responses API asks for none.
            Ok(TextEvent::Prompt { .. }) => {}
            Ok(TextEvent::Done { reason, usage }) => {
                self.ended = true;
                let delta = self.answer.finish(&self.request_id);
                self.items.push(delta, &mut self.events);
                let incomplete = reason == FinishReason::Length;
                let status = if incomplete {
                    "incomplete"
                } else {
                    "completed"
                };
                let response = &mut self.response;
                response.status = status.to_owned();
                response.incomplete_details = incomplete.then(|| IncompleteDetails {
                    reason: "max_output_tokens".to_owned(),
                });
                response.output = self.items.finish(status, &mut self.events);
                response.usage = Some(usage_of(usage));
                if let Some(keep) = self.keep.take()
                    && !keep.store(response, None).await
                {
                    response.store = false;
                }
                let response = Box::new(response.clone());
                self.events.push(|sequence_number| match incomplete {
                    true => ResponseStreamEvent::Incomplete {
                        sequence_number,
                        response,
                    },
                    false => ResponseStreamEvent::Completed {
                        sequence_number,
                        response,
                    },
                });
            }
            Err(error) => {
                self.ended = true;
                let body = error.body().error;
                self.events
                    .push(|sequence_number| ResponseStreamEvent::Error {
                        sequence_number,
                        code: body.code,
                        message: body.message,
                        param: body.param,
                    });
            }
        }
        self.events.take()
    }
}

/// The response's `usage` of the engine's.
fn usage_of(usage: Usage) -> ResponseUsage {
    ResponseUsage {
        input_tokens: usage.prompt_tokens,
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.cached_tokens,
        },
        output_tokens: usage.completion_tokens,
        output_tokens_details: OutputTokensDetails::default(),
        total_tokens: usage.total_tokens(),
    }
}

async fn collect(
    mut responder: Responder,
    text: impl Stream<Item = Result<TextEvent, ApiError>>,
) -> Result<Response, ApiError> {
    let mut text = std::pin::pin!(text);
    while let Some(event) = text.next().await {
        responder.step(Ok(event?)).await;
        if responder.ended {
            return Ok(Json(responder.response).into_response());
        }
    }
    Err(dynamo_core::Error::internal("the generation ended without a finish").into())
}

/// The SSE response of a streamed answer.
fn stream_events(
    mut responder: Responder,
    text: impl Stream<Item = Result<TextEvent, ApiError>> + Send + 'static,
) -> Response {
    let opening = responder.opening();
    let steps = stream::unfold(Some((responder, Box::pin(text))), |state| async move {
        let (mut responder, mut text) = state?;
        let events = responder.step(text.next().await?).await;
        let more = (!responder.ended).then_some((responder, text));
        Some((events, more))
    });
    respond_events(stream::iter([opening]).chain(steps))
}

/// The SSE response of `events`: each named by its type, no `[DONE]`.
fn respond_events(
    events: impl Stream<Item = Vec<ResponseStreamEvent>> + Send + 'static,
) -> Response {
    sse::respond_unmarked(events, |events: Vec<ResponseStreamEvent>, out| {
        for event in &events {
            out.named(event.kind(), event, |error| {
                json!({ "type": "error", "message": format!("cannot serialise an event: {error}") })
                    .to_string()
            });
        }
    })
}

/// Retrieve a stored response
///
/// The response as it was returned, if it is still stored and was stored with the same API
/// key; a 404 otherwise. With `stream=true`, the events of a background response made with
/// `stream: true`, after the one numbered `starting_after` (all of them without it), as they
/// come: from the frontend that generates it (while it runs and for five minutes after), or
/// from the store that frontend shares; a 400 naming `stream` where none are kept.
#[utoipa::path(
    get,
    path = "/v1/responses/{id}",
    operation_id = "getResponse",
    tag = "openai",
    params(
        ("id" = String, Path, description = "The response's id (`resp_…`)"),
        ("stream" = Option<bool>, Query, description = "Follow a streamed background response's events"),
        ("starting_after" = Option<u64>, Query, description = "With `stream=true`, the events after this `sequence_number`"),
    ),
    responses(
        (status = 200, description = "The stored response; with `stream=true`, server-sent events", content(
            (ResponseObject = "application/json"),
            (ResponseStreamEvent = "text/event-stream"),
        )),
        (status = 400, response = ErrorResponse),
        (status = 404, response = ErrorResponse),
    ),
)]
pub(crate) async fn retrieve(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|refused| ApiError::invalid_request(refused.body_text()))?;
    if let background::Retrieval::Events { after } = background::Retrieval::parse(&query)? {
        return background::follow(&shared, caller, id, after).await;
    }
    let stored = shared.responses.get(caller, &id).await?;
    stored
        .map(|stored| Json(stored.response).into_response())
        .ok_or_else(|| ApiError::response_not_found(&id))
}

/// Delete a stored response
///
/// Forget a stored response (stored with the same API key); a 404 if there is none.
#[utoipa::path(
    delete,
    path = "/v1/responses/{id}",
    operation_id = "deleteResponse",
    tag = "openai",
    params(("id" = String, Path, description = "The response's id (`resp_…`)")),
    responses(
        (status = 200, description = "`{\"id\": …, \"object\": \"response.deleted\", \"deleted\": true}`", body = Object),
        (status = 404, response = ErrorResponse),
    ),
)]
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !shared.responses.delete(caller, &id).await? {
        return Err(ApiError::response_not_found(&id));
    }
    Ok(Json(
        json!({ "id": id, "object": "response.deleted", "deleted": true }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_supported_is_refused_by_name() {
        for (field, value, param) in [
            ("store", json!(true), "store"),
            ("truncation", json!("auto"), "truncation"),
            (
                "previous_response_id",
                json!("resp_1"),
                "previous_response_id",
            ),
            ("reasoning", json!({ "effort": "low" }), "reasoning"),
            ("text", json!({ "verbosity": "low" }), "text.verbosity"),
            (
                "tool_choice",
                json!({ "type": "web_search_preview" }),
                "tool_choice",
            ),
            (
                "tool_choice",
                json!({ "type": "function", "name": "nope" }),
                "tool_choice.name",
            ),
            ("tool_choice", json!("required"), "tool_choice"),
        ] {
            let body: ResponsesRequest =
                serde_json::from_value(json!({ "model": "m", "input": "x", field: value }))
                    .expect("a request");
            let error = check(&body, false)
                .and_then(|()| plan(&body, &[]))
                .expect_err(field);
            assert_eq!(error.body().error.param.as_deref(), Some(param), "{field}");
        }
    }
}
