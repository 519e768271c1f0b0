//! The answer `tool_choice: "required"` holds to a JSON array of calls, read as it grows: each
//! call goes out as soon as its name is whole, then its arguments piece by piece, as OpenAI
//! streams calls.
//!
//! The reader follows the JSON text character by character (strings, escapes, nesting,
//! whitespace between tokens), so it reads an engine server's formatted JSON as well as the
//! candle engine's compact one. What it cannot follow (arguments before the name) it leaves to
//! [`RequiredCalls::finish`], which parses the whole text.

use serde::Deserialize;
use serde_json::Value;

use super::answer::CallPiece;

/// One call of the array, as [`RequiredCalls::finish`] parses it.
#[derive(Deserialize)]
struct WholeCall {
    name: String,
    arguments: Value,
}

/// Reads the array of calls of one answer as its text arrives.
#[derive(Debug, Default)]
pub(crate) struct RequiredCalls {
    /// The text so far.
    text: String,
    /// Calls whose first piece went out.
    started: u32,
    /// How deep in objects and arrays the reader is (1 in the array, 2 in a call).
    depth: u32,
    /// Whether it is in a string, and just after a backslash there.
    in_string: bool,
    escaped: bool,
    /// The current string's text, with its quotes, while it is a key or a name.
    string: String,
    /// The key the next value of the current call belongs to.
    key: Option<String>,
    /// Whether the current call's name is whole (and the call started).
    named: bool,
    /// While the reader is in the current call's arguments: the depth at which they end.
    arguments: Option<u32>,
    /// Whether the reader lost its way; [`finish`](Self::finish) then parses the whole text.
    lost: bool,
}

impl RequiredCalls {
    /// Read `more` text of answer `id`: the pieces of calls it starts or continues.
    pub(crate) fn push(&mut self, more: &str, id: &str) -> Vec<CallPiece> {
        self.text.push_str(more);
        let mut pieces = Vec::new();
        let mut piece = String::new();
        for c in more.chars() {
            if self.lost {
                return pieces;
            }
            if let Some(end) = self.arguments {
                piece.push(c);
                if self.step(c) && self.depth == end {
                    self.arguments = None;
                    self.push_arguments(&mut piece, &mut pieces);
                }
                continue;
            }
            let depth = self.depth;
            let was_string = self.in_string;
            let closed = self.step(c);
            if was_string || self.in_string {
                self.string.push(c);
                if was_string && !self.in_string {
                    self.read_string(id, &mut pieces);
                }
                continue;
            }
            match (depth, c) {
                // A call object opens.
                (1, '{') => {
                    self.key = None;
                    self.named = false;
                }
                (2, '{' | '[') if self.key.as_deref() == Some("arguments") => {
                    if !self.named {
                        self.lost = true;
                        return pieces;
                    }
                    self.key = None;
                    self.arguments = Some(depth);
                    piece.push(c);
                }
                (2, ',') => self.key = None,
                (2, c) if !c.is_whitespace() && c != ':' && !closed => {
                    // A value that is not a string, object or array (a number, `true`, …).
                    self.lost = true;
                }
                _ => {}
            }
        }
        if self.arguments.is_some() {
            self.push_arguments(&mut piece, &mut pieces);
        }
        pieces
    }

    /// Advance the nesting and string state past `c`; whether it closed an object or array.
    fn step(&mut self, c: char) -> bool {
        if self.in_string {
            match (self.escaped, c) {
                (true, _) => self.escaped = false,
                (false, '\\') => self.escaped = true,
                (false, '"') => self.in_string = false,
                _ => {}
            }
            return false;
        }
        match c {
            '"' => {
                self.in_string = true;
                false
            }
            '{' | '[' => {
                self.depth += 1;
                false
            }
            '}' | ']' => {
                self.depth = self.depth.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// A string of the call object just ended: a key, or the name (whose call then starts).
    fn read_string(&mut self, id: &str, pieces: &mut Vec<CallPiece>) {
        let text = std::mem::take(&mut self.string);
        if self.depth != 2 {
            return;
        }
        let Ok(value) = serde_json::from_str::<String>(&text) else {
            self.lost = true;
            return;
        };
        match self.key.take() {
            None => self.key = Some(value),
            Some(key) if key == "name" => {
                let index = self.started;
                self.started += 1;
                pieces.push(CallPiece {
                    index,
                    head: Some((super::answer::call_id(id, index), value)),
                    arguments: String::new(),
                });
                self.named = true;
            }
            // Arguments as a string, or another key's value: read whole at the end.
            Some(_) => self.lost = true,
        }
    }

    /// Send the arguments read so far as a piece of the current call.
    fn push_arguments(&mut self, piece: &mut String, pieces: &mut Vec<CallPiece>) {
        if piece.is_empty() || self.started == 0 {
            return;
        }
        pieces.push(CallPiece {
            index: self.started - 1,
            head: None,
            arguments: std::mem::take(piece),
        });
    }

    /// The end of the answer: where the reader lost its way, the calls of the whole text it
    /// had not started; and the text itself as content where it holds no call (cut short by
    /// the length limit before the first name was whole).
    pub(crate) fn finish(&mut self, id: &str) -> (String, Vec<CallPiece>) {
        if self.started > 0 && !self.lost {
            return (String::new(), Vec::new());
        }
        let text = std::mem::take(&mut self.text);
        match serde_json::from_str::<Vec<WholeCall>>(&text) {
            Ok(calls) => {
                let pieces = (0..)
                    .zip(calls)
                    .skip(self.started as usize)
                    .map(|(index, call)| {
                        let arguments = call.arguments.to_string();
                        super::answer::whole_call(id, index, call.name, arguments)
                    })
                    .collect();
                (String::new(), pieces)
            }
            Err(_) if self.started > 0 => (String::new(), Vec::new()),
            Err(_) => (text, Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// The calls the pieces make, joined as a client joins them: `(name, arguments)`.
    fn joined(pieces: Vec<CallPiece>) -> Vec<(String, String)> {
        let mut calls: Vec<(String, String)> = Vec::new();
        for piece in pieces {
            match piece.head {
                Some((_, name)) => calls.push((name, piece.arguments)),
                None => calls[piece.index as usize].1.push_str(&piece.arguments),
            }
        }
        calls
    }

    /// Read `text` in pieces cut at `cuts`.
    fn read(text: &str, cuts: &[usize]) -> Vec<(String, String)> {
        let mut reader = RequiredCalls::default();
        let mut pieces = Vec::new();
        let mut at = 0;
        let chars: Vec<char> = text.chars().collect();
        for cut in cuts.iter().copied().chain([chars.len()]) {
            let cut = cut.clamp(at, chars.len());
            let more: String = chars[at..cut].iter().collect();
            pieces.extend(reader.push(&more, "a"));
            at = cut;
        }
        let (content, last) = reader.finish("a");
        assert!(content.is_empty(), "{content}");
        pieces.extend(last);
        joined(pieces)
    }

    fn arguments() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z\"\\\\{}\\[\\], :é]{0,6}".prop_map(|s| json!(s)),
            Just(json!(null)),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"]{1,4}", inner, 0..3).prop_map(|map| json!(map)),
            ]
        })
        .prop_map(|value| json!({ "v": value }))
    }

    proptest! {
        /// However the text is cut, compact or formatted, the pieces join into the calls the
        /// whole text parses to (the reference: `serde_json` on the whole array).
        #[test]
        fn the_pieces_join_into_the_calls_of_the_whole_text(
            calls in prop::collection::vec(("[a-z_\"]{1,8}", arguments()), 1..4),
            pretty in any::<bool>(),
            cuts in prop::collection::vec(0usize..200, 0..12),
        ) {
            let array: Vec<Value> = calls
                .iter()
                .map(|(name, arguments)| json!({"name": name, "arguments": arguments}))
                .collect();
            let text = if pretty {
                serde_json::to_string_pretty(&array).unwrap_or_default()
            } else {
                serde_json::to_string(&array).unwrap_or_default()
            };
            let mut cuts = cuts;
            cuts.sort_unstable();
            let got = read(&text, &cuts);
            prop_assert_eq!(got.len(), calls.len(), "{}", text);
            for ((name, arguments), (got_name, got_arguments)) in calls.iter().zip(&got) {
                prop_assert_eq!(name, got_name);
                let parsed: Value = serde_json::from_str(got_arguments)
                    .map_err(|e| TestCaseError::fail(format!("{got_arguments:?}: {e}")))?;
                prop_assert_eq!(&parsed, arguments, "{}", text);
            }
        }
    }

    #[test]
    fn a_call_starts_once_its_name_is_whole_and_a_cut_answer_without_one_is_content() {
        let mut reader = RequiredCalls::default();
        assert!(reader.push(r#"[{"name":"wea"#, "a").is_empty());
        let pieces = reader.push(r#"ther","arguments":{"ci"#, "a");
        let heads: Vec<_> = pieces.iter().filter_map(|p| p.head.clone()).collect();
        assert_eq!(heads, [("call-a-0".to_owned(), "weather".to_owned())]);
        assert_eq!(joined(pieces)[0].1, r#"{"ci"#);

        let mut cut = RequiredCalls::default();
        assert!(cut.push(r#"[{"name":"wea"#, "a").is_empty());
        let (content, calls) = cut.finish("a");
        assert_eq!(content, r#"[{"name":"wea"#);
        assert!(calls.is_empty());
        // Arguments before the name: read whole at the end.
        let mut late = RequiredCalls::default();
        assert!(
            late.push(r#"[{"arguments":{"x":1},"name":"f"}]"#, "a")
                .is_empty()
        );
        let (_, calls) = late.finish("a");
        assert_eq!(joined(calls), [("f".to_owned(), r#"{"x":1}"#.to_owned())]);
    }
}
