//! One chat choice's answer text, with reasoning and tool calls taken out as the model's
//! parsers say, or held to the calls `tool_choice` forced.

use super::required_calls::RequiredCalls;
use super::structured::Forced;
use crate::preprocess::{ReasoningSplitter, ToolCallParser};
use crate::registry::ModelEntry;

/// Reasoning and tool calls taken out of the answer text, as the model's parsers say.
pub(crate) struct Answer {
    reasoning: Option<ReasoningSplitter>,
    tools: Option<ToolCallParser>,
    calls: u32,
    /// The calls `tool_choice` forced, which the output format held the answer to.
    forced: Option<ForcedAnswer>,
}

/// An answer held to forced calls, so far.
enum ForcedAnswer {
    /// The whole answer is the arguments of a call of `name`, passed on piece by piece;
    /// `started` once its first piece (with the call's id and name) went out.
    Function { name: String, started: bool },
    /// The whole answer is an array of calls (`"required"`), passed on as it is read.
    Calls(RequiredCalls),
}

/// What one step of the answer released.
#[derive(Default)]
pub(crate) struct AnswerDelta {
    pub(crate) content: String,
    pub(crate) reasoning: String,
    /// Tool calls, whole or in pieces, in the order the answer made them.
    pub(crate) calls: Vec<CallPiece>,
}

/// A tool call, or a piece of one: the call's first piece has its id and function name, and
/// each piece the next part of its arguments.
pub(crate) struct CallPiece {
    /// The call's position among the answer's calls.
    pub(crate) index: u32,
    /// The call id and the function's name, on the call's first piece.
    pub(crate) head: Option<(String, String)>,
    /// The next part of the arguments' JSON text.
    pub(crate) arguments: String,
}

impl Answer {
    pub(crate) fn new(entry: &ModelEntry, offers_tools: bool, forced: Option<Forced>) -> Self {
        if let Some(forced) = forced {
            let forced = match forced {
                Forced::Function(name) => ForcedAnswer::Function {
                    name,
                    started: false,
                },
                Forced::Calls => ForcedAnswer::Calls(RequiredCalls::default()),
            };
            return Answer {
                reasoning: None,
                tools: None,
                calls: 0,
                forced: Some(forced),
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
        if let Some(forced) = &mut self.forced {
            let mut delta = AnswerDelta {
                content: String::new(),
                reasoning,
                calls: Vec::new(),
            };
            match forced {
                ForcedAnswer::Function { name, started } => {
                    // Arguments cut short by the length limit are a call all the same
                    // (`length`); a call with no arguments yet goes out at the end.
                    if !content.is_empty() || (last && !*started) {
                        let head = (!*started).then(|| (call_id(id, 0), name.clone()));
                        *started = true;
                        delta.calls.push(CallPiece {
                            index: 0,
                            head,
                            arguments: content,
                        });
                    }
                }
                ForcedAnswer::Calls(reader) => {
                    delta.calls = reader.push(&content, id);
                    if last {
                        let (text, calls) = reader.finish(id);
                        delta.content = text;
                        delta.calls.extend(calls);
                    }
                }
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
                whole_call(id, index, call.name, call.arguments)
            })
            .collect();
        AnswerDelta {
            content: output.content,
            reasoning,
            calls,
        }
    }
}

/// The id of call `index` of the answer `id`.
pub(super) fn call_id(id: &str, index: u32) -> String {
    format!("call-{id}-{index}")
}

/// Call `index` of the answer `id`, whole: function `name` with `arguments`.
pub(super) fn whole_call(id: &str, index: u32, name: String, arguments: String) -> CallPiece {
    CallPiece {
        index,
        head: Some((call_id(id, index), name)),
        arguments,
    }
}
