//! Output formats on the real SmolLM2-135M-Instruct: every answer to a request with a JSON
//! schema parses and validates against it (a property over generated schemas, validated by the
//! `jsonschema` crate), every answer to one with a regular expression matches it (a property
//! over generated expressions, checked by the `regex` crate), a choice answers with one of its
//! texts, a Lark grammar with a text of its language, `json_object` gives an object, and a
//! format the grammar engine cannot compile is an invalid request.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, ErrorClass, FinishReason, GenerateRequest, OutputFormat};
use futures::future::join_all;
use proptest::prelude::*;
use serde_json::{Value, json};
use support::chat_prompt;

fn engine() -> CandleEngine {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    CandleEngine::start(weights, CandleConfig::default(), None).unwrap()
}

/// A request for JSON following `format`, asked in the prompt too (as users do), sampled with
/// `seed` (greedy without one).
fn request(id: &str, question: &str, format: OutputFormat, seed: Option<u64>) -> GenerateRequest {
    let mut request =
        GenerateRequest::new(id, "smollm2", chat_prompt(question)).with_max_tokens(400);
    request.sampling.temperature = Some(if seed.is_some() { 1.0 } else { 0.0 });
    request.sampling.seed = seed;
    request.format = Some(format);
    request
}

/// The answer's text: the model's tokens as the gateway would decode them.
fn text(tokens: &[u32]) -> String {
    support::preprocessing()
        .tokenizer()
        .decode(tokens, true)
        .unwrap()
}

/// Runs `formats` at once (so the engine batches them), each with its question, the first
/// greedy and the others sampled from `seed`; the answers' texts, each checked to have stopped.
fn answers(formats: &[(String, OutputFormat)], seed: u64) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = engine();
    let generations = runtime.block_on(join_all(formats.iter().enumerate().map(
        |(i, (question, format))| {
            let mut engine = engine.clone();
            let seed = (i > 0).then_some(seed.wrapping_add(i as u64));
            let request = request(&format!("f{i}"), question, format.clone(), seed);
            async move { engine.generate_all(request).await }
        },
    )));
    generations
        .into_iter()
        .map(|generation| {
            let generation = generation.unwrap();
            let answer = text(&generation.tokens);
            assert_eq!(
                generation.finish_reason,
                Some(FinishReason::Stop),
                "{answer}"
            );
            answer
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_object_answers_with_an_object_and_stops() {
    let mut engine = engine();
    let question = "Describe Paris as JSON with its country and population.";
    let generation = engine
        .generate_all(request("object", question, OutputFormat::JsonObject, None))
        .await
        .unwrap();
    let answer = text(&generation.tokens);
    let value: Value = serde_json::from_str(&answer).unwrap();
    assert!(value.is_object(), "{answer}");
    assert_eq!(generation.finish_reason, Some(FinishReason::Stop));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_probabilities_are_those_of_the_masked_distribution() {
    let mut engine = engine();
    let schema = json!({"type": "object", "properties": {"capital": {"type": "string", "maxLength": 12}},
        "required": ["capital"], "additionalProperties": false});
    let format = OutputFormat::JsonSchema {
        schema: schema.to_string(),
    };
    let mut request = request("lp", "What is the capital of France?", format, None);
    request.sampling.logprobs = Some(3);
    let generation = engine.generate_all(request).await.unwrap();
    let answer = text(&generation.tokens);
    let value: Value = serde_json::from_str(&answer).unwrap();
    assert!(value["capital"].is_string(), "{answer}");
    let log_probs = generation.log_probs.unwrap();
    // Only a couple of tokens can open the object (`{`, `{"`): their probabilities, renormalised
    // over what the mask allows, sum to one.
    let first: f32 = log_probs[0].top.iter().map(|t| t.1.exp()).sum();
    assert!((first - 1.0).abs() < 1e-3, "{:?}", log_probs[0]);
    for entry in &log_probs {
        assert!(
            entry.logprob.is_finite() && entry.logprob <= 0.0,
            "{entry:?}"
        );
        assert!(entry.top.iter().all(|t| t.1.is_finite()), "{entry:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_the_grammar_engine_refuses_is_an_invalid_request() {
    let mut engine = engine();
    for schema in [
        r#"{"$ref": "https://example.com/remote.json"}"#,
        r#"{"type": "no-such-type"}"#,
        "not json",
    ] {
        let format = OutputFormat::JsonSchema {
            schema: schema.to_owned(),
        };
        let error = engine
            .generate_all(request("bad", "Hi", format, None))
            .await
            .unwrap_err();
        assert_eq!(
            error.class(),
            ErrorClass::InvalidRequest,
            "{schema}: {error}"
        );
        assert!(error.to_string().contains("response_format"), "{error}");
    }
    // The engine goes on serving.
    let generation = engine
        .generate_all(request("after", "Hi", OutputFormat::JsonObject, None))
        .await
        .unwrap();
    assert!(!generation.tokens.is_empty());
}

/// A JSON schema of the kind applications send (OpenAI's strict mode: every property required,
/// no others), with bounds that keep a small model's answers short.
fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!({"type": "boolean"})),
        (-100i64..100, 0i64..1000).prop_map(
            |(low, span)| json!({"type": "integer", "minimum": low, "maximum": low + span})
        ),
        (1usize..12).prop_map(|max| json!({"type": "string", "maxLength": max})),
        prop::collection::vec("[a-z]{1,8}", 1..4)
            .prop_map(|words| json!({"type": "string", "enum": words})),
        Just(json!({"type": "null"})),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            (inner.clone(), 1usize..4)
                .prop_map(|(items, max)| json!({"type": "array", "items": items, "maxItems": max})),
            prop::collection::vec(inner, 1..4).prop_map(object),
        ]
    })
    .prop_map(|value| match value["type"].as_str() {
        Some("object") => value,
        _ => object(vec![value]),
    })
}

/// An object whose properties `p0`, `p1`… have the given schemas, all required.
fn object(properties: Vec<Value>) -> Value {
    let names: Vec<String> = (0..properties.len()).map(|i| format!("p{i}")).collect();
    let properties: serde_json::Map<String, Value> =
        names.iter().cloned().zip(properties).collect();
    json!({"type": "object", "properties": properties, "required": names,
        "additionalProperties": false})
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, max_shrink_iters: 4, ..ProptestConfig::default() })]

    /// Every answer parses and validates against its schema, sampled answers included. The
    /// schemas of one case run at once, so the engine batches them.
    #[test]
    fn every_answer_validates_against_its_schema(
        schemas in prop::collection::vec(schema(), 4),
        seed in any::<u64>(),
    ) {
        let formats: Vec<(String, OutputFormat)> = schemas
            .iter()
            .map(|schema| {
                let question = format!("Reply with JSON following this schema: {schema}");
                (question, OutputFormat::JsonSchema { schema: schema.to_string() })
            })
            .collect();
        for (schema, answer) in schemas.iter().zip(answers(&formats, seed)) {
            let value: Value = serde_json::from_str(&answer)
                .map_err(|e| TestCaseError::fail(format!("{answer:?} is not JSON: {e}")))?;
            let validator = jsonschema::validator_for(schema).unwrap();
            let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{} against {}: {:?}", answer, schema, errors);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_reads_its_output_so_far_before_going_on() {
    let mut engine = engine();
    let schema = json!({"type": "object", "properties": {"capital": {"type": "string", "maxLength": 12}},
        "required": ["capital"], "additionalProperties": false});
    let format = OutputFormat::JsonSchema {
        schema: schema.to_string(),
    };
    let question = "What is the capital of France?";
    let whole = engine
        .generate_all(request("whole", question, format.clone(), None))
        .await
        .unwrap();
    // The same request resumed after its first three tokens, as a migration sends it on.
    let mut resumed = request("resumed", question, format.clone(), None);
    resumed.tokens = resumed
        .tokens
        .as_slice()
        .iter()
        .chain(&whole.tokens[..3])
        .copied()
        .collect();
    resumed.resumed_tokens = 3;
    let rest = engine.generate_all(resumed).await.unwrap();
    assert_eq!(rest.tokens, whole.tokens[3..], "greedy: the same answer");
    // Output so far that leaves the format is refused.
    let mut wrong = request("wrong", question, format, None);
    wrong.resumed_tokens = 2;
    let error = engine.generate_all(wrong).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::InvalidRequest, "{error}");
}

/// A regular expression of the kind applications send (codes, dates, labels), built of pieces
/// with no special meaning between them.
fn pattern() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z]{1,5}",
        Just("[0-9]{1,3}".to_owned()),
        Just("[A-Z][a-z]{1,6}".to_owned()),
        Just("(yes|no|maybe)".to_owned()),
        Just("[0-9]{4}-[0-9]{2}-[0-9]{2}".to_owned()),
    ];
    (
        prop::collection::vec(piece, 1..4),
        prop_oneof![Just("-"), Just(": "), Just(", "), Just(" ")],
    )
        .prop_map(|(pieces, separator)| pieces.join(separator))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, max_shrink_iters: 4, ..ProptestConfig::default() })]

    /// Every answer matches its regular expression whole, sampled answers included.
    #[test]
    fn every_answer_matches_its_regex(patterns in prop::collection::vec(pattern(), 4), seed in any::<u64>()) {
        let formats: Vec<(String, OutputFormat)> = patterns
            .iter()
            .map(|pattern| {
                let question = format!("Reply with text matching the regular expression {pattern}");
                (question, OutputFormat::Regex { pattern: pattern.clone() })
            })
            .collect();
        for (pattern, answer) in patterns.iter().zip(answers(&formats, seed)) {
            let whole = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
            prop_assert!(whole.is_match(&answer), "{:?} against {}", answer, pattern);
        }
    }
}

#[test]
fn a_choice_answers_with_one_of_its_texts_and_a_grammar_with_a_text_of_its_language() {
    let cities: Vec<String> = ["Paris", "London", "Berlin", "Rome, Italy"]
        .map(String::from)
        .to_vec();
    let lark = "start: \"(\" NUMBER (\",\" NUMBER){0,3} \")\"\nNUMBER: /[0-9]{1,3}/";
    let choice = OutputFormat::Choice {
        choices: cities.clone(),
    };
    let list = OutputFormat::Grammar { lark: lark.into() };
    let formats = vec![
        ("What is the capital of France?".to_owned(), choice.clone()),
        ("What is the capital of France?".to_owned(), choice),
        (
            "Write a list of numbers in parentheses.".to_owned(),
            list.clone(),
        ),
        ("Write a list of numbers in parentheses.".to_owned(), list),
    ];
    let answers = answers(&formats, 7);
    for answer in &answers[..2] {
        assert!(cities.contains(answer), "{answer:?}");
    }
    let language = regex::Regex::new(r"^\([0-9]{1,3}(,[0-9]{1,3}){0,3}\)$").unwrap();
    for answer in &answers[2..] {
        assert!(language.is_match(answer), "{answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regex_or_grammar_that_does_not_compile_is_an_invalid_request_naming_its_field() {
    let mut engine = engine();
    for (format, field) in [
        (
            OutputFormat::Regex {
                pattern: "[0-9".into(),
            },
            "structured_outputs.regex",
        ),
        (
            OutputFormat::Grammar {
                lark: "start: undefined_rule".into(),
            },
            "structured_outputs.grammar",
        ),
        (
            OutputFormat::Choice { choices: vec![] },
            "structured_outputs.choice",
        ),
    ] {
        let error = engine
            .generate_all(request("bad", "Hi", format, None))
            .await
            .unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest, "{error}");
        assert!(error.to_string().contains(field), "{error}");
    }
}

/// Through the gateway, as the main job serves it: vLLM's `structured_outputs` on a chat with
/// `n` sampled choices (each one of the texts) and on a text completion (a regular expression).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_takes_vllm_structured_outputs() {
    let app = support::gateway(&engine());
    let chat = json!({"model": "smollm2", "n": 3, "temperature": 1.0, "seed": 11,
        "messages": [{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
        "structured_outputs": {"choice": ["yes", "no", "I am not sure"]}});
    let (status, answer) = support::post_json(&app, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{answer}");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{answer}");
    for choice in choices {
        let content = choice["message"]["content"].as_str().unwrap();
        assert!(
            ["yes", "no", "I am not sure"].contains(&content),
            "{answer}"
        );
        assert_eq!(choice["finish_reason"], "stop", "{answer}");
    }
    let pattern = "[0-9]{4}-[0-9]{2}-[0-9]{2}";
    let completion = json!({"model": "smollm2", "prompt": "The first moon landing was on",
        "max_tokens": 30, "temperature": 0, "structured_outputs": {"regex": pattern}});
    let (status, answer) = support::post_json(&app, "/v1/completions", &completion).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["text"].as_str().unwrap();
    let whole = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    assert!(whole.is_match(text), "{answer}");
}

/// Through the gateway: `tool_choice: "required"` answers with calls of the offered tools, each
/// with arguments valid against its parameters, whole and with `n` sampled choices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tool_calls_call_the_offered_tools_with_valid_arguments() {
    let app = support::gateway(&engine());
    let weather = json!({"type": "object", "additionalProperties": false, "required": ["city"],
        "properties": {"city": {"type": "string", "maxLength": 20}}});
    let time = json!({"type": "object", "additionalProperties": false, "required": ["zone"],
        "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}}});
    let chat = json!({"model": "smollm2", "n": 3, "temperature": 1.0, "seed": 3,
        "max_tokens": 120, "tool_choice": "required",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": weather}},
                  {"type": "function", "function": {"name": "time", "parameters": time}}]});
    let (status, answer) = support::post_json(&app, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{answer}");
    for choice in answer["choices"].as_array().unwrap() {
        assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert!(!calls.is_empty(), "{answer}");
        for call in calls {
            let schema = match call["function"]["name"].as_str().unwrap() {
                "weather" => &weather,
                "time" => &time,
                other => panic!("{other} is not a tool: {answer}"),
            };
            let text = call["function"]["arguments"].as_str().unwrap();
            let arguments: Value = serde_json::from_str(text).unwrap();
            assert!(jsonschema::is_valid(schema, &arguments), "{answer}");
        }
    }
}
