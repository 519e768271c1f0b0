//! The poller of `POST /kv_cache_events`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dynamo_core::{BlockSize, Error, KvEvent, WorkerId};
use dynamo_upstream::{HttpClient, error_from_status, read_body, retry_after};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::{EventCounts, EventsError, TrtllmEventDecoder};

/// What one poll brought: the events and problems of one answer, in order.
type Polled = Vec<Result<KvEvent, EventsError>>;

/// Polls one `trtllm-serve`'s `POST /kv_cache_events` and turns its answers into the
/// router's [`KvEvent`]s for one worker, with a [`TrtllmEventDecoder`].
///
/// Each poll drains what the server buffered since the last one (run one poller per server).
/// The server keeps its events in a bounded buffer (`kv_cache_config.event_buffer_max_size`)
/// and drops the oldest when it is full: poll often enough that it never fills. A jump in the
/// event ids is reported as [`EventsError::Lost`] and counted; the events after it apply as
/// usual, a stored block whose parent was lost is skipped, and the index keeps what it knew
/// (see [`EventsError::Lost`]). An answer that does not parse, an error status, or a server
/// that cannot be reached is reported on the stream (a failing connection once, until a poll
/// succeeds again), and polling goes on at the next tick.
///
/// ```no_run
/// use dynamo_core::{BlockSize, WorkerId};
/// use dynamo_trtllm::TrtllmServer;
/// use futures::StreamExt;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TrtllmServer::new("http://10.0.0.9:8000")?;
/// let (mut events, poll) = server
///     .kv_event_poller(WorkerId::new(1), BlockSize::new(32)?)
///     .interval(std::time::Duration::from_millis(100))
///     .start();
/// tokio::spawn(poll); // ends when the stream is dropped
/// while let Some(event) = events.next().await {
///     match event {
///         Ok(event) => tracing::info!(blocks = event.block_count(), "KV event"),
///         Err(problem) => tracing::warn!(%problem, "KV events"),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct KvEventPoller {
    client: HttpClient,
    decoder: TrtllmEventDecoder,
    path: String,
    interval: Duration,
    timeout: Duration,
    max_body: usize,
    capacity: usize,
}

impl KvEventPoller {
    /// A poller of `client`'s `/kv_cache_events` for `worker`, whose `tokens_per_block` must
    /// be `block_size`: every 100 ms, each poll bounded by 10 s and 16 MiB, 1,024 events
    /// buffered for the consumer, at most 4,194,304 engine blocks remembered.
    pub fn new(client: HttpClient, worker: WorkerId, block_size: BlockSize) -> Self {
        KvEventPoller {
            client,
            decoder: TrtllmEventDecoder::new(worker, block_size),
            path: "/kv_cache_events".to_owned(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(10),
            max_body: 16 << 20,
            capacity: 1024,
        }
    }

    /// Poll this often (at least every 10 ms); a poll that takes longer delays the next.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Give up a poll after this long. Some `trtllm-serve` versions answer only once no new
    /// event came for 2 s (their handler waits that long for the next one).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Refuse answers larger than this many bytes.
    pub fn max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// Buffer this many events and problems for the consumer (at least 1). When the buffer is
    /// full the poller waits before its next poll, and the server's own buffer holds the
    /// events meanwhile (dropping its oldest when full: a gap).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Remember at most this many engine blocks ([`TrtllmEventDecoder::max_blocks`]).
    pub fn max_blocks(mut self, max_blocks: usize) -> Self {
        self.decoder = self.decoder.max_blocks(max_blocks);
        self
    }

    /// What the decoder has seen and done so far.
    pub fn counts(&self) -> EventCounts {
        self.decoder.counts()
    }

    /// Poll once now and decode the answer.
    ///
    /// # Errors
    ///
    /// [`EventsError::Poll`] when the server cannot be reached, answers with an error status,
    /// its answer is over the size limit, or it takes longer than the timeout; nothing is
    /// decoded then. Problems inside an answer come back in the list.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the answer arrived loses that answer's events (the server
    /// counted them as read): the next poll reports the gap.
    pub async fn poll_once(&mut self) -> Result<Polled, EventsError> {
        let body = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .map_err(|_| {
                EventsError::Poll(Error::unavailable(format!(
                    "no answer from {}{} within {:?}",
                    self.client.base_url(),
                    self.path,
                    self.timeout
                )))
            })??;
        Ok(self.decoder.decode(&body))
    }

    async fn fetch(&self) -> Result<Bytes, EventsError> {
        let response = self
            .client
            .post_json(&self.path, Bytes::new())
            .await
            .map_err(EventsError::Poll)?;
        let (head, body) = response.into_parts();
        let bytes = read_body(body, self.max_body)
            .await
            .map_err(EventsError::Poll)?;
        if !head.status.is_success() {
            let retry = retry_after(&head.headers);
            return Err(EventsError::Poll(error_from_status(
                head.status.as_u16(),
                retry,
                &bytes,
            )));
        }
        Ok(bytes)
    }

    /// The stream of events, and the future that polls: spawn it on your runtime; it ends
    /// when the stream is dropped.
    pub fn start(mut self) -> (KvEventStream, impl Future<Output = ()> + Send + 'static) {
        let (sender, receiver) = mpsc::channel(self.capacity);
        let (counts_sender, counts) = watch::channel(self.decoder.counts());
        let stream = KvEventStream { receiver, counts };
        let poll = async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // Whether the last poll failed: a failing server is reported once, not per tick.
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = sender.closed() => return,
                }
                let polled = match self.poll_once().await {
                    Ok(polled) => {
                        failing = false;
                        polled
                    }
                    Err(error) if failing => {
                        tracing::debug!(url = self.client.base_url(), %error, "KV events poll failed");
                        continue;
                    }
                    Err(error) => {
                        failing = true;
                        vec![Err(error)]
                    }
                };
                counts_sender.send_replace(self.decoder.counts());
                for item in polled {
                    if sender.send(item).await.is_err() {
                        return;
                    }
                }
            }
        };
        (stream, poll)
    }
}

/// The events a [`KvEventPoller`] reads, in the server's order, with the problems met on the
/// way; the poller stops when this is dropped.
#[derive(Debug)]
pub struct KvEventStream {
    receiver: mpsc::Receiver<Result<KvEvent, EventsError>>,
    counts: watch::Receiver<EventCounts>,
}

impl KvEventStream {
    /// The decoder's counts as of the last poll.
    pub fn counts(&self) -> EventCounts {
        *self.counts.borrow()
    }

    /// A handle on the decoder's counts that outlives the stream being consumed.
    pub fn counts_view(&self) -> watch::Receiver<EventCounts> {
        self.counts.clone()
    }
}

impl Stream for KvEventStream {
    type Item = Result<KvEvent, EventsError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(context)
    }
}
