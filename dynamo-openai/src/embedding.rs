//! A served embedding model: a name, the [`Embedder`](dynamo_core::Embedder) that makes its
//! vectors, and its tokenizer.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use dynamo_core::BoxEmbedder;

use crate::Error;

/// One embedding model, served by `POST /v1/embeddings` and listed by `/v1/models`
/// (register it with [`ModelRegistry::insert_embedding`](crate::ModelRegistry::insert_embedding)).
///
/// Texts are tokenized with the model's `tokenizer.json` as the model was trained: special
/// tokens added (`[CLS]` … `[SEP]` for BERT), and without the truncation or padding the file
/// may ask for: an input longer than [`EmbeddingModel::max_input_tokens`] is refused with a 400
/// that names it, never cut silently.
///
/// ```
/// use dynamo_core::{BoxEmbedder, EmbedRequest, Embeddings, Error};
/// use dynamo_openai::EmbeddingModel;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A stand-in embedder: a vector of one number, each input's length.
/// let lengths = tower::service_fn(|request: EmbedRequest| async move {
///     let count = request.token_count() as u32;
///     let vectors = request.inputs.iter().map(|input| vec![input.len() as f32]).collect();
///     Ok::<_, Error>(Embeddings::new(vectors, count))
/// });
/// # let dir = tempfile::tempdir()?;
/// # let tokenizer_json = dir.path().join("tokenizer.json");
/// # std::fs::write(&tokenizer_json, r#"{"version":"1.0","truncation":null,"padding":null,
/// #   "added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},
/// #   "post_processor":null,"decoder":null,"model":{"type":"WordLevel",
/// #   "vocab":{"[UNK]":0,"hello":1,"world":2},"unk_token":"[UNK]"}}"#)?;
/// let model = EmbeddingModel::from_tokenizer_file(
///     "lengths",
///     BoxEmbedder::new(lengths),
///     &tokenizer_json,
///     1,   // dimensions
///     512, // the longest input, in tokens
/// )?;
/// assert_eq!(model.encode("hello world")?, [1, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EmbeddingModel {
    pub(crate) name: String,
    pub(crate) embedder: BoxEmbedder,
    tokenizer: Arc<tokenizers::Tokenizer>,
    pub(crate) dimensions: usize,
    pub(crate) max_input_tokens: usize,
    pub(crate) owned_by: String,
    pub(crate) created: u64,
}

impl fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("name", &self.name)
            .field("dimensions", &self.dimensions)
            .field("max_input_tokens", &self.max_input_tokens)
            .finish_non_exhaustive()
    }
}

impl EmbeddingModel {
    /// A model named `name` whose `embedder` makes vectors of `dimensions` numbers from inputs
    /// of at most `max_input_tokens` tokens, tokenizing texts with the Hugging Face
    /// `tokenizer.json` at `tokenizer`.
    ///
    /// A file that cannot be read gives [`Error::Io`]; one that does not parse,
    /// [`Error::Tokenizer`].
    pub fn from_tokenizer_file(
        name: impl Into<String>,
        embedder: BoxEmbedder,
        tokenizer: impl AsRef<Path>,
        dimensions: usize,
        max_input_tokens: usize,
    ) -> Result<Self, Error> {
        let path = tokenizer.as_ref();
        let json = std::fs::read(path).map_err(|source| Error::io(path, source))?;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(json).map_err(Error::tokenizer)?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|error| Error::tokenizer(error.to_string()))?;
        Ok(EmbeddingModel {
            name: name.into(),
            embedder,
            tokenizer: Arc::new(tokenizer),
            dimensions,
            max_input_tokens,
            owned_by: "dynamo".to_owned(),
            created: crate::unix_seconds(),
        })
    }

    /// The `owned_by` field of `/v1/models`.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owned_by = owner.into();
        self
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The length of its vectors.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The most tokens one input may hold, special tokens included.
    pub fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    /// How many ids the tokenizer's vocabulary has, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The ids the model reads for `text`, special tokens included.
    ///
    /// Fails with [`Error::Tokenizer`] when the tokenizer does.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(Error::tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }
}
