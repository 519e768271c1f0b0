//! Tool calls parsed out of the model's text: the Hermes/Qwen `<tool_call>{…}</tool_call>`
//! format and Llama 3's bare JSON format.

use serde_json::Value;

use super::holdback::held_suffix_len;
use super::tags::{Piece, TagSplitter};

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolCallFormat {
    /// `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, any number of times, with text
    /// around (Hermes, Qwen 2.5 and 3, SmolLM3).
    Hermes,
    /// The whole answer is `{"name": …, "parameters": {…}}`, optionally after
    /// `<|python_tag|>`, several calls separated by `;` (Llama 3.1–3.3).
    Llama3Json,
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToolCall {
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text (`{}` when the model gave none).
    pub arguments: String,
}

/// What one step of parsing released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallOutput {
    /// Plain answer text.
    pub content: String,
    /// Calls completed in this step.
    pub calls: Vec<ParsedToolCall>,
}

/// Parses tool calls out of streamed text.
///
/// Text that may belong to a call is held until the call completes; a call whose JSON does not
/// parse is released as plain text, so nothing the model wrote is lost.
///
/// ```
/// use dynamo_openai::{ToolCallFormat, ToolCallParser};
///
/// let mut parser = ToolCallParser::new(ToolCallFormat::Hermes);
/// let mut output = parser.push("Let me check. <tool_call>{\"name\": \"weather\", ");
/// assert_eq!(output.content, "Let me check. ");
/// output = parser.push("\"arguments\": {\"city\": \"Paris\"}}</tool_call>");
/// assert_eq!(output.calls[0].name, "weather");
/// assert_eq!(output.calls[0].arguments, r#"{"city":"Paris"}"#);
/// ```
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Hermes {
        tags: TagSplitter,
        call: String,
    },
    /// Llama 3: leading whitespace seen so far, or the decision.
    Llama {
        held: String,
        mode: LlamaMode,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LlamaMode {
    Undecided,
    Text,
    Json,
}

const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolCallParser {
    /// A parser for `format`.
    pub fn new(format: ToolCallFormat) -> Self {
        let state = match format {
            ToolCallFormat::Hermes => State::Hermes {
                tags: TagSplitter::new("<tool_call>", "</tool_call>", false),
                call: String::new(),
            },
            ToolCallFormat::Llama3Json => State::Llama {
                held: String::new(),
                mode: LlamaMode::Undecided,
            },
        };
        ToolCallParser { state }
    }

    /// Parse the next text.
    pub fn push(&mut self, text: &str) -> ToolCallOutput {
        match &mut self.state {
            State::Hermes { tags, call } => hermes(tags.push(text), call),
            State::Llama { held, mode } => llama_push(held, mode, text),
        }
    }

    /// Release everything held at the end of the stream.
    pub fn finish(&mut self) -> ToolCallOutput {
        match &mut self.state {
            State::Hermes { tags, call } => {
                let mut output = hermes(tags.finish(), call);
                if !call.is_empty() {
                    // An unclosed call is text.
                    output.content.push_str("<tool_call>");
                    output.content.push_str(&std::mem::take(call));
                }
                output
            }
            State::Llama { held, mode } => {
                let text = std::mem::take(held);
                if *mode != LlamaMode::Json {
                    return ToolCallOutput {
                        content: text,
                        calls: Vec::new(),
                    };
                }
                match parse_llama_calls(&text) {
                    Some(calls) => ToolCallOutput {
                        content: String::new(),
                        calls,
                    },
                    None => ToolCallOutput {
                        content: text,
                        calls: Vec::new(),
                    },
                }
            }
        }
    }
}

fn hermes(pieces: Vec<Piece>, call: &mut String) -> ToolCallOutput {
    let mut output = ToolCallOutput::default();
    for piece in pieces {
        match piece {
            Piece::Outside(text) => output.content.push_str(&text),
            Piece::Inside(text) => call.push_str(&text),
            Piece::Closed => {
                let text = std::mem::take(call);
                match parse_call(&text, "arguments") {
                    Some(parsed) => output.calls.push(parsed),
                    None => {
                        output.content.push_str("<tool_call>");
                        output.content.push_str(&text);
                        output.content.push_str("</tool_call>");
                    }
                }
            }
        }
    }
    output
}

fn llama_push(held: &mut String, mode: &mut LlamaMode, text: &str) -> ToolCallOutput {
    if *mode == LlamaMode::Text {
        return ToolCallOutput {
            content: text.to_owned(),
            calls: Vec::new(),
        };
    }
    held.push_str(text);
    if *mode == LlamaMode::Undecided {
        let start = held.trim_start();
        if start.starts_with('{') || start.starts_with(PYTHON_TAG) {
            *mode = LlamaMode::Json;
        } else if !start.is_empty() && held_suffix_len(start, [PYTHON_TAG]) != start.len() {
            *mode = LlamaMode::Text;
            return ToolCallOutput {
                content: std::mem::take(held),
                calls: Vec::new(),
            };
        }
    }
    ToolCallOutput::default()
}

/// `{"name": …, "<arguments_key>": …}` as a call.
fn parse_call(text: &str, arguments_key: &str) -> Option<ParsedToolCall> {
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    call_from_value(&value, arguments_key)
}

fn call_from_value(value: &Value, arguments_key: &str) -> Option<ParsedToolCall> {
    let name = value.get("name")?.as_str()?.to_owned();
    let arguments = match value.get(arguments_key).or_else(|| value.get("parameters")) {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    Some(ParsedToolCall { name, arguments })
}

fn parse_llama_calls(text: &str) -> Option<Vec<ParsedToolCall>> {
    let body = text.trim().trim_start_matches(PYTHON_TAG).trim();
    if let Some(call) = parse_call(body, "parameters") {
        return Some(vec![call]);
    }
    body.split(';')
        .filter(|part| !part.trim().is_empty())
        .map(|part| parse_call(part, "parameters"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: ToolCallFormat, chunks: &[&str]) -> ToolCallOutput {
        let mut parser = ToolCallParser::new(format);
        let mut all = ToolCallOutput::default();
        let mut outputs: Vec<ToolCallOutput> =
            chunks.iter().map(|chunk| parser.push(chunk)).collect();
        outputs.push(parser.finish());
        for output in outputs {
            all.content.push_str(&output.content);
            all.calls.extend(output.calls);
        }
        all
    }

    #[test]
    fn hermes_calls_between_text_in_any_split() {
        let text = "Sure.<tool_call>{\"name\":\"a\",\"arguments\":{\"x\":1}}</tool_call>\
                    <tool_call>{\"name\":\"b\",\"arguments\":\"{}\"}</tool_call> Done.";
        for cut in 0..=text.len() {
            let output = run(ToolCallFormat::Hermes, &[&text[..cut], &text[cut..]]);
            assert_eq!(output.content, "Sure. Done.", "cut at {cut}");
            assert_eq!(output.calls.len(), 2);
            assert_eq!(output.calls[0].arguments, "{\"x\":1}");
            assert_eq!(output.calls[1].name, "b");
        }
    }

    #[test]
    fn broken_or_unclosed_calls_stay_text() {
        let output = run(ToolCallFormat::Hermes, &["<tool_call>{oops}</tool_call>"]);
        assert_eq!(output.content, "<tool_call>{oops}</tool_call>");
        assert!(output.calls.is_empty());
        let output = run(ToolCallFormat::Hermes, &["a<tool_call>{\"name\""]);
        assert_eq!(output.content, "a<tool_call>{\"name\"");
    }

    #[test]
    fn llama_json_calls_and_plain_answers() {
        let output = run(
            ToolCallFormat::Llama3Json,
            &[
                "<|python_",
                "tag|>{\"name\": \"f\", \"parameters\": {\"q\": \"x\"}}; ",
                "{\"name\": \"g\"}",
            ],
        );
        assert_eq!(output.content, "");
        assert_eq!(output.calls.len(), 2);
        assert_eq!(output.calls[0].arguments, "{\"q\":\"x\"}");
        assert_eq!(output.calls[1].arguments, "{}");
        let output = run(ToolCallFormat::Llama3Json, &["  The ", "answer is 4."]);
        assert_eq!(output.content, "  The answer is 4.");
        let output = run(ToolCallFormat::Llama3Json, &["{not json"]);
        assert_eq!(output.content, "{not json");
    }
}
