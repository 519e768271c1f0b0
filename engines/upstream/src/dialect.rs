//! What a server understands beyond OpenAI's `/v1/completions`, and the request body built
//! from a [`GenerateRequest`] for it, field by field.

use dynamo_core::{Delivery, Disaggregation, Error, GenerateRequest};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::codec::{OutputTokens, PromptFormat};
use crate::format::{FormatField, format_field};
use crate::number::json_float;

/// The request fields beyond OpenAI's that a server accepts, each named as vLLM names it.
///
/// A request that sets a field its server does not accept is refused with
/// [`Error::InvalidRequest`] naming the field; nothing is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `top_k`.
    pub top_k: bool,
    /// `min_p`.
    pub min_p: bool,
    /// `repetition_penalty`.
    pub repetition_penalty: bool,
    /// `stop_token_ids`.
    pub stop_token_ids: bool,
    /// `ignore_eos`.
    pub ignore_eos: bool,
    /// `min_tokens`.
    pub min_tokens: bool,
    /// `cache_salt`.
    pub cache_salt: bool,
    /// A LoRA adapter is served under its own model name, so `lora_name` goes in `model`.
    pub lora_as_model: bool,
    /// `logprobs` answered with token ids (`"return_tokens_as_token_ids": true`, tokens
    /// written `token_id:N`).
    pub token_id_logprobs: bool,
    /// `logprobs` answered with tokens as text (TensorRT-LLM): only each chosen token's
    /// log-probability is read, by its place beside the choice's `token_ids`. Alternatives are
    /// refused, since their text does not say which token id is meant; `logprobs` is sent as 1,
    /// since such a server reads 0 as none. Ignored when
    /// [`token_id_logprobs`](Self::token_id_logprobs) is set.
    pub chosen_logprobs: bool,
    /// `prompt_logprobs` (vLLM's): the prompt's log-probabilities, read from a whole answer's
    /// `choices[0].prompt_logprobs` (vLLM refuses them streamed, and so does the adapter).
    pub prompt_logprobs: bool,
    /// How an output format ([`GenerateRequest::format`]) is sent, for the server to enforce;
    /// [`FormatField::Refused`] (the default) refuses a request with one, since a server that
    /// ignores the field would answer unconstrained.
    pub response_format: FormatField,
}

impl Extensions {
    /// Every extension vLLM's OpenAI-compatible server accepts.
    pub const VLLM: Extensions = Extensions {
        top_k: true,
        min_p: true,
        repetition_penalty: true,
        stop_token_ids: true,
        ignore_eos: true,
        min_tokens: true,
        cache_salt: true,
        lora_as_model: true,
        token_id_logprobs: true,
        chosen_logprobs: false,
        prompt_logprobs: true,
        response_format: FormatField::Vllm,
    };
}

/// How to speak to one kind of server.
///
/// ```
/// use dynamo_upstream::{Dialect, Extensions};
///
/// let plain = Dialect::openai();           // OpenAI's fields only, text out
/// let vllm = Dialect::openai().named("vLLM").extensions(Extensions::VLLM);
/// assert_eq!(vllm.name(), "vLLM");
/// # let _ = plain;
/// ```
#[derive(Debug, Clone)]
pub struct Dialect {
    name: &'static str,
    extensions: Extensions,
    prompt: PromptFormat,
    output: OutputTokens,
    /// The field (and value) that asks for `token_ids` in the answer.
    ids_request: (String, Value),
    extra: Map<String, Value>,
}

impl Dialect {
    /// OpenAI's `/v1/completions` and nothing more: token-id prompts, text out
    /// ([`OutputTokens::TextOnly`] until [`output`](Self::output) says otherwise).
    pub fn openai() -> Self {
        Dialect {
            name: "OpenAI-compatible",
            extensions: Extensions::default(),
            prompt: PromptFormat::TokenIds,
            output: OutputTokens::TextOnly,
            ids_request: ("return_token_ids".to_owned(), Value::Bool(true)),
            extra: Map::new(),
        }
    }

    /// Name the server kind in error messages.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Accept these extension fields.
    pub fn extensions(mut self, extensions: Extensions) -> Self {
        self.extensions = extensions;
        self
    }

    /// Send prompts this way.
    pub fn prompt(mut self, prompt: PromptFormat) -> Self {
        self.prompt = prompt;
        self
    }

    /// Take generated ids from here.
    pub fn output(mut self, output: OutputTokens) -> Self {
        self.output = output;
        self
    }

    /// With [`OutputTokens::TokenIdsField`] (or [`TokenIdsOrRetokenize`](OutputTokens::TokenIdsOrRetokenize)), ask for the ids with this field and value
    /// instead of vLLM's `"return_token_ids": true` (TensorRT-LLM: `"detokenize": false`).
    pub fn token_ids_request(mut self, field: impl Into<String>, value: Value) -> Self {
        self.ids_request = (field.into(), value);
        self
    }

    /// Add a fixed field to every request body (for example a server-specific flag).
    pub fn with_field(mut self, name: impl Into<String>, value: Value) -> Self {
        self.extra.insert(name.into(), value);
        self
    }

    /// The server kind, as named in messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn output_tokens(&self) -> &OutputTokens {
        &self.output
    }

    /// Whether the answer to `request` carries only the chosen tokens' log-probabilities, to be
    /// read beside its token ids ([`Extensions::chosen_logprobs`]).
    pub(crate) fn scores_beside_ids(&self, request: &GenerateRequest) -> bool {
        let ext = self.extensions;
        ext.chosen_logprobs && !ext.token_id_logprobs && request.sampling.logprobs.is_some()
    }

    /// The `/v1/completions` body for `request` as bytes: the fields of [`body`](Self::body)
    /// and, when the request has an output format, its field in the server's form
    /// ([`Extensions::response_format`]) with the schema's text as it came.
    pub(crate) fn encode(
        &self,
        request: &GenerateRequest,
        model: &str,
        default_max_tokens: Option<u32>,
    ) -> Result<Vec<u8>, Error> {
        let fields = self.body(request, model, default_max_tokens)?;
        let format = request
            .format
            .as_ref()
            .map(|format| format_field(self.extensions.response_format, format, self.name))
            .transpose()?;
        let body = Body {
            fields: &fields,
            format: format.as_ref().map(|(name, value)| (*name, &**value)),
        };
        serde_json::to_vec(&body)
            .map_err(|error| Error::internal("cannot encode the request").with_source(error))
    }

    /// The `/v1/completions` body for `request`: streamed, with the usage in the last event,
    /// unless its client reads the answer whole ([`Delivery::Whole`]).
    pub(crate) fn body(
        &self,
        request: &GenerateRequest,
        model: &str,
        default_max_tokens: Option<u32>,
    ) -> Result<Map<String, Value>, Error> {
        let ext = self.extensions;
        let mut body = self.extra.clone();
        let model = match &request.lora_name {
            Some(lora) => {
                self.require(ext.lora_as_model, "a LoRA adapter (lora_name)")?;
                lora.as_str()
            }
            None => model,
        };
        body.insert("model".into(), json!(model));
        let prompt = match &self.prompt {
            PromptFormat::TokenIds => json!(request.tokens.as_slice()),
            PromptFormat::Text(codec) => {
                let text = codec.decode(&request.tokens).map_err(|error| {
                    Error::internal("cannot decode the prompt to text").with_source(error)
                })?;
                json!(text)
            }
        };
        body.insert("prompt".into(), prompt);
        if request.delivery == Delivery::Whole {
            body.insert("stream".into(), json!(false));
        } else {
            body.insert("stream".into(), json!(true));
            body.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        if let Some(max) = request.limits.max_tokens.or(default_max_tokens) {
            body.insert("max_tokens".into(), json!(max));
        }
        if matches!(
            self.output,
            OutputTokens::TokenIdsField | OutputTokens::TokenIdsOrRetokenize(_)
        ) {
            let (field, value) = &self.ids_request;
            body.insert(field.clone(), value.clone());
        }
        let sampling = &request.sampling;
        // The floats as the client wrote them (`json_float`), not widened to the nearest f64.
        let float = |value: Option<f32>| value.map(json_float);
        put(&mut body, "temperature", float(sampling.temperature));
        put(&mut body, "top_p", float(sampling.top_p));
        put(&mut body, "seed", sampling.seed);
        put(
            &mut body,
            "presence_penalty",
            float(sampling.presence_penalty),
        );
        put(
            &mut body,
            "frequency_penalty",
            float(sampling.frequency_penalty),
        );
        self.extension(&mut body, "top_k", ext.top_k, sampling.top_k)?;
        self.extension(&mut body, "min_p", ext.min_p, float(sampling.min_p))?;
        let repetition = float(sampling.repetition_penalty);
        self.extension(
            &mut body,
            "repetition_penalty",
            ext.repetition_penalty,
            repetition,
        )?;
        if let Some(top) = sampling.logprobs {
            if ext.token_id_logprobs {
                body.insert("logprobs".into(), json!(top));
                body.insert("return_tokens_as_token_ids".into(), json!(true));
            } else if ext.chosen_logprobs {
                if top > 0 {
                    return Err(Error::invalid_request(format!(
                        "log-probabilities of alternative tokens (top_logprobs, or logprobs above \
                         0) are not supported by this {} upstream: it names them by their text, \
                         not by token id",
                        self.name
                    )));
                }
                body.insert("logprobs".into(), json!(1));
            } else {
                self.require(false, "logprobs (as token ids)")?;
            }
        }
        if let Some(top) = sampling.prompt_logprobs {
            self.require(ext.prompt_logprobs, "prompt_logprobs")?;
            if request.delivery != Delivery::Whole {
                return Err(Error::invalid_request(format!(
                    "prompt_logprobs come only with a whole answer: a {} server does not \
                     stream them",
                    self.name
                )));
            }
            body.insert("prompt_logprobs".into(), json!(top));
        }
        let stop = &request.stop;
        let stop_ids = (!stop.stop_token_ids.is_empty()).then_some(&stop.stop_token_ids);
        self.extension(&mut body, "stop_token_ids", ext.stop_token_ids, stop_ids)?;
        let ignore_eos = stop.ignore_eos.then_some(true);
        self.extension(&mut body, "ignore_eos", ext.ignore_eos, ignore_eos)?;
        let min_tokens = request.limits.min_tokens;
        self.extension(&mut body, "min_tokens", ext.min_tokens, min_tokens)?;
        let salt = request.cache_salt.as_deref();
        self.extension(&mut body, "cache_salt", ext.cache_salt, salt)?;
        // Stop strings are matched by the gateway's detokenizer (core's `StopConditions`), so
        // they are not sent: the server would cut the text where the gateway cuts it anyway.
        if request.disaggregation != Disaggregation::None {
            return Err(Error::invalid_request(format!(
                "a {} server takes whole requests, not one phase of a disaggregated one",
                self.name
            )));
        }
        Ok(body)
    }

    fn extension<T: serde::Serialize>(
        &self,
        body: &mut Map<String, Value>,
        field: &str,
        supported: bool,
        value: Option<T>,
    ) -> Result<(), Error> {
        if let Some(value) = value {
            self.require(supported, field)?;
            body.insert(field.into(), json!(value));
        }
        Ok(())
    }

    fn require(&self, supported: bool, what: &str) -> Result<(), Error> {
        if supported {
            Ok(())
        } else {
            Err(Error::invalid_request(format!(
                "{what} is not supported by this {} upstream",
                self.name
            )))
        }
    }
}

/// A request body: its fields, then the output format's field, its value written as its own
/// text.
struct Body<'a> {
    fields: &'a Map<String, Value>,
    format: Option<(&'static str, &'a RawValue)>,
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let extra = usize::from(self.format.is_some());
        let mut map = serializer.serialize_map(Some(self.fields.len() + extra))?;
        for (name, value) in self.fields {
            map.serialize_entry(name, value)?;
        }
        if let Some((name, value)) = self.format {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

fn put<T: serde::Serialize>(body: &mut Map<String, Value>, field: &str, value: Option<T>) {
    if let Some(value) = value {
        body.insert(field.into(), json!(value));
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::{ErrorClass, OutputFormat, SamplingOptions};

    use super::*;

    #[test]
    fn vllm_gets_every_field_and_openai_refuses_extensions() {
        let mut request = GenerateRequest::new("r", "m", vec![1, 2, 3])
            .with_max_tokens(8)
            .with_stop_tokens(vec![2])
            .with_sampling(SamplingOptions {
                temperature: Some(0.7),
                top_k: Some(20),
                min_p: Some(0.1),
                repetition_penalty: Some(1.1),
                seed: Some(7),
                ..Default::default()
            });
        request.stop.ignore_eos = true;
        request.limits.min_tokens = Some(2);
        let vllm = Dialect::openai()
            .named("vLLM")
            .extensions(Extensions::VLLM)
            .output(OutputTokens::TokenIdsField);
        let body = Value::Object(vllm.body(&request, "served", None).unwrap());
        assert_eq!(
            body,
            json!({
                "model": "served", "prompt": [1, 2, 3], "stream": true,
                "stream_options": {"include_usage": true}, "max_tokens": 8,
                "return_token_ids": true, "temperature": 0.7, "seed": 7, "top_k": 20,
                "min_p": 0.1, "repetition_penalty": 1.1, "stop_token_ids": [2],
                "ignore_eos": true, "min_tokens": 2
            })
        );
        let error = Dialect::openai().body(&request, "m", None).unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("top_k"), "{error}");
    }

    #[test]
    fn prompt_logprobs_go_to_vllm_with_a_whole_answer_and_are_refused_elsewhere() {
        let mut request =
            GenerateRequest::new("r", "m", vec![1, 2]).with_sampling(SamplingOptions {
                prompt_logprobs: Some(3),
                ..Default::default()
            });
        request.delivery = Delivery::Whole;
        let vllm = Dialect::openai().extensions(Extensions::VLLM);
        assert_eq!(
            vllm.body(&request, "m", None).unwrap()["prompt_logprobs"],
            3
        );
        let error = Dialect::openai().body(&request, "m", None).unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("prompt_logprobs"), "{error}");
        request.delivery = Delivery::Streamed;
        let error = vllm.body(&request, "m", None).unwrap_err();
        assert!(error.to_string().contains("whole answer"), "{error}");
    }

    #[test]
    fn chosen_logprobs_ask_for_one_and_refuse_alternatives() {
        let chosen = Dialect::openai()
            .named("TensorRT-LLM")
            .extensions(Extensions {
                chosen_logprobs: true,
                ..Extensions::default()
            });
        let scored = |top| {
            GenerateRequest::new("r", "m", vec![1]).with_sampling(SamplingOptions {
                logprobs: Some(top),
                ..Default::default()
            })
        };
        let body = chosen.body(&scored(0), "m", None).unwrap();
        // The server reads `logprobs: 0` as none.
        assert_eq!(body["logprobs"], 1);
        assert!(body.get("return_tokens_as_token_ids").is_none());
        assert!(chosen.scores_beside_ids(&scored(0)));
        assert!(!chosen.scores_beside_ids(&GenerateRequest::new("r", "m", vec![1])));
        let error = chosen.body(&scored(2), "m", None).unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("top_logprobs"), "{error}");
        // vLLM's ids win over the chosen-only reading.
        let vllm = Dialect::openai().extensions(Extensions {
            chosen_logprobs: true,
            ..Extensions::VLLM
        });
        let body = vllm.body(&scored(2), "m", None).unwrap();
        assert_eq!(
            (
                body["logprobs"].clone(),
                body["return_tokens_as_token_ids"].clone()
            ),
            (json!(2), json!(true))
        );
        assert!(!vllm.scores_beside_ids(&scored(2)));
        assert!(Dialect::openai().body(&scored(0), "m", None).is_err());
    }

    #[test]
    fn an_output_format_is_sent_byte_for_byte_or_refused() {
        let schema = r#"{"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}"#;
        let mut request = GenerateRequest::new("r", "m", vec![1, 2]).with_max_tokens(4);
        request.delivery = Delivery::Whole;
        request.format = Some(OutputFormat::JsonSchema {
            schema: schema.into(),
        });
        let vllm = Dialect::openai().extensions(Extensions::VLLM);
        let sent = String::from_utf8(vllm.encode(&request, "served", None).unwrap()).unwrap();
        // The schema's text as it came: its properties keep their order. (The body's own keys
        // are compared as values: their order depends on serde_json's `preserve_order`, which
        // the workspace's other crates turn on.)
        let field = format!(
            r#""response_format":{{"type":"json_schema","json_schema":{{"name":"output","schema":{schema}}}}}"#
        );
        assert!(sent.contains(&field), "{sent}");
        let parsed: Value = serde_json::from_str(&sent).unwrap();
        let mut rest = parsed.as_object().unwrap().clone();
        rest.remove("response_format");
        assert_eq!(
            Value::Object(rest),
            json!({"max_tokens": 4, "model": "served", "prompt": [1, 2], "stream": false})
        );
        request.format = Some(OutputFormat::JsonObject);
        let sent: Value =
            serde_json::from_slice(&vllm.encode(&request, "m", None).unwrap()).unwrap();
        assert_eq!(sent["response_format"], json!({"type": "json_object"}));
        // A server that takes no format refuses it rather than answer without it.
        let error = Dialect::openai().encode(&request, "m", None).unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("response_format"), "{error}");
        // Without a format, no field.
        request.format = None;
        let sent: Value =
            serde_json::from_slice(&vllm.encode(&request, "m", None).unwrap()).unwrap();
        assert!(sent.get("response_format").is_none());
    }

    #[test]
    fn lora_salt_and_phases_are_refused_where_unsupported() {
        let mut request = GenerateRequest::new("r", "m", vec![1]);
        request.lora_name = Some("adapter".into());
        let vllm = Dialect::openai().extensions(Extensions::VLLM);
        assert_eq!(vllm.body(&request, "m", None).unwrap()["model"], "adapter");
        assert!(Dialect::openai().body(&request, "m", None).is_err());
        let mut request = GenerateRequest::new("r", "m", vec![1]);
        request.cache_salt = Some("tenant".into());
        assert!(Dialect::openai().body(&request, "m", None).is_err());
        assert_eq!(vllm.body(&request, "m", Some(4)).unwrap()["max_tokens"], 4);
    }
}
