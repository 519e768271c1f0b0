//! `response_format` and `structured_outputs`: the shape the answer must have.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The format of an answer: `text` (the default), `json_object` (any JSON object) or
/// `json_schema` (JSON valid against a schema). JSON formats are enforced while sampling by
/// engines that can (the candle engine); other types are refused with a 400 naming
/// `response_format.type` (vLLM's other formats come in [`StructuredOutputs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// With `json_schema`: the schema and its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

/// A named JSON schema the answer must follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JsonSchemaFormat {
    /// The schema's name (letters, digits, `_` and `-`, at most 64).
    pub name: String,
    /// What the format is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema; without one, any JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Accepted as `true` or `false`: the schema is enforced either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// vLLM's `structured_outputs`: one constraint on the answer's text, enforced while sampling by
/// engines that can. Exactly one of its fields is set; vLLM's other options
/// (`structural_tag`, `whitespace_pattern`, …) are refused with a 400 naming them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StructuredOutputs {
    /// A JSON schema the answer follows (an object, or its text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub json: Option<Value>,
    /// `true`: the answer is any JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_object: Option<bool>,
    /// A regular expression the whole answer matches (the `regex` crate's syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The answer is exactly one of these texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub choice: Option<Vec<String>>,
    /// A context-free grammar in llguidance's Lark syntax; its `start` rule is the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// Options this server does not know; any non-null one is rejected.
    #[serde(flatten, skip_serializing)]
    #[schema(ignore)]
    pub extra: serde_json::Map<String, Value>,
}
