//! Preprocessing around an engine: prompts become token ids on the way in, token ids become
//! text, reasoning and tool calls on the way out.

mod detokenize;
mod fast_bpe;
mod gguf;
mod holdback;
mod reasoning;
mod stop;
mod tags;
mod template;
mod tokenizer;
mod tool_calls;

pub use detokenize::{Decode, IncrementalDecoder};
pub use gguf::{GgufMetadata, GgufValue};
pub use reasoning::{ReasoningFormat, ReasoningSplitter, SplitText};
pub use stop::StopMatcher;
pub use template::ChatTemplate;
pub use tokenizer::Tokenizer;
pub use tool_calls::{ParsedToolCall, ToolCallFormat, ToolCallOutput, ToolCallParser};
