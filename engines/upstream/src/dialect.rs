//! What a server understands beyond OpenAI's `/v1/completions`, and the request body built
//! from a [`GenerateRequest`] for it, field by field.

use dynamo_core::{Delivery, Disaggregation, Error, GenerateRequest};
use serde_json::{Map, Value};

use crate::body::{Prompt, RequestBody};
use crate::codec::{OutputTokens, PromptFormat};
use crate::format::{FormatField, format_field};

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
        response_format: FormatField::OpenAi,
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

    /// The `/v1/completions` body for `request` as bytes: the fields of [`body`](Self::body).
    pub(crate) fn encode(
        &self,
        request: &GenerateRequest,
        model: &str,
        default_max_tokens: Option<u32>,
    ) -> Result<Vec<u8>, Error> {
        self.body(request, model, default_max_tokens)?
            .to_vec()
            .map_err(|error| Error::internal("cannot encode the request").with_source(error))
    }

    /// The `/v1/completions` body for `request`: streamed, with the usage in the last event,
    /// unless its client reads the answer whole ([`Delivery::Whole`]); and, when the request
    /// has an output format, its field in the server's form ([`Extensions::response_format`])
    /// with the schema's text as it came.
    fn body<'a>(
        &'a self,
        request: &'a GenerateRequest,
        model: &'a str,
        default_max_tokens: Option<u32>,
    ) -> Result<RequestBody<'a>, Error> {
        let ext = self.extensions;
        let model = match &request.lora_name {
            Some(lora) => {
                self.require(ext.lora_as_model, "a LoRA adapter (lora_name)")?;
                lora.as_str()
            }
            None => model,
        };
        let prompt = match &self.prompt {
            PromptFormat::TokenIds => Prompt::Ids(request.tokens.as_slice()),
            PromptFormat::Text(codec) => {
                let text = codec.decode(&request.tokens).map_err(|error| {
                    Error::internal("cannot decode the prompt to text").with_source(error)
                })?;
                Prompt::Text(text)
            }
        };
        let ids_request = matches!(
            self.output,
            OutputTokens::TokenIdsField | OutputTokens::TokenIdsOrRetokenize(_)
        )
        .then(|| (self.ids_request.0.as_str(), &self.ids_request.1));
        let sampling = &request.sampling;
        let stop = &request.stop;
        let mut body = RequestBody {
            extra: &self.extra,
            model,
            prompt,
            stream: request.delivery != Delivery::Whole,
            max_tokens: request.limits.max_tokens.or(default_max_tokens),
            ids_request,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: sampling.seed,
            presence_penalty: sampling.presence_penalty,
            frequency_penalty: sampling.frequency_penalty,
            top_k: self.extension("top_k", ext.top_k, sampling.top_k)?,
            min_p: self.extension("min_p", ext.min_p, sampling.min_p)?,
            repetition_penalty: self.extension(
                "repetition_penalty",
                ext.repetition_penalty,
                sampling.repetition_penalty,
            )?,
            logprobs: None,
            return_tokens_as_token_ids: false,
            stop_token_ids: &[],
            ignore_eos: false,
            min_tokens: None,
            cache_salt: None,
            format: None,
        };
        if let Some(top) = sampling.logprobs {
            if ext.token_id_logprobs {
                body.logprobs = Some(top);
                body.return_tokens_as_token_ids = true;
            } else if ext.chosen_logprobs {
                if top > 0 {
                    return Err(Error::invalid_request(format!(
                        "log-probabilities of alternative tokens (top_logprobs, or logprobs above \
                         0) are not supported by this {} upstream: it names them by their text, \
                         not by token id",
                        self.name
                    )));
                }
                body.logprobs = Some(1);
            } else {
                self.require(false, "logprobs (as token ids)")?;
            }
        }
        let stop_ids = (!stop.stop_token_ids.is_empty()).then_some(&stop.stop_token_ids[..]);
        body.stop_token_ids = self
            .extension("stop_token_ids", ext.stop_token_ids, stop_ids)?
            .unwrap_or_default();
        let ignore_eos = stop.ignore_eos.then_some(true);
        body.ignore_eos = self
            .extension("ignore_eos", ext.ignore_eos, ignore_eos)?
            .is_some();
        let min_tokens = request.limits.min_tokens;
        body.min_tokens = self.extension("min_tokens", ext.min_tokens, min_tokens)?;
        let salt = request.cache_salt.as_deref();
        body.cache_salt = self.extension("cache_salt", ext.cache_salt, salt)?;
        // Stop strings are matched by the gateway's detokenizer (core's `StopConditions`), so
        // they are not sent: the server would cut the text where the gateway cuts it anyway.
        if request.disaggregation != Disaggregation::None {
            return Err(Error::invalid_request(format!(
                "a {} server takes whole requests, not one phase of a disaggregated one",
                self.name
            )));
        }
        body.format = request
            .format
            .as_ref()
            .map(|format| format_field(ext.response_format, format, self.name))
            .transpose()?;
        Ok(body)
    }

    /// `value`, refused when the server does not take `field`.
    fn extension<T>(
        &self,
        field: &str,
        supported: bool,
        value: Option<T>,
    ) -> Result<Option<T>, Error> {
        if value.is_some() {
            self.require(supported, field)?;
        }
        Ok(value)
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

#[cfg(test)]
mod tests {
    use dynamo_core::{ErrorClass, OutputFormat, SamplingOptions};

    use serde_json::json;

    use super::*;

    /// The body `dialect` sends for `request`, read back.
    fn sent(
        dialect: &Dialect,
        request: &GenerateRequest,
        model: &str,
        default_max_tokens: Option<u32>,
    ) -> Result<Value, Error> {
        let bytes = dialect.encode(request, model, default_max_tokens)?;
        Ok(serde_json::from_slice(&bytes).expect("the body is JSON"))
    }

    #[test]
    fn vllm_gets_every_field_and_openai_refuses_extensions() {
        let mut request = GenerateRequest::new("r", "m", vec![1, 2, 3])
            .with_max_tokens(8)
            .with_stop_tokens(vec![2])
            .with_sampling(SamplingOptions {
                temperature: Some(0.5),
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
        let body = sent(&vllm, &request, "served", None).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "served", "prompt": [1, 2, 3], "stream": true,
                "stream_options": {"include_usage": true}, "max_tokens": 8,
                "return_token_ids": true, "temperature": 0.5, "seed": 7, "top_k": 20,
                "min_p": 0.1f32, "repetition_penalty": 1.1f32, "stop_token_ids": [2],
                "ignore_eos": true, "min_tokens": 2
            })
        );
        let error = sent(&Dialect::openai(), &request, "m", None).unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("top_k"), "{error}");
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
        let body = sent(&chosen, &scored(0), "m", None).unwrap();
        // The server reads `logprobs: 0` as none.
        assert_eq!(body["logprobs"], 1);
        assert!(body.get("return_tokens_as_token_ids").is_none());
        assert!(chosen.scores_beside_ids(&scored(0)));
        assert!(!chosen.scores_beside_ids(&GenerateRequest::new("r", "m", vec![1])));
        let error = sent(&chosen, &scored(2), "m", None).unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("top_logprobs"), "{error}");
        // vLLM's ids win over the chosen-only reading.
        let vllm = Dialect::openai().extensions(Extensions {
            chosen_logprobs: true,
            ..Extensions::VLLM
        });
        let body = sent(&vllm, &scored(2), "m", None).unwrap();
        assert_eq!(
            (
                body["logprobs"].clone(),
                body["return_tokens_as_token_ids"].clone()
            ),
            (json!(2), json!(true))
        );
        assert!(!vllm.scores_beside_ids(&scored(2)));
        assert!(sent(&Dialect::openai(), &scored(0), "m", None).is_err());
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
        // The schema's text as it came: its properties keep their order.
        let expected = format!(
            r#"{{"model":"served","prompt":[1,2],"stream":false,"max_tokens":4,"response_format":{{"type":"json_schema","json_schema":{{"name":"output","schema":{schema}}}}}}}"#
        );
        assert_eq!(sent, expected);
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
    fn the_body_is_written_in_a_fixed_order_with_the_values_widened() {
        let mut request = GenerateRequest::new("r", "m", vec![7, 8])
            .with_max_tokens(3)
            .with_stop_tokens(vec![2])
            .with_sampling(SamplingOptions {
                temperature: Some(0.5),
                min_p: Some(0.1),
                seed: Some(1),
                logprobs: Some(2),
                ..Default::default()
            });
        request.cache_salt = Some("a\"b".into());
        let vllm = Dialect::openai()
            .extensions(Extensions::VLLM)
            .output(OutputTokens::TokenIdsField)
            .with_field("priority", json!(3))
            .with_field("max_tokens", json!(99));
        let sent = String::from_utf8(vllm.encode(&request, "served", None).unwrap()).unwrap();
        // The fixed fields first, but for one the body writes itself (its value wins); an `f32`
        // as the `f64` it widens to, as when the body was a map of `serde_json` values.
        assert_eq!(
            sent,
            r#"{"priority":3,"model":"served","prompt":[7,8],"stream":true,"stream_options":{"include_usage":true},"max_tokens":3,"return_token_ids":true,"temperature":0.5,"seed":1,"min_p":0.10000000149011612,"logprobs":2,"return_tokens_as_token_ids":true,"stop_token_ids":[2],"cache_salt":"a\"b"}"#
        );
    }

    #[test]
    fn lora_salt_and_phases_are_refused_where_unsupported() {
        let mut request = GenerateRequest::new("r", "m", vec![1]);
        request.lora_name = Some("adapter".into());
        let vllm = Dialect::openai().extensions(Extensions::VLLM);
        assert_eq!(
            sent(&vllm, &request, "m", None).unwrap()["model"],
            "adapter"
        );
        assert!(sent(&Dialect::openai(), &request, "m", None).is_err());
        let mut request = GenerateRequest::new("r", "m", vec![1]);
        request.cache_salt = Some("tenant".into());
        assert!(sent(&Dialect::openai(), &request, "m", None).is_err());
        assert_eq!(
            sent(&vllm, &request, "m", Some(4)).unwrap()["max_tokens"],
            4
        );
    }
}
