//! SGLang's native `/generate`: the request body built from a [`GenerateRequest`], and the
//! parts of its answers the engine reads (`python/sglang/srt/managers/io_struct.py`
//! `GenerateReqInput`, `python/sglang/srt/sampling/sampling_params.py`,
//! `python/sglang/srt/entrypoints/http_server.py`).

use dynamo_core::{
    Delivery, Disaggregation, Error, FinishReason, GenerateRequest, OutputFormat, Token, Usage,
};
use dynamo_upstream::json_float;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// The largest seed sent. SGLang 0.5.3 puts `sampling_seed` in a 32-bit tensor when it
/// samples deterministically, where a larger value fails inside its scheduler rather than in
/// its request checks (later versions take 64 bits), so larger seeds are refused here.
pub(crate) const MAX_SEED: u64 = i32::MAX as u64;

/// The `/generate` body for `request`, with request id `rid`: streamed, unless its client reads
/// the answer whole ([`Delivery::Whole`]).
///
/// A seed goes in `sampling_params.sampling_seed` (SGLang 0.5.3 and later); log-probabilities are
/// asked for with `return_logprob`, `top_logprobs_num` and `logprob_start_len: -1` (the output
/// tokens' only), or `0` with the prompt's (`prompt_logprobs`, a whole answer only), the
/// alternatives as many as either asks for; a cache salt goes in `cache_salt` (SGLang 0.5.18 and
/// later; an empty one is not sent, as SGLang and the router's hasher both read it as no salt); an
/// output format goes in `sampling_params.json_schema`, the schema's text, or `{"type": "object"}`
/// for any JSON object (as SGLang's own OpenAI layer writes `response_format`), a regular
/// expression in `sampling_params.regex`, and a choice there too, as the alternation of its texts,
/// for SGLang's grammar backend to enforce (a Lark grammar is refused: SGLang's `ebnf` is another
/// syntax).
///
/// # Errors
///
/// [`Error::InvalidRequest`], naming the field, for what SGLang's `/generate` does not take: a
/// seed above [`MAX_SEED`], one phase of a disaggregated request, the prompt's
/// log-probabilities streamed, a JSON schema that is not JSON, or a kind of output format this
/// adapter cannot write.
pub(crate) fn body(request: &GenerateRequest, rid: &str) -> Result<Map<String, Value>, Error> {
    let refuse = |what: &str| {
        Err(Error::invalid_request(format!(
            "{what} is not supported by this SGLang upstream"
        )))
    };
    let sampling = &request.sampling;
    if sampling.seed.is_some_and(|seed| seed > MAX_SEED) {
        return refuse("a seed above 2147483647");
    }
    if request.disaggregation != Disaggregation::None {
        return refuse("one phase of a disaggregated request");
    }
    let mut params = Map::new();
    let mut put = |name: &str, value: Value| {
        params.insert(name.to_owned(), value);
    };
    if let Some(max) = request.limits.max_tokens {
        put("max_new_tokens", json!(max));
    }
    if let Some(min) = request.limits.min_tokens {
        put("min_new_tokens", json!(min));
    }
    let floats = [
        ("temperature", sampling.temperature),
        ("top_p", sampling.top_p),
        ("min_p", sampling.min_p),
        ("frequency_penalty", sampling.frequency_penalty),
        ("presence_penalty", sampling.presence_penalty),
        ("repetition_penalty", sampling.repetition_penalty),
    ];
    for (name, value) in floats {
        if let Some(value) = value {
            // As the client wrote it, not widened to the nearest f64 (`json_float`).
            put(name, json_float(value));
        }
    }
    if let Some(top_k) = sampling.top_k {
        put("top_k", json!(top_k));
    }
    if let Some(seed) = sampling.seed {
        put("sampling_seed", json!(seed));
    }
    if !request.stop.stop_token_ids.is_empty() {
        put("stop_token_ids", json!(request.stop.stop_token_ids));
    }
    if request.stop.ignore_eos {
        put("ignore_eos", json!(true));
    }
    if let Some(format) = &request.format {
        let (name, value) = format_param(format)?;
        put(name, json!(value));
    }
    let mut body = Map::new();
    body.insert("rid".into(), json!(rid));
    body.insert("input_ids".into(), json!(request.tokens.as_slice()));
    body.insert("sampling_params".into(), Value::Object(params));
    body.insert(
        "stream".into(),
        json!(request.delivery == Delivery::Streamed),
    );
    if let Some(lora) = &request.lora_name {
        body.insert("lora_path".into(), json!(lora));
    }
    // SGLang before 0.5.18 has no such field and drops it unread (see the crate docs).
    if let Some(salt) = request
        .cache_salt
        .as_deref()
        .filter(|salt| !salt.is_empty())
    {
        body.insert("cache_salt".into(), json!(salt));
    }
    if sampling.prompt_logprobs.is_some() && request.delivery == Delivery::Streamed {
        return Err(Error::invalid_request(
            "prompt_logprobs come only with a whole answer from the SGLang adapter: the request \
             must not be streamed",
        ));
    }
    // One count of alternatives for the output and the prompt: as many as either asks for (the
    // engine keeps the output's to what it asked).
    if let Some(top) = sampling.logprobs.max(sampling.prompt_logprobs) {
        body.insert("return_logprob".into(), json!(true));
        body.insert("top_logprobs_num".into(), json!(top));
        // From the first prompt token, or the output tokens' only: -1 is also the default,
        // said here so that no version computes the prompt's.
        let start = if sampling.prompt_logprobs.is_some() {
            0
        } else {
            -1
        };
        body.insert("logprob_start_len".into(), json!(start));
    }
    Ok(body)
}

/// One streamed answer event, or an error. Log-probability lists are kept as the raw text of
/// each entry: a streamed event may repeat every score so far, and only the new tokens' are
/// parsed ([`crate::logprobs::of_new`]).
#[derive(Debug, Deserialize)]
pub(crate) struct Event<'a> {
    #[serde(default)]
    pub(crate) output_ids: Option<Vec<Token>>,
    #[serde(default, borrow)]
    pub(crate) meta_info: Option<MetaInfo<'a>>,
    #[serde(default)]
    pub(crate) error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MetaInfo<'a> {
    #[serde(default)]
    pub(crate) finish_reason: Option<Value>,
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    pub(crate) completion_tokens: Option<u32>,
    #[serde(default)]
    cached_tokens: u32,
    /// With `return_logprob`: `[logprob, token_id, text]` per output token, unparsed.
    #[serde(default, borrow)]
    pub(crate) output_token_logprobs: Option<Vec<&'a RawValue>>,
    /// With `top_logprobs_num` > 0: per output token, its most likely alternatives or `null`,
    /// unparsed.
    #[serde(default, borrow)]
    pub(crate) output_top_logprobs: Option<Vec<&'a RawValue>>,
    /// With `return_logprob`: `[logprob, token_id, text]` per prompt token from
    /// `logprob_start_len` (the first's `logprob` `null`), unparsed.
    #[serde(default, borrow)]
    pub(crate) input_token_logprobs: Option<Vec<&'a RawValue>>,
    /// With `top_logprobs_num` > 0: per prompt token, its most likely alternatives or `null`,
    /// unparsed.
    #[serde(default, borrow)]
    pub(crate) input_top_logprobs: Option<Vec<&'a RawValue>>,
}

impl MetaInfo<'_> {
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            completion_tokens: self.completion_tokens.unwrap_or(0),
        }
    }
}

/// What a `finish_reason` object says: `{"type": "length", "length": n}`, `{"type": "stop",
/// "matched": id or text}` (SGLang reports the end-of-sequence token this way too), or
/// `{"type": "abort", "message": …, "status_code": …}`, which is an error: of its status's
/// class (400 `invalid_request`, 500 `internal`, 503 `overloaded`, as
/// [`dynamo_upstream::error_from_status`] maps them), or `unavailable` without a status, which
/// SGLang leaves out when the request was aborted from outside (`/abort_request`, a pause or a
/// weight update that aborts what runs), not refused.
pub(crate) fn finish(reason: &Value) -> Result<FinishReason, Error> {
    match reason.get("type").and_then(Value::as_str) {
        Some("length") => Ok(FinishReason::Length),
        Some("abort") => {
            let message = reason
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the request was aborted by the server");
            let status = reason
                .get("status_code")
                .and_then(Value::as_u64)
                .and_then(|code| u16::try_from(code).ok());
            Err(match status {
                Some(status) => error_with_status(status, message),
                None => Error::unavailable(format!("SGLang aborted the request: {message}")),
            })
        }
        _ => Ok(FinishReason::Stop),
    }
}

/// The error an `{"error": {…}}` event stands for, which SGLang sends when a request check
/// fails after its stream began (a `ValueError` in `generate_request`): its `code` (SGLang
/// 0.5.13 and later) is the HTTP status it would have answered with; without one (earlier
/// versions), `invalid_request`, since only such checks end a stream this way.
pub(crate) fn error_event(error: &Value) -> Error {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| error.as_str())
        .unwrap_or("SGLang refused the request");
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .filter(|code| (400..600).contains(code))
        .and_then(|code| u16::try_from(code).ok());
    match status {
        Some(status) => error_with_status(status, message),
        None => Error::invalid_request(message),
    }
}

/// The error an HTTP `status` with `message` stands for, classed once, by `dynamo_upstream`.
fn error_with_status(status: u16, message: &str) -> Error {
    let body = json!({ "error": { "message": message } }).to_string();
    dynamo_upstream::error_from_status(status, None, body.as_bytes())
}

/// The sampling parameter that holds generation to `format`, and its text (SGLang reads
/// `json_schema` and `regex` as text: `SamplingParams.json_schema: Optional[str]`).
fn format_param(format: &OutputFormat) -> Result<(&'static str, String), Error> {
    match format {
        OutputFormat::JsonObject => Ok(("json_schema", r#"{"type": "object"}"#.to_owned())),
        OutputFormat::JsonSchema { schema } => {
            let _: &RawValue = serde_json::from_str(schema).map_err(|error| {
                Error::invalid_request("response_format: the JSON schema is not JSON")
                    .with_source(error)
            })?;
            Ok(("json_schema", schema.clone()))
        }
        OutputFormat::Regex { .. } | OutputFormat::Choice { .. } => format
            .as_regex()
            .map(|pattern| ("regex", pattern))
            .ok_or_else(|| {
                Error::invalid_request(
                    "structured_outputs.choice: a choice needs at least one text",
                )
            }),
        _ => Err(OutputFormat::unsupported("SGLang")),
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::{ErrorClass, SamplingOptions};

    use super::*;

    #[test]
    fn fields_take_sglang_names_and_unsupported_ones_are_refused() {
        let mut request = GenerateRequest::new("r", "m", vec![5, 6])
            .with_max_tokens(3)
            .with_stop_tokens(vec![2])
            .with_sampling(SamplingOptions {
                temperature: Some(0.7),
                top_p: Some(0.95),
                top_k: Some(8),
                ..Default::default()
            });
        request.limits.min_tokens = Some(1);
        request.lora_name = Some("adapter".into());
        let sent = Value::Object(body(&request, "r-1").unwrap());
        assert_eq!(
            sent,
            json!({"rid": "r-1", "input_ids": [5, 6], "stream": true, "lora_path": "adapter",
                   "sampling_params": {"max_new_tokens": 3, "min_new_tokens": 1,
                   "temperature": 0.7, "top_p": 0.95, "top_k": 8, "stop_token_ids": [2]}})
        );
        let mut seeded = request.clone();
        seeded.sampling.seed = Some(MAX_SEED + 1);
        let error = body(&seeded, "r-2").unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("seed"), "{error}");
        let mut scored = request.clone();
        scored.sampling.prompt_logprobs = Some(1);
        let error = body(&scored, "r-3").unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("prompt_logprobs"), "{error}");
    }

    #[test]
    fn log_probabilities_of_the_prompt_start_at_its_first_token() {
        let mut request = GenerateRequest::new("r", "m", vec![5, 6]).with_max_tokens(2);
        request.delivery = Delivery::Whole;
        let asked = |logprobs, prompt_logprobs| {
            let mut request = request.clone();
            request.sampling.logprobs = logprobs;
            request.sampling.prompt_logprobs = prompt_logprobs;
            let sent = body(&request, "r-1").unwrap();
            ["return_logprob", "top_logprobs_num", "logprob_start_len"]
                .map(|field| sent.get(field).cloned().unwrap_or(Value::Null))
        };
        assert_eq!(asked(None, None), [Value::Null, Value::Null, Value::Null]);
        assert_eq!(asked(Some(2), None), [json!(true), json!(2), json!(-1)]);
        assert_eq!(asked(None, Some(3)), [json!(true), json!(3), json!(0)]);
        assert_eq!(asked(Some(5), Some(1)), [json!(true), json!(5), json!(0)]);
    }

    #[test]
    fn an_output_format_goes_in_json_schema_as_text() {
        let schema = r#"{"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}"#;
        let mut request = GenerateRequest::new("r", "m", vec![5]).with_max_tokens(2);
        request.format = Some(OutputFormat::JsonSchema {
            schema: schema.into(),
        });
        let sent = body(&request, "r-1").unwrap();
        // The schema's text byte for byte, as one JSON string, beside the other parameters.
        // (Compared as values: the keys' order depends on serde_json's `preserve_order`, which
        // the workspace's other crates turn on.)
        assert_eq!(
            Value::Object(sent),
            json!({"input_ids": [5], "rid": "r-1", "stream": true,
                   "sampling_params": {"json_schema": schema, "max_new_tokens": 2}})
        );
        request.format = Some(OutputFormat::JsonObject);
        let sent = body(&request, "r-1").unwrap();
        assert_eq!(
            sent["sampling_params"]["json_schema"],
            r#"{"type": "object"}"#
        );
        request.format = Some(OutputFormat::JsonSchema {
            schema: "{not json".into(),
        });
        let error = body(&request, "r-1").unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("response_format"), "{error}");
    }

    #[test]
    fn a_regex_goes_in_regex_and_a_choice_as_the_alternation_of_its_texts() {
        let mut request = GenerateRequest::new("r", "m", vec![5]).with_max_tokens(2);
        request.format = Some(OutputFormat::Regex {
            pattern: "[0-9]{3}".into(),
        });
        let sent = body(&request, "r-1").unwrap();
        assert_eq!(sent["sampling_params"]["regex"], "[0-9]{3}");
        request.format = Some(OutputFormat::Choice {
            choices: vec!["yes".into(), "1+1=2 (so?)".into(), r"a\b|c".into()],
        });
        let sent = body(&request, "r-1").unwrap();
        assert_eq!(
            sent["sampling_params"]["regex"],
            r"(yes|1\+1=2 \(so\?\)|a\\b\|c)"
        );
        for refused in [
            OutputFormat::Choice { choices: vec![] },
            OutputFormat::Grammar {
                lark: "start: \"a\"".into(),
            },
        ] {
            request.format = Some(refused);
            let error = body(&request, "r-1").unwrap_err();
            assert_eq!(error.class(), ErrorClass::InvalidRequest);
        }
    }

    #[test]
    fn a_cache_salt_is_sent_unless_empty() {
        let mut request = GenerateRequest::new("r", "m", vec![5]);
        assert!(!body(&request, "r-1").unwrap().contains_key("cache_salt"));
        request.cache_salt = Some("tenant-a".into());
        assert_eq!(body(&request, "r-1").unwrap()["cache_salt"], "tenant-a");
        request.cache_salt = Some(String::new());
        assert!(!body(&request, "r-1").unwrap().contains_key("cache_salt"));
    }

    #[test]
    fn a_seed_and_log_probabilities_are_sent_under_sglang_names() {
        let request = GenerateRequest::new("r", "m", vec![5]).with_sampling(SamplingOptions {
            seed: Some(MAX_SEED),
            logprobs: Some(0),
            ..Default::default()
        });
        let sent = body(&request, "r-1").unwrap();
        assert_eq!(
            sent["sampling_params"],
            json!({"sampling_seed": 2147483647})
        );
        assert_eq!(sent["return_logprob"], true);
        assert_eq!(sent["top_logprobs_num"], 0);
        assert_eq!(sent["logprob_start_len"], -1);
    }

    #[test]
    fn finish_reasons_and_aborts() {
        let length = json!({"type": "length", "length": 4});
        assert_eq!(finish(&length).unwrap(), FinishReason::Length);
        let stop = json!({"type": "stop", "matched": 2});
        assert_eq!(finish(&stop).unwrap(), FinishReason::Stop);
        let aborts = [
            (Some(400), ErrorClass::InvalidRequest),
            (Some(500), ErrorClass::Internal),
            (Some(503), ErrorClass::Overloaded),
            (None, ErrorClass::Unavailable),
        ];
        for (status, class) in aborts {
            let abort = json!({"type": "abort", "message": "too long", "status_code": status});
            let error = finish(&abort).unwrap_err();
            assert_eq!(error.class(), class, "{status:?}");
            assert!(error.to_string().contains("too long"), "{error}");
        }
    }

    #[test]
    fn error_events_take_the_class_of_their_code() {
        let events = [
            (json!({"message": "bad"}), ErrorClass::InvalidRequest),
            (
                json!({"message": "bad", "code": 400}),
                ErrorClass::InvalidRequest,
            ),
            (
                json!({"message": "bad", "code": 503}),
                ErrorClass::Overloaded,
            ),
            (json!({"message": "bad", "code": 500}), ErrorClass::Internal),
            (
                json!({"message": "bad", "code": 42}),
                ErrorClass::InvalidRequest,
            ),
            (json!("bad"), ErrorClass::InvalidRequest),
        ];
        for (event, class) in events {
            let error = error_event(&event);
            assert_eq!(error.class(), class, "{event}");
            assert!(error.to_string().contains("bad"), "{error}");
        }
    }
}
