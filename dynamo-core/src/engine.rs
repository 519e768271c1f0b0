//! The `Engine` abstraction: a `tower::Service` from a request to a token stream.

use std::future::Future;

use futures::StreamExt;
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::error::Error;
use crate::request::GenerateRequest;
use crate::response::Generation;
use crate::stream::TokenStream;

/// Anything that turns a [`GenerateRequest`] into a [`TokenStream`].
///
/// `Engine` is an alias for a [`tower::Service`] with that shape, implemented for every such
/// service. A local model, a remote worker, a simulator and a router in front of ten workers are
/// all engines, so they nest and compose with tower layers (timeouts, concurrency limits, load
/// shedding).
///
/// `poll_ready` is the engine's backpressure: an engine that cannot take another request now
/// returns `Pending` (or an [`Error::Overloaded`]), and callers that go through
/// [`EngineExt::generate`] wait for it.
pub trait Engine: Service<GenerateRequest, Response = TokenStream, Error = Error> {}

impl<S> Engine for S where
    S: Service<GenerateRequest, Response = TokenStream, Error = Error> + ?Sized
{
}

/// A type-erased, cloneable, `Send + Sync` engine, for registries and for mixing engine types.
///
/// Build one with [`EngineExt::boxed_engine`].
pub type BoxEngine = BoxCloneSyncService<GenerateRequest, TokenStream, Error>;

/// The common calls on an [`Engine`].
///
/// ```
/// use dynamo_core::{EchoEngine, EngineExt, FinishReason, GenerateRequest};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// let mut engine = EchoEngine::new().boxed_engine();
/// let request = GenerateRequest::new("r1", "echo", vec![10, 11, 12]).with_max_tokens(2);
/// let generation = engine.generate_all(request).await?;
/// assert_eq!(generation.tokens, [10, 11]);
/// assert_eq!(generation.finish_reason, Some(FinishReason::Length));
/// # Ok(())
/// # }
/// ```
pub trait EngineExt: Engine {
    /// Wait until the engine is ready, then start a generation and return its stream.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes starts no generation; dropping the returned
    /// stream cancels the generation.
    fn generate(
        &mut self,
        request: GenerateRequest,
    ) -> impl Future<Output = Result<TokenStream, Error>> + Send + '_
    where
        Self: Send,
        Self::Future: Send,
    {
        async move {
            std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
            self.call(request).await
        }
    }

    /// Run a generation to the end and collect it.
    ///
    /// # Errors
    ///
    /// The first error of the engine or of the stream.
    fn generate_all(
        &mut self,
        request: GenerateRequest,
    ) -> impl Future<Output = Result<Generation, Error>> + Send + '_
    where
        Self: Send,
        Self::Future: Send,
    {
        async move {
            let mut stream = self.generate(request).await?;
            let mut generation = Generation::default();
            while let Some(chunk) = stream.next().await {
                generation.push(chunk?);
            }
            Ok(generation)
        }
    }

    /// Erase the engine's type.
    fn boxed_engine(self) -> BoxEngine
    where
        Self: Sized + Clone + Send + Sync + 'static,
        Self::Future: Send + 'static,
    {
        BoxCloneSyncService::new(self)
    }
}

impl<E: Engine + ?Sized> EngineExt for E {}
