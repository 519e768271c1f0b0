//! One chat choice's answer text, with reasoning and tool calls taken out as the model's
//! parsers say.

use crate::preprocess::{ReasoningSplitter, ToolCallParser};
use crate::protocol::{FunctionCall, ToolCall};
use crate::registry::ModelEntry;

/// Reasoning and tool calls taken out of the answer text, as the model's parsers say.
pub(crate) struct Answer {
    reasoning: Option<ReasoningSplitter>,
    tools: Option<ToolCallParser>,
    calls: u32,
    /// A call `tool_choice` forced: the function's name and the arguments so far (the whole
    /// answer text is the arguments, which the output format held to the parameters' schema).
    forced: Option<(String, String)>,
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
    pub(crate) fn new(entry: &ModelEntry, offers_tools: bool, forced: Option<String>) -> Self {
        if let Some(name) = forced {
            return Answer {
                reasoning: None,
                tools: None,
                calls: 0,
                forced: Some((name, String::new())),
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

    /// Whether a forced call's arguments were cut short by the length limit (its finish reason
    /// is then `length`, not `tool_calls`).
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
        if let Some((name, arguments)) = &mut self.forced {
            arguments.push_str(&content);
            let call = last.then(|| {
                let function = FunctionCall {
                    name: name.clone(),
                    arguments: std::mem::take(arguments),
                };
                let id = format!("call-{id}-0");
                let kind = "function".to_owned();
                (0, ToolCall { id, kind, function })
            });
            return AnswerDelta {
                content: String::new(),
                reasoning,
                calls: call.into_iter().collect(),
            };
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
                let call = ToolCall {
                    id: format!("call-{id}-{index}"),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: call.name,
                        arguments: call.arguments,
                    },
                };
                (index, call)
            })
            .collect();
        AnswerDelta {
            content: output.content,
            reasoning,
            calls,
        }
    }
}
