//! The models a gateway serves: a name, the Engine that generates for it, and what
//! preprocessing it needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use dynamo_core::{BoxEngine, SamplingOptions};
use parking_lot::RwLock;

use crate::preprocess::{
    ChatTemplate, GgufMetadata, GgufValue, ReasoningFormat, Tokenizer, ToolCallFormat,
};
use crate::protocol::SamplingFields;
use crate::{EmbeddingModel, Error};

/// One served model.
///
/// The engine may be anything that implements [`Engine`](dynamo_core::Engine): one worker, or a
/// router in front of many.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub(crate) name: String,
    pub(crate) engine: BoxEngine,
    pub(crate) tokenizer: Arc<Tokenizer>,
    pub(crate) template: Option<ChatTemplate>,
    pub(crate) context_length: Option<u32>,
    pub(crate) reasoning: Option<ReasoningFormat>,
    pub(crate) tool_calls: Option<ToolCallFormat>,
    pub(crate) owned_by: String,
    pub(crate) created: u64,
    pub(crate) sampling_defaults: SamplingDefaults,
    pub(crate) forks: bool,
    pub(crate) prompt_logprobs: bool,
    pub(crate) streamed_prompt_logprobs: bool,
    /// Its metric handles, shared by the entry's clones.
    pub(crate) metrics: Arc<crate::http::metrics::ModelMetrics>,
}

/// The sampling settings a model recommends, used for the fields a request leaves out.
///
/// A small model sampled at OpenAI's default temperature of 1 wanders; its authors usually
/// publish the settings it answers best with (Hugging Face's `generation_config.json`, which
/// vLLM applies the same way). With [`ModelEntry::with_sampling_defaults`], a chat or text
/// completion that does not give `temperature` (or `top_p`, or `top_k`) gets the model's value;
/// a request that gives one keeps its own, `temperature: 0` included. A field given as `null`
/// counts as not given. The default (every field `None`) changes nothing: the engine then
/// applies its own defaults.
///
/// Give values in the ranges a request may ask for (`temperature` in `[0, 2]`, `top_p` in
/// `(0, 1]`, `top_k` at least 1; a `top_k` of 0 means none): they reach the engine as given.
///
/// ```
/// use dynamo_core::{BoxEngine, EchoEngine};
/// use dynamo_openai::{ModelEntry, SamplingDefaults, Tokenizer};
///
/// let recommended = SamplingDefaults {
///     temperature: Some(0.2),
///     top_p: Some(0.9),
///     ..SamplingDefaults::default()
/// };
/// let entry = ModelEntry::new("echo", BoxEngine::new(EchoEngine::new()), Tokenizer::bytes())
///     .with_sampling_defaults(recommended);
/// assert_eq!(entry.sampling_defaults().temperature, Some(0.2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SamplingDefaults {
    /// `temperature` for requests that give none.
    pub temperature: Option<f32>,
    /// `top_p` for requests that give none.
    pub top_p: Option<f32>,
    /// `top_k` for requests that give none (a request's `-1` or `0` turns it off).
    pub top_k: Option<u32>,
}

impl SamplingDefaults {
    /// Fill the options of a request whose fields left them out.
    pub(crate) fn fill(&self, fields: &SamplingFields, sampling: &mut SamplingOptions) {
        if fields.temperature.is_none() {
            sampling.temperature = self.temperature;
        }
        if fields.top_p.is_none() {
            sampling.top_p = self.top_p;
        }
        if fields.top_k.is_none() {
            sampling.top_k = self.top_k.filter(|&k| k > 0);
        }
    }
}

impl ModelEntry {
    /// A model with a tokenizer and no chat template (only `/v1/completions` works until one is
    /// set with [`ModelEntry::with_chat_template`]).
    pub fn new(name: impl Into<String>, engine: BoxEngine, tokenizer: Tokenizer) -> Self {
        ModelEntry {
            name: name.into(),
            engine,
            tokenizer: Arc::new(tokenizer),
            template: None,
            context_length: None,
            reasoning: None,
            tool_calls: None,
            owned_by: "dynamo".to_owned(),
            created: crate::unix_seconds(),
            sampling_defaults: SamplingDefaults::default(),
            forks: false,
            prompt_logprobs: false,
            streamed_prompt_logprobs: false,
            metrics: Arc::default(),
        }
    }

    /// A model whose tokenizer, chat template and context length come from GGUF metadata.
    ///
    /// Fails with the errors of [`Tokenizer::from_gguf`] and, for a chat template that does
    /// not compile, [`Error::Template`].
    pub fn from_gguf(
        name: impl Into<String>,
        engine: BoxEngine,
        metadata: &GgufMetadata,
    ) -> Result<Self, Error> {
        let tokenizer = Tokenizer::from_gguf(metadata)?;
        let token_text = |key: &str| {
            metadata
                .get(key)
                .and_then(GgufValue::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .and_then(|id| tokenizer.decode(&[id], false).ok())
                .unwrap_or_default()
        };
        let (bos, eos) = (
            token_text("tokenizer.ggml.bos_token_id"),
            token_text("tokenizer.ggml.eos_token_id"),
        );
        let template = metadata
            .get("tokenizer.chat_template")
            .and_then(GgufValue::as_str)
            .map(|source| ChatTemplate::new(source).map(|t| t.with_special_tokens(bos, eos)))
            .transpose()?;
        let architecture = metadata
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .unwrap_or("llama");
        let context_length = metadata
            .get(&format!("{architecture}.context_length"))
            .and_then(GgufValue::as_u64)
            .and_then(|length| u32::try_from(length).ok());
        let mut entry = ModelEntry::new(name, engine, tokenizer);
        entry.template = template;
        entry.context_length = context_length;
        Ok(entry)
    }

    /// Use `template` for chat completions.
    pub fn with_chat_template(mut self, template: ChatTemplate) -> Self {
        self.template = Some(template);
        self
    }

    /// Reject prompts plus `max_tokens` longer than this.
    pub fn with_context_length(mut self, tokens: u32) -> Self {
        self.context_length = Some(tokens);
        self
    }

    /// Split reasoning text out of answers into `reasoning_content`.
    pub fn with_reasoning(mut self, format: ReasoningFormat) -> Self {
        self.reasoning = Some(format);
        self
    }

    /// Parse tool calls in this format when a request offers tools.
    pub fn with_tool_calls(mut self, format: ToolCallFormat) -> Self {
        self.tool_calls = Some(format);
        self
    }

    /// The `owned_by` field of `/v1/models`.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owned_by = owner.into();
        self
    }

    /// Use the model's recommended sampling settings for the fields a request leaves out (see
    /// [`SamplingDefaults`]).
    pub fn with_sampling_defaults(mut self, defaults: SamplingDefaults) -> Self {
        self.sampling_defaults = defaults;
        self
    }

    /// The sampling settings used for the fields a request leaves out.
    pub fn sampling_defaults(&self) -> SamplingDefaults {
        self.sampling_defaults
    }

    /// Say whether the engine serves several choices of one request itself
    /// ([`GenerateRequest::n`](dynamo_core::GenerateRequest::n): one prefill, forked sequences,
    /// chunks tagged with their choice), as the candle engine does. Off by default: a request
    /// for `n` choices then becomes `n` engine requests of one choice each, which any engine
    /// serves.
    pub fn with_forking(mut self, forks: bool) -> Self {
        self.forks = forks;
        self
    }

    /// Whether the engine serves several choices of one request itself.
    pub fn forks(&self) -> bool {
        self.forks
    }

    /// Say whether the engine computes the log-probabilities of a prompt's tokens
    /// ([`SamplingOptions::prompt_logprobs`](dynamo_core::SamplingOptions::prompt_logprobs)),
    /// as the candle engine does. Off by default: a text completion asking for them (`echo`
    /// with `logprobs`, or vLLM's `prompt_logprobs`) is then refused with a 400, and so is a
    /// streamed one unless [`with_streamed_prompt_logprobs`](Self::with_streamed_prompt_logprobs)
    /// says the engine streams them too.
    pub fn with_prompt_logprobs(mut self, computes: bool) -> Self {
        self.prompt_logprobs = computes;
        self
    }

    /// Whether the engine computes the log-probabilities of a prompt's tokens.
    pub fn computes_prompt_logprobs(&self) -> bool {
        self.prompt_logprobs
    }

    /// Say whether the engine also sends the prompt's log-probabilities when the answer is
    /// streamed (before the first token, as the candle engine does), so that a streamed text
    /// completion may ask for `echo` with `logprobs`. Off by default: the vLLM and SGLang
    /// adapters read them only from whole answers. Counts only with
    /// [`with_prompt_logprobs`](Self::with_prompt_logprobs).
    pub fn with_streamed_prompt_logprobs(mut self, streams: bool) -> Self {
        self.streamed_prompt_logprobs = streams;
        self
    }

    /// Whether the engine sends the prompt's log-probabilities when the answer is streamed.
    pub fn streams_prompt_logprobs(&self) -> bool {
        self.prompt_logprobs && self.streamed_prompt_logprobs
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template, if the model has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }
}

/// The served models by name. Cloning shares the registry: models added later are served at
/// once.
///
/// ```
/// use dynamo_openai::ModelRegistry;
///
/// let registry = ModelRegistry::default();
/// assert!(registry.names().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct ModelRegistry {
    models: Arc<RwLock<BTreeMap<String, Arc<ModelEntry>>>>,
    embedding: Arc<RwLock<BTreeMap<String, Arc<EmbeddingModel>>>>,
}

impl ModelRegistry {
    /// Serve `entry` under its name, replacing a model of the same name.
    pub fn insert(&self, entry: ModelEntry) {
        self.models
            .write()
            .insert(entry.name.clone(), Arc::new(entry));
    }

    /// Stop serving `name`; requests already running finish.
    pub fn remove(&self, name: &str) -> bool {
        self.models.write().remove(name).is_some()
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<ModelEntry>> {
        self.models.read().get(name).cloned()
    }

    /// Every model, by name.
    pub fn entries(&self) -> Vec<Arc<ModelEntry>> {
        self.models.read().values().cloned().collect()
    }

    /// The served names, in order.
    pub fn names(&self) -> Vec<String> {
        self.models.read().keys().cloned().collect()
    }

    /// Serve the embedding model `model` under its name (for `/v1/embeddings`), replacing an
    /// embedding model of the same name. A name may serve both generation and embeddings.
    pub fn insert_embedding(&self, model: EmbeddingModel) {
        self.embedding
            .write()
            .insert(model.name.clone(), Arc::new(model));
    }

    /// The embedding model called `name`.
    pub fn embedding(&self, name: &str) -> Option<Arc<EmbeddingModel>> {
        self.embedding.read().get(name).cloned()
    }

    /// Every embedding model, by name.
    pub fn embedding_models(&self) -> Vec<Arc<EmbeddingModel>> {
        self.embedding.read().values().cloned().collect()
    }
}
