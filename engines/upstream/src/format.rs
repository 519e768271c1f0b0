//! Output formats on `/v1/completions`: the field a server reads one from, written with the
//! schema's text kept byte for byte (its property order is the order the answer follows).

use dynamo_core::{Error, OutputFormat};
use serde_json::json;
use serde_json::value::RawValue;

/// How a server takes an output format ([`GenerateRequest::format`]) on `/v1/completions`.
///
/// The server enforces the format itself, while sampling; the adapter only writes it the way
/// the server reads it. A server that takes none refuses a request with a format
/// ([`OutputFormat::unsupported`], a 400 at the gateway) rather than answer without it.
///
/// [`GenerateRequest::format`]: dynamo_core::GenerateRequest::format
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatField {
    /// None: a request with a format is refused. OpenAI's own `/v1/completions` has no
    /// `response_format`, and a server that ignores unknown fields would answer unconstrained.
    #[default]
    Refused,
    /// OpenAI's chat form, as vLLM reads it on `/v1/completions`: `{"type": "json_object"}`, or
    /// `{"type": "json_schema", "json_schema": {"name": "output", "schema": …}}`.
    OpenAi,
    /// vLLM's: JSON as [`OpenAi`](Self::OpenAi), and a regular expression, a choice or a Lark
    /// grammar in `structured_outputs` (`{"regex": …}`, `{"choice": […]}`, `{"grammar": …}`;
    /// vLLM 0.10.2 or later, which its token ids need anyway).
    Vllm,
    /// TensorRT-LLM's: `{"type": "json_object"}`, or `{"type": "json", "schema": …}` (the
    /// form every `trtllm-serve` version with `response_format` reads; `json_schema` came later),
    /// and `{"type": "regex", "regex": …}` for a regular expression or a choice (the
    /// alternation of its texts, [`OutputFormat::as_regex`]).
    JsonWithSchema,
    /// Not `response_format` but a `json_schema` field beside the others, holding the schema
    /// itself, `{"type": "object"}` for any JSON object: llama.cpp's server, whose
    /// `/v1/completions` ignores `response_format` (it reads it on chat completions only).
    JsonSchemaField,
}

/// The body field (its name and value) that holds generation to `format` in `field`'s form, or
/// the refusal of a server (named `server` in the message) that takes none.
///
/// # Errors
///
/// [`Error::InvalidRequest`] when the server takes no format ([`FormatField::Refused`]), for a
/// kind of format this adapter cannot write, or when the schema is not JSON text.
pub(crate) fn format_field(
    field: FormatField,
    format: &OutputFormat,
    server: &str,
) -> Result<(&'static str, Box<RawValue>), Error> {
    let name = match (field, format) {
        (FormatField::JsonSchemaField, _) => "json_schema",
        (
            FormatField::Vllm,
            OutputFormat::Regex { .. } | OutputFormat::Choice { .. } | OutputFormat::Grammar { .. },
        ) => "structured_outputs",
        _ => "response_format",
    };
    let text = match (field, format) {
        (FormatField::Refused, _) => return Err(OutputFormat::unsupported(server)),
        (
            FormatField::OpenAi | FormatField::Vllm | FormatField::JsonWithSchema,
            OutputFormat::JsonObject,
        ) => r#"{"type":"json_object"}"#.to_owned(),
        (FormatField::JsonSchemaField, OutputFormat::JsonObject) => {
            r#"{"type":"object"}"#.to_owned()
        }
        (FormatField::JsonSchemaField, OutputFormat::JsonSchema { schema }) => {
            schema_text(schema)?.to_owned()
        }
        (FormatField::OpenAi | FormatField::Vllm, OutputFormat::JsonSchema { schema }) => {
            let schema = schema_text(schema)?;
            format!(
                r#"{{"type":"json_schema","json_schema":{{"name":"output","schema":{schema}}}}}"#
            )
        }
        (FormatField::JsonWithSchema, OutputFormat::JsonSchema { schema }) => {
            let schema = schema_text(schema)?;
            format!(r#"{{"type":"json","schema":{schema}}}"#)
        }
        (FormatField::JsonWithSchema, OutputFormat::Regex { .. } | OutputFormat::Choice { .. }) => {
            let pattern = format
                .as_regex()
                .ok_or_else(|| OutputFormat::unsupported(server))?;
            format!(r#"{{"type":"regex","regex":{}}}"#, json!(pattern))
        }
        (FormatField::Vllm, OutputFormat::Regex { pattern }) => {
            json!({"regex": pattern}).to_string()
        }
        (FormatField::Vllm, OutputFormat::Choice { choices }) => {
            json!({"choice": choices}).to_string()
        }
        (FormatField::Vllm, OutputFormat::Grammar { lark }) => json!({"grammar": lark}).to_string(),
        (_, _) => return Err(OutputFormat::unsupported(server)),
    };
    let value = RawValue::from_string(text)
        .map_err(|error| Error::internal("cannot write response_format").with_source(error))?;
    Ok((name, value))
}

/// The schema's text, checked to be one JSON value (it is written into the body as it is).
fn schema_text(schema: &str) -> Result<&str, Error> {
    let raw: &RawValue = serde_json::from_str(schema).map_err(|error| {
        Error::invalid_request("response_format: the JSON schema is not JSON").with_source(error)
    })?;
    Ok(raw.get())
}

#[cfg(test)]
mod tests {
    use dynamo_core::ErrorClass;

    use super::*;

    const SCHEMA: &str = r#"{"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}"#;

    fn written(field: FormatField, format: &OutputFormat) -> String {
        let (name, value) = format_field(field, format, "test").expect("written");
        format!("{name}={}", value.get())
    }

    #[test]
    fn each_form_keeps_the_schema_text_as_it_came() {
        let schema = OutputFormat::JsonSchema {
            schema: SCHEMA.into(),
        };
        assert_eq!(
            written(FormatField::OpenAi, &schema),
            format!(
                r#"response_format={{"type":"json_schema","json_schema":{{"name":"output","schema":{SCHEMA}}}}}"#
            )
        );
        assert_eq!(
            written(FormatField::JsonWithSchema, &schema),
            format!(r#"response_format={{"type":"json","schema":{SCHEMA}}}"#)
        );
        assert_eq!(
            written(FormatField::JsonSchemaField, &schema),
            format!("json_schema={SCHEMA}")
        );
        for field in [FormatField::OpenAi, FormatField::JsonWithSchema] {
            assert_eq!(
                written(field, &OutputFormat::JsonObject),
                r#"response_format={"type":"json_object"}"#
            );
        }
        assert_eq!(
            written(FormatField::JsonSchemaField, &OutputFormat::JsonObject),
            r#"json_schema={"type":"object"}"#
        );
    }

    #[test]
    fn vllm_takes_json_in_response_format_and_the_others_in_structured_outputs() {
        let schema = OutputFormat::JsonSchema {
            schema: SCHEMA.into(),
        };
        assert_eq!(
            written(FormatField::Vllm, &schema),
            written(FormatField::OpenAi, &schema)
        );
        let regex = OutputFormat::Regex {
            pattern: r"[0-9]+\.\d".into(),
        };
        assert_eq!(
            written(FormatField::Vllm, &regex),
            r#"structured_outputs={"regex":"[0-9]+\\.\\d"}"#
        );
        let choice = OutputFormat::Choice {
            choices: vec!["yes".into(), "a \"quote\"".into()],
        };
        assert_eq!(
            written(FormatField::Vllm, &choice),
            r#"structured_outputs={"choice":["yes","a \"quote\""]}"#
        );
        let grammar = OutputFormat::Grammar {
            lark: "start: \"a\"+".into(),
        };
        assert_eq!(
            written(FormatField::Vllm, &grammar),
            r#"structured_outputs={"grammar":"start: \"a\"+"}"#
        );
        // TensorRT-LLM takes regular expressions, and a choice as one.
        assert_eq!(
            written(FormatField::JsonWithSchema, &regex),
            r#"response_format={"type":"regex","regex":"[0-9]+\\.\\d"}"#
        );
        assert_eq!(
            written(FormatField::JsonWithSchema, &choice),
            r#"response_format={"type":"regex","regex":"(yes|a \"quote\")"}"#
        );
        // Other servers' forms have no such field: refused, never sent where it is ignored.
        for (field, format) in [
            (FormatField::OpenAi, &regex),
            (FormatField::JsonSchemaField, &regex),
            (FormatField::JsonWithSchema, &grammar),
        ] {
            let error = format_field(field, format, "other").expect_err("refused");
            assert_eq!(error.class(), ErrorClass::InvalidRequest);
        }
    }

    #[test]
    fn a_server_without_formats_and_a_schema_that_is_not_json_are_refused() {
        let error = format_field(FormatField::Refused, &OutputFormat::JsonObject, "llama")
            .expect_err("refused");
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("response_format"), "{error}");
        assert!(error.to_string().contains("llama"), "{error}");
        let broken = OutputFormat::JsonSchema {
            schema: r#"{"type": "object""#.into(),
        };
        let error = format_field(FormatField::OpenAi, &broken, "vLLM").expect_err("refused");
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        // Text after the value would be written into the body: refused too.
        let trailing = OutputFormat::JsonSchema {
            schema: r#"{"type": "object"}, "x": 1"#.into(),
        };
        assert!(format_field(FormatField::OpenAi, &trailing, "vLLM").is_err());
    }
}
