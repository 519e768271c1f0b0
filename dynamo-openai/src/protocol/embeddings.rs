//! `/v1/embeddings`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// An embeddings request, shaped as OpenAI's.
///
/// A field this server does not know is refused with a 400 naming it, never ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    /// The embedding model's name, as listed by `/v1/models`.
    pub model: String,
    /// What to embed: a text, several texts, one input as token ids, or several.
    pub input: EmbeddingInput,
    /// `float` (the default): each vector as a list of numbers; `base64`: each vector as the
    /// base64 of its little-endian 32-bit floats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    /// The length of the vectors; only the model's own is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub dimensions: Option<u32>,
    /// An id of the end user, accepted and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The `input` of an embeddings request.
///
/// Texts are tokenized with the model's tokenizer, special tokens added (a BERT model's
/// `[CLS]` and `[SEP]`); token ids are the model's whole input, as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts, one vector each.
    Texts(Vec<String>),
    /// One input as token ids.
    Tokens(Vec<u32>),
    /// Several inputs as token ids, one vector each.
    TokenLists(Vec<Vec<u32>>),
}

/// How the vectors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A list of numbers.
    #[default]
    Float,
    /// The base64 of the vector's little-endian 32-bit floats.
    Base64,
}

/// The answer of `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingResponse {
    /// Always `list`.
    #[schema(schema_with = list)]
    pub object: String,
    /// One vector per input, in the inputs' order.
    pub data: Vec<Embedding>,
    /// The model that made them.
    pub model: String,
    /// The tokens read.
    pub usage: EmbeddingUsage,
}

/// One input's vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Embedding {
    /// Always `embedding`.
    #[schema(schema_with = embedding)]
    pub object: String,
    /// The input's position in the request.
    pub index: usize,
    /// The vector, as the request's `encoding_format` asked.
    pub embedding: EmbeddingVector,
}

/// A vector as numbers or as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`: the little-endian bytes of each 32-bit float, in base64.
    Base64(String),
}

/// The tokens an embeddings request read (no completion tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingUsage {
    /// The tokens of every input together, special tokens included.
    pub prompt_tokens: u32,
    /// The same number.
    pub total_tokens: u32,
}

fn constant(value: &'static str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([value]))
        .build()
}

fn list() -> Object {
    constant("list")
}

fn embedding() -> Object {
    constant("embedding")
}
