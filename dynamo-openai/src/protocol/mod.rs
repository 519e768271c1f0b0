//! The OpenAI wire types: requests as clients send them, responses and stream chunks as the
//! gateway writes them.
//!
//! Requests are parsed leniently about *shape* (a `stop` may be a string or a list, a prompt may
//! be text or token ids) and strictly about *meaning*: a field the gateway does not implement is
//! rejected with a 400 that names it ([`ApiError::invalid_field`](crate::ApiError::invalid_field)),
//! never ignored.

mod chat;
pub(crate) mod common;
mod completion;
mod embeddings;
mod format;
mod logprobs;
mod models;
mod responses;
mod schema;
mod tokenize;

pub use chat::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, ChatMessage, ContentPart, FunctionCall, FunctionCallDelta,
    FunctionDefinition, MessageContent, Role, Tool, ToolCall, ToolCallDelta,
};
pub use common::{PromptTokensDetails, SamplingFields, StopSequences, StreamOptions, UsageBody};
pub use completion::{Completion, CompletionChoice, CompletionChunk, CompletionRequest, Prompt};
pub use embeddings::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage,
    EmbeddingVector, EncodingFormat,
};
pub use format::{JsonSchemaFormat, ResponseFormat, StructuredOutputs};
pub use logprobs::{
    ChatLogProbs, ChatTokenLogProb, CompletionLogProbs, PromptTokenLogProb, TopLogProb,
};
pub use models::{ModelCard, ModelList};
pub use responses::{
    FunctionCallItem, IncompleteDetails, InputContent, InputItem, InputItemList, InputPart,
    InputTokensDetails, ListedInputItem, OutputItem, OutputMessage, OutputPart, OutputText,
    OutputTokensDetails, ReasoningItem, ReasoningText, ResponseObject, ResponseStreamEvent,
    ResponseUsage, ResponsesInput, ResponsesRequest, ResponsesText, ResponsesTool, TextFormat,
};
pub use tokenize::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
