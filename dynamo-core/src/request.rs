//! What a client asks an engine to generate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::disagg::Disaggregation;
use crate::error::Error;
use crate::format::OutputFormat;
use crate::hash::BlockHasher;
use crate::tokens::{BlockSize, Token, Tokens};

/// The id of one request, unique among the requests in flight; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// A request id from any string.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        RequestId(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RequestId {
    fn from(id: &str) -> Self {
        RequestId::new(id)
    }
}

impl From<String> for RequestId {
    fn from(id: String) -> Self {
        RequestId::new(id)
    }
}

/// How the next token is chosen. `None` fields take the engine's default.
///
/// Build one with struct update syntax: `SamplingOptions { temperature: Some(0.7),
/// ..Default::default() }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingOptions {
    /// Softmax temperature; `0.0` means greedy decoding.
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`,
    /// in `(0, 1]`.
    pub top_p: Option<f32>,
    /// Keep only the `top_k` most likely tokens; at least 1.
    pub top_k: Option<u32>,
    /// Drop tokens whose probability is below `min_p` times the most likely one's, in `[0, 1]`.
    pub min_p: Option<f32>,
    /// Seed of the sampler, for reproducible sampling.
    pub seed: Option<u64>,
    /// OpenAI presence penalty, in `[-2, 2]`.
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty, in `[-2, 2]`.
    pub frequency_penalty: Option<f32>,
    /// Multiplicative repetition penalty (vLLM's `repetition_penalty`); greater than 0.
    pub repetition_penalty: Option<f32>,
    /// Return the log-probability of each sampled token and of this many most likely
    /// alternatives (`Some(0)`: the sampled token only).
    pub logprobs: Option<u32>,
    /// Return the log-probability of each prompt token after the first (given the tokens
    /// before it) and of this many most likely alternatives, in
    /// [`TokenChunk::prompt_log_probs`](crate::TokenChunk::prompt_log_probs). The candle
    /// engine computes them and the echo engine makes synthetic ones; the others leave them out
    /// (the gateway asks only models it was told compute them).
    pub prompt_logprobs: Option<u32>,
}

/// When generation stops, besides the output limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StopConditions {
    /// Token ids that end generation when sampled; the stop token itself is not returned.
    pub stop_token_ids: Vec<Token>,
    /// Strings that end generation when they appear in the text; matched by the frontend's
    /// detokenizer, since engines see only token ids.
    pub stop_strings: Vec<String>,
    /// Keep generating past the model's end-of-sequence token.
    pub ignore_eos: bool,
}

/// Bounds on the number of generated tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputLimits {
    /// Generate at most this many tokens; at least 1. `None` means until a stop condition or
    /// the model's context length.
    pub max_tokens: Option<u32>,
    /// Do not stop (on end-of-sequence or stop tokens) before this many tokens.
    pub min_tokens: Option<u32>,
}

/// Hints that help the router place the request; an engine may ignore them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoutingHints {
    /// Requests of one session (a conversation) prefer the worker that served the previous one.
    pub session_id: Option<String>,
    /// Scheduling priority; lower values are served first, as in vLLM. Default 0.
    pub priority: i32,
    /// The expected number of output tokens, for load prediction.
    pub expected_output_tokens: Option<u32>,
    /// Keep this request's prefix cached for at least this long after it finishes.
    pub cache_pin_ttl: Option<Duration>,
}

/// How the client reads the answer: a hint for engines that can produce it either way.
///
/// Every engine still answers with a [`TokenStream`](crate::TokenStream); the hint only lets an
/// engine over another server (an upstream adapter) ask that server for the whole answer in
/// one response instead of streaming it, which costs both sides less when nobody reads the
/// tokens as they come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Token by token, as they are generated (the default).
    #[default]
    Streamed,
    /// All at once, when the answer is complete: an engine may send it in one chunk.
    Whole,
}

/// A request to generate tokens from a prompt of token ids.
///
/// The prompt is a [`Tokens`], so the request is cheap to clone and pass through layers. Every
/// request carries a [`CancellationToken`]: cancelling it stops the work, and dropping the
/// [`TokenStream`](crate::TokenStream) of the response cancels it too.
///
/// ```
/// use dynamo_core::{GenerateRequest, SamplingOptions};
///
/// let request = GenerateRequest::new("req-1", "smollm2", vec![1, 2, 3])
///     .with_max_tokens(16)
///     .with_sampling(SamplingOptions { temperature: Some(0.0), ..Default::default() });
/// request.validate()?;
/// assert_eq!(request.limits.max_tokens, Some(16));
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The request id.
    pub id: RequestId,
    /// The model (or model alias) the request is for.
    pub model: String,
    /// The prompt's token ids.
    pub tokens: Tokens,
    /// How tokens are sampled.
    #[serde(default)]
    pub sampling: SamplingOptions,
    /// When generation stops.
    #[serde(default)]
    pub stop: StopConditions,
    /// Bounds on the output length.
    #[serde(default)]
    pub limits: OutputLimits,
    /// Hints for the router.
    #[serde(default)]
    pub routing: RoutingHints,
    /// The LoRA adapter to serve the request with, if any; part of every block hash.
    #[serde(default)]
    pub lora_name: Option<String>,
    /// A cache namespace (for example a tenant): blocks are shared only within one salt.
    #[serde(default)]
    pub cache_salt: Option<String>,
    /// Which phase of a disaggregated request to run; [`Disaggregation::None`] (the whole
    /// request) unless a disaggregated router set it.
    #[serde(default, skip_serializing_if = "is_whole")]
    pub disaggregation: Disaggregation,
    /// How long the request may take, counted from when each hop receives it; `None`: no
    /// limit. A relative budget rather than an instant, so that it crosses processes: the
    /// deadline layer of [`layers`](crate::layers) enforces it, and sets it to what is left
    /// before passing the request on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// A format the answer must follow (a JSON schema, say), enforced while sampling; `None`:
    /// free text. Engines that cannot enforce it refuse the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat>,
    /// How many of the prompt's last tokens this request generated already: a continuation on
    /// another worker (after a migration, or a disaggregated prefill) carries its output so far
    /// at the end of its prompt, and an output format's grammar reads them before generating
    /// more. 0 for a fresh request.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumed_tokens: u32,
    /// How many choices (independent answers to the same prompt) to generate; at least 1.
    /// An engine that forks computes the prompt once and streams every choice on the one
    /// stream, each chunk tagged with its [`TokenChunk::index`](crate::TokenChunk::index).
    /// An engine that does not fork ignores `n` and streams one choice: a frontend that knows
    /// its engine does not fork asks it once per choice instead.
    ///
    /// A field of the request rather than of [`SamplingOptions`], whose struct literals callers
    /// write out in full.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub n: u32,
    /// How the client reads the answer ([`Delivery::Streamed`] unless the frontend knows it
    /// reads the whole answer at once); a hint, which engines may ignore.
    #[serde(default, skip_serializing_if = "is_streamed")]
    pub delivery: Delivery,
    #[serde(skip)]
    cancel: CancellationToken,
    /// A token per choice, where the frontend may end one choice alone
    /// ([`choice_tokens`](Self::choice_tokens)); empty otherwise.
    #[serde(skip)]
    choice_cancels: Arc<[CancellationToken]>,
}

impl GenerateRequest {
    /// A request with default options and a fresh cancellation token.
    pub fn new(
        id: impl Into<RequestId>,
        model: impl Into<String>,
        tokens: impl Into<Tokens>,
    ) -> Self {
        GenerateRequest {
            id: id.into(),
            model: model.into(),
            tokens: tokens.into(),
            sampling: SamplingOptions::default(),
            stop: StopConditions::default(),
            limits: OutputLimits::default(),
            routing: RoutingHints::default(),
            lora_name: None,
            cache_salt: None,
            disaggregation: Disaggregation::None,
            timeout: None,
            format: None,
            resumed_tokens: 0,
            n: 1,
            delivery: Delivery::Streamed,
            cancel: CancellationToken::new(),
            choice_cancels: Arc::from([]),
        }
    }

    /// Set the maximum number of generated tokens.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.limits.max_tokens = Some(max_tokens);
        self
    }

    /// Set the sampling options.
    pub fn with_sampling(mut self, sampling: SamplingOptions) -> Self {
        self.sampling = sampling;
        self
    }

    /// Set the stop token ids.
    pub fn with_stop_tokens(mut self, tokens: impl Into<Vec<Token>>) -> Self {
        self.stop.stop_token_ids = tokens.into();
        self
    }

    /// Ask for `n` choices (see [`GenerateRequest::n`]).
    pub fn with_n(mut self, n: u32) -> Self {
        self.n = n;
        self
    }

    /// Set the routing hints.
    pub fn with_routing(mut self, routing: RoutingHints) -> Self {
        self.routing = routing;
        self
    }

    /// Give the request at most `timeout` to finish (see [`GenerateRequest::timeout`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Replace the cancellation token, for example with a child of a connection's token so
    /// that closing the connection cancels every request on it.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// The request's cancellation token. Engines watch it; cancelling it stops the work.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the request has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Give each of the request's [`n`](Self::n) choices a cancellation token of its own, kept
    /// in the request, and return them: a frontend that ends a choice itself (a stop string it
    /// matched) cancels that choice's token, and an engine that forks stops that choice alone
    /// ([`choice_cancellation`](Self::choice_cancellation)). The request's own token still
    /// stops every choice. Local to a process, as that token is.
    ///
    /// ```
    /// use dynamo_core::GenerateRequest;
    ///
    /// let mut request = GenerateRequest::new("req-1", "smollm2", vec![1, 2, 3]).with_n(2);
    /// let choices = request.choice_tokens();
    /// choices[1].cancel();
    /// assert!(request.choice_cancellation(1).is_some_and(|token| token.is_cancelled()));
    /// assert!(!request.is_cancelled() && request.choice_cancellation(2).is_none());
    /// ```
    pub fn choice_tokens(&mut self) -> Arc<[CancellationToken]> {
        self.choice_cancels = (0..self.n).map(|_| CancellationToken::new()).collect();
        self.choice_cancels.clone()
    }

    /// The token of the choice `index`, where [`choice_tokens`](Self::choice_tokens) made one.
    pub fn choice_cancellation(&self, index: u32) -> Option<&CancellationToken> {
        self.choice_cancels.get(index as usize)
    }

    /// The block hasher for this request: `block_size`, with the request's LoRA adapter and
    /// cache salt folded into the seed.
    pub fn block_hasher(&self, block_size: BlockSize) -> BlockHasher {
        let hasher = BlockHasher::new(block_size);
        let hasher = match &self.lora_name {
            Some(name) => hasher.with_lora(name),
            None => hasher,
        };
        match &self.cache_salt {
            Some(salt) => hasher.with_salt(salt),
            None => hasher,
        }
    }

    /// Check the request against the limits every engine shares.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] naming the first field that is out of range: an empty prompt,
    /// `max_tokens` of 0, `min_tokens` above `max_tokens`, `n` of 0, or a sampling value
    /// outside its documented range.
    pub fn validate(&self) -> Result<(), Error> {
        if self.tokens.is_empty() {
            return Err(Error::invalid_request(
                "the prompt must hold at least one token",
            ));
        }
        if self.limits.max_tokens == Some(0) {
            return Err(Error::invalid_request("max_tokens must be at least 1"));
        }
        if let (Some(min), Some(max)) = (self.limits.min_tokens, self.limits.max_tokens)
            && min > max
        {
            return Err(Error::invalid_request(format!(
                "min_tokens ({min}) must not exceed max_tokens ({max})"
            )));
        }
        if self.n == 0 {
            return Err(Error::invalid_request("n must be at least 1"));
        }
        self.sampling.validate()
    }
}

impl SamplingOptions {
    /// Check every set value against its documented range.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), Error> {
        check("temperature", self.temperature, |t| t >= 0.0, "at least 0")?;
        check("top_p", self.top_p, |p| p > 0.0 && p <= 1.0, "in (0, 1]")?;
        check(
            "min_p",
            self.min_p,
            |p| (0.0..=1.0).contains(&p),
            "in [0, 1]",
        )?;
        let penalty = |p: f32| (-2.0..=2.0).contains(&p);
        check(
            "presence_penalty",
            self.presence_penalty,
            penalty,
            "in [-2, 2]",
        )?;
        check(
            "frequency_penalty",
            self.frequency_penalty,
            penalty,
            "in [-2, 2]",
        )?;
        check(
            "repetition_penalty",
            self.repetition_penalty,
            |p| p > 0.0,
            "greater than 0",
        )?;
        if self.top_k == Some(0) {
            return Err(Error::invalid_request("top_k must be at least 1"));
        }
        Ok(())
    }
}

pub(crate) fn one() -> u32 {
    1
}

pub(crate) fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

fn is_streamed(delivery: &Delivery) -> bool {
    *delivery == Delivery::Streamed
}

fn is_whole(phase: &Disaggregation) -> bool {
    *phase == Disaggregation::None
}

fn check(
    field: &str,
    value: Option<f32>,
    ok: impl Fn(f32) -> bool,
    range: &str,
) -> Result<(), Error> {
    match value {
        Some(v) if !v.is_finite() || !ok(v) => Err(Error::invalid_request(format!(
            "{field} must be {range}, got {v}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GenerateRequest {
        GenerateRequest::new("r", "m", vec![1, 2, 3])
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(GenerateRequest, &str)> = vec![
            (GenerateRequest::new("r", "m", Vec::new()), "prompt"),
            (request().with_max_tokens(0), "max_tokens"),
            (
                request().with_sampling(SamplingOptions {
                    top_p: Some(1.5),
                    ..Default::default()
                }),
                "top_p",
            ),
            (
                request().with_sampling(SamplingOptions {
                    temperature: Some(f32::NAN),
                    ..Default::default()
                }),
                "temperature",
            ),
            (
                request().with_sampling(SamplingOptions {
                    top_k: Some(0),
                    ..Default::default()
                }),
                "top_k",
            ),
            (
                {
                    let mut r = request().with_max_tokens(2);
                    r.limits.min_tokens = Some(3);
                    r
                },
                "min_tokens",
            ),
            (request().with_n(0), "n must"),
        ];
        for (request, field) in cases {
            let err = request.validate().unwrap_err();
            assert_eq!(err.class(), crate::ErrorClass::InvalidRequest);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        assert!(request().with_max_tokens(1).validate().is_ok());
    }

    #[test]
    fn lora_and_salt_reach_the_hasher() {
        let size = BlockSize::new(2).unwrap();
        let mut r = request();
        let plain = r.block_hasher(size);
        r.lora_name = Some("my-lora".into());
        let lora = r.block_hasher(size);
        r.cache_salt = Some("tenant-a".into());
        let both = r.block_hasher(size);
        assert_eq!(lora, BlockHasher::new(size).with_lora("my-lora"));
        assert_eq!(both, lora.with_salt("tenant-a"));
        assert_ne!(plain, lora);
    }

    #[test]
    fn round_trips_through_json_with_a_fresh_token() {
        let r = request().with_max_tokens(5);
        r.cancellation().cancel();
        let json = serde_json::to_string(&r).unwrap();
        let back: GenerateRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.tokens, r.tokens);
        assert_eq!(back.limits, r.limits);
        assert!(!back.is_cancelled(), "cancellation is local to a process");
        let minimal: GenerateRequest =
            serde_json::from_str(r#"{"id":"x","model":"m","tokens":[1]}"#).unwrap();
        assert_eq!(minimal.routing, RoutingHints::default());
        assert_eq!(
            minimal.n, 1,
            "a sender that does not know n asks for one choice"
        );
        assert!(!json.contains("\"n\""), "n = 1 is left out: {json}");
        let forked: GenerateRequest =
            serde_json::from_str(&serde_json::to_string(&request().with_n(4)).unwrap()).unwrap();
        assert_eq!(forked.n, 4);
    }
}
