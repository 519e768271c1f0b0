//! Structured outputs: `response_format` (`json_object`, `json_schema`), vLLM's
//! `structured_outputs` (`json`, `json_object`, `regex`, `choice`, `grammar`), the Responses
//! API's `text.format`, and a `tool_choice` that forces calls (of one function, or
//! `"required"`), turned into the engine's [`OutputFormat`] once the grammar engine
//! (llguidance, the one the candle engine enforces it with) has compiled it, so that a format
//! it cannot follow is a 400 naming the field rather than an error mid-answer.

use dynamo_core::OutputFormat;
use llguidance::ParserFactory;
use llguidance::toktrie::ApproximateTokEnv;
use serde_json::{Value, json};

use crate::ApiError;
use crate::protocol::common::reject_unknown_in;
use crate::protocol::{ChatCompletionRequest, ResponseFormat, StructuredOutputs, TextFormat, Tool};

/// What a chat or Responses request asks of the answer's shape.
#[derive(Debug, Default)]
pub(crate) struct Structured {
    /// The format the engine must enforce, if any.
    pub(crate) format: Option<OutputFormat>,
    /// The calls `tool_choice` forces (the format holds the answer to them).
    pub(crate) forced: Option<Forced>,
}

/// What `tool_choice` forces the answer to be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Forced {
    /// A call of the named function: the whole answer is its arguments.
    Function(String),
    /// `"required"`: one call or more of the offered functions, the whole answer a JSON array
    /// of `{"name": …, "arguments": …}` objects.
    Calls,
}

/// The structured output `body` asks for, checked.
///
/// # Errors
///
/// A 400 naming the field: what [`requested_format`] refuses, what [`forced_calls`] refuses,
/// or both a format and forced calls.
pub(crate) fn plan(body: &ChatCompletionRequest) -> Result<Structured, ApiError> {
    let forced = forced_calls(
        body.tool_choice.as_ref(),
        body.tools.as_deref().unwrap_or_default(),
        body.parallel_tool_calls,
        ToolFields::Chat,
    )?;
    let format = requested_format(
        body.response_format.as_ref(),
        body.structured_outputs.as_ref(),
    )?;
    let format_field = match body.structured_outputs {
        Some(_) => "structured_outputs",
        None => "response_format",
    };
    combined(forced, format, format_field)
}

/// The forced calls and the requested format together: at most one of them, since the format
/// of forced calls is theirs. `format_field` names the requested format in the 400.
pub(crate) fn combined(
    forced: Option<(Forced, OutputFormat)>,
    format: Option<OutputFormat>,
    format_field: &str,
) -> Result<Structured, ApiError> {
    match (forced, format) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            format_field,
            format!("{format_field} cannot be combined with a tool_choice that forces calls"),
        )),
        (Some((forced, format)), None) => Ok(Structured {
            format: Some(format),
            forced: Some(forced),
        }),
        (None, format) => Ok(Structured {
            format,
            forced: None,
        }),
    }
}

/// Where a request's tool fields sit, for the 400s that name them: chat nests a function's
/// name and parameters under `function`, the Responses API does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolFields {
    /// `/v1/chat/completions`: `tools[i].function.parameters`, `tool_choice.function.name`.
    Chat,
    /// `/v1/responses`: `tools[i].parameters`, `tool_choice.name`.
    Responses,
}

impl ToolFields {
    /// The function a forced `tool_choice` names, if it names one.
    fn forced_name(self, choice: &serde_json::Map<String, Value>) -> Option<&str> {
        let name = match self {
            ToolFields::Chat => choice.get("function")?.get("name"),
            ToolFields::Responses => choice.get("name"),
        };
        name?.as_str()
    }

    /// The field of a forced `tool_choice`'s function name.
    fn name_field(self) -> &'static str {
        match self {
            ToolFields::Chat => "tool_choice.function.name",
            ToolFields::Responses => "tool_choice.name",
        }
    }

    /// The field of the parameters of `tools[index]`.
    fn parameters_field(self, index: usize) -> String {
        match self {
            ToolFields::Chat => format!("tools[{index}].function.parameters"),
            ToolFields::Responses => format!("tools[{index}].parameters"),
        }
    }

    /// How a forced `tool_choice` is written.
    fn forced_shape(self) -> &'static str {
        match self {
            ToolFields::Chat => "{\"type\": \"function\", \"function\": {\"name\": …}}",
            ToolFields::Responses => "{\"type\": \"function\", \"name\": …}",
        }
    }
}

/// The calls `tool_choice` forces among `tools`, and the format that holds the answer to them.
///
/// # Errors
///
/// A 400 naming the field: a `tool_choice` of another shape, one naming a function not in
/// `tools`, `"required"` without tools, or parameters the grammar engine cannot compile.
pub(crate) fn forced_calls(
    tool_choice: Option<&Value>,
    tools: &[Tool],
    parallel_tool_calls: Option<bool>,
    fields: ToolFields,
) -> Result<Option<(Forced, OutputFormat)>, ApiError> {
    let name = match tool_choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(choice)) if choice == "auto" || choice == "none" => return Ok(None),
        Some(Value::String(choice)) if choice == "required" => {
            return required_calls(tools, parallel_tool_calls, fields)
                .map(|format| Some((Forced::Calls, format)));
        }
        Some(Value::Object(choice)) if choice.get("type") == Some(&json!("function")) => {
            fields.forced_name(choice).ok_or_else(|| {
                ApiError::invalid_field(
                    fields.name_field(),
                    "a forced tool_choice names its function",
                )
            })?
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "tool_choice",
                format!(
                    "tool_choice must be \"auto\", \"none\", \"required\" or {}",
                    fields.forced_shape()
                ),
            ));
        }
    };
    let (index, function) = tools
        .iter()
        .enumerate()
        .find(|(_, tool)| tool.function.name == name)
        .map(|(index, tool)| (index, &tool.function))
        .ok_or_else(|| {
            ApiError::invalid_field(
                fields.name_field(),
                format!("tool_choice names `{name}`, which is not among the tools"),
            )
        })?;
    let format = match &function.parameters {
        None => OutputFormat::JsonObject,
        Some(schema) => compiled(schema, &fields.parameters_field(index))?,
    };
    Ok(Some((Forced::Function(function.name.clone()), format)))
}

/// The format of `tool_choice: "required"`: a JSON array of one call or more (one at most when
/// `parallel_tool_calls` is false), each `{"name": N, "arguments": A}` with `N` one of the
/// tools and `A` valid against its parameters.
fn required_calls(
    tools: &[Tool],
    parallel_tool_calls: Option<bool>,
    fields: ToolFields,
) -> Result<OutputFormat, ApiError> {
    if tools.is_empty() {
        return Err(ApiError::invalid_field(
            "tool_choice",
            "tool_choice \"required\" needs tools to call",
        ));
    }
    let mut calls = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        let arguments = match &tool.function.parameters {
            None => json!({"type": "object"}),
            Some(schema) => {
                compiled(schema, &fields.parameters_field(index))?;
                schema.clone()
            }
        };
        calls.push(json!({
            "type": "object",
            "properties": {"name": {"const": tool.function.name}, "arguments": arguments},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        }));
    }
    let mut schema = json!({"type": "array", "minItems": 1, "items": {"anyOf": calls}});
    if parallel_tool_calls == Some(false) {
        schema["maxItems"] = json!(1);
    }
    compiled(&schema, "tools")
}

/// The format `response_format` or `structured_outputs` asks for (at most one of them may);
/// `None` for text.
///
/// # Errors
///
/// A 400 naming the field: an unknown `response_format.type`, a `json_schema` without its
/// name, a `structured_outputs` that sets no constraint or several, or an option this server
/// does not know, or a format the grammar engine cannot compile.
pub(crate) fn requested_format(
    response_format: Option<&ResponseFormat>,
    structured: Option<&StructuredOutputs>,
) -> Result<Option<OutputFormat>, ApiError> {
    let from_response_format = match response_format {
        Some(format) => response_format_of(format)?,
        None => None,
    };
    let from_structured = structured.map(structured_outputs).transpose()?;
    match (from_response_format, from_structured) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "structured_outputs",
            "structured_outputs cannot be combined with a response_format other than text",
        )),
        (format, other) => Ok(format.or(other)),
    }
}

/// The format `response_format` asks for; `None` for text.
fn response_format_of(format: &ResponseFormat) -> Result<Option<OutputFormat>, ApiError> {
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputFormat::JsonObject)),
        "json_schema" => {
            let spec = format.json_schema.as_ref().ok_or_else(|| {
                ApiError::invalid_field(
                    "response_format.json_schema",
                    "response_format of type json_schema needs json_schema",
                )
            })?;
            check_name(&spec.name, "response_format.json_schema.name")?;
            match &spec.schema {
                None => Ok(Some(OutputFormat::JsonObject)),
                Some(schema) => compiled(schema, "response_format.json_schema.schema").map(Some),
            }
        }
        other => Err(ApiError::invalid_field(
            "response_format.type",
            format!(
                "response_format type `{other}` is not supported; use text, json_object or \
                 json_schema (or structured_outputs for a regex, a choice or a grammar)"
            ),
        )),
    }
}

/// The format a Responses request's `text.format` asks for; `None` for text.
pub(crate) fn text_format(format: &TextFormat) -> Result<Option<OutputFormat>, ApiError> {
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputFormat::JsonObject)),
        "json_schema" => {
            check_name(
                format.name.as_deref().unwrap_or_default(),
                "text.format.name",
            )?;
            let schema = format.schema.as_ref().ok_or_else(|| {
                ApiError::invalid_field(
                    "text.format.schema",
                    "a text format of type json_schema needs its schema",
                )
            })?;
            compiled(schema, "text.format.schema").map(Some)
        }
        other => Err(ApiError::invalid_field(
            "text.format.type",
            format!(
                "text format type `{other}` is not supported; use text, json_object or json_schema"
            ),
        )),
    }
}

/// A JSON schema's `name`: 1 to 64 letters, digits, `_` or `-`, as OpenAI asks.
fn check_name(name: &str, field: &str) -> Result<(), ApiError> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
        return Err(ApiError::invalid_field(
            field,
            "the schema's name must be 1 to 64 letters, digits, `_` or `-`",
        ));
    }
    Ok(())
}

/// The one constraint `structured_outputs` sets, compiled.
fn structured_outputs(structured: &StructuredOutputs) -> Result<OutputFormat, ApiError> {
    reject_unknown_in("structured_outputs", &structured.extra)?;
    let mut set: Vec<(&str, OutputFormat)> = Vec::new();
    if let Some(schema) = &structured.json {
        set.push(("json", json_schema(schema)?));
    }
    if structured.json_object == Some(true) {
        set.push(("json_object", OutputFormat::JsonObject));
    }
    if let Some(pattern) = &structured.regex {
        let pattern = pattern.clone();
        set.push(("regex", OutputFormat::Regex { pattern }));
    }
    if let Some(choices) = &structured.choice {
        let choices = choices.clone();
        set.push(("choice", OutputFormat::Choice { choices }));
    }
    if let Some(lark) = &structured.grammar {
        let lark = lark.clone();
        set.push(("grammar", OutputFormat::Grammar { lark }));
    }
    match set.as_slice() {
        [] => Err(ApiError::invalid_field(
            "structured_outputs",
            "structured_outputs sets none of json, json_object, regex, choice and grammar",
        )),
        [(name, format)] => checked(format.clone(), &format!("structured_outputs.{name}")),
        [(first, _), (second, _), ..] => Err(ApiError::invalid_field(
            "structured_outputs",
            format!("structured_outputs sets both {first} and {second}; set one of them"),
        )),
    }
}

/// `structured_outputs.json`: a schema, or its text.
fn json_schema(schema: &Value) -> Result<OutputFormat, ApiError> {
    const FIELD: &str = "structured_outputs.json";
    let parsed;
    let schema = match schema {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).map_err(|error| {
                ApiError::invalid_field(FIELD, format!("{FIELD} is not a JSON schema: {error}"))
            })?;
            &parsed
        }
        schema => schema,
    };
    compiled(schema, FIELD)
}

/// `schema` as an output format, once the grammar engine has compiled it as the engine will.
fn compiled(schema: &Value, field: &str) -> Result<OutputFormat, ApiError> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ApiError::invalid_field(
            field,
            "a JSON schema is an object (or true / false)",
        ));
    }
    checked(
        OutputFormat::JsonSchema {
            schema: schema.to_string(),
        },
        field,
    )
}

/// `format`, once the grammar engine has compiled it as the engine will (over a vocabulary of
/// single bytes, so that what does not compile is found before any model's tables are built).
fn checked(format: OutputFormat, field: &str) -> Result<OutputFormat, ApiError> {
    let grammar = format
        .grammar()
        .map_err(|error| ApiError::invalid_field(field, error.to_string()))?;
    let env = ApproximateTokEnv::single_byte_env();
    let mut factory = ParserFactory::new_simple(&env)
        .map_err(|error| dynamo_core::Error::internal(format!("the grammar engine: {error}")))?;
    // Its log lines would go to stderr; the error comes back as the 400's message.
    factory.quiet();
    factory
        .create_parser(grammar)
        .map_err(|error| ApiError::invalid_field(field, format!("{field}: {error}")))?;
    Ok(format)
}
