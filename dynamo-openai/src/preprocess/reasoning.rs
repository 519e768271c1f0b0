//! Reasoning text (`<think>…</think>`) split from the answer.

use super::tags::{Piece, TagSplitter};

/// How a model marks its reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReasoningFormat {
    /// The model writes `<think>…</think>` before its answer (Qwen3, SmolLM3).
    #[default]
    Think,
    /// The chat template opens `<think>` in the prompt, so the output starts inside the
    /// reasoning and only `</think>` appears (DeepSeek-R1).
    ThinkOpenedByPrompt,
}

/// A part of the model's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitText {
    /// Text of the answer.
    pub content: String,
    /// Text of the reasoning.
    pub reasoning: String,
}

/// Splits streamed output into reasoning and answer.
///
/// ```
/// use dynamo_openai::{ReasoningFormat, ReasoningSplitter};
///
/// let mut splitter = ReasoningSplitter::new(ReasoningFormat::Think);
/// let first = splitter.push("<think>2+2 is 4</th");
/// let second = splitter.push("ink>Four.");
/// assert_eq!(first.reasoning + &second.reasoning, "2+2 is 4");
/// assert_eq!(first.content + &second.content, "Four.");
/// ```
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    tags: TagSplitter,
}

impl ReasoningSplitter {
    /// A splitter for `format`.
    pub fn new(format: ReasoningFormat) -> Self {
        let start_inside = format == ReasoningFormat::ThinkOpenedByPrompt;
        ReasoningSplitter {
            tags: TagSplitter::new("<think>", "</think>", start_inside),
        }
    }

    /// Split the next text.
    pub fn push(&mut self, text: &str) -> SplitText {
        collect(self.tags.push(text))
    }

    /// Release held text at the end of the stream.
    pub fn finish(&mut self) -> SplitText {
        collect(self.tags.finish())
    }
}

fn collect(pieces: Vec<Piece>) -> SplitText {
    let mut split = SplitText::default();
    for piece in pieces {
        match piece {
            Piece::Outside(text) => split.content.push_str(&text),
            Piece::Inside(text) => split.reasoning.push_str(&text),
            Piece::Closed => {}
        }
    }
    split
}
