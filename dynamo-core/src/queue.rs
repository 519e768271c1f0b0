//! The shape every engine that runs its generations elsewhere shares: requests go through a
//! bounded queue to a worker (a thread, a simulator, a scheduler loop), and each request's
//! chunks come back on a channel of its own.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};
use tower::Service;

use crate::error::Error;
use crate::request::GenerateRequest;
use crate::response::TokenChunk;
use crate::stream::TokenStream;

/// A request handed to an engine's worker, with where its chunks go.
///
/// The worker sends the request's chunks on `chunks` (the last one with a finish reason) and
/// watches `cancel`, which fires when the request is cancelled or its stream is dropped.
#[derive(Debug)]
pub struct Submission {
    /// The request, already validated.
    pub request: GenerateRequest,
    /// Where its chunks go; sized so the worker never waits on a slow reader.
    pub chunks: mpsc::Sender<Result<TokenChunk, Error>>,
    /// Fires when the work should stop.
    pub cancel: CancellationToken,
}

/// What an engine checks before queueing a request (beyond [`GenerateRequest::validate`]),
/// and how many chunks its stream must be able to hold.
type Admit = dyn Fn(&GenerateRequest) -> Result<usize, Error> + Send + Sync;

/// An [`Engine`](crate::Engine) that hands each request to a worker through a bounded queue.
///
/// Its readiness is the queue's: `poll_ready` is `Pending` while the queue is full and ready
/// again when the worker takes a request, so tower's `ConcurrencyLimit`, `LoadShed` and
/// `Timeout` layers act on real capacity. `call` validates the request, runs the engine's own
/// check (`admit`), and queues it into the slot `poll_ready` reserved; its stream is fed by the
/// worker through the [`Submission`]. When the worker has stopped (its receiver is dropped),
/// `poll_ready` fails with [`Error::Unavailable`].
///
/// Cloning gives another handle to the same queue; each handle reserves its own slot.
///
/// ```
/// use dynamo_core::{EngineExt, GenerateRequest, QueuedEngine, TokenChunk};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// // A worker that answers every request with its first prompt token.
/// let (mut engine, mut submissions) = QueuedEngine::new(8, |_| Ok(2));
/// tokio::spawn(async move {
///     while let Some(submission) = submissions.recv().await {
///         let first = submission.request.tokens[0];
///         let _ = submission.chunks.send(Ok(TokenChunk::token(first))).await;
///     }
/// });
/// let generation = engine.generate_all(GenerateRequest::new("r1", "m", vec![42, 7])).await?;
/// assert_eq!(generation.tokens, [42]);
/// # Ok(())
/// # }
/// ```
pub struct QueuedEngine {
    queue: PollSender<Submission>,
    admit: Arc<Admit>,
}

impl QueuedEngine {
    /// An engine whose queue holds `capacity` requests (at least 1), and the receiver its
    /// worker takes them from. `admit` checks each valid request and says how many chunks
    /// its stream must buffer (usually the most tokens it may produce, plus one for the
    /// final chunk); its error is the call's.
    pub fn new(
        capacity: usize,
        admit: impl Fn(&GenerateRequest) -> Result<usize, Error> + Send + Sync + 'static,
    ) -> (QueuedEngine, mpsc::Receiver<Submission>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let engine = QueuedEngine {
            queue: PollSender::new(sender),
            admit: Arc::new(admit),
        };
        (engine, receiver)
    }

    /// Whether the worker has stopped taking requests.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Requests in the queue that the worker has not taken yet, counting the slots callers
    /// have reserved with `poll_ready` for the requests they are about to send; 0 once the
    /// worker has stopped.
    pub fn queued(&self) -> usize {
        self.queue
            .get_ref()
            .map_or(0, |sender| sender.max_capacity() - sender.capacity())
    }

    fn stopped() -> Error {
        Error::unavailable("the engine's worker has stopped")
    }
}

impl Service<GenerateRequest> for QueuedEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = std::future::Ready<Result<TokenStream, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.queue
            .poll_reserve(cx)
            .map_err(|_| QueuedEngine::stopped())
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        std::future::ready(self.submit(request))
    }
}

impl QueuedEngine {
    fn submit(&mut self, request: GenerateRequest) -> Result<TokenStream, Error> {
        // A caller that skipped `poll_ready` gets a slot if one is free now, else `Overloaded`.
        let reserved = match self
            .queue
            .poll_reserve(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(_)) => return Err(QueuedEngine::stopped()),
            Poll::Pending => false,
        };
        if !reserved {
            return Err(Error::overloaded("the engine's queue is full"));
        }
        let admitted = request.validate().and_then(|()| (self.admit)(&request));
        let buffer = match admitted {
            Ok(buffer) => buffer,
            Err(error) => {
                // Give the slot back for the next request.
                self.queue.abort_send();
                return Err(error);
            }
        };
        let (chunks, receiver) = mpsc::channel(buffer.max(1));
        let cancel = request.cancellation().child_token();
        let submission = Submission {
            request,
            chunks,
            cancel: cancel.clone(),
        };
        self.queue
            .send_item(submission)
            .map_err(|_| QueuedEngine::stopped())?;
        Ok(TokenStream::from_receiver(receiver, cancel))
    }
}

impl Clone for QueuedEngine {
    fn clone(&self) -> Self {
        QueuedEngine {
            queue: self.queue.clone(),
            admit: Arc::clone(&self.admit),
        }
    }
}

impl fmt::Debug for QueuedEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedEngine")
            .field("closed", &self.queue.is_closed())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;
    use crate::EngineExt;

    fn request(id: &str) -> GenerateRequest {
        GenerateRequest::new(id, "m", vec![1, 2, 3]).with_max_tokens(1)
    }

    #[tokio::test]
    async fn a_full_queue_is_not_ready_until_the_worker_takes_a_request() {
        let (mut engine, mut submissions) = QueuedEngine::new(1, |_| Ok(1));
        let _first = engine.generate(request("a")).await.expect("queued");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(engine.poll_ready(&mut cx).is_pending());
        // Skipping readiness gives a clear refusal, not a panic.
        let refused = engine.call(request("b")).await.expect_err("queue full");
        assert_eq!(refused.class(), crate::ErrorClass::Overloaded);

        let taken = submissions.recv().await.expect("a submission");
        assert_eq!(taken.request.id.as_str(), "a");
        poll_fn(|cx| engine.poll_ready(cx)).await.expect("ready");
    }

    #[tokio::test]
    async fn a_refused_request_gives_its_slot_back() {
        let (mut engine, _submissions) = QueuedEngine::new(1, |request| {
            if request.tokens.len() > 2 {
                Err(Error::invalid_request("too long"))
            } else {
                Ok(1)
            }
        });
        let refused = engine.generate(request("a")).await.expect_err("too long");
        assert_eq!(refused.class(), crate::ErrorClass::InvalidRequest);
        let short = GenerateRequest::new("b", "m", vec![1]);
        engine.generate(short).await.expect("the slot is free");
    }

    #[tokio::test]
    async fn a_stopped_worker_makes_the_engine_unavailable() {
        let (mut engine, submissions) = QueuedEngine::new(1, |_| Ok(1));
        drop(submissions);
        let error = engine.generate(request("a")).await.expect_err("stopped");
        assert_eq!(error.class(), crate::ErrorClass::Unavailable);
        assert!(engine.is_closed());
    }

    #[tokio::test]
    async fn dropping_the_stream_cancels_the_submission() {
        let (mut engine, mut submissions) = QueuedEngine::new(1, |_| Ok(1));
        let stream = engine.generate(request("a")).await.expect("queued");
        let submission = submissions.recv().await.expect("a submission");
        assert!(!submission.cancel.is_cancelled());
        drop(stream);
        assert!(submission.cancel.is_cancelled());
    }
}
