//! Output formats: a shape the answer must have, enforced while sampling.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A format the generated text must follow, enforced token by token while sampling (a grammar
/// engine masks every token that would leave the format).
///
/// It travels with the [`GenerateRequest`](crate::GenerateRequest) as data (the schema as JSON
/// text), so that it crosses the request plane like every other option. An engine that cannot
/// enforce it refuses the request with [`Error::InvalidRequest`] (see
/// [`OutputFormat::unsupported`]) rather than ignore it.
///
/// ```
/// use dynamo_core::{GenerateRequest, OutputFormat};
///
/// let mut request = GenerateRequest::new("r1", "smollm2", vec![1, 2, 3]);
/// request.format = Some(OutputFormat::JsonSchema {
///     schema: r#"{"type": "object", "properties": {"city": {"type": "string"}}}"#.into(),
/// });
/// let json = serde_json::to_string(&request)?;
/// assert!(json.contains(r#""format":{"type":"json_schema""#));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputFormat {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON text valid against a JSON schema.
    JsonSchema {
        /// The schema, as JSON text.
        schema: String,
    },
    /// Text the whole of which matches a regular expression (the syntax of the `regex` crate;
    /// vLLM's `structured_outputs.regex`).
    Regex {
        /// The regular expression, matched against the whole answer.
        pattern: String,
    },
    /// Exactly one of a list of texts (vLLM's `structured_outputs.choice`).
    Choice {
        /// The texts the answer may be.
        choices: Vec<String>,
    },
    /// Text of a context-free grammar in llguidance's Lark syntax (vLLM's
    /// `structured_outputs.grammar` with its `guidance` backend), whose `start` rule is the
    /// whole answer.
    Grammar {
        /// The grammar's text.
        lark: String,
    },
}

impl OutputFormat {
    /// The error of an engine that cannot enforce output formats.
    pub fn unsupported(engine: &str) -> Error {
        Error::invalid_request(format!(
            "response_format, structured_outputs: the {engine} engine cannot enforce output \
             formats"
        ))
    }

    /// The request field such a format comes in, to name in error messages: OpenAI's
    /// `response_format` for JSON, vLLM's `structured_outputs.regex`, `.choice` or `.grammar`
    /// for the others.
    pub fn field(&self) -> &'static str {
        match self {
            OutputFormat::JsonObject | OutputFormat::JsonSchema { .. } => "response_format",
            OutputFormat::Regex { .. } => "structured_outputs.regex",
            OutputFormat::Choice { .. } => "structured_outputs.choice",
            OutputFormat::Grammar { .. } => "structured_outputs.grammar",
        }
    }

    /// The regular expression a regex or choice format is, for servers that take regular
    /// expressions but no choices: a choice becomes the alternation of its texts, each
    /// character with a meaning in regular expressions (in Rust's, Python's and xgrammar's
    /// alike) behind a backslash. `None` for the other kinds, and for a choice of no texts.
    ///
    /// ```
    /// use dynamo_core::OutputFormat;
    ///
    /// let choice = OutputFormat::Choice { choices: vec!["yes".into(), "1+1 (two)".into()] };
    /// assert_eq!(choice.as_regex().as_deref(), Some(r"(yes|1\+1 \(two\))"));
    /// assert_eq!(OutputFormat::JsonObject.as_regex(), None);
    /// ```
    pub fn as_regex(&self) -> Option<String> {
        match self {
            OutputFormat::Regex { pattern } => Some(pattern.clone()),
            OutputFormat::Choice { choices } if !choices.is_empty() => {
                let mut pattern = String::from("(");
                for (index, text) in choices.iter().enumerate() {
                    if index > 0 {
                        pattern.push('|');
                    }
                    for c in text.chars() {
                        if "\\.+*?()|[]{}^$".contains(c) {
                            pattern.push('\\');
                        }
                        pattern.push(c);
                    }
                }
                pattern.push(')');
                Some(pattern)
            }
            _ => None,
        }
    }

    /// The grammar that holds generation to this format, for
    /// [llguidance](https://docs.rs/llguidance) to compile against a vocabulary.
    ///
    /// JSON comes out compact (no whitespace between its tokens, so a small model cannot
    /// wander off into endless blank space), and a choice is a grammar of its texts, each
    /// matched exactly. Whether a regular expression or a grammar is valid shows when
    /// llguidance compiles it.
    ///
    /// ```
    /// # #[cfg(feature = "grammar")] {
    /// use dynamo_core::OutputFormat;
    ///
    /// let choice = OutputFormat::Choice { choices: vec!["yes".into(), "no".into()] };
    /// assert!(choice.grammar().is_ok());
    /// let none = OutputFormat::Choice { choices: vec![] };
    /// assert!(none.grammar().is_err());
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a schema that is not JSON, or a choice of no texts.
    #[cfg(feature = "grammar")]
    pub fn grammar(&self) -> Result<llguidance::api::TopLevelGrammar, Error> {
        use llguidance::api::TopLevelGrammar;
        use serde_json::{Value, json};

        let compact_json = |mut schema: Value| {
            if let Value::Object(object) = &mut schema {
                object.insert(
                    "x-guidance".to_owned(),
                    json!({"whitespace_flexible": false, "lenient": false}),
                );
            }
            TopLevelGrammar::from_json_schema(schema)
        };
        match self {
            OutputFormat::JsonObject => Ok(compact_json(json!({"type": "object"}))),
            OutputFormat::JsonSchema { schema } => serde_json::from_str(schema)
                .map(compact_json)
                .map_err(|error| {
                    Error::invalid_request(format!(
                        "response_format: the schema is not JSON: {error}"
                    ))
                }),
            OutputFormat::Regex { pattern } => Ok(TopLevelGrammar::from_regex(pattern)),
            OutputFormat::Choice { choices } if choices.is_empty() => Err(Error::invalid_request(
                "structured_outputs.choice: a choice needs at least one text",
            )),
            OutputFormat::Choice { choices } => {
                // Lark's string literals are JSON strings, so each text is matched byte for
                // byte, whatever it holds.
                let literals: Vec<String> =
                    choices.iter().map(|text| json!(text).to_string()).collect();
                Ok(TopLevelGrammar::from_lark(format!(
                    "start: {}",
                    literals.join(" | ")
                )))
            }
            OutputFormat::Grammar { lark } => Ok(TopLevelGrammar::from_lark(lark.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EchoEngine, EngineExt, ErrorClass, GenerateRequest};

    #[test]
    fn round_trips_through_json_and_is_absent_by_default() {
        let mut request = GenerateRequest::new("r", "m", vec![1, 2]);
        let plain = serde_json::to_string(&request).unwrap();
        assert!(!plain.contains("format"), "{plain}");
        let schema = r#"{"type":"object"}"#.to_owned();
        request.format = Some(OutputFormat::JsonSchema { schema });
        let back: GenerateRequest =
            serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(back.format, request.format);
        let object: OutputFormat = serde_json::from_str(r#"{"type":"json_object"}"#).unwrap();
        assert_eq!(object, OutputFormat::JsonObject);
    }

    /// Whether `format`'s grammar, over a vocabulary of single bytes, accepts `text` whole.
    #[cfg(feature = "grammar")]
    fn accepts(format: &OutputFormat, text: &str) -> bool {
        use llguidance::toktrie::ApproximateTokEnv;
        use llguidance::{Matcher, ParserFactory};

        let env = ApproximateTokEnv::single_byte_env();
        let mut factory = ParserFactory::new_simple(&env).unwrap();
        factory.quiet();
        let mut matcher = Matcher::new(factory.create_parser(format.grammar().unwrap()));
        assert!(matcher.get_error().is_none(), "{:?}", matcher.get_error());
        let bytes: Vec<u32> = text.bytes().map(u32::from).collect();
        matcher.consume_tokens(&bytes).is_ok() && matcher.is_accepting().unwrap_or(false)
    }

    #[cfg(feature = "grammar")]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A choice's grammar accepts each of its texts, and nothing else (checked against the
        /// list itself, the reference).
        #[test]
        fn a_choice_accepts_exactly_its_texts(
            choices in proptest::collection::vec("[a-c\"\\\\ é\n|]{1,4}", 1..5),
            other in "[a-c\"\\\\ é\n|]{0,5}",
        ) {
            let format = OutputFormat::Choice { choices: choices.clone() };
            for text in &choices {
                proptest::prop_assert!(accepts(&format, text), "{text:?} of {choices:?}");
            }
            proptest::prop_assert_eq!(accepts(&format, &other), choices.contains(&other));
        }
    }

    proptest::proptest! {
        /// A choice written as a regular expression matches each of its texts whole, and
        /// nothing else (the list itself the reference), whatever characters they hold.
        #[test]
        fn a_choice_as_a_regex_matches_exactly_its_texts(
            choices in proptest::collection::vec("[a-c.+*?()|\\[\\]{}^$\\\\ é-]{1,4}", 1..5),
            other in "[a-c.+*?()|\\[\\]{}^$\\\\ é-]{0,5}",
        ) {
            let format = OutputFormat::Choice { choices: choices.clone() };
            let pattern = format.as_regex().unwrap();
            let whole = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
            for text in &choices {
                proptest::prop_assert!(whole.is_match(text), "{text:?} by {pattern}");
            }
            proptest::prop_assert_eq!(whole.is_match(&other), choices.contains(&other));
        }
    }

    #[cfg(feature = "grammar")]
    #[test]
    fn a_regex_and_a_grammar_hold_the_whole_answer() {
        let digits = OutputFormat::Regex {
            pattern: "[0-9]{3}-[a-z]+".into(),
        };
        assert!(accepts(&digits, "123-abc"));
        assert!(!accepts(&digits, "123-abc!"));
        assert!(!accepts(&digits, "12-abc"));
        let lark = OutputFormat::Grammar {
            lark: "start: \"(\" start \")\" | \"x\"".into(),
        };
        assert!(accepts(&lark, "((x))"));
        assert!(!accepts(&lark, "((x)"));
        let none = OutputFormat::Choice { choices: vec![] };
        assert_eq!(
            none.grammar().unwrap_err().class(),
            crate::ErrorClass::InvalidRequest
        );
    }

    #[tokio::test]
    async fn the_echo_engine_refuses_a_format() {
        let mut request = GenerateRequest::new("r", "m", vec![1, 2]);
        request.format = Some(OutputFormat::JsonObject);
        let error = EchoEngine::new().generate_all(request).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("response_format"), "{error}");
    }
}
