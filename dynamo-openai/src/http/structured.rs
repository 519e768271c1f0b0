//! Structured outputs: `response_format` (`json_object`, `json_schema`) and a `tool_choice` that
//! forces a function, turned into the engine's [`OutputFormat`] once the grammar engine
//! (llguidance, the one the candle engine enforces it with) has compiled the schema, so that a
//! schema it cannot follow is a 400 naming the field rather than an error mid-answer.

use dynamo_core::OutputFormat;
use llguidance::ParserFactory;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::ApproximateTokEnv;
use serde_json::{Value, json};

use crate::ApiError;
use crate::protocol::{ChatCompletionRequest, FunctionDefinition};

/// What a chat request asks of the answer's shape.
#[derive(Debug, Default)]
pub(crate) struct Structured {
    /// The format the engine must enforce, if any.
    pub(crate) format: Option<OutputFormat>,
    /// The function whose call the answer is (its arguments are the generated JSON).
    pub(crate) forced: Option<String>,
}

/// The structured output `body` asks for, checked.
///
/// # Errors
///
/// A 400 naming the field: an unknown `response_format.type`, a `json_schema` without its
/// name, a schema the grammar engine cannot compile, a `tool_choice` naming a function not in
/// `tools` or asking for `required`, or both a JSON format and a forced function.
pub(crate) fn plan(body: &ChatCompletionRequest) -> Result<Structured, ApiError> {
    let forced = forced_function(body)?;
    let format = response_format(body)?;
    match (forced, format) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "response_format",
            "response_format cannot be combined with a tool_choice that forces a function",
        )),
        (Some((index, function)), None) => {
            let field = format!("tools[{index}].function.parameters");
            let format = match &function.parameters {
                None => OutputFormat::JsonObject,
                Some(schema) => compiled(schema, &field)?,
            };
            Ok(Structured {
                format: Some(format),
                forced: Some(function.name.clone()),
            })
        }
        (None, format) => Ok(Structured {
            format,
            forced: None,
        }),
    }
}

/// The function `tool_choice` forces, with its index in `tools`.
fn forced_function(
    body: &ChatCompletionRequest,
) -> Result<Option<(usize, &FunctionDefinition)>, ApiError> {
    let name = match &body.tool_choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(choice)) if choice == "auto" || choice == "none" => return Ok(None),
        Some(Value::String(choice)) if choice == "required" => {
            return Err(ApiError::invalid_field(
                "tool_choice",
                "tool_choice \"required\" is not supported; name the function to force with \
                 {\"type\": \"function\", \"function\": {\"name\": …}}",
            ));
        }
        Some(Value::Object(choice)) if choice.get("type") == Some(&json!("function")) => choice
            .get("function")
            .and_then(|function| function.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "tool_choice.function.name",
                    "a forced tool_choice names its function",
                )
            })?,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "tool_choice",
                "tool_choice must be \"auto\", \"none\" or {\"type\": \"function\", \"function\": {\"name\": …}}",
            ));
        }
    };
    body.tools
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, tool)| tool.function.name == name)
        .map(|(index, tool)| Some((index, &tool.function)))
        .ok_or_else(|| {
            ApiError::invalid_field(
                "tool_choice.function.name",
                format!("tool_choice names `{name}`, which is not among the tools"),
            )
        })
}

/// The format `response_format` asks for; `None` for text.
fn response_format(body: &ChatCompletionRequest) -> Result<Option<OutputFormat>, ApiError> {
    let Some(format) = &body.response_format else {
        return Ok(None);
    };
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
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if spec.name.is_empty() || spec.name.len() > 64 || !spec.name.chars().all(valid) {
                return Err(ApiError::invalid_field(
                    "response_format.json_schema.name",
                    "the schema's name must be 1 to 64 letters, digits, `_` or `-`",
                ));
            }
            match &spec.schema {
                None => Ok(Some(OutputFormat::JsonObject)),
                Some(schema) => compiled(schema, "response_format.json_schema.schema").map(Some),
            }
        }
        other => Err(ApiError::invalid_field(
            "response_format.type",
            format!(
                "response_format type `{other}` is not supported; use text, json_object or json_schema"
            ),
        )),
    }
}

/// `schema` as an output format, once the grammar engine has compiled it as the engine will.
fn compiled(schema: &Value, field: &str) -> Result<OutputFormat, ApiError> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ApiError::invalid_field(
            field,
            "a JSON schema is an object (or true / false)",
        ));
    }
    let env = ApproximateTokEnv::single_byte_env();
    let mut factory = ParserFactory::new_simple(&env)
        .map_err(|error| dynamo_core::Error::internal(format!("the grammar engine: {error}")))?;
    // Its log lines would go to stderr; the error comes back as the 400's message.
    factory.quiet();
    factory
        .create_parser(grammar(schema.clone()))
        .map_err(|error| ApiError::invalid_field(field, format!("{field}: {error}")))?;
    Ok(OutputFormat::JsonSchema {
        schema: schema.to_string(),
    })
}

/// The grammar of `schema` with the options the candle engine compiles it with.
fn grammar(mut schema: Value) -> TopLevelGrammar {
    if let Value::Object(object) = &mut schema {
        object.insert(
            "x-guidance".to_owned(),
            json!({"whitespace_flexible": false, "lenient": false}),
        );
    }
    TopLevelGrammar::from_json_schema(schema)
}
