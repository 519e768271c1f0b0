//! SGLang's native `/generate`: the request body built from a [`GenerateRequest`], and the
//! parts of its answers the engine reads (`python/sglang/srt/managers/io_struct.py`
//! `GenerateReqInput`, `python/sglang/srt/sampling/sampling_params.py`,
//! `python/sglang/srt/entrypoints/http_server.py`).

use dynamo_core::{Delivery, Disaggregation, Error, FinishReason, GenerateRequest, Token, Usage};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The `/generate` body for `request`, with request id `rid`: streamed, unless its client reads
/// the answer whole ([`Delivery::Whole`]).
///
/// # Errors
///
/// [`Error::InvalidRequest`] for what SGLang's `/generate` does not take: a seed (not every
/// version has `sampling_seed`), log-probabilities (returned in another shape, not mapped
/// yet), a cache salt, or one phase of a disaggregated request.
pub(crate) fn body(request: &GenerateRequest, rid: &str) -> Result<Map<String, Value>, Error> {
    let refuse = |what: &str| {
        Err(Error::invalid_request(format!(
            "{what} is not supported by this SGLang upstream"
        )))
    };
    let sampling = &request.sampling;
    if sampling.seed.is_some() {
        return refuse("seed");
    }
    if sampling.logprobs.is_some() {
        return refuse("logprobs");
    }
    if request.cache_salt.is_some() {
        return refuse("cache_salt");
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
            put(name, json!(value));
        }
    }
    if let Some(top_k) = sampling.top_k {
        put("top_k", json!(top_k));
    }
    if !request.stop.stop_token_ids.is_empty() {
        put("stop_token_ids", json!(request.stop.stop_token_ids));
    }
    if request.stop.ignore_eos {
        put("ignore_eos", json!(true));
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
    Ok(body)
}

/// One streamed answer event, or an error.
#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    #[serde(default)]
    pub(crate) output_ids: Option<Vec<Token>>,
    #[serde(default)]
    pub(crate) meta_info: Option<MetaInfo>,
    #[serde(default)]
    pub(crate) error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MetaInfo {
    #[serde(default)]
    pub(crate) finish_reason: Option<Value>,
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    pub(crate) completion_tokens: Option<u32>,
    #[serde(default)]
    cached_tokens: u32,
}

impl MetaInfo {
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
/// `{"type": "abort", "message": …, "status_code": …}`, which is an error.
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
                .and_then(|code| u16::try_from(code).ok())
                .unwrap_or(503);
            let body = json!({ "error": { "message": message } }).to_string();
            Err(dynamo_upstream::error_from_status(
                status,
                None,
                body.as_bytes(),
            ))
        }
        _ => Ok(FinishReason::Stop),
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
                temperature: Some(0.5),
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
                   "temperature": 0.5, "top_k": 8, "stop_token_ids": [2]}})
        );
        request.sampling.seed = Some(1);
        let error = body(&request, "r-2").unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("seed"));
    }

    #[test]
    fn finish_reasons_and_aborts() {
        let length = json!({"type": "length", "length": 4});
        assert_eq!(finish(&length).unwrap(), FinishReason::Length);
        let stop = json!({"type": "stop", "matched": 2});
        assert_eq!(finish(&stop).unwrap(), FinishReason::Stop);
        let abort = json!({"type": "abort", "message": "too long", "status_code": 400});
        assert_eq!(
            finish(&abort).unwrap_err().class(),
            ErrorClass::InvalidRequest
        );
    }
}
