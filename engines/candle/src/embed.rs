//! Sentence embeddings with a BERT model (all-MiniLM-L6-v2 in our tests and demo): the mean of
//! the last hidden states over the attention mask, L2-normalised, as sentence-transformers
//! configures that model.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use dynamo_core::{EmbedRequest, Embeddings};
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::Service;

use crate::CandleError;

/// The settings of a [`BertEmbedder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmbedderConfig {
    /// Inputs run through the model together in one forward pass; a request with more runs
    /// several passes, its inputs sorted by length so that each pass pads little. Default 32.
    pub max_batch: usize,
    /// Forward passes run at once (each on a blocking thread of the runtime); more requests
    /// wait their turn. Default 1: candle's matrix products already use every core.
    pub concurrency: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            max_batch: 32,
            concurrency: 1,
        }
    }
}

/// A sentence embedder on a BERT model from a Hugging Face directory (`config.json` and
/// `model.safetensors`): the model's last hidden states, averaged over each input's tokens
/// (mean pooling over the attention mask), scaled to unit length.
///
/// It is an [`Embedder`](dynamo_core::Embedder): a [`tower::Service`] from an [`EmbedRequest`]
/// to [`Embeddings`]. The inputs of one request are batched (padded to the longest input of each
/// pass of at most [`EmbedderConfig::max_batch`]); the forward passes run on the runtime's
/// blocking threads, never on its workers, [`EmbedderConfig::concurrency`] at a time; requests
/// beyond that wait (their number is bounded by whatever bounds the callers, such as the
/// gateway's `max_in_flight`). An input longer than the model's positions, or holding an id
/// outside its vocabulary, is refused with an invalid request naming the input's index.
///
/// Clones share the model.
///
/// ```no_run
/// use dynamo_candle::{BertEmbedder, EmbedderConfig};
///
/// let embedder = BertEmbedder::load("all-MiniLM-L6-v2", &candle_core::Device::Cpu, EmbedderConfig::default())?;
/// // [CLS] hello [SEP] in the model's WordPiece vocabulary.
/// let vectors = embedder.embed(&[&[101, 7592, 102]])?;
/// assert_eq!(vectors[0].len(), embedder.dimensions());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BertEmbedder {
    model: Arc<BertModel>,
    dimensions: usize,
    max_input_tokens: usize,
    vocab_size: usize,
    max_batch: usize,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("dimensions", &self.dimensions)
            .field("max_input_tokens", &self.max_input_tokens)
            .field("vocab_size", &self.vocab_size)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl BertEmbedder {
    /// Load the model in `dir` (`config.json`, `model.safetensors`) onto `device`.
    ///
    /// # Errors
    ///
    /// [`CandleError::Io`] when a file cannot be read, [`CandleError::Model`] when the config
    /// does not parse, [`CandleError::Candle`] when the weights do not fit the config.
    pub fn load(
        dir: impl AsRef<Path>,
        device: &Device,
        config: EmbedderConfig,
    ) -> Result<Self, CandleError> {
        let dir = dir.as_ref();
        let text = std::fs::read(dir.join("config.json"))?;
        let model_config: Config = serde_json::from_slice(&text)
            .map_err(|error| CandleError::Model(format!("config.json: {error}")))?;
        let weights = std::fs::read(dir.join("model.safetensors"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device)?;
        let model = BertModel::load(vb, &model_config)?;
        Ok(BertEmbedder {
            model: Arc::new(model),
            dimensions: model_config.hidden_size,
            max_input_tokens: model_config.max_position_embeddings,
            vocab_size: model_config.vocab_size,
            max_batch: config.max_batch.max(1),
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
        })
    }

    /// The length of every vector (the model's hidden size: 384 for all-MiniLM-L6-v2).
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The most tokens one input may hold, special tokens included (the model's positions: 512
    /// for all-MiniLM-L6-v2).
    pub fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    /// Embed `inputs` now, on this thread: one unit vector per input, in order.
    ///
    /// # Errors
    ///
    /// An invalid request naming the input that is empty, too long or outside the vocabulary;
    /// an internal error when candle fails.
    pub fn embed(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, dynamo_core::Error> {
        self.check(inputs)?;
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&index| inputs[index].len());
        let mut vectors = vec![Vec::new(); inputs.len()];
        for pass in order.chunks(self.max_batch) {
            let batch: Vec<&[u32]> = pass.iter().map(|&index| inputs[index]).collect();
            let pooled = self.forward(&batch).map_err(dynamo_core::Error::from)?;
            for (&index, vector) in pass.iter().zip(pooled) {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }

    fn check(&self, inputs: &[&[u32]]) -> Result<(), dynamo_core::Error> {
        for (index, input) in inputs.iter().enumerate() {
            if input.is_empty() {
                return Err(dynamo_core::Error::invalid_request(format!(
                    "input {index} is empty"
                )));
            }
            if input.len() > self.max_input_tokens {
                return Err(dynamo_core::Error::invalid_request(format!(
                    "input {index} has {} tokens, more than the model's {}",
                    input.len(),
                    self.max_input_tokens
                )));
            }
            if let Some(bad) = input.iter().find(|&&id| id as usize >= self.vocab_size) {
                return Err(dynamo_core::Error::invalid_request(format!(
                    "input {index} holds token id {bad}, outside the vocabulary of {} ids",
                    self.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// One forward pass over `batch`, padded to its longest input; mean pooling and
    /// normalisation.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, CandleError> {
        let device = &self.model.device;
        let longest = batch.iter().map(|input| input.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for input in batch {
            ids.extend_from_slice(input);
            ids.resize(ids.len() + longest - input.len(), 0);
            mask.extend((0..longest).map(|position| u32::from(position < input.len())));
        }
        let shape = (batch.len(), longest);
        let ids = Tensor::from_vec(ids, shape, device)?;
        let mask = Tensor::from_vec(mask, shape, device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        Ok(mean.broadcast_div(&norm)?.to_vec2()?)
    }
}

impl Service<EmbedRequest> for BertEmbedder {
    type Response = Embeddings;
    type Error = dynamo_core::Error;
    type Future = BoxFuture<'static, Result<Embeddings, dynamo_core::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// # Cancel safety
    ///
    /// Dropping the future before its turn gives the turn to the next request; a forward pass
    /// already running finishes on its blocking thread and its answer is dropped.
    fn call(&mut self, request: EmbedRequest) -> Self::Future {
        let embedder = self.clone();
        Box::pin(async move {
            let permit = Arc::clone(&embedder.permits)
                .acquire_owned()
                .await
                .map_err(|_| dynamo_core::Error::unavailable("the embedder is shut down"))?;
            let prompt_tokens = u32::try_from(request.token_count()).unwrap_or(u32::MAX);
            let vectors = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let inputs: Vec<&[u32]> = request.inputs.iter().map(|input| &input[..]).collect();
                embedder.embed(&inputs)
            })
            .await
            .map_err(|error| {
                dynamo_core::Error::internal(format!("the embedding task: {error}"))
            })??;
            Ok(Embeddings::new(vectors, prompt_tokens))
        })
    }
}
