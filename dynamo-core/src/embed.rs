//! The `Embedder` abstraction: a `tower::Service` from token sequences to vectors.

use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::error::Error;
use crate::tokens::Tokens;

/// Token sequences to embed as one batch: one vector comes back per input, in order.
///
/// Each input is the model's complete input, special tokens included (a BERT model's `[CLS]`
/// and `[SEP]`): the embedder adds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmbedRequest {
    /// The request id, for logs.
    pub id: String,
    /// The model asked for, as the client named it.
    pub model: String,
    /// The inputs, each a token sequence.
    pub inputs: Vec<Tokens>,
}

impl EmbedRequest {
    /// A request to embed `inputs` with `model`.
    pub fn new(id: impl Into<String>, model: impl Into<String>, inputs: Vec<Tokens>) -> Self {
        EmbedRequest {
            id: id.into(),
            model: model.into(),
            inputs,
        }
    }

    /// How many tokens the inputs hold together: the request's `prompt_tokens`.
    pub fn token_count(&self) -> usize {
        self.inputs.iter().map(|input| input.len()).sum()
    }
}

/// The vectors of an [`EmbedRequest`], one per input, in the inputs' order.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Embeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// The tokens the model read.
    pub prompt_tokens: u32,
}

impl Embeddings {
    /// The vectors of a request whose inputs held `prompt_tokens` tokens.
    pub fn new(vectors: Vec<Vec<f32>>, prompt_tokens: u32) -> Self {
        Embeddings {
            vectors,
            prompt_tokens,
        }
    }
}

/// Anything that turns an [`EmbedRequest`] into [`Embeddings`].
///
/// `Embedder` is an alias for a [`tower::Service`] with that shape, implemented for every such
/// service, as [`Engine`](crate::Engine) is for generation; tower layers (timeouts,
/// concurrency limits, load shedding) compose with it. An input longer than the model accepts is
/// an [`Error::InvalidRequest`].
pub trait Embedder: Service<EmbedRequest, Response = Embeddings, Error = Error> {}

impl<S> Embedder for S where S: Service<EmbedRequest, Response = Embeddings, Error = Error> + ?Sized {}

/// A type-erased, cloneable, `Send + Sync` [`Embedder`], for registries.
///
/// ```
/// use dynamo_core::{BoxEmbedder, EmbedRequest, Embeddings, Error};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// // A stand-in that maps each input to its length.
/// let lengths = tower::service_fn(|request: EmbedRequest| async move {
///     let count = request.token_count() as u32;
///     let vectors = request.inputs.iter().map(|input| vec![input.len() as f32]).collect();
///     Ok::<_, Error>(Embeddings::new(vectors, count))
/// });
/// let embedder = BoxEmbedder::new(lengths);
/// let request = EmbedRequest::new("r1", "lengths", vec![vec![1, 2].into(), vec![3].into()]);
/// let embeddings = embedder.oneshot(request).await?;
/// assert_eq!(embeddings.vectors, [vec![2.0], vec![1.0]]);
/// assert_eq!(embeddings.prompt_tokens, 3);
/// # Ok(())
/// # }
/// ```
pub type BoxEmbedder = BoxCloneSyncService<EmbedRequest, Embeddings, Error>;
