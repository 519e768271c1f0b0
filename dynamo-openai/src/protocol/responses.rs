//! `/v1/responses`: OpenAI's Responses API: text and function calls.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::chat::Role;

/// A Responses API request.
///
/// A string or a list of items in (messages, earlier function calls and their outputs); out,
/// an assistant message, in a JSON format when `text.format` asks for one, and the calls the
/// model made of the offered functions; a response is stored unless `store` is false, and a
/// later request continues its conversation with `previous_response_id`. Built-in tools (web
/// search, files, …) and `reasoning` options are refused with a 400 naming the field, never
/// ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResponsesRequest {
    /// The model name, as listed by `/v1/models`.
    pub model: String,
    /// The user's text, or the conversation so far.
    pub input: ResponsesInput,
    /// A system message put before the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// The most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<u32>,
    /// In `[0, 2]`; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// In `(0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Stream the answer as server-sent events (`response.output_text.delta` and the rest).
    #[serde(default)]
    pub stream: bool,
    /// Whether the response is kept for `GET /v1/responses/{id}` and a later
    /// `previous_response_id` (default true, when the gateway's store is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// A stored response whose conversation this request continues: its input and output
    /// items go before this request's input (its instructions do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Answer at once with the response `in_progress`, and go on generating it: poll
    /// `GET /v1/responses/{id}` for the result, `POST /v1/responses/{id}/cancel` to stop it.
    /// Needs the store; not with `stream: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The end user; passed on as the routing session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A cache namespace (vLLM's extension), checked and used as on chat and text completions:
    /// prompt blocks are reused only by requests with the same salt. A non-empty string; `null`
    /// is the same as no salt.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::salt_string"
    )]
    #[schema(min_length = 1)]
    pub cache_salt: Option<String>,
    /// Only `"disabled"`: a prompt over the context is refused, not truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    /// With `tool_choice: "required"`, `false` holds the answer to one call; otherwise accepted
    /// and echoed (several calls in one answer are always allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// `"auto"` (the default), `"none"`, `"required"` (one call or more of the tools, each
    /// with arguments that follow its parameters' schema), or `{"type": "function", "name": …}`
    /// to force a call of that function (its arguments then follow its parameters' schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Functions the model may call; other tool types are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ResponsesTool>>,
    /// The output's format, enforced while sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<ResponsesText>,
    /// Fields this server does not know; any non-null one is rejected.
    #[serde(flatten, skip_serializing)]
    #[schema(ignore)]
    pub extra: serde_json::Map<String, Value>,
}

/// A tool of a Responses request: a function, its name and parameters beside `type` rather than
/// under `function` as in chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResponsesTool {
    /// `function`; other types are refused.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name the model calls it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Accepted as `true` or `false`: a forced call's arguments follow the schema either way,
    /// and a call the model makes unforced is not checked against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Fields this server does not know; any non-null one is rejected.
    #[serde(flatten, skip_serializing)]
    #[schema(ignore)]
    pub extra: serde_json::Map<String, Value>,
}

/// `text` of a Responses request: the output's format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResponsesText {
    /// `text` (the default), `json_object`, or `json_schema` with its schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// Options this server does not know (`verbosity`, …); any non-null one is rejected.
    #[serde(flatten, skip_serializing)]
    #[schema(ignore)]
    pub extra: serde_json::Map<String, Value>,
}

/// The Responses API's output format: as chat's `response_format`, with a JSON schema's fields
/// beside `type` rather than under `json_schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TextFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// With `json_schema`: the schema's name (letters, digits, `_` and `-`, at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the format is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// With `json_schema`: the JSON schema the output follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Accepted as `true` or `false`: the schema is enforced either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// What a Responses request reads: text, or items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ResponsesInput {
    /// One user message.
    Text(String),
    /// The conversation so far.
    Items(Vec<InputItem>),
}

/// One item of a Responses input: a message (`role` and `content`), a function call the model
/// made (`call_id`, `name`, `arguments`), its output (`call_id`, `output`), or the model's
/// reasoning (left out of the prompt). Earlier output items may be sent back as they came;
/// their `id` and `status` are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputItem {
    /// `message` (the default), `function_call`, `function_call_output` or `reasoning`; other
    /// item types are refused.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A message's author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A message's text, or parts of type `input_text` (and `output_text` in earlier assistant
    /// messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<InputContent>,
    /// A function call's id, quoted by the output that answers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The function a call called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A call's arguments, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// A function's output: text, or parts of type `input_text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<InputContent>,
}

/// A message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum InputContent {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<InputPart>),
}

/// One content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputPart {
    /// `input_text` or `output_text`; images and files are refused.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One input item of a stored response, as `GET /v1/responses/{id}/input_items` lists it: the
/// item as it was sent, with a `type` always, a message's text as one part (`input_text`, or
/// `output_text` in an assistant's message), an id, and the `status` of messages and calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListedInputItem {
    /// The item's id, the same at every listing: `msg_`, `fc_`, `fco_` or `rs_` by type, then
    /// the response's id without its `resp_` and the item's place in the input.
    pub id: String,
    /// The item.
    #[serde(flatten)]
    pub item: InputItem,
    /// `completed`, on messages and function calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A reasoning item's summary: empty (the gateway does not keep reasoning sent back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub summary: Option<Vec<Value>>,
}

/// A page of a stored response's input items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputItemList {
    /// Always `list`.
    pub object: String,
    /// The items of the page, in the order asked for.
    pub data: Vec<ListedInputItem>,
    /// The first item's id (null on an empty page).
    pub first_id: Option<String>,
    /// The last item's id, to ask for the next page `after` (null on an empty page).
    pub last_id: Option<String>,
    /// Whether more items follow the page.
    pub has_more: bool,
}

/// A response, whole or (in stream events) as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResponseObject {
    /// `resp_` and the request id.
    pub id: String,
    /// Always `response`.
    pub object: String,
    /// Unix seconds.
    pub created_at: u64,
    /// `in_progress`, `completed`, or `incomplete` (the output limit was reached); a background
    /// response may also end `failed` or `cancelled`.
    pub status: String,
    /// Null, but on a background response that `failed`: `{"code", "message"}` (a response
    /// answered directly ends its stream with an `error` event, or is an error itself).
    pub error: Option<Value>,
    /// Why it is incomplete.
    pub incomplete_details: Option<IncompleteDetails>,
    /// The request's instructions.
    pub instructions: Option<String>,
    /// The request's output limit.
    pub max_output_tokens: Option<u32>,
    /// The model that answered.
    pub model: String,
    /// The answer: reasoning, an assistant message, function calls, in the order the model
    /// made them (none yet while in progress).
    pub output: Vec<OutputItem>,
    /// As the request said (default true).
    pub parallel_tool_calls: bool,
    /// The request's `previous_response_id`.
    pub previous_response_id: Option<String>,
    /// The request's temperature.
    pub temperature: Option<f32>,
    /// The request's top_p.
    pub top_p: Option<f32>,
    /// As the request said (`auto` without one).
    pub tool_choice: Value,
    /// The request's tools.
    pub tools: Vec<ResponsesTool>,
    /// `{"format": …}`: the request's `text.format`, `{"type": "text"}` without one.
    pub text: Value,
    /// Always `disabled`.
    pub truncation: String,
    /// Token counts, once done.
    pub usage: Option<ResponseUsage>,
    /// The request's metadata (an empty object without).
    pub metadata: Value,
    /// Whether the response is stored.
    pub store: bool,
    /// As the request said, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// The request's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `incomplete_details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncompleteDetails {
    /// `max_output_tokens`.
    pub reason: String,
}

/// One item of a response's output, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum OutputItem {
    /// The model's reasoning, for models whose reasoning the gateway splits out.
    #[serde(rename = "reasoning")]
    Reasoning(ReasoningItem),
    /// An assistant message.
    #[serde(rename = "message")]
    Message(OutputMessage),
    /// A call of one of the request's functions.
    #[serde(rename = "function_call")]
    FunctionCall(FunctionCallItem),
}

impl OutputItem {
    /// The item's id.
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Reasoning(reasoning) => &reasoning.id,
            OutputItem::Message(message) => &message.id,
            OutputItem::FunctionCall(call) => &call.id,
        }
    }
}

/// The model's reasoning, as it wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReasoningItem {
    /// `rs_`, the request id and the item's place among the response's reasoning items.
    pub id: String,
    /// Always empty: the reasoning is given whole, in `content`, not summarised.
    pub summary: Vec<Value>,
    /// Its text (none yet while in progress).
    pub content: Vec<ReasoningText>,
    /// `in_progress`, `completed` or `incomplete`.
    pub status: String,
}

/// The text part of a reasoning item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReasoningText {
    /// Always `reasoning_text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
}

/// A content part in a stream event: a message's text or a reasoning item's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OutputPart {
    /// An `output_text` part.
    Output(OutputText),
    /// A `reasoning_text` part.
    Reasoning(ReasoningText),
}

/// An assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputMessage {
    /// `msg_` and the request id (and the message's place among several, after the first).
    pub id: String,
    /// `in_progress`, `completed` or `incomplete`.
    pub status: String,
    /// Always `assistant`.
    pub role: String,
    /// Its text (none yet while in progress).
    pub content: Vec<OutputText>,
}

/// A function call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FunctionCallItem {
    /// `fc_`, the request id and the call's place among the response's calls.
    pub id: String,
    /// The id a `function_call_output` input item quotes to answer the call.
    pub call_id: String,
    /// The function called.
    pub name: String,
    /// Its arguments, as JSON text (empty while in progress).
    pub arguments: String,
    /// `in_progress`, `completed` or `incomplete` (cut short by the output limit).
    pub status: String,
}

/// A text part of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputText {
    /// Always `output_text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
    /// Always empty.
    pub annotations: Vec<Value>,
}

/// `usage` of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResponseUsage {
    /// Tokens in the prompt.
    pub input_tokens: u32,
    /// Of which served from the KV cache.
    pub input_tokens_details: InputTokensDetails,
    /// Tokens generated.
    pub output_tokens: u32,
    /// Of which reasoning (always 0: reasoning is not split out here).
    pub output_tokens_details: OutputTokensDetails,
    /// Their sum.
    pub total_tokens: u32,
}

/// `usage.input_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputTokensDetails {
    /// Prompt tokens whose KV was reused from a cache.
    pub cached_tokens: u32,
}

/// `usage.output_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputTokensDetails {
    /// Always 0: reasoning tokens are not counted apart here.
    pub reasoning_tokens: u32,
}

/// One server-sent event of a streamed response; its `type` is also the SSE event name.
///
/// A stream runs `response.created` and `response.in_progress`, then each output item in turn,
/// then `response.completed` (or `response.incomplete` at the output limit). A message runs
/// `response.output_item.added`, `response.content_part.added`, any number of
/// `response.output_text.delta`, then `response.output_text.done`, `response.content_part.done`
/// and `response.output_item.done`; a reasoning item the same with `response.reasoning_text.*`
/// events in place of `response.output_text.*`; a function call runs `response.output_item.added`, any
/// number of `response.function_call_arguments.delta`, then
/// `response.function_call_arguments.done` and `response.output_item.done`. An error
/// mid-stream is an `error` event, and ends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum ResponseStreamEvent {
    /// The response exists, in progress.
    #[serde(rename = "response.created")]
    Created {
        /// The event's place in the stream, from 0.
        sequence_number: u64,
        /// The response so far.
        response: Box<ResponseObject>,
    },
    /// Generation has started.
    #[serde(rename = "response.in_progress")]
    InProgress {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The response so far.
        response: Box<ResponseObject>,
    },
    /// An output item begins.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The item's place in the output.
        output_index: u32,
        /// The item, empty.
        item: OutputItem,
    },
    /// Its text part begins.
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The message's id.
        item_id: String,
        /// The message's place in the output.
        output_index: u32,
        /// Always 0.
        content_index: u32,
        /// The part, empty.
        part: OutputPart,
    },
    /// More text.
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The message's id.
        item_id: String,
        /// The message's place in the output.
        output_index: u32,
        /// Always 0.
        content_index: u32,
        /// The new text.
        delta: String,
        /// Always empty.
        logprobs: Vec<Value>,
    },
    /// The text is whole.
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The message's id.
        item_id: String,
        /// The message's place in the output.
        output_index: u32,
        /// Always 0.
        content_index: u32,
        /// The whole text.
        text: String,
        /// Always empty.
        logprobs: Vec<Value>,
    },
    /// The text part is whole.
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The message's id.
        item_id: String,
        /// The message's place in the output.
        output_index: u32,
        /// Always 0.
        content_index: u32,
        /// The whole part.
        part: OutputPart,
    },
    /// More of a function call's arguments.
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The call's item id.
        item_id: String,
        /// The call's place in the output.
        output_index: u32,
        /// The next part of the arguments' JSON text.
        delta: String,
    },
    /// More reasoning.
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The reasoning item's id.
        item_id: String,
        /// The item's place in the output.
        output_index: u32,
        /// Always 0.
        content_index: u32,
        /// The new text.
        delta: String,
    },
    /// The reasoning is whole.
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The reasoning item's id.
        item_id: String,
        /// The item's place in the output.
        output_index: u32,
        /// Always 0.
        content_index: u32,
        /// The whole text.
        text: String,
    },
    /// A function call's arguments are whole.
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The call's item id.
        item_id: String,
        /// The call's place in the output.
        output_index: u32,
        /// The function called.
        name: String,
        /// The whole arguments.
        arguments: String,
    },
    /// An output item is whole.
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The item's place in the output.
        output_index: u32,
        /// The whole item.
        item: OutputItem,
    },
    /// The response is whole.
    #[serde(rename = "response.completed")]
    Completed {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The whole response.
        response: Box<ResponseObject>,
    },
    /// The response stopped at the output limit.
    #[serde(rename = "response.incomplete")]
    Incomplete {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The response as it ended.
        response: Box<ResponseObject>,
    },
    /// The generation failed; nothing follows.
    #[serde(rename = "error")]
    Error {
        /// The event's place in the stream.
        sequence_number: u64,
        /// The error's code, if any.
        code: Option<String>,
        /// What went wrong.
        message: String,
        /// The field at fault, if any.
        param: Option<String>,
    },
}

impl ResponseStreamEvent {
    /// Whether the event ends its stream: `response.completed`, `response.incomplete` or `error`.
    pub fn is_last(&self) -> bool {
        matches!(
            self,
            ResponseStreamEvent::Completed { .. }
                | ResponseStreamEvent::Incomplete { .. }
                | ResponseStreamEvent::Error { .. }
        )
    }

    /// The event's `type`, which is also its SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            ResponseStreamEvent::Created { .. } => "response.created",
            ResponseStreamEvent::InProgress { .. } => "response.in_progress",
            ResponseStreamEvent::OutputItemAdded { .. } => "response.output_item.added",
            ResponseStreamEvent::ContentPartAdded { .. } => "response.content_part.added",
            ResponseStreamEvent::OutputTextDelta { .. } => "response.output_text.delta",
            ResponseStreamEvent::OutputTextDone { .. } => "response.output_text.done",
            ResponseStreamEvent::ContentPartDone { .. } => "response.content_part.done",
            ResponseStreamEvent::ReasoningTextDelta { .. } => "response.reasoning_text.delta",
            ResponseStreamEvent::ReasoningTextDone { .. } => "response.reasoning_text.done",
            ResponseStreamEvent::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            ResponseStreamEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            ResponseStreamEvent::OutputItemDone { .. } => "response.output_item.done",
            ResponseStreamEvent::Completed { .. } => "response.completed",
            ResponseStreamEvent::Incomplete { .. } => "response.incomplete",
            ResponseStreamEvent::Error { .. } => "error",
        }
    }
}
