//! What a Responses request reads, as the chat pipeline takes it: the input items as chat
//! messages, and the tools as chat's function tools.

use std::collections::HashSet;

use crate::ApiError;
use crate::protocol::common::reject_unknown_in;
use crate::protocol::{
    ChatMessage, FunctionCall, FunctionDefinition, InputContent, InputItem, MessageContent,
    OutputItem, ResponsesInput, ResponsesTool, Role, Tool, ToolCall,
};

/// The conversation the chat template renders: the instructions, then the conversation a
/// `previous_response_id` continues (`earlier`), then the input. A function call joins the
/// assistant message before it (or starts one, with empty text), and its output is a `tool`
/// message quoting its `call_id`.
///
/// # Errors
///
/// A 400 naming the item's field: a message without its role or content, a call without its
/// id, name or arguments, an output quoting no earlier call, a content part other than text,
/// an item of another type, or an input with no message besides the instructions. Reasoning
/// items are left out, as the chat templates of reasoning models leave earlier turns'
/// reasoning out.
pub(super) fn messages(
    instructions: Option<&str>,
    earlier: &[InputItem],
    input: &[InputItem],
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut messages: Vec<ChatMessage> = instructions
        .iter()
        .map(|text| message(Role::System, (*text).to_owned()))
        .collect();
    let mut calls = HashSet::new();
    // A stored conversation's items were checked when they came and pass again, so an error
    // names an item of the input, counted from the input's start.
    for (index, item) in earlier.iter().chain(input).enumerate() {
        let index = index.checked_sub(earlier.len()).unwrap_or(index);
        add_item(&mut messages, &mut calls, index, item)?;
    }
    if messages.iter().all(|message| message.role == Role::System) {
        return Err(ApiError::invalid_field("input", "input must not be empty"));
    }
    Ok(messages)
}

/// The request's input as items: a string is one user message.
pub(super) fn items(input: &ResponsesInput) -> Vec<InputItem> {
    match input {
        ResponsesInput::Text(text) => vec![InputItem {
            role: Some(Role::User),
            content: Some(InputContent::Text(text.clone())),
            ..InputItem::default()
        }],
        ResponsesInput::Items(items) => items.clone(),
    }
}

/// An output item as the input item that sends it back.
pub(super) fn sent_back(item: &OutputItem) -> InputItem {
    match item {
        OutputItem::Reasoning(_) => InputItem {
            kind: Some("reasoning".to_owned()),
            ..InputItem::default()
        },
        OutputItem::Message(message) => InputItem {
            kind: Some("message".to_owned()),
            role: Some(Role::Assistant),
            content: Some(InputContent::Text(
                message
                    .content
                    .iter()
                    .map(|part| part.text.as_str())
                    .collect(),
            )),
            ..InputItem::default()
        },
        OutputItem::FunctionCall(call) => InputItem {
            kind: Some("function_call".to_owned()),
            call_id: Some(call.call_id.clone()),
            name: Some(call.name.clone()),
            arguments: Some(call.arguments.clone()),
            ..InputItem::default()
        },
    }
}

/// Add input item `index` to `messages`; `calls` holds the call ids seen so far.
fn add_item(
    messages: &mut Vec<ChatMessage>,
    calls: &mut HashSet<String>,
    index: usize,
    item: &InputItem,
) -> Result<(), ApiError> {
    let field = |name: &str| format!("input[{index}].{name}");
    let required = |value: Option<&String>, name: &str, what: &str| {
        value.cloned().ok_or_else(|| {
            ApiError::invalid_field(field(name), format!("{what} needs its `{name}`"))
        })
    };
    match item.kind.as_deref().unwrap_or("message") {
        "message" => {
            let role = item.role.ok_or_else(|| {
                ApiError::invalid_field(field("role"), "a message needs its `role`")
            })?;
            let content = item.content.as_ref().ok_or_else(|| {
                ApiError::invalid_field(field("content"), "a message needs its `content`")
            })?;
            messages.push(message(role, text(content, &field("content"))?));
        }
        "function_call" => {
            let call = ToolCall {
                id: required(item.call_id.as_ref(), "call_id", "a function call")?,
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: required(item.name.as_ref(), "name", "a function call")?,
                    arguments: required(item.arguments.as_ref(), "arguments", "a function call")?,
                },
            };
            calls.insert(call.id.clone());
            match messages.last_mut() {
                Some(last) if last.role == Role::Assistant => {
                    last.tool_calls.get_or_insert_with(Vec::new).push(call);
                }
                // Empty text rather than none: templates that add the content to a string
                // (SmolLM2's) fail on none.
                _ => messages.push(ChatMessage {
                    tool_calls: Some(vec![call]),
                    ..message(Role::Assistant, String::new())
                }),
            }
        }
        "function_call_output" => {
            let call_id = required(item.call_id.as_ref(), "call_id", "a function call output")?;
            if !calls.contains(&call_id) {
                return Err(ApiError::invalid_field(
                    field("call_id"),
                    format!("no function_call with call_id `{call_id}` comes before this output"),
                ));
            }
            let output = item.output.as_ref().ok_or_else(|| {
                ApiError::invalid_field(field("output"), "a function call output needs `output`")
            })?;
            messages.push(ChatMessage {
                tool_call_id: Some(call_id),
                ..message(Role::Tool, text(output, &field("output"))?)
            });
        }
        // The model's reasoning of an earlier turn, sent back as it came: chat templates of
        // reasoning models (Qwen3's, DeepSeek-R1's) leave earlier turns' reasoning out.
        "reasoning" => {}
        kind => {
            return Err(ApiError::invalid_field(
                field("type"),
                format!(
                    "input items of type `{kind}` are not supported; send messages, \
                     function_call, function_call_output and reasoning items"
                ),
            ));
        }
    }
    Ok(())
}

/// A message of `role` saying `text`.
fn message(role: Role, text: String) -> ChatMessage {
    ChatMessage {
        role,
        content: Some(MessageContent::Text(text)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
    }
}

/// The text of `content`, at `field`: text parts joined.
fn text(content: &InputContent, field: &str) -> Result<String, ApiError> {
    match content {
        InputContent::Text(text) => Ok(text.clone()),
        InputContent::Parts(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.kind.as_str(), &part.text) {
                    ("input_text" | "output_text", Some(part_text)) => text.push_str(part_text),
                    (kind, _) => {
                        return Err(ApiError::invalid_field(
                            field,
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

/// The request's tools as chat's function tools.
///
/// # Errors
///
/// A 400 naming the tool's field: a type other than `function`, a function without its name,
/// or a field this server does not know.
pub(super) fn function_tools(tools: &[ResponsesTool]) -> Result<Vec<Tool>, ApiError> {
    let mut functions = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(ApiError::invalid_field(
                format!("tools[{index}].type"),
                format!("tool type `{}` is not supported; use `function`", tool.kind),
            ));
        }
        reject_unknown_in(&format!("tools[{index}]"), &tool.extra)?;
        let name = tool.name.clone().filter(|name| !name.is_empty());
        let name = name.ok_or_else(|| {
            ApiError::invalid_field(format!("tools[{index}].name"), "a function needs its name")
        })?;
        functions.push(Tool {
            kind: "function".to_owned(),
            function: FunctionDefinition {
                name,
                description: tool.description.clone(),
                parameters: tool.parameters.clone(),
            },
        });
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::protocol::ResponsesRequest;

    fn request(input: Value) -> ResponsesRequest {
        serde_json::from_value(json!({ "model": "m", "input": input })).expect("a request")
    }

    /// The messages of `body` alone.
    fn rendered(body: &ResponsesRequest) -> Result<Vec<ChatMessage>, ApiError> {
        messages(body.instructions.as_deref(), &[], &items(&body.input))
    }

    fn refused_at(input: Value) -> Option<String> {
        rendered(&request(input))
            .expect_err("refused")
            .body()
            .error
            .param
    }

    #[test]
    fn instructions_come_first_and_parts_are_joined() {
        let mut body = request(json!([
            { "role": "user", "content": [{ "type": "input_text", "text": "Hel" }, { "type": "input_text", "text": "lo" }] },
            { "type": "message", "role": "assistant", "content": "Hi" },
        ]));
        body.instructions = Some("Be brief.".to_owned());
        let messages = rendered(&body).expect("messages");
        let roles: Vec<Role> = messages.iter().map(|message| message.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
        assert_eq!(
            messages[1].content,
            Some(MessageContent::Text("Hello".to_owned()))
        );
    }

    #[test]
    fn calls_join_the_assistant_message_and_outputs_answer_them() {
        let body = request(json!([
            { "role": "user", "content": "Weather in Paris and Oslo?" },
            { "type": "message", "role": "assistant", "content": [{ "type": "output_text", "text": "Looking.", "annotations": [] }],
              "id": "msg_1", "status": "completed" },
            { "type": "function_call", "call_id": "a", "name": "weather", "arguments": "{\"city\":\"Paris\"}", "id": "fc_1" },
            { "type": "function_call", "call_id": "b", "name": "weather", "arguments": "{\"city\":\"Oslo\"}" },
            { "type": "function_call_output", "call_id": "a", "output": "18 C" },
            { "type": "function_call_output", "call_id": "b", "output": [{ "type": "input_text", "text": "9 C" }] },
            { "type": "reasoning", "id": "rs_1", "summary": [], "content": [{ "type": "reasoning_text", "text": "Both." }] },
        ]));
        let messages = rendered(&body).expect("messages");
        let roles: Vec<Role> = messages.iter().map(|message| message.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Tool]);
        let calls = messages[1].tool_calls.as_ref().expect("the calls");
        let ids: Vec<&str> = calls.iter().map(|call| call.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(calls[1].function.arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(messages[3].tool_call_id.as_deref(), Some("b"));
        assert_eq!(
            messages[3].content,
            Some(MessageContent::Text("9 C".to_owned()))
        );

        // A call after a user message starts an assistant message of its own, with empty text.
        let body = request(json!([
            { "role": "user", "content": "Weather?" },
            { "type": "function_call", "call_id": "a", "name": "weather", "arguments": "{}" },
        ]));
        let started = rendered(&body).expect("messages");
        assert_eq!(started[1].role, Role::Assistant);
        assert_eq!(
            started[1].content,
            Some(MessageContent::Text(String::new()))
        );
    }

    #[test]
    fn what_an_item_lacks_or_cannot_carry_is_refused_by_its_field() {
        for (input, field) in [
            (
                json!([{ "role": "user", "content": [{ "type": "input_image", "image_url": "x" }] }]),
                "input[0].content",
            ),
            (json!([{ "content": "x" }]), "input[0].role"),
            (json!([{ "role": "user" }]), "input[0].content"),
            (
                json!([{ "type": "function_call", "name": "f", "arguments": "{}" }]),
                "input[0].call_id",
            ),
            (
                json!([{ "type": "function_call", "call_id": "a", "arguments": "{}" }]),
                "input[0].name",
            ),
            (
                json!([{ "type": "function_call", "call_id": "a", "name": "f" }]),
                "input[0].arguments",
            ),
            (
                json!([{ "type": "function_call_output", "call_id": "a", "output": "x" }]),
                "input[0].call_id",
            ),
            (
                json!([{ "type": "function_call", "call_id": "a", "name": "f", "arguments": "{}" },
                    { "type": "function_call_output", "call_id": "a" }]),
                "input[1].output",
            ),
            (
                json!([{ "type": "web_search_call", "id": "ws_1" }]),
                "input[0].type",
            ),
        ] {
            assert_eq!(refused_at(input.clone()).as_deref(), Some(field), "{input}");
        }
    }

    #[test]
    fn only_named_functions_are_tools() {
        let tools =
            |tools: Value| -> Vec<ResponsesTool> { serde_json::from_value(tools).expect("tools") };
        let functions = function_tools(&tools(json!([
            { "type": "function", "name": "weather", "parameters": { "type": "object" }, "strict": true },
        ])))
        .expect("a function");
        assert_eq!(functions[0].function.name, "weather");
        for (given, field) in [
            (json!([{ "type": "web_search" }]), "tools[0].type"),
            (
                json!([{ "type": "function", "name": "f" }, { "type": "function" }]),
                "tools[1].name",
            ),
            (
                json!([{ "type": "function", "name": "f", "defer_loading": true }]),
                "tools[0].defer_loading",
            ),
        ] {
            let error = function_tools(&tools(given.clone())).expect_err("refused");
            assert_eq!(error.body().error.param.as_deref(), Some(field), "{given}");
        }
    }
}
