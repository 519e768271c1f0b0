//! One chat choice's answer text, with reasoning and tool calls taken out as the model's
//! parsers say.

use serde::Deserialize;
use serde_json::Value;

use super::structured::Forced;
use crate::preprocess::{ReasoningSplitter, ToolCallParser};
use crate::protocol::{FunctionCall, ToolCall};
use crate::registry::ModelEntry;

/// Reasoning and tool calls taken out of the answer text, as the model's parsers say.
pub(crate) struct Answer {
    reasoning: Option<ReasoningSplitter>,
    tools: Option<ToolCallParser>,
    calls: u32,
    /// The calls `tool_choice` forced, and the answer so far, which the output format held to
    /// them: one function's arguments, or the array of calls of `"required"`.
    forced: Option<(Forced, String)>,
}

/// One call of the array `tool_choice: "required"` holds the answer to.
#[derive(Deserialize)]
struct RequiredCall {
    name: String,
    arguments: Value,
}

/// What one step of the answer released.
#[derive(Default)]
pub(crate) struct AnswerDelta {
    pub(crate) content: String,
    pub(crate) reasoning: String,
    /// Calls with their position among the answer's calls.
    pub(crate) calls: Vec<(u32, ToolCall)>,
}

impl Answer {
    pub(crate) fn new(entry: &ModelEntry, offers_tools: bool, forced: Option<Forced>) -> Self {
        if let Some(forced) = forced {
            return Answer {
                reasoning: None,
                tools: None,
                calls: 0,
                forced: Some((forced, String::new())),
            };
        }
        Answer {
            forced: None,
            reasoning: entry.reasoning.map(ReasoningSplitter::new),
            tools: entry
                .tool_calls
                .filter(|_| offers_tools)
                .map(ToolCallParser::new),
            calls: 0,
        }
    }

    /// Whether forced calls were cut short by the length limit (the finish reason is then
    /// `length`, not `tool_calls`).
    pub(crate) fn cut_short(&self, reason: dynamo_core::FinishReason) -> bool {
        self.forced.is_some() && reason == dynamo_core::FinishReason::Length
    }

    pub(crate) fn push(&mut self, text: String, id: &str) -> AnswerDelta {
        let split = match &mut self.reasoning {
            Some(splitter) => splitter.push(&text),
            None => crate::preprocess::SplitText {
                content: text,
                reasoning: String::new(),
            },
        };
        self.parse_tools(split.content, split.reasoning, id, false)
    }

    pub(crate) fn finish(&mut self, id: &str) -> AnswerDelta {
        let split = self
            .reasoning
            .as_mut()
            .map(ReasoningSplitter::finish)
            .unwrap_or_default();
        self.parse_tools(split.content, split.reasoning, id, true)
    }

    fn parse_tools(
        &mut self,
        content: String,
        reasoning: String,
        id: &str,
        last: bool,
    ) -> AnswerDelta {
        if let Some((forced, text)) = &mut self.forced {
            text.push_str(&content);
            let mut delta = AnswerDelta {
                content: String::new(),
                reasoning,
                calls: Vec::new(),
            };
            if !last {
                return delta;
            }
            let text = std::mem::take(text);
            match forced {
                // Arguments cut short by the length limit are a call all the same (`length`).
                Forced::Function(name) => delta.calls.push(tool_call(id, 0, name.clone(), text)),
                Forced::Calls => match serde_json::from_str::<Vec<RequiredCall>>(&text) {
                    Ok(calls) => {
                        delta.calls = (0..)
                            .zip(calls)
                            .map(|(index, call)| {
                                let arguments = call.arguments.to_string();
                                tool_call(id, index, call.name, arguments)
                            })
                            .collect();
                    }
                    // Cut short by the length limit: no whole call, the text as it came.
                    Err(_) => delta.content = text,
                },
            }
            return delta;
        }
        let Some(parser) = &mut self.tools else {
            return AnswerDelta {
                content,
                reasoning,
                calls: Vec::new(),
            };
        };
        let mut output = parser.push(&content);
        if last {
            let tail = parser.finish();
            output.content.push_str(&tail.content);
            output.calls.extend(tail.calls);
        }
        let calls = output
            .calls
            .into_iter()
            .map(|call| {
                let index = self.calls;
                self.calls += 1;
                tool_call(id, index, call.name, call.arguments)
            })
            .collect();
        AnswerDelta {
            content: output.content,
            reasoning,
            calls,
        }
    }
}

/// Call `index` of the answer `id`: function `name` with `arguments`.
fn tool_call(id: &str, index: u32, name: String, arguments: String) -> (u32, ToolCall) {
    let id = format!("call-{id}-{index}");
    let kind = "function".to_owned();
    let function = FunctionCall { name, arguments };
    (index, ToolCall { id, kind, function })
}
